"""Daily partitions: created ahead, dropped past each table's retention."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest

from tierscope.collector.convert import Limits, convert
from tierscope.store import migrations, partitions
from tierscope.store.spans import write_spans
from tierscope.testing import otlp

pytestmark = pytest.mark.anyio
NOW = datetime(2026, 11, 24, 15, 30, tzinfo=UTC)
RETENTION = {"spans": timedelta(days=7), "trace_summaries": timedelta(days=30)}
ACCEPT = timedelta(days=3)


async def names(conn: psycopg.AsyncConnection, table: str = "spans") -> list[str]:
    return sorted((await partitions.existing_partitions(conn, table)).values())


async def test_partitions_cover_the_acceptance_window_and_expire(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        report = await partitions.maintain(conn, retention=RETENTION, accept_from=ACCEPT, now=NOW)
        days = [date(2026, 11, d) for d in range(21, 28)]
        assert report.created == [partitions.partition_name(t, d) for t in partitions.TABLES for d in days]
        again = await partitions.maintain(conn, retention=RETENTION, accept_from=ACCEPT, now=NOW)
        assert again == partitions.MaintenanceReport()
        # Ten days later: spans past their 7-day retention are dropped, summaries kept.
        later = NOW + timedelta(days=10)
        report = await partitions.maintain(conn, retention=RETENTION, accept_from=ACCEPT, now=later)
        expired = [partitions.partition_name("spans", date(2026, 11, d)) for d in range(21, 27)]
        assert report.dropped == expired
        remaining = await names(conn)
        assert remaining[0] == "spans_p20261127"  # ends Nov 28, inside 7 days of Dec 4 15:30
        assert remaining[-1] == "spans_p20261207"
        assert (await names(conn, "trace_summaries"))[0] == "trace_summaries_p20261121"


async def test_rollups_are_trimmed_per_resolution(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for resolution, age in (("minute", 9), ("minute", 1), ("hour", 9), ("day", 9)):
            await conn.execute(
                """INSERT INTO edge_rollups (tenant_id, resolution, bucket, source, target, target_kind,
                                            calls, errors, duration_sum_us, latency)
                   VALUES (1, %s, %s, 'a', 'b', 'service', 1, 0, 1, '')""",
                (resolution, NOW - timedelta(days=age)),
            )
        keep = {"minute": timedelta(days=8), "hour": timedelta(days=90), "day": timedelta(days=800)}
        assert await partitions.trim_rollups(conn, keep, now=NOW) == 1
        left = await (await conn.execute("SELECT resolution FROM edge_rollups ORDER BY 1")).fetchall()
        assert left == [("day",), ("hour",), ("minute",)]


async def test_a_span_for_a_day_without_partition_gets_one(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        assert await names(conn) == []  # the template database has no partitions yet
        row = await (await conn.execute("INSERT INTO tenants (name) VALUES ('t') RETURNING id")).fetchone()
        assert row is not None
        conversion = convert(otlp.request([otlp.span()]), row[0], Limits(), time.time_ns())
        result = await write_spans(conn, conversion.rows, conversion.resources)
        assert result.stored == 1
        assert len(await names(conn)) == 1


async def autosummarized(conn: psycopg.AsyncConnection, parent: str) -> list[str]:
    """The BRIN indexes of ``parent``'s partitions that ask autovacuum to summarize."""
    cur = await conn.execute(
        """SELECT c.relname FROM pg_inherits h
           JOIN pg_index i ON i.indrelid = h.inhrelid
           JOIN pg_class c ON c.oid = i.indexrelid
           WHERE h.inhparent = %s::regclass AND 'autosummarize=on' = ANY (c.reloptions)""",
        (parent,),
    )
    return [name for (name,) in await cur.fetchall()]


async def test_span_partitions_leave_summarizing_to_processing(database_url: str) -> None:
    """Autosummarize's requests cancel VACUUM of the partition they summarize and
    are dropped under load (migration 0013): no span partition asks for them,
    whether created by maintenance or by a store from before the migration."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await partitions.maintain(conn, retention=RETENTION, accept_from=ACCEPT, now=NOW)
        assert await names(conn)
        assert await autosummarized(conn, "spans") == []
        # A partition as stores before migration 0013 created them.
        await conn.execute(
            "CREATE TABLE spans_p20300101 PARTITION OF spans FOR VALUES FROM ('2030-01-01') TO ('2030-01-02')"
        )
        assert await autosummarized(conn, "spans") == ["spans_p20300101_received_at_idx"]
        (migration,) = [m for m in migrations.available() if m.version == 13]
        await conn.execute(migration.sql)  # type: ignore[arg-type]
        assert await autosummarized(conn, "spans") == []
