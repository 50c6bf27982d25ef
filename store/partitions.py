"""Time partitions and retention for the tables that grow with traffic.

On plain PostgreSQL, ``spans`` and ``trace_summaries`` are range-partitioned by
UTC day. Maintenance creates a partition for every day a row may still land in
(from ``accept_from`` ago to a few days ahead) and drops whole partitions once
they are past their table's retention: dropping a partition is instant and
leaves no bloat, unlike ``DELETE``. With TimescaleDB the tables are hypertables
and retention is a Timescale policy kept equal to the same settings.

Rollups are not partitioned (far fewer rows); their finer resolutions are
trimmed by ``DELETE`` in :func:`trim_rollups`.

Maintenance runs at start-up and then periodically in every collector; an
advisory lock makes concurrent runs harmless.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from psycopg import AsyncConnection, sql

from tierscope.store.errors import wrap_errors

_logger = logging.getLogger(__name__)

_LOCK_KEY = 0x7473706172746974  # shared by every collector of a store
TABLES = ("spans", "trace_summaries")
DAYS_AHEAD = 3
_ROLLUP_TABLES = ("bt_rollups", "component_rollups", "edge_rollups", "rum_rollups")


@dataclass
class MaintenanceReport:
    created: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    timescale: bool = False


def partition_name(table: str, day: date) -> str:
    return f"{table}_p{day:%Y%m%d}"


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


async def is_hypertable(conn: AsyncConnection, table: str = "spans") -> bool:
    cur = await conn.execute("SELECT to_regclass('timescaledb_information.hypertables') IS NOT NULL")
    row = await cur.fetchone()
    if not row or not row[0]:
        return False
    cur = await conn.execute(
        "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s", (table,)
    )
    return await cur.fetchone() is not None


async def existing_partitions(conn: AsyncConnection, table: str = "spans") -> dict[date, str]:
    cur = await conn.execute(
        """SELECT c.relname FROM pg_inherits i
           JOIN pg_class c ON c.oid = i.inhrelid
           WHERE i.inhparent = %s::regclass""",
        (table,),
    )
    pattern = re.compile(rf"^{re.escape(table)}_p(\d{{8}})$")
    found: dict[date, str] = {}
    for (name,) in await cur.fetchall():
        match = pattern.match(name)
        if match:
            found[datetime.strptime(match.group(1), "%Y%m%d").date()] = name
    return found


@wrap_errors
async def maintain(
    conn: AsyncConnection,
    *,
    retention: Mapping[str, timedelta],
    accept_from: timedelta,
    now: datetime | None = None,
) -> MaintenanceReport:
    """Create the partitions rows may land in; drop those past their retention.

    Args:
        retention: how long each table in :data:`TABLES` keeps its rows.
        accept_from: how far back a span's start may be and still be accepted
            (``span_max_age``); partitions exist from then on.
        now: the clock, for tests.
    """
    now = now or datetime.now(UTC)
    report = MaintenanceReport()
    for table in TABLES:
        if await is_hypertable(conn, table):
            report.timescale = True
            await _timescale_retention(conn, table, retention[table])
    if report.timescale:
        return report
    async with conn.transaction():
        cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,))
        row = await cur.fetchone()
        if not row or not row[0]:
            return report  # another collector is doing it right now
        # Never wait long behind a busy table: try again on the next round.
        await conn.execute("SET LOCAL lock_timeout = '2s'")
        first = (now - accept_from).date()
        last = (now + timedelta(days=DAYS_AHEAD)).date()
        for table in TABLES:
            have = await existing_partitions(conn, table)
            day = first
            while day <= last:
                if day not in have:
                    await _create(conn, table, day)
                    report.created.append(partition_name(table, day))
                day += timedelta(days=1)
            horizon = now - retention[table]
            for day, name in sorted(have.items()):
                if _day_start(day + timedelta(days=1)) <= horizon:
                    await conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(name)))
                    report.dropped.append(name)
    if report.created or report.dropped:
        _logger.info("partitions: created %s, dropped %s", report.created or "none", report.dropped or "none")
    return report


@wrap_errors
async def ensure_days(conn: AsyncConnection, days: set[date], table: str = "spans") -> None:
    """Create partitions for these days if missing (a late or early batch)."""
    if await is_hypertable(conn, table):
        return
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        have = await existing_partitions(conn, table)
        for day in sorted(days - have.keys()):
            await _create(conn, table, day)


@wrap_errors
async def trim_rollups(
    conn: AsyncConnection, retention: Mapping[str, timedelta], now: datetime | None = None
) -> int:
    """Delete rollup rows older than their resolution's retention; returns rows deleted."""
    now = now or datetime.now(UTC)
    deleted = 0
    for table in _ROLLUP_TABLES:
        for resolution, keep in retention.items():
            cur = await conn.execute(
                sql.SQL("DELETE FROM {} WHERE resolution = %s AND bucket < %s").format(sql.Identifier(table)),
                (resolution, now - keep),
            )
            deleted += max(cur.rowcount, 0)
    return deleted


async def _create(conn: AsyncConnection, table: str, day: date) -> None:
    name = partition_name(table, day)
    await conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier(name),
            sql.Identifier(table),
            sql.Literal(_day_start(day)),
            sql.Literal(_day_start(day + timedelta(days=1))),
        )
    )
    # A partition's indexes copy the partitioned index's storage parameters,
    # autosummarize included, and a partitioned index cannot change them:
    # turn it off here (migration 0013 says why; processing summarizes).
    cur = await conn.execute(
        """SELECT c.relname FROM pg_index i
           JOIN pg_class c ON c.oid = i.indexrelid
           WHERE i.indrelid = %s::regclass AND 'autosummarize=on' = ANY (c.reloptions)""",
        (name,),
    )
    for (index,) in await cur.fetchall():
        await conn.execute(sql.SQL("ALTER INDEX {} SET (autosummarize = off)").format(sql.Identifier(index)))


async def _timescale_retention(conn: AsyncConnection, table: str, retention: timedelta) -> None:
    cur = await conn.execute(
        """SELECT job_id, config->>'drop_after' FROM timescaledb_information.jobs
           WHERE proc_name = 'policy_retention' AND hypertable_name = %s""",
        (table,),
    )
    row = await cur.fetchone()
    if row is not None:
        cur = await conn.execute("SELECT %s::interval = %s::interval", (row[1], retention))
        same = await cur.fetchone()
        if same and same[0]:
            return
        await conn.execute("SELECT remove_retention_policy(%s)", (table,))
    await conn.execute("SELECT add_retention_policy(%s, drop_after => %s)", (table, retention))
