"""Scoring an alert's component against the demo's fault table, without a demo:
what the localiser can name for each fault passes, and loose names that only
get the service right (text after it that is no instance of that service and
no operation it runs in the fault's transactions) fail."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tierscope.demo import scoring
from tierscope.demo.faults import CATALOG
from tierscope.store import partitions

APPS = {
    "crm-web": "http://127.0.0.1:8101",
    "erp-api": "http://127.0.0.1:8102",
    "ext-services": "http://127.0.0.1:8103",
}
INSTANCES = {  # instance id -> service, as read from the store's resources
    "crm-web-1": "crm-web",
    "erp-api-1": "erp-api",
    "erp-worker-1": "erp-worker",
}
OPERATIONS = {  # service -> operations run in the fault's transactions (read_operations)
    "erp-api": {"POST /api/orders", "orders.check", "orders.validate"},
    "crm-web": {"POST /orders", "GET /pipeline"},
}


def row(name: str, **changes: Any) -> dict[str, Any]:
    """The fault's row as ``demo_faults`` holds it."""
    fault = CATALOG[name]
    return {
        "fault": fault.name,
        "tier": fault.tier,
        "service": fault.service,
        "component": fault.component,
        "site": fault.site,
        "bts": list(fault.bts),
    } | changes


NAMED = [
    ("db_slow", "SELECT sku, on_hand, pg_sleep($1) FROM inventory WHERE sku = $2"),
    ("db_lock", "INSERT INTO leads (name, company) VALUES (%s, %s)"),
    ("external_slow", "127.0.0.1:8103"),
    ("external_down", "127.0.0.1:8103"),
    ("app_cpu", "crm-web crm-web-1"),  # slow code: the instance of the service that ran it
    ("worker_backlog", "erp-worker erp-worker-1"),
    ("error_spike", "erp-api orders.validate"),  # failing code: the deepest failing operation
    ("error_spike", "erp-api erp-api-1"),  # or the instance it failed on
    ("wan_latency", "branch-east"),
    ("browser_slow", "crm-web /pipeline"),
]

NOT_NAMED = [
    ("app_cpu", "crm-web whatever"),  # anything after the service used to pass
    ("app_cpu", "crm-web erp-api-1"),  # an instance of another service
    ("app_cpu", "crm-web unknown-7"),  # an instance the store never saw
    ("app_cpu", "crm-web GET /pipeline"),  # an operation, for a fault that slows rather than fails
    ("app_cpu", "erp-api erp-api-1"),  # another service and its instance
    ("app_cpu", "crm-web"),  # the service alone
    ("app_cpu", "crm-web "),
    ("worker_backlog", "erp-worker erp-api-1"),
    ("worker_backlog", "erp-worker jobs"),  # the table's words are not what telemetry shows
    ("error_spike", "erp-api whatever"),
    ("error_spike", "erp-api GET /pipeline"),  # run, but by another service
    ("error_spike", "erp-api crm-web-1"),
    ("error_spike", "crm-web orders.validate"),  # the operation, under the wrong service
    ("error_spike", "erp-api POST /api/orders x"),
    ("db_slow", "SELECT * FROM leads"),
    ("external_slow", "127.0.0.1:8101"),
    ("wan_latency", "branch-west"),
    ("browser_slow", "crm-web /leads"),
    ("app_cpu", None),
    ("error_spike", ""),
]


@pytest.mark.parametrize(("name", "component"), NAMED)
def test_what_the_localiser_names_for_a_fault_scores_as_its_component(name: str, component: str) -> None:
    assert scoring.names_component(row(name), component, APPS, INSTANCES, OPERATIONS)


@pytest.mark.parametrize(("name", "component"), NOT_NAMED)
def test_a_name_that_only_gets_the_service_right_or_names_another_thing_does_not_score(
    name: str, component: str | None
) -> None:
    assert not scoring.names_component(row(name), component, APPS, INSTANCES, OPERATIONS)


def test_an_operation_counts_only_when_the_service_ran_it_in_the_faults_transactions() -> None:
    # The same name scores once read_operations found it for erp-api, not before.
    assert not scoring.names_component(row("error_spike"), "erp-api orders.validate", APPS, INSTANCES, {})
    ran = {"erp-api": {"orders.validate"}}
    assert scoring.names_component(row("error_spike"), "erp-api orders.validate", APPS, INSTANCES, ran)


