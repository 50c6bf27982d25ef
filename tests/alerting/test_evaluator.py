"""Rule evaluation against a real store with a fake clock: series in, alerts out,
at exact minutes (promtool-style), localisation of injected faults, and state
that survives a restart and a failed evaluation."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.types.json import Jsonb

from tierscope.alerting.delivery import Backoff, deliver_due
from tierscope.alerting.evaluator import Evaluator
from tierscope.alerting.rules import parse
from tierscope.config import load_settings
from tierscope.store import Database

from .conftest import BTS, START, Estate, Fault, Sink

pytestmark = pytest.mark.anyio
SETTINGS = load_settings(alert_delay="0s", alert_allowed_networks="127.0.0.1/32", alert_retry_initial="1s")
CHECKOUT = BTS[0]


def minute(n: int) -> datetime:
    return START + timedelta(minutes=n)


def configure(estate: Estate, text: str) -> None:
    parse(text)  # checked as the API checks it; stored as written
    document = yaml.safe_load(text)
    with psycopg.connect(estate.dsn) as conn:
        conn.execute(
            "INSERT INTO alert_configs (tenant_id, document, source) VALUES (%s, %s, %s) "
            "ON CONFLICT (tenant_id) DO UPDATE SET document = EXCLUDED.document",
            (estate.tenant_id, Jsonb(document), text),
        )


def open_alerts(estate: Estate) -> list[dict[str, Any]]:
    with psycopg.connect(estate.dsn) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute("SELECT * FROM alerts WHERE tenant_id = %s ORDER BY id", (estate.tenant_id,))
        return cur.fetchall()


THRESHOLD = """
defaults: false
rules:
  - name: checkout-sla
    kind: threshold
    service: shop
    bt: POST /checkout
    metric: p95_ms
    above: 500
    severity: critical
    window: 1m
    min_requests: 1
    for: 2m
    keep_firing_for: 2m
"""

# minute evaluated -> state of the checkout-sla alert then (None: no alert row open or resolved)
EXPECTED = {
    1: None,
    2: None,
    3: None,
    4: "pending",  # minute 3 is slow: the condition starts holding
    5: "pending",  # held 1 minute, for is 2
    6: "firing",  # held 2 minutes
    7: "firing",
    8: "firing",
    9: "firing",  # minute 8 is fast again, but keep_firing_for is 2 minutes
    10: "resolved",
    11: "resolved",
    12: "resolved",
    13: "resolved",
    14: "pending",  # a one-minute blip (minute 13)...
    15: "resolved",  # ...is dropped before it fires: only the old, resolved alert remains
}


async def test_a_threshold_rule_goes_pending_fires_keeps_firing_and_resolves_at_exact_minutes(
    estate: Estate,
) -> None:
    configure(estate, THRESHOLD)
    estate.faults += [
        Fault("db", "UPDATE orders", 900, minute(3), minute(8), bts=(CHECKOUT,)),
        Fault("db", "UPDATE orders", 900, minute(13), minute(14), bts=(CHECKOUT,)),
    ]
    estate.write_minutes(minute(-60), 80)
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        seen = {}
        for n in sorted(EXPECTED):
            report = await evaluator.cycle(minute(n))
            assert report.failed == []
            rows = open_alerts(estate)
            seen[n] = rows[-1]["state"] if rows else None
    assert seen == EXPECTED
    (fired,) = open_alerts(estate)
    assert fired["started_at"] == minute(6)
    assert fired["resolved_at"] == minute(10)
    assert fired["tier"] == "db"
    assert fired["component"] == "UPDATE orders"


async def test_a_slow_database_behind_three_transactions_is_one_alert_naming_the_statement(
    estate: Estate,
) -> None:
    estate.faults.append(Fault("db", "UPDATE orders", 900, minute(5)))
    estate.write_minutes(minute(-60), 70)
    estate.write_traces(minute(5), 4, users=7)
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in range(1, 10):
            await evaluator.cycle(minute(n))
    (alert,) = open_alerts(estate)
    assert alert["state"] == "firing"
    assert alert["started_at"] == minute(8)  # pending at 6, for 2m
    assert alert["severity"] == "critical"
    assert sorted(map(tuple, alert["bts"])) == sorted(BTS)
    assert (alert["tier"], alert["component"]) == ("db", "UPDATE orders")
    assert alert["confidence"] > 0.9
    db = alert["evidence"]["tiers"]["db"]
    assert db["baseline"] == pytest.approx(50, rel=0.05)
    assert db["now"] > 200
    assert alert["evidence"]["component"]["name"] == "UPDATE orders"
    assert "database" not in alert["title"]
    assert "db time in UPDATE orders" in alert["title"]
    assert alert["impact"]["users"] == 7
    assert alert["impact"]["sessions"] == 7
    assert alert["impact"]["priority"] > 0


async def test_a_slow_external_peer_is_blamed_on_the_external_tier_and_that_peer(estate: Estate) -> None:
    estate.faults.append(Fault("external", "payments.example", 600, minute(5), bts=(CHECKOUT,)))
    estate.write_minutes(minute(-60), 70)
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in range(1, 10):
            await evaluator.cycle(minute(n))
    (alert,) = open_alerts(estate)
    assert alert["state"] == "firing"
    assert [tuple(b) for b in alert["bts"]] == [CHECKOUT]
    assert (alert["tier"], alert["component"]) == ("external", "payments.example")


async def test_fault_free_traffic_gives_no_alert(estate: Estate) -> None:
    estate.write_minutes(minute(-60), 90)
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in range(1, 30):
            report = await evaluator.cycle(minute(n))
            assert report.signals == 0
    assert open_alerts(estate) == []


async def test_errors_from_the_database_are_localised_by_errors(estate: Estate) -> None:
    estate.faults.append(Fault("db", "UPDATE orders", 1, minute(5), bts=(CHECKOUT,), errors=0.5))
    estate.write_minutes(minute(-60), 70)
    estate.write_traces(minute(-60), 70, users=10)  # failures are localised where each began
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in range(1, 10):
            await evaluator.cycle(minute(n))
    (alert,) = open_alerts(estate)
    assert alert["rule"] == "baseline-errors"
    assert (alert["tier"], alert["component"]) == ("db", "UPDATE orders")


def webhook_config(sink: Sink) -> str:
    return f"""
