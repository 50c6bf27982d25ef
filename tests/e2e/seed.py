"""A store with everything the dashboards, the console and the report show,
made through the real paths where they exist: traces over OTLP, beacons over
``/v1/rum`` (joined with their traces by the processor), SLOs through
``tierscope slo apply``; alert rows through the store's own writer (the
evaluator's output, without waiting for a burn to develop); and weeks of hour
rollups written straight into the store for forecasts (processing accepts spans
of the last few days only — as the SLO tests do).

Some names carry hostile markup: every page and report must keep it text.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
from click.testing import CliRunner

from tierscope.cli.main import main
from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram
from tierscope.store import alerting as alert_store
from tierscope.testing.batches import kv
from tierscope.testing.collector import CollectorProcess

from .test_processing import MS, post_trace, query, summaries, two_service_trace, wait_for

ORIGIN = "https://crm.example.test"
IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "<script>alert(2)</script>"
TRACES = 40
SITES = ("Hamburg", "Lyon")
SLOS = """\
apiVersion: tierscope/v1
kind: SLO
metadata: {name: leads-fast, displayName: Create lead under 800 ms}
spec: {service: crm-web, bt: POST /leads, objective: latency, threshold: 800ms, target: 99%}
---
apiVersion: tierscope/v1
kind: SLO
metadata: {name: leads-available}
spec: {service: crm-web, bt: POST /leads, objective: availability, target: 99%}
"""
# A business service of two transactions and its SLO: POST /leads (traced) and
# erp-api POST /orders, whose history (order_history) gives the SLA report's
# trend earlier periods with known compliance.
BUSINESS_SERVICE = "order-to-cash"
ORDERS = ("erp-api", "POST /orders")
BUSINESS_SLOS = """\
---
apiVersion: tierscope/v1
kind: BusinessService
metadata: {name: order-to-cash, displayName: Order to cash}
spec:
  criticality: critical
  transactions:
    - {service: crm-web, bt: POST /leads}
    - {service: erp-api, bt: POST /orders}