def test_whether_a_fault_fails_requests_comes_from_its_row_else_the_catalog() -> None:
    assert scoring.fails(row("error_spike"))
    assert not scoring.fails(row("app_cpu"))
    assert scoring.fails(row("app_cpu", fails=True))
    # A code fault that fails requests is then named by an operation as well.
    failing_cpu = row("app_cpu", fails=True)
    assert scoring.names_component(failing_cpu, "crm-web GET /pipeline", APPS, INSTANCES, OPERATIONS)


def test_right_needs_a_good_severity_the_faults_transaction_tier_and_component() -> None:
    fault = row("error_spike")
    alert = {
        "severity": "critical",
        "bts": [["erp-api", "ERP / Create sales order"]],
        "tier": "app",
        "component": "erp-api orders.validate",
    }
    assert scoring.right(fault, alert, APPS, INSTANCES, OPERATIONS)
    for change in (
        {"severity": "info"},
        {"bts": [["erp-api", "ERP / Check inventory"]]},
        {"tier": "db"},
        {"component": "erp-api whatever"},
    ):
        assert not scoring.right(fault, alert | change, APPS, INSTANCES, OPERATIONS), change


START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


async def _partitions(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        for table in ("spans", "trace_summaries"):
            await partitions.ensure_days(conn, {START.date()}, table)


def test_operations_are_read_from_the_code_spans_of_the_faults_transactions_while_it_was_on(
    database_factory: Callable[..., str],
) -> None:
    dsn = database_factory()
    asyncio.run(_partitions(dsn))
    fault = row("error_spike", started_at=START, ended_at=START + timedelta(minutes=2))
    traces = [  # (bt, minute of the trace, [(service, name, tier, component)])
        (
            "ERP / Create sales order",
            1,
            [
                ("crm-web", "POST /orders", "app", None),
                ("erp-api", "POST /api/orders", "app", None),
                ("erp-api", "orders.check", "app", None),
                ("erp-api", "orders.validate", "app", None),
                ("erp-api", "INSERT INTO sales_orders", "db", "INSERT INTO sales_orders (customer_id)"),
            ],
        ),
        ("ERP / Check inventory", 1, [("erp-api", "GET /api/inventory", "app", None)]),  # another BT
        ("ERP / Create sales order", -5, [("erp-api", "orders.legacy", "app", None)]),  # before the fault
    ]
    with psycopg.connect(dsn, autocommit=True) as conn:
        (tenant,) = conn.execute("INSERT INTO tenants (name) VALUES ('demo') RETURNING id").fetchone()
        for bt, at, spans in traces:
            trace, start = os.urandom(16), START + timedelta(minutes=at)
            conn.execute(
                "INSERT INTO trace_summaries (tenant_id, trace_id, start_time, duration_us, service, bt,"
                " error, tier_us, span_count) VALUES (%s, %s, %s, 1000, 'erp-api', %s, false, %s, %s)",
                (tenant, trace, start, bt, [0] * 9, len(spans)),
            )
            for service, name, tier, component in spans:
                conn.execute(
                    "INSERT INTO spans (tenant_id, trace_id, span_id, start_time, duration_us, service, name,"
                    " kind, tier, component, status_code, resource_id, span_pb)"
                    " VALUES (%s, %s, %s, %s, 100, %s, %s, 2, %s, %s, 0, 1, '')",
                    (tenant, trace, os.urandom(8), start, service, name, tier, component),
                )
        operations = scoring.read_operations(conn, fault)
    assert operations == {
        "crm-web": {"POST /orders"},
        "erp-api": {"POST /api/orders", "orders.check", "orders.validate"},
    }
    assert scoring.names_component(fault, "erp-api orders.validate", APPS, {}, operations)
    assert not scoring.names_component(fault, "erp-api GET /api/inventory", APPS, {}, operations)
    assert not scoring.names_component(fault, "erp-api orders.legacy", APPS, {}, operations)
    assert scoring.read_operations(conn=None, fault=row("wan_latency")) == {}  # no transactions: no query
