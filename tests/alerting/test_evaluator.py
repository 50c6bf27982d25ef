"""Rule evaluation against a real store with a fake clock: series in, alerts out,
at exact minutes (promtool-style), localisation of injected faults, and state
that survives a restart (firing or pending), a failed evaluation and a store
that is really gone during evaluations (RELIABILITY.md T-19)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

import psycopg
import pytest
import yaml
from psycopg.types.json import Jsonb

from tierscope.alerting.delivery import Backoff, deliver_due
from tierscope.alerting.evaluator import Evaluator
from tierscope.alerting.rules import parse
from tierscope.config import load_settings
from tierscope.store import Database, StoreUnavailable
from tierscope.store import alerting as store
from tierscope.testing.faultproxy import FaultProxy
from tierscope.testing.figures import Tally, tally

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


async def test_an_acknowledgement_made_while_an_evaluation_runs_is_not_undone(
    estate: Estate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The evaluator reads the open alerts, judges them, then writes them back.
    An on-call engineer who acknowledges in between keeps the acknowledgement:
    the evaluator's "still firing" is not written over it (it once was, and the
    CLI then showed the alert firing again)."""
    configure(estate, THRESHOLD)
    estate.faults.append(Fault("db", "UPDATE orders", 900, minute(3), bts=(CHECKOUT,)))
    estate.write_minutes(minute(-60), 80)
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in range(1, 7):
            await evaluator.cycle(minute(n))
        (alert,) = open_alerts(estate)
        assert alert["state"] == "firing"

        read_open = store.open_alerts

        async def read_then_acknowledge(conn: Any, tenant_id: int) -> list[dict[str, Any]]:
            rows = await read_open(conn, tenant_id)
            with psycopg.connect(estate.dsn, autocommit=True) as other:
                other.execute(
                    "UPDATE alerts SET state = 'acknowledged', acknowledged_by = 'on-call' WHERE id = %s",
                    (alert["id"],),
                )
            return rows

        monkeypatch.setattr(store, "open_alerts", read_then_acknowledge)
        report = await evaluator.cycle(minute(7))
        assert report.failed == []
        monkeypatch.undo()
        assert [row["state"] for row in open_alerts(estate)] == ["acknowledged"]
        await evaluator.cycle(minute(8))
        assert [row["state"] for row in open_alerts(estate)] == ["acknowledged"]


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
    # The example at the top of docs/alerting.md, word for word.
    assert alert["title"] == (
        "shop / GET /cart p95 1.0 s (baseline 120 ms) and 2 more transactions;"
        " 100% of the excess is db time in UPDATE orders"
    )
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


async def test_a_second_cause_in_a_transaction_already_alerted_on_gets_its_own_alert(estate: Estate) -> None:
    """A partner is slow and stays slow; then a lock slows the database of the same
    transaction, by less. The database is alerted on while the partner's alert
    still fires (not once the partner recovers), each naming its own tier."""
    configure(
        estate,
        """
defaults: false
rules:
  - {name: tiers, kind: baseline, metric: tier_ms, window: 2m, for: 0s, keep_firing_for: 2m, min_requests: 10}
""",
    )
    estate.faults += [
        Fault("external", "payments.example", 900, minute(3), bts=(CHECKOUT,)),
        Fault("db", "INSERT INTO orders", 300, minute(8), bts=(CHECKOUT,)),
    ]
    estate.write_minutes(minute(-60), 75)
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in range(1, 11):
            await evaluator.cycle(minute(n))
    alerts = {(a["tier"], a["component"]): a for a in open_alerts(estate)}
    assert set(alerts) == {("external", "payments.example"), ("db", "INSERT INTO orders")}
    assert all(a["state"] == "firing" for a in alerts.values())
    assert [tuple(b) for b in alerts[("db", "INSERT INTO orders")]["bts"]] == [CHECKOUT]
    assert alerts[("db", "INSERT INTO orders")]["started_at"] <= minute(10)


async def test_work_gone_missing_is_alerted_even_while_another_tier_of_the_transaction_is_slow(
    estate: Estate,
) -> None:
    """Jobs stop finishing in their traces (a stalled worker) while the app tier of
    the same transaction slows: both are alerted on, the backlog as platform."""
    configure(
        estate,
        """
defaults: false
rules:
  - {name: tiers, kind: baseline, metric: tier_ms, window: 2m, for: 0s, keep_firing_for: 2m, min_requests: 10}
""",
    )
    invoices = ("shop", "POST /invoices")  # new: judged against its own recent minutes
    estate.faults += [
        Fault("platform", "worker-1", 40, minute(-60), minute(6), bts=(invoices,)),
        Fault("app", "shop.views", 300, minute(6), bts=(invoices,)),
    ]
    estate.write_minutes(minute(-60), 70, bts=(invoices,))
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in range(1, 10):
            await evaluator.cycle(minute(n))
    tiers = {a["tier"]: a for a in open_alerts(estate)}
    assert set(tiers) == {"app", "platform"}
    assert tiers["platform"]["severity"] == "warning"
    assert tiers["platform"]["evidence"]["signals"][0]["missing"] is True


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