---
apiVersion: tierscope/v1
kind: SLO
metadata: {name: order-to-cash-available, displayName: Order to cash available}
spec: {businessService: order-to-cash, objective: availability, target: 99%}
"""
ORDER_HISTORY_DAYS = 85  # within the 90 days hour rollups are kept
FORECAST_SERVICE, FORECAST_BT = "erp-api", "POST /invoices"
# The collector for a seeded store: quick processing, and no alert evaluator — the
# seeded alerts stand for its output, and a real one firing meanwhile (the latency
# SLO is missed on purpose) would change the counts the tests check.
SETTINGS = {
    "TIERSCOPE_SETTLE_DELAY": "1s",
    "TIERSCOPE_PROCESSING_INTERVAL": "200ms",
    "TIERSCOPE_ALERTING": "false",
}


def cli(collector: CollectorProcess, *args: str) -> str:
    env = {"TIERSCOPE_DATABASE_URL": collector.database_url or ""}
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def traces(collector: CollectorProcess) -> list[bytes]:
    """40 traces of crm-web POST /leads (1000 ms), one a second, a few minutes ago;
    their entry spans name the user's site (as the demo's apps do), alternately
    Hamburg and Lyon (the sites of the browser experiences that made them)."""
    base = (time.time_ns() // (60 * 10**9) - 5) * 60 * 10**9
    ids = []
    for index in range(TRACES):
        trace_id = os.urandom(16)
        trace = two_service_trace(base + index * 1000 * MS, trace_id)
        trace["crm-web"][0].attributes.append(kv("tierscope.site", SITES[index % 2]))
        post_trace(collector, trace)
        ids.append(trace_id)
    wait_for(lambda: summaries(collector.database_url or "") == TRACES)
    return ids


def beacon(site: str, user: str, items: list[dict]) -> dict:
    return {"v": 1, "session": f"session-{user}", "user": user, "site": site, "items": items}


def experiences(collector: CollectorProcess, trace_ids: list[bytes]) -> None:
    """For each trace, the page load that led to it and the in-page request that
    made it (joined with the trace); one page named with hostile markup."""
    cli(collector, "rum", "origins", ORIGIN)
    keys = json.loads((collector.data_dir / "credentials.json").read_text())
    now = time.time() * 1000
    for index, trace_id in enumerate(trace_ids):
        site = SITES[index % 2]
        slow = 1.0 if site == "Hamburg" else 3.0  # Lyon's users wait longer (a slow WAN link)
        page_view = os.urandom(16).hex()
        items = [
            {
                "type": "page_load",
                "id": page_view,
                "start": now - 200_000 + index * 1000,
                "name": "/leads/new" if index % 10 else f"/leads/{IMG}",
                "url": "https://crm.example.test/leads/new",
                "status": 200,
                "timing": {"requestStart": 5, "responseStart": 105, "responseEnd": 125, "end": 600 * slow},
                "vitals": {"lcp": 1200 * slow, "inp": 80 * slow, "cls": 0.02, "fcp": 500, "ttfb": 105},
            },
            {
                "type": "request",
                "id": os.urandom(16).hex(),
                "page_view": page_view,
                "start": now - 199_000 + index * 1000,
                "name": "Create lead",
                "url": "https://crm.example.test/leads",
                "method": "post",
                "status": 200,
                "traceparent": f"00-{trace_id.hex()}-{os.urandom(8).hex()}-01",
                "timing": {"requestStart": 1, "responseStart": 1100, "responseEnd": 1110, "end": 1120 * slow},
            },
        ]
        response = httpx.post(
            f"{collector.url}/v1/rum",
            params={"key": keys["rum_key"]},
            content=json.dumps(beacon(site, f"clerk-{index % 7}", items)).encode(),
            headers={"content-type": "text/plain;charset=UTF-8", "origin": ORIGIN},
        )
        assert response.status_code in (200, 202, 204), response.text
    dsn = collector.database_url or ""
    wait_for(
        lambda: query(dsn, "SELECT count(*) FROM rum_experiences WHERE state = 'joined'")[0][0] == TRACES,
        what="joining experiences with their traces",
    )


def slos(collector: CollectorProcess, directory: Path, documents: str = SLOS) -> None:
    (directory / "slos.yaml").write_text(documents)
    cli(collector, "slo", "apply", str(directory / "slos.yaml"))


def alerts(collector: CollectorProcess, tenant_id: int = 1, key: str = "") -> dict[str, int]:
    """A firing database alert with its evidence and impact, and a resolved network
    alert whose title carries hostile markup."""
    now = datetime.now(UTC)
    firing = {
        "group_key": "cause:db:SELECT score FROM credit WHERE id = ?" + key,  # noqa: S608 - a name, not SQL
        "state": "firing",
        "severity": "critical",
        "kind": "baseline",
        "rule": "latency-baseline",
        "title": "POST /leads is slow: the database (SELECT score FROM credit) left its baseline",
        "service": "crm-web",
        "bts": [["crm-web", "POST /leads"]],
        "tier": "db",
        "component": "SELECT score FROM credit WHERE id = ?",
        "confidence": 0.82,
        "evidence": {
            "unit": "ms per request",
            "tiers": {
                "db": {"now": 400.0, "baseline": 90.0, "excess": 310.0, "share": 0.82},
                "app": {"now": 500.0, "baseline": 430.0, "excess": 70.0, "share": 0.18},
            },
            "signals": [{"rule": "latency-baseline", "metric": "p95_ms", "value": 1000.0, "expected": 450.0}],
        },
        "impact": {
            "users": 12,
            "sessions": 14,
            "requests": 40,
            "users_from": "users",
            "user_minutes": 240,
            "criticality": "critical",
            "business_services": ["Order to cash"],
            "duration_minutes": 20.0,
            "priority": 31.5,
            "cost": 120.0,
        },
        "priority": 31.5,
        "pending_since": now - timedelta(minutes=22),
        "started_at": now - timedelta(minutes=20),
        "last_active_at": now,
    }
    resolved = {
        **firing,
        "group_key": f"cause:network:Lyon{key}",
        "state": "resolved",
        "severity": "warning",
        "title": f"Lyon users wait on the network {SCRIPT}",
        "tier": "network",
        "component": "site Lyon",
        "confidence": 0.7,
        "impact": {**firing["impact"], "users": 5, "cost": 30.0, "user_minutes": 60, "priority": 9.0},
        "priority": 9.0,
        "pending_since": now - timedelta(hours=3, minutes=2),
        "started_at": now - timedelta(hours=3),
        "last_active_at": now - timedelta(hours=2),
    }

    async def write() -> dict[str, int]:
        async with await psycopg.AsyncConnection.connect(collector.database_url or "", autocommit=True) as c:
            ids = {
                "firing": await alert_store.insert_alert(c, tenant_id, firing),
                "resolved": await alert_store.insert_alert(c, tenant_id, resolved),
            }
            await c.execute(
                "UPDATE alerts SET resolved_at = %s WHERE id = %s",
                (now - timedelta(hours=2), ids["resolved"]),
            )
            return ids

    return asyncio.run(write())


def forecast_history(dsn: str, tenant_id: int = 1, weeks: int = 4) -> None:
    """Hour rollups of erp-api POST /invoices up to the last whole hour: load
    growing 1 % a day with a daily cycle, p95 creeping up 5 ms a day from 400 ms."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    columns = (
        "tenant_id, resolution, bucket, service, bt, calls, errors, duration_sum_us, duration_max_us, "
        "apdex_satisfied, apdex_tolerating, latency, tier_sum_us, tier_latency"
    )
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY bt_rollups ({columns}) FROM STDIN") as copy:
            for hour in range(weeks * 7 * 24, 0, -1):
                bucket = end - timedelta(hours=hour)
                days_ago = hour / 24
                calls = round((600 if 8 <= bucket.hour < 18 else 150) * (1 - 0.01 * days_ago))
                ms = 400 - 5 * days_ago
                counts: histogram.Counts = {}
                histogram.add(counts, ms * 0.8 * 1000, weight=calls - calls // 10)
                histogram.add(counts, ms * 1000, weight=calls // 10)
                tiers = [round(calls * ms * 1000 * (0.5 if t in ("app", "db") else 0)) for t in TIERS]
                copy.write_row(
                    (tenant_id, "hour", bucket, FORECAST_SERVICE, FORECAST_BT, calls, 0,
                     round(calls * ms * 850), round(ms * 1000), 0, calls, histogram.encode(counts),
                     tiers, histogram.encode({}))
                )  # fmt: skip
        conn.commit()


def months_ago(bucket: datetime, now: datetime) -> int:
    return (now.year - bucket.year) * 12 + now.month - bucket.month


def order_history(dsn: str, tenant_id: int = 1) -> None:
    """One hour rollup a day (noon, 100 calls) of erp-api POST /orders for the
    last ORDER_HISTORY_DAYS days before this month: in the month k months ago,
    k of each 100 calls failed, so an availability SLO's compliance at the end
    of that month is 1 - k/100 (a 28-day window lies within one month)."""
    now = datetime.now(UTC)
    this_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    noon = now.replace(hour=12, minute=0, second=0, microsecond=0)
    columns = (
        "tenant_id, resolution, bucket, service, bt, calls, errors, duration_sum_us, duration_max_us, "
        "apdex_satisfied, apdex_tolerating, latency, tier_sum_us, tier_latency"
    )
    counts: histogram.Counts = {}
    histogram.add(counts, 100_000, weight=100)  # every call 100 ms
    tiers = [100 * 100_000 if t == "app" else 0 for t in TIERS]
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY bt_rollups ({columns}) FROM STDIN") as copy:
            for day in range(ORDER_HISTORY_DAYS, 0, -1):
                bucket = noon - timedelta(days=day)
                if bucket >= this_month or bucket < now - timedelta(days=ORDER_HISTORY_DAYS):
                    continue
                copy.write_row(
                    (tenant_id, "hour", bucket, *ORDERS, 100, months_ago(bucket, now), 100 * 100_000,
                     100_000, 100, 0, histogram.encode(counts), tiers, histogram.encode({}))
                )  # fmt: skip
        conn.commit()


def everything(collector: CollectorProcess, directory: Path) -> list[bytes]:
    trace_ids = traces(collector)
    experiences(collector, trace_ids)
    slos(collector, directory, SLOS + BUSINESS_SLOS)
    alerts(collector)
    forecast_history(collector.database_url or "")
    order_history(collector.database_url or "")
    time.sleep(1.0)  # the last processing cycle's rollups
    return trace_ids
