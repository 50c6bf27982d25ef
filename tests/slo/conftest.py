"""Rollups written straight into a store: weeks of history in a second.

Processing accepts spans of the last few days only, so SLO and baseline tests
write the rollup rows themselves, in the format processing writes them
(store/rollups.py columns, processing/histogram.py encodings).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from datetime import datetime
from types import ModuleType

import psycopg
import pytest

from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram

BT_COLUMNS = (
    "tenant_id, resolution, bucket, service, bt, calls, errors, duration_sum_us, duration_max_us, "
    "apdex_satisfied, apdex_tolerating, latency, tier_sum_us, tier_latency"
)

COMPONENT_COLUMNS = (
    "tenant_id, resolution, bucket, service, bt, tier, component, calls, errors, self_us, duration_us"
)


@pytest.fixture(scope="session")
def rollups() -> ModuleType:
    """This module's helpers, for tests (conftest modules are not importable by name)."""
    return sys.modules[__name__]


def latency(*groups: tuple[int, float]) -> bytes:
    """A latency histogram of ``(count, milliseconds)`` groups."""
    counts: histogram.Counts = {}
    for count, ms in groups:
        if count:
            histogram.add(counts, ms * 1000, weight=count)
    return histogram.encode(counts)


def tier_us(calls: int, **ms_per_call: float) -> list[int]:
    """Time per tier summed over ``calls`` requests, from each tier's mean per request."""
    return [round(calls * ms_per_call.get(tier, 0) * 1000) for tier in TIERS]


def write_bt_rows(dsn: str, rows: Iterable[dict]) -> None:
    """``bt_rollups`` rows from dicts with tenant_id, resolution, bucket, service, bt, calls
    and optionally errors, satisfied, tolerating, latency, tier_us."""
    with (
        psycopg.connect(dsn) as conn,
        conn.cursor() as cur,
        cur.copy(f"COPY bt_rollups ({BT_COLUMNS}) FROM STDIN") as copy,
    ):
        for row in rows:
            calls = row["calls"]
            tiers = row.get("tier_us") or [0] * len(TIERS)
            copy.write_row(
                (
                    row["tenant_id"],
                    row["resolution"],
                    row["bucket"],
                    row["service"],
                    row["bt"],
                    calls,
                    row.get("errors", 0),
                    sum(tiers),
                    0,
                    row.get("satisfied", calls),
                    row.get("tolerating", 0),
                    row.get("latency") or latency((calls, 100)),
                    tiers,
                    histogram.encode({}),
                )
            )


def write_component_rows(
    dsn: str, rows: Iterable[tuple[int, str, datetime, str, str, str, int, int]]
) -> None:
    """``component_rollups`` rows: (tenant, resolution, bucket, service, bt, tier, calls, errors)."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        columns = (
            "tenant_id, resolution, bucket, service, bt, tier, component, calls, errors, self_us, duration_us"
        )
        with cur.copy(f"COPY component_rollups ({columns}) FROM STDIN") as copy:
            for tenant, resolution, bucket, service, bt, tier, calls, errors in rows:
                copy.write_row(
                    (tenant, resolution, bucket, service, bt, tier, f"{tier}-component", calls, errors, 0, 0)
                )


def write_traces(dsn: str, rows: Iterable[tuple[int, datetime, str, str, int, bool, str | None]]) -> None:
    """``trace_summaries`` rows: (tenant, start, service, bt, duration µs, error, site)."""
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO trace_summaries (tenant_id, trace_id, start_time, duration_us, service, bt, error, "
            "tier_us, span_count, site) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 1, %s)",
            [
                (tenant, os.urandom(16), start, duration, service, bt, error, [0] * len(TIERS), site)
                for tenant, start, service, bt, duration, error, site in rows
            ],
        )


def tenant_id(dsn: str, name: str = "default") -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT id FROM tenants WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return int(row[0])


RUM_COLUMNS = (
    "tenant_id, resolution, bucket, service, name, site, count, errors, duration_sum_ms, apdex_satisfied, "
    "apdex_tolerating, latency, tier_sum_us, tier_errors, vital_count, vital_good, vital_poor, vitals"
)


def write_rum_rows(dsn: str, rows: Iterable[dict]) -> None:
    """``rum_rollups`` rows from dicts with tenant_id, resolution, bucket, service, bt, site,
    count and optionally ms (each action's duration) and tier_ms (per action)."""
    from tierscope.processing.rum_rollup import ERROR_OWNERS, RUM_TIERS, VITALS

    with (
        psycopg.connect(dsn) as conn,
        conn.cursor() as cur,
        cur.copy(f"COPY rum_rollups ({RUM_COLUMNS}) FROM STDIN") as copy,
    ):
        for row in rows:
            count, ms, tiers = row["count"], row.get("ms", 800.0), row.get("tier_ms", {})
            empty = [0] * len(VITALS)
            copy.write_row(
                (
                    row["tenant_id"],
                    row["resolution"],
                    row["bucket"],
                    row["service"],
                    row["bt"],
                    row["site"],
                    count,
                    0,
                    ms * count,
                    count,
                    0,
                    latency((count, ms)),
                    [round(count * tiers.get(tier, 0) * 1000) for tier in RUM_TIERS],
                    [0] * len(ERROR_OWNERS),
                    empty,
                    empty,
                    empty,
                    histogram.encode({}),
                )
            )
