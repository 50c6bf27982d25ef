"""A small estate written straight into a store, with faults injected on cue.

Three transactions of one shop share a database and a payment provider.
Normally each request spends 10 ms in web, 40 ms in app, 50 ms in the
database (30 ms ``SELECT stock``, 20 ms ``UPDATE orders``) and 20 ms in the
external provider ``payments.example``. Four days of hour rollups teach the
baselines (hour-of-day bands need three days); minute rollups cover the hour
before the test and the test's minutes. A fault adds time to one component of
one tier from a given minute, for some transactions: what a slow SQL statement
or a slow external peer does to the rollups processing writes.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http.server
import json
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram
from tierscope.store import partitions, tenants

BTS = (("shop", "POST /checkout"), ("shop", "GET /cart"), ("shop", "GET /search"))
NORMAL = {
    ("web", "GET /"): 10.0,
    ("app", "shop.views"): 40.0,
    ("db", "SELECT stock"): 30.0,
    ("db", "UPDATE orders"): 20.0,
    ("external", "payments.example"): 20.0,
}
CALLS_PER_MINUTE = 30
# Fixed, so hour-of-week slots and fake clocks line up run after run.
START = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)  # a Monday; the tests' minutes start here


@dataclass
class Fault:
    tier: str
    component: str
    extra_ms: float
    start: datetime
    end: datetime = datetime(2100, 1, 1, tzinfo=UTC)
    bts: tuple[tuple[str, str], ...] = BTS
    errors: float = 0.0  # share of requests failing in that component


@dataclass
class Estate:
    dsn: str
    tenant_id: int
    faults: list[Fault] = field(default_factory=list)

    def per_request(
        self, minute: datetime, key: tuple[str, str]
    ) -> tuple[dict[tuple[str, str], float], float]:
        """Each component's milliseconds per request, and the failing share, at ``minute``."""
        parts = dict(NORMAL)
        failing = 0.0
        for fault in self.faults:
            if key in fault.bts and fault.start <= minute < fault.end:
                parts[(fault.tier, fault.component)] = (
                    parts.get((fault.tier, fault.component), 0.0) + fault.extra_ms
                )
                failing = max(failing, fault.errors)
        return parts, failing

    def write_minutes(
        self,
        first: datetime,
        count: int,
        bts: tuple[tuple[str, str], ...] = BTS,
        calls: int = CALLS_PER_MINUTE,
    ) -> None:
        """Minute rollups of ``calls`` requests a minute per transaction (faults included)."""
        bt_rows, component_rows = [], []
        for step in range(count):
            minute = first + timedelta(minutes=step)
            for key in bts:
                parts, failing = self.per_request(minute, key)
                bt_rows.append(
                    _bt_row(self.tenant_id, "minute", minute, key, calls, parts, failing)
                )
                component_rows += _component_rows(
                    self.tenant_id, "minute", minute, key, calls, parts, failing
                )
        _copy(self.dsn, bt_rows, component_rows)

    def write_history(self, until: datetime, days: int = 4) -> None:
        """Normal hour rollups for ``days`` before ``until`` (baselines learn from hours)."""
        bt_rows = []
        first = until - timedelta(days=days)
        for hour in range(days * 24):
            moment = first + timedelta(hours=hour)
            for key in BTS:
                # a little wobble, so bands have a spread of their own
                parts = {k: v * (1 + 0.02 * ((hour % 5) - 2)) for k, v in NORMAL.items()}
                bt_rows.append(
                    _bt_row(self.tenant_id, "hour", moment, key, CALLS_PER_MINUTE * 60, parts, 0.0)
                )
        _copy(self.dsn, bt_rows, [])

    def write_traces(self, first: datetime, count: int, users: int) -> None:
        """Traces of the faulty minutes: ``users`` distinct users, each with a session."""
        rows = []
        for step in range(count):
            minute = first + timedelta(minutes=step)
            for key in BTS:
                parts, failing = self.per_request(minute, key)
                duration = int(sum(parts.values()) * 1000)
                # Where failures begin: the component a failing fault slowed.
                origin = next(
                    (
                        (f.tier, f.component)
                        for f in self.faults
                        if f.errors and key in f.bts and f.start <= minute < f.end
                    ),
                    (None, None),
                )
                for user in range(users):
                    rows.append(
                        (
                            self.tenant_id,
                            (minute + timedelta(seconds=user % 60)),
                            key[0],
                            key[1],
                            duration,
                            failing > 0,
                            f"user-{user}",
                            f"session-{user}",
                            *(origin if failing > 0 else (None, None)),
                        )
                    )
        days = {row[1].date() for row in rows}
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # tests may be inside an event loop
            pool.submit(asyncio.run, _ensure_days(self.dsn, days)).result()
        with psycopg.connect(self.dsn) as conn, conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO trace_summaries (tenant_id, trace_id, start_time, duration_us, service, bt, "
                "error, tier_us, span_count, user_hash, session_id, error_tier, error_component) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 1, %s, %s, %s, %s)",
                [
                    (t, os.urandom(16), s, d, sv, b, e, [0] * len(TIERS), u, ss, et, ec)
                    for t, s, sv, b, d, e, u, ss, et, ec in rows
                ],
            )


