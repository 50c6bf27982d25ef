"""Reading rollups back for a time range: which resolution, which rows, merged.

A range is served from the coarsest rows that describe it well enough, so a
month of data is a few thousand rows, not millions:

================  ===============================================
range             rows read
================  ===============================================
up to 6 hours     minutes
up to 2 days      hours (the range rounded out to whole hours)
up to 14 days     whole days, with hours at both ends
longer            whole days (the range rounded out to days); of
                  business transactions, whole weeks (Monday to
                  Monday, UTC) with days at both ends
================  ===============================================

Every answer says which ``from``/``to`` it actually covers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, LiteralString

from psycopg import AsyncConnection, sql

from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram

MINUTE, HOUR, DAY, WEEK = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1), timedelta(weeks=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MONDAY = datetime(1970, 1, 5, tzinfo=UTC)  # where week buckets start (store/rollups.py)


def floor(moment: datetime, width: timedelta, origin: datetime = _EPOCH) -> datetime:
    return origin + ((moment - origin) // width) * width


def ceil(moment: datetime, width: timedelta, origin: datetime = _EPOCH) -> datetime:
    down = floor(moment, width, origin)
    return down if down == moment else down + width


@dataclass(frozen=True)
class Segment:
    resolution: str
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Plan:
    start: datetime
    end: datetime
    segments: tuple[Segment, ...]

    @property
    def resolution(self) -> str:
        return self.segments[-1].resolution if self.segments else "minute"


def plan(start: datetime, end: datetime, *, weeks: bool = False) -> Plan:
    """The rows that cover ``[start, end)`` (see the module docstring).

    Args:
        weeks: read week rows where whole weeks fit (only ``bt_rollups`` has them).
    """
    span = end - start
    if span <= timedelta(hours=6):
        start, end = floor(start, MINUTE), ceil(end, MINUTE)
        return Plan(start, end, (Segment("minute", start, end),))
    if span <= timedelta(days=2):
        start, end = floor(start, HOUR), ceil(end, HOUR)
        return Plan(start, end, (Segment("hour", start, end),))
    if span <= timedelta(days=14):
        start, end = floor(start, HOUR), ceil(end, HOUR)
        first_day, last_day = ceil(start, DAY), floor(end, DAY)
        segments = [
            Segment("hour", start, first_day),
            Segment("day", first_day, last_day),
            Segment("hour", last_day, end),
        ]
        return Plan(start, end, tuple(s for s in segments if s.end > s.start))
    start, end = floor(start, DAY), ceil(end, DAY)
    first_week, last_week = ceil(start, WEEK, _MONDAY), floor(end, WEEK, _MONDAY)
    if not weeks or last_week <= first_week:
        return Plan(start, end, (Segment("day", start, end),))
    segments = [
        Segment("day", start, first_week),
        Segment("week", first_week, last_week),
        Segment("day", last_week, end),
    ]
    return Plan(start, end, tuple(s for s in segments if s.end > s.start))


def _where(segments: Sequence[Segment]) -> tuple[sql.Composable, list[Any]]:
    parts: list[sql.Composable] = []
    params: list[Any] = []
    for segment in segments:
        parts.append(sql.SQL("(resolution = %s AND bucket >= %s AND bucket < %s)"))
        params += [segment.resolution, segment.start, segment.end]
    return sql.SQL("(") + sql.SQL(" OR ").join(parts) + sql.SQL(")"), params


async def fetch(
    conn: AsyncConnection,
    table: LiteralString,
    columns: LiteralString,
    tenant_id: int,
    segments: Sequence[Segment],
    filters: dict[str, Any] | None = None,
) -> list[tuple[Any, ...]]:
    """Rows of a rollup table for a tenant over the planned segments."""
    where, params = _where(segments)
    conditions = [sql.SQL("tenant_id = %s"), where]
    values: list[Any] = [tenant_id, *params]
    for column, value in (filters or {}).items():
        if value is not None:
            conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
            values.append(value)
    query = sql.SQL("SELECT {} FROM {} WHERE {}").format(
        sql.SQL(columns), sql.Identifier(table), sql.SQL(" AND ").join(conditions)
    )
    cur = await conn.execute(query, values)
    return await cur.fetchall()


_TIER_SUMS = ", ".join(f"sum(tier_sum_us[{i}])::int8" for i in range(1, len(TIERS) + 1))


async def bt_groups(
    conn: AsyncConnection,
    tenant_id: int,
    segments: Sequence[Segment],
    service: str | None,
    tier_latency: list[bytes] | None = None,
) -> list[tuple[str, str, Totals, bytes]]:
    """Per business transaction over the segments: its summed figures and its
    latency histograms, concatenated (SQL does the grouping: 200 rows come back
    for 200 transactions, however many stored rows they span).

    Given a list as ``tier_latency``, each group's per-tier histograms
    (concatenated likewise) are appended to it, in the order of the groups."""
    where, params = _where(segments)
    conditions = [sql.SQL("tenant_id = %s"), where]
    values: list[Any] = [tenant_id, *params]
    if service is not None:
        conditions.append(sql.SQL("service = %s"))
        values.append(service)
    query = sql.SQL(
        "SELECT service, bt, sum(calls)::int8, sum(errors)::int8, sum(duration_sum_us)::int8, "
        "sum(apdex_satisfied)::int8, sum(apdex_tolerating)::int8, {tiers}, {tier_latency}"
        "string_agg(latency, ''::bytea) FROM bt_rollups WHERE {where} GROUP BY service, bt"
    ).format(
        tiers=sql.SQL(_TIER_SUMS),
        tier_latency=sql.SQL("string_agg(tier_latency, ''::bytea), " if tier_latency is not None else ""),
        where=sql.SQL(" AND ").join(conditions),
    )
    async with conn.cursor(binary=True) as cur:
        await cur.execute(query, values)
        rows = await cur.fetchall()
    groups = []
    for row in rows:
        totals = Totals(
            calls=row[2],
            errors=row[3],
            duration_sum_us=row[4],
            satisfied=row[5],
            tolerating=row[6],
            tier_sum_us=list(row[7 : 7 + len(TIERS)]),
        )
        groups.append((row[0], row[1], totals, bytes(row[-1])))
        if tier_latency is not None:
            tier_latency.append(bytes(row[-2]))
    return groups


@dataclass
class Totals:
    """Additive figures of one business transaction (or one step of a series)."""

    calls: int = 0
    errors: int = 0
    duration_sum_us: int = 0
    satisfied: int = 0
    tolerating: int = 0
    tier_sum_us: list[int] = field(default_factory=lambda: [0] * len(TIERS))

    def add_row(
        self, calls: int, errors: int, duration: int, satisfied: int, tolerating: int, tiers: Sequence[int]
    ) -> None:
        self.calls += calls
        self.errors += errors
        self.duration_sum_us += duration
        self.satisfied += satisfied
        self.tolerating += tolerating
        self.tier_sum_us = [a + b for a, b in zip(self.tier_sum_us, tiers, strict=True)]


def _ms(micros: float | None) -> float | None:
    return None if micros is None else round(micros / 1000, 3)


LATENCY_QUANTILES = (0.5, 0.95, 0.99)


def latency_quantiles(merged: histogram.Merged) -> list[list[float | None]]:
    """p50, p95 and p99 of every group of ``merged`` at once, for :func:`figures`."""
    return [
        [None if math.isnan(v) else v for v in row]
        for row in merged.quantiles_of_each(LATENCY_QUANTILES).tolist()
    ]


def figures(
    totals: Totals,
    merged: histogram.Merged,
    group: int,
    tier_merged: histogram.Merged | None = None,
    quantiles: Sequence[float | None] | None = None,
) -> dict[str, Any]:
    """The figures of one group, as the API returns them.

    Args:
        quantiles: this group's row of :func:`latency_quantiles`, when the
            caller computed every group's at once.
    """
    count = totals.calls
    p50, p95, p99 = quantiles if quantiles is not None else merged.quantiles(group, LATENCY_QUANTILES)
    result: dict[str, Any] = {
        "count": count,
        "errors": totals.errors,
        "error_rate": round(totals.errors / count, 6) if count else 0.0,
        "p50_ms": _ms(p50),
        "p95_ms": _ms(p95),
        "p99_ms": _ms(p99),
        "mean_ms": _ms(totals.duration_sum_us / count) if count else None,
        "apdex": round((totals.satisfied + totals.tolerating / 2) / count, 4) if count else None,
        "tier_ms": {
            tier: round(total / count / 1000, 3)
            for tier, total in zip(TIERS, totals.tier_sum_us, strict=True)
            if total and count
        },
    }
    if tier_merged is not None:
        # Over every call, as tier_ms is: a call that spent no time in a tier is
        # a 0 there (the tier histogram only holds the calls that did).
        result["tier_p95_ms"] = {
            tier: _ms(
                tier_merged.quantiles(
                    group, (0.95,), dimension=index, zeros=max(0, count - tier_merged.count(group, index))
                )[0]
            )
            for index, tier in enumerate(TIERS)
            if totals.tier_sum_us[index] and count
        }
    return result


async def transaction_figures(
    conn: AsyncConnection,
    tenant_id: int,
    segments: Sequence[Segment],
    service: str | None,
    tier_p95: bool = False,
) -> list[dict[str, Any]]:
    """Every business transaction over the segments with its figures, as the
    API lists them (``tier_p95_ms`` too when asked: it reads the per-tier
    histograms, several times the size of the latency ones)."""
    tier_latency: list[bytes] | None = [] if tier_p95 else None
    groups = await bt_groups(conn, tenant_id, segments, service, tier_latency)
    merged = histogram.Merged(range(len(groups)), (latency for *_, latency in groups))
    tier_merged = histogram.Merged(range(len(groups)), tier_latency) if tier_latency is not None else None
    quantiles = latency_quantiles(merged)
    return [
        {"service": name, "bt": bt, **figures(totals, merged, index, tier_merged, quantiles[index])}
        for index, (name, bt, totals, _) in enumerate(groups)
    ]
