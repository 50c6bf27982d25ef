"""Scoring alerts against the fault table: did an alert name the fault's tier
and component, and cover its transactions?

The fault table (``demo_faults``, from :data:`tierscope.demo.faults.CATALOG`)
writes components for people: ``INSERT INTO leads``, ``ext-services
/verify-address``, ``crm-web /pipeline``. An alert names what the telemetry
shows: the normalised statement, the peer's address, ``<service> <instance>``
for slow code or ``<service> <operation>`` for failing code (scored by the
service), the site for the network, the page for the browser. Used by the
demo's alert test and by ``bench/alerting.py``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

GOOD_SEVERITIES = ("warning", "critical")


def _sql(text: str) -> str:
    """A statement with its placeholders (%s, $1, ?) written alike, spaces squeezed."""
    return re.sub(r"\s+", " ", re.sub(r"%s|\$\d+|\?", "?", text)).strip().lower()


def names_component(
    fault: Mapping[str, Any],
    component: str | None,
    apps: Mapping[str, str],
    instances: Mapping[str, str],
) -> bool:
    """Does an alert's ``component`` name the fault's?

    Args:
        fault: a row of the fault table (tier, service, component, site).
        apps: the estate's applications and their URLs (``estate.json``).
        instances: instance id -> service, from the store's resources.
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
    if tier in ("app", "web", "platform"):
        # Code is named by its service: an instance of it (time: the code that
        # ran slow) or one of its operations (failures: the deepest failing
        # span, e.g. "erp-api orders.validate" for the table's "erp-api POST
        # /api/orders"; the transaction is checked by covers()).
        service, _, rest = component.partition(" ")
        return service == fault["service"] and bool(rest) and (rest in instances or tier != "platform")
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
    fault: Mapping[str, Any], alert: Mapping[str, Any], apps: Mapping[str, str], instances: Mapping[str, str]
) -> bool:
    """A warning or critical alert on the fault's transactions, its tier and its component."""
    return (
        alert.get("severity") in GOOD_SEVERITIES
        and covers(fault, alert)
        and alert.get("tier") == fault["tier"]
        and names_component(fault, alert.get("component"), apps, instances)
    )