def t19() -> Tally:
    return tally("T-19").describe(
        "restart while firing and while pending (mid-for); the store really gone during evaluations "
        "(fault proxy: connections reset, then a hung store) with a notification queued; an "
        "unreadable alerting document; missing data",
        "state restored: a pending alert fires at the minute it would have without the restart, a "
        "firing one does not page again; evaluations and deliveries fail while the store is gone and "
        "change nothing; the queued notification goes out once it is back; a failed evaluation or "
        "missing data never resolves a firing alert",
    )


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
    events = [event for event, _ in sink.events()]
    t19().note(restarted_while_firing_pages=events.count("firing"), then_resolved=events.count("resolved"))


async def test_a_restart_while_pending_keeps_the_pending_time_and_fires_on_time(
    estate: Estate, sink: Sink
) -> None:
    """The same minutes as the uninterrupted run above (EXPECTED), with the
    evaluator replaced between minute 4 (pending) and minute 5: the alert
    still fires at minute 6, not two minutes after the restart; and the blip
    of minutes 13-14, pending and dropped before it fired, sends nothing."""
    configure(estate, THRESHOLD + webhook_config(sink))
    estate.faults += [
        Fault("db", "UPDATE orders", 900, minute(3), minute(8), bts=(CHECKOUT,)),
        Fault("db", "UPDATE orders", 900, minute(13), minute(14), bts=(CHECKOUT,)),
    ]
    estate.write_minutes(minute(-60), 80)
    backoff = Backoff(timedelta(seconds=1), timedelta(seconds=4))
    allowed = list(SETTINGS.alert_allowed_networks)
    seen = {}
    async with Database(estate.dsn) as database:
        before = Evaluator(database, SETTINGS)
        for n in range(1, 5):
            await before.cycle(minute(n))
            await deliver_due(database, minute(n), backoff, allowed)
            rows = open_alerts(estate)
            seen[n] = rows[-1]["state"] if rows else None
    (pending,) = open_alerts(estate)
    assert (pending["state"], pending["pending_since"]) == ("pending", minute(4))
    async with Database(estate.dsn) as database:  # a new process: nothing but the store is shared
        after = Evaluator(database, SETTINGS)
        for n in range(5, 16):
            report = await after.cycle(minute(n))
            assert report.failed == []
            await deliver_due(database, minute(n), backoff, allowed)
            rows = open_alerts(estate)
            seen[n] = rows[-1]["state"] if rows else None
    assert seen == EXPECTED
    (fired,) = open_alerts(estate)
    assert fired["id"] == pending["id"]
    assert fired["pending_since"] == minute(4)
    assert fired["started_at"] == minute(6), "fires when `for` ends, counted from before the restart"
    assert [event for event, _ in sink.events()] == ["firing", "resolved"], "the blip sent nothing"
    fired_at = int((fired["started_at"] - minute(0)).total_seconds() // 60)
    t19().note(restarted_while_pending_fired_at_minute=fired_at, uninterrupted_run_fired_at_minute=6)


def proxied(dsn: str, proxy: FaultProxy) -> str:
    port = dsn.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    through = dsn.replace(f":{port}/", f":{proxy.port}/", 1)
    assert through != dsn
    return through


async def test_a_store_gone_during_evaluations_resolves_nothing_and_loses_no_notification(
    estate: Estate, sink: Sink
) -> None:
    """The evaluator reaches the store through a fault proxy. The alert fires
    at minute 8 and its notification is queued; before it is sent the store
    goes away: connections reset (minutes 9-11), then a hung store that
    answers nothing (minutes 12-13). Evaluations and deliveries fail; the
    alert stays firing, untouched. Once the store is back the queued
    notification goes out, the still-failing transactions keep the alert
    firing without a second page, and it resolves once the fault ends."""
    configure(estate, webhook_config(sink))
    estate.faults.append(Fault("db", "UPDATE orders", 900, minute(5), minute(20)))
    estate.write_minutes(minute(-60), 95)  # to minute 34
    backoff = Backoff(timedelta(seconds=1), timedelta(seconds=4))
    allowed = list(SETTINGS.alert_allowed_networks)
    port = int(estate.dsn.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    failures = 0
    with FaultProxy(("127.0.0.1", port)) as proxy:
        async with Database(proxied(estate.dsn, proxy)) as database:
            evaluator = Evaluator(database, SETTINGS)
            for n in range(1, 9):
                assert (await evaluator.cycle(minute(n))).failed == []
                if n < 8:
                    await deliver_due(database, minute(n), backoff, allowed)
            (fired,) = open_alerts(estate)
            assert (fired["state"], fired["started_at"]) == ("firing", minute(8))
            assert sink.events() == [], "queued, not sent yet"

            for n, mode in [(9, "reset"), (10, "reset"), (11, "reset"), (12, "blackhole"), (13, "blackhole")]:
                proxy.set_mode(mode)
                try:
                    report = await evaluator.cycle(minute(n))
                    assert report.evaluated == [], f"minute {n}: evaluated with the store {mode}"
                except StoreUnavailable:
                    pass
                failures += 1
                with pytest.raises(StoreUnavailable):
                    await deliver_due(database, minute(n), backoff, allowed)
            (during,) = open_alerts(estate)
            assert during == fired, "nothing about the alert changed while the store was gone"
            assert sink.events() == []
            with psycopg.connect(estate.dsn) as conn:
                queued = conn.execute(
                    "SELECT event FROM notifications WHERE delivered_at IS NULL"
                ).fetchall()
            assert queued == [("firing",)]

            proxy.set_mode("pass")
            for n in range(14, 35):
                for _ in range(20):  # the pool reconnects within a few seconds
                    try:
                        report = await evaluator.cycle(minute(n))
                        await deliver_due(database, minute(n), backoff, allowed)
                        break
                    except StoreUnavailable:
                        await asyncio.sleep(0.5)
                else:
                    raise AssertionError("the store came back but the evaluator never did")
                assert report.failed == []
                state = open_alerts(estate)[0]["state"]
                if n < 20:
                    assert state == "firing", f"minute {n}: the fault still holds"
                    assert [event for event, _ in sink.events()] == ["firing"], "paged once"
    (resolved,) = open_alerts(estate)
    assert resolved["id"] == fired["id"]
    assert resolved["state"] == "resolved"
    assert resolved["resolved_at"] > minute(20)
    assert [event for event, _ in sink.events()] == ["firing", "resolved"]
    assert {alert["id"] for _, alert in sink.events()} == {fired["id"]}
    print(f"T-19: {failures} evaluations with the store gone (reset, black hole): 0 resolved, 0 lost")
    events = [event for event, _ in sink.events()]
    t19().note(
        evaluations_with_store_gone=failures,
        resolved_while_gone=0,
        queued_then_delivered=events.count("firing"),
        resolved_after=events.count("resolved"),
    )


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
    t19().note(failed_evaluations=20, minutes_without_data=15, resolved_by_them=0)


async def test_baselines_brought_up_to_date_hour_by_hour_equal_a_full_fit(estate: Estate) -> None:
    from tierscope.alerting.transaction_baselines import BASELINE_METRICS, fit_baselines, refresh_baselines
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


# The demo estate's own rules (demo/alerting.yaml): 2-minute windows, judged
# from min_requests: 10 requests of a transaction in the window.
DEMO_RULES = resources.files("tierscope.demo").joinpath("alerting.yaml").read_text()


@pytest.mark.parametrize(
    ("calls", "fires_at"),
    [
        (4, None),  # night: 8 requests in a 2-minute window, below min_requests
        (5, 6),  # 10 in the window: judged, it fires
        (30, 6),  # a busy hour: 60 in the window
    ],
)
async def test_with_the_demos_rules_a_slow_database_pages_within_two_minutes_only_at_min_requests(
    estate: Estate, calls: int, fires_at: int | None
) -> None:
    """What docs/alerting.md says of `make run`'s quiet hours: the same slow
    statement (+900 ms from minute 5) is not judged at 4 requests a minute and
    fires within two minutes of its start at 5 or more."""
    configure(estate, DEMO_RULES)
    estate.faults.append(Fault("db", "UPDATE orders", 900, minute(5), bts=(CHECKOUT,)))
    estate.write_minutes(minute(-60), 75, bts=(CHECKOUT,), calls=calls)
    firing: dict[int, list[dict[str, Any]]] = {}
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in range(1, 15):
            report = await evaluator.cycle(minute(n))
            assert report.failed == []
            firing[n] = [a for a in open_alerts(estate) if a["state"] == "firing"]
    first = min((n for n, alerts in firing.items() if alerts), default=None)
    assert first == fires_at, {n: [a["title"] for a in alerts] for n, alerts in firing.items()}
    if fires_at is None:
        assert open_alerts(estate) == []  # not even pending: the window is never judged
        return
    assert fires_at - 5 <= 2  # within two minutes of the fault's start
    alerts = firing[fires_at]
    assert {(a["tier"], a["component"]) for a in alerts} == {("db", "UPDATE orders")}
    assert all(a["severity"] in ("warning", "critical") for a in alerts)
    assert all([tuple(b) for b in a["bts"]] == [CHECKOUT] for a in alerts)
