"""Console server time on a store the size of an hour of the demo estate at a
busy hour (about 6 traces a second: docs/benchmarks.md) — 21,600 traces over
30 business transactions, as many browser experiences, their minute rollups,
and 30 alerts — against the 300 ms a page of issue 9. The time is the one the
collector reports (each page's ``Server-Timing``), the best of a few tries: on
a shared machine a single try measures the neighbours as much as the page.

The bulk rows are written straight into the store in the shape processing and
the RUM join write them (processing accepts only live spans, and 21,600 real
traces would take this test minutes); a few real traces and SLOs come through
the real paths (seed.py)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram, rum_rollup
from tierscope.testing.collector import CollectorProcess

from . import seed

TRACES_PER_SECOND = 6
TRANSACTIONS = 30
TARGET_MS = 300  # server time a page (issue 9)
TRIES = 5
ROLLUP_WAIT = timedelta(minutes=5)  # the collector's default rum_rollup_wait
APDEX_T_MS = 1000.0  # and rum_apdex_t


def _latency(rnd: random.Random, calls: int) -> bytes:
    counts: histogram.Counts = {}
    for _ in range(calls):
        histogram.add(counts, rnd.lognormvariate(12.5, 0.5))
    return histogram.encode(counts)


def bulk(dsn: str, tenant_id: int = 1) -> None:
    rnd = random.Random(5)
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    bts = [("crm-web" if i % 2 else "erp-api", f"POST /action-{i}") for i in range(TRANSACTIONS)]
    per_minute = TRACES_PER_SECOND * 60 // TRANSACTIONS
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        columns = (
            "tenant_id, resolution, bucket, service, bt, calls, errors, duration_sum_us, duration_max_us, "
            "apdex_satisfied, apdex_tolerating, latency, tier_sum_us, tier_latency"
        )
        with cur.copy(f"COPY bt_rollups ({columns}) FROM STDIN") as copy:
            for minute in range(60, 0, -1):
                for service, bt in bts:
                    tiers = [per_minute * 100_000 if t in ("app", "db") else 0 for t in TIERS]
                    copy.write_row(
                        (tenant_id, "minute", now - timedelta(minutes=minute), service, bt, per_minute, 0,
                         sum(tiers), 600_000, per_minute, 0, _latency(rnd, per_minute), tiers,
                         histogram.encode({}))
                    )  # fmt: skip
        columns = (
            "tenant_id, resolution, bucket, service, bt, tier, component, calls, errors, self_us, duration_us"
        )
        with cur.copy(f"COPY component_rollups ({columns}) FROM STDIN") as copy:
            for minute in range(60, 0, -1):
                for service, bt in bts:
                    for tier, component in (("db", f"statement of {bt}"), ("app", service)):
                        at = now - timedelta(minutes=minute)
                        self_us = per_minute * 100_000
                        row = (
                            tenant_id,
                            "minute",
                            at,
                            service,
                            bt,
                            tier,
                            component,
                            per_minute,
                            0,
                            self_us,
                            self_us,
                        )
                        copy.write_row(row)
        columns = (
            "tenant_id, resolution, bucket, source, target, target_kind, calls, errors, duration_sum_us, "
            "latency"
        )
        with cur.copy(f"COPY edge_rollups ({columns}) FROM STDIN") as copy:
            for minute in range(60, 0, -1):
                for source, target, kind in (
                    ("crm-web", "partner-api", "external"),
                    ("erp-api", "erp-db", "db"),
                ):
                    copy.write_row(
                        (tenant_id, "minute", now - timedelta(minutes=minute), source, target, kind,
                         180, 0, 180 * 50_000, _latency(rnd, 20))
                    )  # fmt: skip
        columns = (
            "tenant_id, trace_id, start_time, duration_us, service, bt, error, tier_us, span_count, "
            "user_hash, session_id, site"
        )
        with cur.copy(f"COPY trace_summaries ({columns}) FROM STDIN") as copy:
            for index in range(TRACES_PER_SECOND * 3600):
                service, bt = bts[index % TRANSACTIONS]
                copy.write_row(
                    (tenant_id, os.urandom(16), now - timedelta(seconds=index / TRACES_PER_SECOND),
                     rnd.randint(50_000, 900_000), service, bt, index % 97 == 0,
                     [0, 0, 0, 200_000, 0, 100_000, 0, 0, 0], 6, f"user-{index % 40}", f"s-{index % 300}",
                     seed.SITES[index % 2])
                )  # fmt: skip
        # Experiences as the joiner leaves them: rolled up (processing's own code
        # writes their rollups below), except the page loads of the last five
        # minutes, which still wait for their final Web Vitals (rum_rollup_wait).
        columns = (
            "tenant_id, id, kind, start_time, page, site, session_id, user_hash, browser, timing, vitals, "
            "state, service, bt, duration_ms, tier_ms, outcome, finished_at, rolled_up"
        )
        rolled = []
        with cur.copy(f"COPY rum_experiences ({columns}) FROM STDIN") as copy:
            for index in range(TRACES_PER_SECOND * 3600):
                service, bt = bts[index % TRANSACTIONS]
                duration = rnd.uniform(300, 3000)
                start = now - timedelta(seconds=index / TRACES_PER_SECOND)
                kind = "page_load" if index % 3 == 0 else "request"
                timing = {"requestStart": 5, "responseStart": duration * 0.6, "responseEnd": duration * 0.7}
                experience = {
                    "tenant_id": tenant_id, "start_time": start, "page": f"/page-{index % 12}",
                    "site": seed.SITES[index % 2], "service": service, "bt": bt, "duration_ms": duration,
                    "tier_ms": {"browser": duration * 0.3, "network": duration * 0.2,
                                "server": duration * 0.5},
                    "vitals": {"lcp": duration * 0.8, "inp": 120, "cls": 0.05, "fcp": 400, "ttfb": 90},
                    "outcome": "error" if index % 97 == 0 else "ok", "error_tier": None,
                }  # fmt: skip
                final = kind == "request" or start < now - ROLLUP_WAIT
                if final:
                    rolled.append(experience)
                copy.write_row(
                    (tenant_id, os.urandom(16).hex(), kind, start, experience["page"], experience["site"],
                     f"s-{index % 300}", f"user-{index % 40}", "Chrome 131",
                     Jsonb({**timing, "end": duration}), Jsonb(experience["vitals"]), "untraced", service,
                     bt, duration, Jsonb(experience["tier_ms"]), experience["outcome"],
                     start + timedelta(milliseconds=duration), final)
                )  # fmt: skip
        conn.commit()

    async def roll_up() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await rum_rollup.write(conn, rum_rollup.roll_up(rolled, APDEX_T_MS))
            await conn.commit()

    asyncio.run(roll_up())


@pytest.fixture(scope="module")
def busy_hour(
    collector_factory: Callable[..., CollectorProcess], tmp_path_factory: pytest.TempPathFactory
) -> CollectorProcess:
    collector = collector_factory(**seed.SETTINGS)
    seed.traces(collector)
    seed.slos(collector, tmp_path_factory.mktemp("seed"))
    for index in range(15):
        seed.alerts(collector, key=f" #{index}")  # 30 alerts, 15 of them firing
    bulk(collector.database_url or "")
    with psycopg.connect(collector.database_url or "", autocommit=True) as conn:
        conn.execute("ANALYZE")  # as autovacuum would after a bulk load
    return collector


def test_every_console_page_is_served_within_300_ms_on_a_busy_hour(busy_hour: CollectorProcess) -> None:
    token = busy_hour.credentials()["api_token"]
    client = httpx.Client(base_url=busy_hour.url, cookies={"tierscope_token": token}, timeout=30)
    experience = httpx.get(
        f"{busy_hour.url}/api/v1/experiences",
        params={"limit": 1},
        headers={"Authorization": f"Bearer {token}"},
    ).json()["experiences"][0]["id"]
    trace = httpx.get(
        f"{busy_hour.url}/api/v1/traces",
        params={"service": "crm-web", "limit": 1},
        headers={"Authorization": f"Bearer {token}"},
    ).json()["traces"][0]["trace_id"]
    pages = {
        "overview": "/",
        "transaction": "/bt?service=crm-web&bt=POST%20/action-1",
        "trace": f"/trace/{trace}",
        "services": "/services",
        "slos": "/slos",
        "experiences": "/experiences",
        "experience": f"/experiences/{experience}",
        "alerts": "/alerts",
    }
    timings = {}
    for name, path in pages.items():
        server, wall = [], []
        for _ in range(TRIES):
            started = time.perf_counter()
            response = client.get(path)
            wall.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, (name, response.text[:500])
            server.append(server_ms(response))
        timings[name] = {
            "best_ms": round(min(server)),
            "median_ms": round(statistics.median(server)),
            "wall_best_ms": round(min(wall)),
        }
    print(json.dumps({"console_server_time": timings}))
    assert "/action-1" in client.get("/").text
    experiences = client.get("/experiences").text
    assert experiences.count("<tr>") >= 24  # 12 pages × 2 sites, and recent actions
    # The best of a few tries: what the page costs when the shared machine lets it run.
    slow = {name: t for name, t in timings.items() if t["best_ms"] >= TARGET_MS}
    assert not slow, f"over {TARGET_MS} ms of server time: {slow}"


def server_ms(response: httpx.Response) -> float:
    """The server's own time for a page, from its Server-Timing header."""
    found = re.fullmatch(r"page;dur=([0-9.]+)", response.headers.get("server-timing", ""))
    assert found, f"no Server-Timing on {response.url}: {response.headers}"
    return float(found[1])