def _latency(calls: int, ms: float, failing: float) -> bytes:
    counts: histogram.Counts = {}
    slow = round(calls * 0.04)  # a tail: 4 % of requests take twice as long
    histogram.add(counts, ms * 1000, weight=calls - slow)
    if slow:
        histogram.add(counts, 2 * ms * 1000, weight=slow)
    return histogram.encode(counts)


def _bt_row(
    tenant_id: int,
    resolution: str,
    bucket: datetime,
    key: tuple[str, str],
    calls: int,
    parts: dict[tuple[str, str], float],
    failing: float,
) -> tuple[Any, ...]:
    tier_us = [0] * len(TIERS)
    for (tier, _), ms in parts.items():
        tier_us[TIERS.index(tier)] += round(ms * 1000 * calls)
    total_ms = sum(parts.values())
    errors = round(calls * failing)
    return (
        tenant_id,
        resolution,
        bucket,
        key[0],
        key[1],
        calls,
        errors,
        sum(tier_us),
        int(total_ms * 2000),
        calls - errors,
        0,
        _latency(calls, total_ms, failing),
        tier_us,
        histogram.encode({}),
    )


def _component_rows(
    tenant_id: int,
    resolution: str,
    bucket: datetime,
    key: tuple[str, str],
    calls: int,
    parts: dict[tuple[str, str], float],
    failing: float,
) -> list[tuple[Any, ...]]:
    rows = []
    for (tier, component), ms in parts.items():
        errors = (
            round(calls * failing)
            if failing and tier in ("db", "external") and ms > NORMAL.get((tier, component), 0)
            else 0
        )
        rows.append(
            (
                tenant_id,
                resolution,
                bucket,
                key[0],
                key[1],
                tier,
                component,
                calls,
                errors,
                round(ms * 1000 * calls),
                round(ms * 1000 * calls),
            )
        )
    return rows


def _copy(dsn: str, bt_rows: list[tuple[Any, ...]], component_rows: list[tuple[Any, ...]]) -> None:
    bt_columns = (
        "tenant_id, resolution, bucket, service, bt, calls, errors, duration_sum_us, duration_max_us, "
        "apdex_satisfied, apdex_tolerating, latency, tier_sum_us, tier_latency"
    )
    component_columns = (
        "tenant_id, resolution, bucket, service, bt, tier, component, calls, errors, self_us, duration_us"
    )
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY bt_rollups ({bt_columns}) FROM STDIN") as copy:
            for row in bt_rows:
                copy.write_row(row)
        with cur.copy(f"COPY component_rollups ({component_columns}) FROM STDIN") as copy:
            for row in component_rows:
                copy.write_row(row)


async def _ensure_days(dsn: str, days: set[Any]) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await partitions.ensure_days(conn, days, "trace_summaries")


async def _create_tenant(dsn: str, name: str) -> tuple[int, str]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        credentials = await tenants.create_tenant(conn, name)
        cur = await conn.execute("SELECT id FROM tenants WHERE name = %s", (name,))
        row = await cur.fetchone()
    assert row is not None
    assert credentials.api_token
    return int(row[0]), credentials.api_token


@pytest.fixture
def estate(database_factory: Callable[..., str]) -> Estate:
    """A fresh store with tenant ``shop`` and its normal history (no minutes yet)."""
    dsn = database_factory()
    tenant_id, _ = asyncio.run(_create_tenant(dsn, "shop"))
    made = Estate(dsn, tenant_id)
    made.write_history(START - timedelta(hours=1))
    return made


class Sink:
    """An HTTP receiver on 127.0.0.1 that records requests; it can answer 503 or be down."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self._server: http.server.ThreadingHTTPServer | None = None
        self.port = 0

    def start(self) -> Sink:
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if sink.status == 200:
                    sink.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(sink.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        return [(json.loads(body)["event"], json.loads(body)["alert"]) for _, body in self.requests]


@pytest.fixture
def sink() -> Iterator[Sink]:
    made = Sink().start()
    yield made
    made.stop()
