"""End to end through a real ``tierscope up``: the evaluator runs inside it, the
alert comes back ranked from ``GET /api/v1/alerts`` with the documented keys,
the webhook arrives signed, and acknowledging, silences and the CLI work on the
same store, each tenant seeing only its own."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tierscope.alerting.notifiers.webhook import verify
from tierscope.processing.query import MINUTE, floor
from tierscope.store import tenants
from tierscope.testing.collector import CollectorProcess, tierscope_command

from .conftest import BTS, Estate, Fault, Sink

ALERT_KEYS = {
    "id",
    "severity",
    "state",
    "title",
    "service",
    "bts",
    "tier",
    "component",
    "confidence",
    "evidence",
    "impact",
    "started_at",
    "resolved_at",
}
IMPACT_KEYS = {"users", "sessions", "criticality", "priority", "cost"}


def rules(sink: Sink) -> str:
    return f"""
defaults: false
rules:
  - name: checkout-sla
    kind: threshold
    service: shop
    bt: POST /checkout
    above: 500
    window: 1m
    min_requests: 1
    for: 0s
receivers:
  - name: ops
    webhook: {{url: "{sink.url}", secret: s3cret}}
routes:
  - receiver: ops
cost_per_user_minute: {{}}
"""


@pytest.fixture(scope="module")
def running(collector_factory: Callable[..., CollectorProcess]) -> CollectorProcess:
    return collector_factory(
        TIERSCOPE_PROCESSING="false",
        TIERSCOPE_ALERT_DELAY="0s",
        TIERSCOPE_ALERT_INTERVAL="1s",
        TIERSCOPE_ALERT_ALLOWED_NETWORKS="127.0.0.1/32",
    )


def call(
    collector: CollectorProcess, method: str, path: str, token: str | None = None, **kwargs: Any
) -> httpx.Response:
    token = token or collector.credentials()["api_token"]
    return httpx.request(
        method, f"{collector.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=30, **kwargs
    )


def cli(collector: CollectorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIERSCOPE_DATABASE_URL": collector.database_url or "", "COLUMNS": "250"}
    return subprocess.run(
        [*tierscope_command(), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def other_tenant_token(dsn: str) -> str:
    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            made = await tenants.create_tenant(conn, "other")
        assert made.api_token
        return made.api_token

    return asyncio.run(make())


def test_an_alert_end_to_end_through_the_api_the_webhook_and_the_cli(
    running: CollectorProcess, sink: Sink
) -> None:
    dsn = running.database_url or ""
    with psycopg.connect(dsn) as conn:
        (tenant_id,) = conn.execute("SELECT id FROM tenants WHERE name = 'default'").fetchone()
    bad = httpx.put(
        f"{running.url}/api/v1/alerting/config",
        content="receivers:\n  - name: x\n    webhook: {url: 'http://169.254.169.254/'}\n",
        headers={
            "Authorization": f"Bearer {running.credentials()['api_token']}",
            "content-type": "application/yaml",
        },
        timeout=30,
    )
    assert bad.status_code == 422
    assert "169.254.169.254" in bad.text
    applied = httpx.put(
        f"{running.url}/api/v1/alerting/config",
        content=rules(sink),
        headers={
            "Authorization": f"Bearer {running.credentials()['api_token']}",
            "content-type": "application/yaml",
        },
        timeout=30,
    )
    assert applied.status_code == 200, applied.text
    assert [r["name"] for r in applied.json()["rules"]] == ["checkout-sla"]
    assert applied.json()["rules"][0]["for"] == "0s"  # durations as written, not ISO 8601
    assert applied.json()["config"]["receivers"][0]["webhook"]["secret"] == "***"

    now = floor(datetime.now(UTC), MINUTE)
    estate = Estate(
        dsn, tenant_id, [Fault("db", "UPDATE orders", 900, now - timedelta(minutes=2), bts=(BTS[0],))]
    )
    estate.write_minutes(now - timedelta(minutes=70), 80)

    deadline = time.monotonic() + 60
    alerts: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not (alerts and sink.requests):
        alerts = call(running, "GET", "/api/v1/alerts").json()["alerts"]
        time.sleep(0.5)
    (alert,) = alerts
    assert set(alert) >= ALERT_KEYS
    assert set(alert["impact"]) >= IMPACT_KEYS
    assert alert["state"] == "firing"
    assert alert["severity"] == "critical"
    assert alert["bts"] == [list(BTS[0])]
    assert (alert["tier"], alert["component"]) == ("db", "UPDATE orders")
    assert alert["runbook"] == "docs/runbook.md#tier-db"
    ((headers, body),) = sink.requests
    assert verify("s3cret", headers["x-tierscope-timestamp"], body, headers["x-tierscope-signature"])

    other = other_tenant_token(dsn)
    assert call(running, "GET", "/api/v1/alerts", token=other).json() == {"alerts": []}
    assert call(running, "GET", f"/api/v1/alerts/{alert['id']}", token=other).status_code == 404
    assert call(running, "POST", f"/api/v1/alerts/{alert['id']}/ack", token=other).status_code == 404
    acked = call(running, "POST", f"/api/v1/alerts/{alert['id']}/ack", json={"by": "on-call"})
    assert acked.status_code == 200
    assert acked.json()["state"] == "acknowledged"
    detail = call(running, "GET", f"/api/v1/alerts/{alert['id']}").json()
    assert detail["acknowledged_by"] == "on-call"
    assert [(n["receiver"], n["event"]) for n in detail["notifications"]] == [("ops", "firing")]

    made = call(
        running,
        "POST",
        "/api/v1/silences",
        json={"matchers": {"tier": "db"}, "duration": "2h", "comment": "index rebuild"},
    )
    assert made.status_code == 201
    silence_id = made.json()["id"]
    assert call(running, "POST", "/api/v1/silences", json={"matchers": {"colour": "red"}}).status_code == 400
    assert [s["id"] for s in call(running, "GET", "/api/v1/silences").json()["silences"]] == [silence_id]
    assert call(running, "GET", "/api/v1/silences", token=other).json() == {"silences": []}
    assert call(running, "GET", f"/api/v1/silences/{silence_id}", token=other).status_code == 404
    changed = call(
        running,
        "PUT",
        f"/api/v1/silences/{silence_id}",
        json={"matchers": {"tier": "db", "severity": "critical"}, "duration": "1h"},
    )
    assert changed.json()["matchers"] == {"tier": "db", "severity": "critical"}
    assert call(running, "DELETE", f"/api/v1/silences/{silence_id}", token=other).status_code == 404
    assert call(running, "DELETE", f"/api/v1/silences/{silence_id}").status_code == 204
    assert call(running, "GET", "/api/v1/silences").json() == {"silences": []}

    listed = cli(running, "alerts", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert '"UPDATE orders"' in listed.stdout
    table = cli(running, "alerts", "list")
    assert "acknowledged" in table.stdout, table.stdout + table.stderr
    silenced = cli(running, "alerts", "silence", "--match", "service=shop", "--duration", "30m")
    assert silenced.returncode == 0, silenced.stderr
    assert "silence" in silenced.stderr
    assert "shop" in cli(running, "alerts", "silence", "--list").stdout
    wrong = cli(running, "alerts", "ack", "999999")
    assert wrong.returncode != 0
    assert "no alert 999999" in wrong.stderr


def _tenant(dsn: str, name: str) -> tuple[int, str]:
    async def make() -> tuple[int, str]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            made = await tenants.create_tenant(conn, name)
            cur = await conn.execute("SELECT id FROM tenants WHERE name = %s", (name,))
            row = await cur.fetchone()
        assert made.api_token
        assert row is not None
        return int(row[0]), made.api_token

    return asyncio.run(make())


RANKED = """
defaults: false
rules:
  - {name: checkout-sla, kind: threshold, service: shop, bt: POST /checkout, above: 500,
     severity: critical, window: 1m, min_requests: 1, for: 0s}
  - {name: cart-sla, kind: threshold, service: shop, bt: GET /cart, above: 500,
     severity: warning, window: 1m, min_requests: 1, for: 0s}