receivers:
  - name: ops
    webhook: {{url: "{sink.url}", secret: s3cret}}
routes:
  - receiver: ops
"""


async def test_a_restart_mid_incident_neither_pages_again_nor_loses_the_alert(
    estate: Estate, sink: Sink
) -> None:
    configure(estate, webhook_config(sink))
    estate.faults.append(Fault("db", "UPDATE orders", 900, minute(5), minute(12)))
    estate.write_minutes(minute(-60), 80)
    backoff = Backoff(timedelta(seconds=1), timedelta(seconds=4))
    async with Database(estate.dsn) as database:
        before = Evaluator(database, SETTINGS)
        for n in range(1, 10):
            await before.cycle(minute(n))
            await deliver_due(database, minute(n), backoff, list(SETTINGS.alert_allowed_networks))
    assert [event for event, _ in sink.events()] == ["firing"]
    (alert,) = open_alerts(estate)
    async with Database(estate.dsn) as database:  # a new process: nothing but the store is shared
        after = Evaluator(database, SETTINGS)
        for n in range(10, 25):
            await after.cycle(minute(n))
            await deliver_due(database, minute(n), backoff, list(SETTINGS.alert_allowed_networks))
    assert [event for event, _ in sink.events()] == ["firing", "resolved"]
    (same,) = open_alerts(estate)
    assert same["id"] == alert["id"]
    assert same["state"] == "resolved"
    assert sink.events()[1][1]["id"] == alert["id"]


async def test_a_failed_evaluation_or_missing_data_never_resolves_a_firing_alert(estate: Estate) -> None:
    estate.faults.append(Fault("db", "UPDATE orders", 900, minute(5)))
    estate.write_minutes(minute(-60), 70)
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in range(1, 10):
            await evaluator.cycle(minute(n))
        assert open_alerts(estate)[0]["state"] == "firing"
        # An alerting document the evaluator cannot read: evaluation fails, nothing changes.
        with psycopg.connect(estate.dsn) as conn:
            conn.execute(
                "INSERT INTO alert_configs (tenant_id, document, source) VALUES (%s, %s, '')",
                (estate.tenant_id, Jsonb({"rules": "not a list"})),
            )
        for n in range(10, 30):
            report = await evaluator.cycle(minute(n))
            assert report.failed == [estate.tenant_id]
        assert open_alerts(estate)[0]["state"] == "firing"
        # Readable again, but processing stopped: no rollups at all from minute 10 on.
        with psycopg.connect(estate.dsn) as conn:
            conn.execute("DELETE FROM alert_configs")
        for n in range(30, 45):
            report = await evaluator.cycle(minute(n))
            assert report.failed == []
        assert open_alerts(estate)[0]["state"] == "firing"


async def test_baselines_brought_up_to_date_hour_by_hour_equal_a_full_fit(estate: Estate) -> None:
    from tierscope.alerting.signals import BASELINE_METRICS, fit_baselines, refresh_baselines
    from tierscope.slo.baselines import BaselineConfig
    from tierscope.slo.calendar import BusinessCalendar

    config, calendar = BaselineConfig(), BusinessCalendar()
    async with Database(estate.dsn) as database, database.connection() as conn:
        older = await fit_baselines(conn, estate.tenant_id, START - timedelta(hours=3), calendar, config)
        updated = await refresh_baselines(conn, estate.tenant_id, older, START, calendar, config)
        whole = await fit_baselines(conn, estate.tenant_id, START, calendar, config)
    assert updated.fitted_for == whole.fitted_for == START
    assert updated.keys == whole.keys
    for at in (START - timedelta(hours=2), START + timedelta(minutes=5)):
        a, b = updated.expected(at, [0, 1, 2]), whole.expected(at, [0, 1, 2])
        for name in BASELINE_METRICS:
            assert a[name] == pytest.approx(b[name], nan_ok=True), name


NIGHT_ERRORS = """
defaults: false
rules:
  - {name: baseline-errors, kind: baseline, metric: error_rate, window: 5m, min_requests: 20, for: 0s}
"""


async def test_one_error_at_night_does_not_page_but_two_do(estate: Estate) -> None:
    # Night traffic: 4 requests a minute, 20 in the rule's window, against a band
    # learnt from error-free days (so any error is far outside it).
    from .conftest import NORMAL, _bt_row, _copy

    configure(estate, NIGHT_ERRORS)
    failing = {3: 0.25, 9: 0.25, 10: 0.25}  # minute -> share of its 4 requests failing (one)
    rows = [
        _bt_row(estate.tenant_id, "minute", minute(n), CHECKOUT, 4, dict(NORMAL), failing.get(n, 0.0))
        for n in range(-60, 16)
    ]
    _copy(estate.dsn, rows, [])
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        states = {}
        for n in range(4, 16):
            await evaluator.cycle(minute(n))
            alerts = open_alerts(estate)
            states[n] = alerts[-1]["state"] if alerts else None
    # One failed request in the window (1 in 20, minutes 4..8): no alert.
    assert all(states[n] is None for n in range(4, 10)), states
    # Two in the window (minutes 9 and 10): it pages.
    assert states[11] == "firing", states
    (alert,) = open_alerts(estate)
    assert alert["severity"] == "critical"
