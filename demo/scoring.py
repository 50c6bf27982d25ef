"""Scoring alerts against the fault table: did an alert name the fault's tier
and component, and cover its transactions?

The fault table (``demo_faults``, from :data:`tierscope.demo.faults.CATALOG`)
writes components for people: ``INSERT INTO leads``, ``ext-services
/verify-address``, ``crm-web /pipeline``. An alert names what the telemetry
shows: the normalised statement, the peer's address, ``<service> <instance>``
for slow code or ``<service> <operation>`` for failing code, the site for the
network, the page for the browser. Code is scored strictly: the instance must
be one of the fault's service, the operation one that service runs in the
fault's transactions, both read from the store (:func:`read_instances`,
:func:`read_operations`). Used by the demo's alert test and by
``bench/alerting.py``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from tierscope.demo.faults import CATALOG

GOOD_SEVERITIES = ("warning", "critical")
CODE_TIERS = ("app", "web", "platform")  # named by an instance, or an operation when requests fail


def _sql(text: str) -> str:
    """A statement with its placeholders (%s, $1, ?) written alike, spaces squeezed."""
    return re.sub(r"\s+", " ", re.sub(r"%s|\$\d+|\?", "?", text)).strip().lower()


def fails(fault: Mapping[str, Any]) -> bool:
    """Does the fault make requests fail (its row's ``fails``, else the catalog's)?"""
    if "fails" in fault:
        return bool(fault["fails"])
    known = CATALOG.get(str(fault.get("fault")))
    return known is not None and known.fails


def names_component(
    fault: Mapping[str, Any],
    component: str | None,
    apps: Mapping[str, str],
    instances: Mapping[str, str],
    operations: Mapping[str, Collection[str]],
) -> bool:
    """Does an alert's ``component`` name the fault's?

    Args:
        fault: a row of the fault table (fault, tier, service, component, site).
        apps: the estate's applications and their URLs (``estate.json``).
        instances: instance id -> service, from the store's resources.
        operations: service -> the operations (span names) it runs in the
            fault's transactions (:func:`read_operations`).
    """
    if not component:
        return False
    expected = str(fault["component"])
    tier = fault["tier"]
    if tier in ("db", "cache"):
        return _sql(component).startswith(_sql(expected))
    if tier == "external":  # the table names the peer by its service: where it listens
        url = apps.get(expected.split()[0], "")
        return bool(url) and component == urlsplit(url).netloc
    if tier in CODE_TIERS:
        # Slow code is named by the instance of the fault's service that ran it;
        # failing code by its deepest failing operation, e.g. "erp-api
        # orders.validate" for the table's "erp-api POST /api/orders" (the
        # transaction is checked by covers()). Any other text after the service
        # ("crm-web whatever", another service's instance) names nothing.
        service, _, rest = component.partition(" ")
        if service != fault["service"] or not rest:
            return False
        if instances.get(rest) == service:
            return True
        return fails(fault) and rest in operations.get(service, ())
    if tier == "network":
        return component == fault["site"]
    if tier == "browser":  # the page the table names after the service
        parts = expected.split()
        return len(parts) > 1 and parts[1] in component
    return False


def covers(fault: Mapping[str, Any], alert: Mapping[str, Any]) -> bool:
    """The alert concerns a transaction of the fault (any, for a fault without)."""
    bts = set(fault.get("bts") or ())
    return not bts or bool(bts & {bt for _, bt in alert.get("bts", ())})


def right(
    fault: Mapping[str, Any],
    alert: Mapping[str, Any],
    apps: Mapping[str, str],
    instances: Mapping[str, str],
    operations: Mapping[str, Collection[str]],
) -> bool:
    """A warning or critical alert on the fault's transactions, its tier and its component."""
    return (
        alert.get("severity") in GOOD_SEVERITIES
        and covers(fault, alert)
        and alert.get("tier") == fault["tier"]
        and names_component(fault, alert.get("component"), apps, instances, operations)
    )


# Reading what scoring needs from the store (a psycopg connection to it).


def read_instances(conn: Any) -> dict[str, str]:
    """Instance id -> service, from the resources the estate's services sent."""
    rows = conn.execute("SELECT service, attributes->>'service.instance.id' FROM resources").fetchall()
    return {str(instance): str(service) for service, instance in rows if instance}


def read_operations(conn: Any, fault: Mapping[str, Any]) -> dict[str, set[str]]:
    """Service -> the operations its code ran in the fault's transactions while
    the fault was on: what trace processing names a failing span by (its
    component, else its span name), for the code tiers."""
    if not fault.get("bts"):
        return {}
    rows = conn.execute(
        """SELECT DISTINCT s.service, coalesce(s.component, s.name)
           FROM trace_summaries t
           JOIN spans s ON s.tenant_id = t.tenant_id AND s.trace_id = t.trace_id
           WHERE t.bt = ANY(%(bts)s)
             AND t.start_time BETWEEN %(start)s AND coalesce(%(end)s, now())
             AND s.start_time BETWEEN %(start)s - interval '1 minute'
                                  AND coalesce(%(end)s, now()) + interval '1 minute'
             AND s.tier = ANY(%(tiers)s)""",
        {
            "bts": list(fault["bts"]),
            "start": fault["started_at"],
            "end": fault.get("ended_at"),
            "tiers": list(CODE_TIERS),
        },
    ).fetchall()
    operations: dict[str, set[str]] = {}
    for service, operation in rows:
        operations.setdefault(str(service), set()).add(str(operation))
    return operations