"""


def test_open_alerts_come_back_ranked_by_priority_and_the_cli_acknowledges_one(
    running: CollectorProcess,
) -> None:
    dsn = running.database_url or ""
    tenant_id, token = _tenant(dsn, "ranked")
    applied = httpx.put(
        f"{running.url}/api/v1/alerting/config",
        content=RANKED,
        headers={"Authorization": f"Bearer {token}", "content-type": "application/yaml"},
        timeout=30,
    )
    assert applied.status_code == 200, applied.text
    now = floor(datetime.now(UTC), MINUTE)
    since = now - timedelta(minutes=2)
    # A slow statement in checkout (critical) and a slow partner in the cart (a
    # warning): the db incident sorts first by its key, so it is written first and
    # has the lower id; newest-first alone would put it second.
    faults = [Fault("db", "UPDATE orders", 900, since, bts=(BTS[0],))]
    faults.append(Fault("external", "payments.example", 900, since, bts=(BTS[1],)))
    Estate(dsn, tenant_id, faults).write_minutes(now - timedelta(minutes=70), 80)
    deadline = time.monotonic() + 60
    alerts: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len([a for a in alerts if a["state"] == "firing"]) < 2:
        alerts = call(running, "GET", "/api/v1/alerts", token=token).json()["alerts"]
        time.sleep(0.5)
    first, second = alerts
    assert (first["severity"], first["tier"]) == ("critical", "db")
    assert (second["severity"], second["tier"]) == ("warning", "external")
    assert first["id"] < second["id"]  # ranked by priority, not by age
    assert first["impact"]["priority"] > second["impact"]["priority"]

    acked = cli(running, "alerts", "ack", str(first["id"]), "--tenant", "ranked", "--by", "night-shift")
    assert acked.returncode == 0, acked.stderr
    assert f"alert {first['id']} acknowledged" in acked.stdout + acked.stderr
    detail = call(running, "GET", f"/api/v1/alerts/{first['id']}", token=token).json()
    assert (detail["state"], detail["acknowledged_by"]) == ("acknowledged", "night-shift")
    again = cli(running, "alerts", "ack", str(second["id"]), "--tenant", "default")
    assert again.returncode != 0  # another tenant's alert
    # Firing still ranks before acknowledged, whatever the priority.
    ranked = call(running, "GET", "/api/v1/alerts", token=token).json()["alerts"]
    assert [a["id"] for a in ranked] == [second["id"], first["id"]]


def test_restarting_tierscope_up_mid_incident_neither_pages_again_nor_drops_the_alert(
    collector_factory: Callable[..., CollectorProcess], sink: Sink
) -> None:
    collector = collector_factory(
        TIERSCOPE_WORKERS="2",  # two HTTP workers, one evaluator process: still one page
        TIERSCOPE_PROCESSING="false",
        TIERSCOPE_ALERT_DELAY="0s",
        TIERSCOPE_ALERT_INTERVAL="1s",
        TIERSCOPE_ALERT_ALLOWED_NETWORKS="127.0.0.1/32",
    )
    dsn = collector.database_url or ""
    with psycopg.connect(dsn) as conn:
        (tenant_id,) = conn.execute("SELECT id FROM tenants WHERE name = 'default'").fetchone()
    token = collector.credentials()["api_token"]
    applied = httpx.put(
        f"{collector.url}/api/v1/alerting/config",
        content=rules(sink),
        headers={"Authorization": f"Bearer {token}", "content-type": "application/yaml"},
        timeout=30,
    )
    assert applied.status_code == 200, applied.text
    now = floor(datetime.now(UTC), MINUTE)
    estate = Estate(
        dsn, tenant_id, [Fault("db", "UPDATE orders", 900, now - timedelta(minutes=2), bts=(BTS[0],))]
    )
    estate.write_minutes(now - timedelta(minutes=70), 80)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not sink.requests:
        time.sleep(0.2)
    (before,) = call(collector, "GET", "/api/v1/alerts").json()["alerts"]
    assert before["state"] == "firing"
    collector.stop()
    with psycopg.connect(dsn) as conn:
        (restarted,) = conn.execute("SELECT now()").fetchone()
    collector.start()
    # Until an evaluation of the restarted collector stepped the alert (each cycle
    # writes it), and every notification it may have queued was sent.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with psycopg.connect(dsn) as conn:
            (stepped,) = conn.execute(
                "SELECT updated_at > %s FROM alerts WHERE id = %s", (restarted, before["id"])
            ).fetchone()
            (waiting,) = conn.execute(
                "SELECT count(*) FROM notifications WHERE delivered_at IS NULL"
            ).fetchone()
        if stepped and not waiting:
            break
        time.sleep(0.2)
    assert stepped, "no evaluation cycle ran after the restart"
    assert waiting == 0
    (after,) = call(collector, "GET", "/api/v1/alerts").json()["alerts"]
    assert (after["id"], after["state"], after["started_at"]) == (
        before["id"],
        "firing",
        before["started_at"],
    )
    assert [event for event, _ in sink.events()] == ["firing"]  # no re-page, by either worker
    with psycopg.connect(dsn) as conn:
        (leaders,) = conn.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'tierscope-alerting' "
            "AND a.datname = current_database()"
        ).fetchone()
    assert leaders == 1
