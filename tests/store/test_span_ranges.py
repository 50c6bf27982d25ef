"""The BRIN indexes of spans stay summarized, so a window of arrival time reads that
window's pages and not the whole unsummarized tail of the partition.

PostgreSQL's autosummarize drops requests once 256 are queued (at thousands
of spans a second, most of them): the tests reproduce that state by
desummarizing the ranges, then measure what a window read touches.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tierscope.config import load_settings
from tierscope.processing.processor import Processor
from tierscope.store import Database, partitions, span_ranges
from tierscope.store.span_columns import _WINDOW_QUERIES
from tierscope.store.span_ranges import SpanRanges

pytestmark = pytest.mark.anyio
# An hour safely in the past, so the processor's windows reach it whatever the time of day
DAY = (datetime.now(UTC) - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
PARTITION = partitions.partition_name("spans", DAY.date())
INDEX = f"{PARTITION}_received_at_idx"
BATCH = 40_000  # about 1,600 heap pages: 50 ranges of 32 pages
# A stored span of a realistic size (about 600 bytes of OTLP)
SPAN_PB = Span(
    name="SELECT",
    attributes=[KeyValue(key="db.statement", value=AnyValue(string_value="SELECT ? FROM t " + "x" * 560))],
).SerializeToString()


def insert_spans(dsn: str, first: int, count: int) -> None:
    """``count`` spans started on DAY, one received every millisecond from
    DAY + ``first`` ms on, with a span_pb of a realistic size."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO spans (tenant_id, trace_id, span_id, start_time, duration_us, service, name,
                                  kind, tier, status_code, resource_id, span_pb, received_at)
               SELECT (SELECT id FROM tenants WHERE name = 'ranges'), substr(sha224(int8send(i)), 1, 16),
                      int8send(i), %(day)s, 1000, 'svc', 'GET /x',
                      3, 'db', 0, 1, %(span_pb)s,
                      %(day)s + i * interval '1 millisecond'
               FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i""",
            {"day": DAY, "first": first, "last": first + count - 1, "span_pb": SPAN_PB},
        )


def desummarize(dsn: str) -> None:
    """Forget every range's summary, as autosummarize's dropped requests leave them."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT brin_desummarize_range(%s::regclass, b) FROM generate_series(0, %s, 32) AS b",
            (INDEX, table_pages(dsn)),
        )


def table_pages(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        (blocks,) = conn.execute(f"SELECT pg_relation_size('{PARTITION}') / 8192").fetchone()  # type: ignore[misc]
    return int(blocks)


def pages_read(dsn: str, since_ms: int, until_ms: int) -> int:
    """Heap pages a processing window read of ``[DAY + since_ms, DAY + until_ms)`` touches."""
    params = {
        "since": DAY + timedelta(milliseconds=since_ms),
        "until": DAY + timedelta(milliseconds=until_ms),
        "count": 1,
        "index": 0,
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")  # the plan processing gets on a big table
        conn.execute("SET max_parallel_workers_per_gather = 0")  # every page counted in one node
        (plan,) = conn.execute(  # type: ignore[misc]
            f"EXPLAIN (ANALYZE, FORMAT JSON) {_WINDOW_QUERIES[0]}", params
        ).fetchone()
    found: list[int] = []

    def walk(node: dict) -> None:
        if node.get("Node Type") == "Bitmap Heap Scan":
            found.append(int(node.get("Lossy Heap Blocks", 0)) + int(node.get("Exact Heap Blocks", 0)))
        for child in node.get("Plans", []):
            walk(child)

    walk((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"])
    return sum(found)


@pytest.fixture
async def spans_store(database_url: str) -> str:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await partitions.maintain(
            conn,
            retention={"spans": timedelta(days=7), "trace_summaries": timedelta(days=30)},
            accept_from=timedelta(days=1),
            now=DAY,
        )
        await conn.execute("INSERT INTO tenants (name) VALUES ('ranges')")
    return database_url


async def test_a_window_reads_its_own_pages_once_the_new_ranges_are_summarized(spans_store: str) -> None:
    dsn = spans_store
    insert_spans(dsn, 0, BATCH)
    desummarize(dsn)
    last_second = (BATCH - 1000, BATCH)
    whole = table_pages(dsn)
    unsummarized = pages_read(dsn, *last_second)
    assert unsummarized >= 0.9 * whole, "every unsummarized range is read whole"

    index = SpanRanges()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await index.catch_up(conn) >= 0.9 * whole / 32
        summarized = pages_read(dsn, *last_second)
        # One second of forty: its own pages and at most the two ranges around them.
        assert summarized <= whole / 40 + 2 * 32, f"one second of 40 read {summarized} of {whole} pages"

        # Spans keep arriving; their ranges are summarized by the next call,
        # which starts where the last one stopped.
        insert_spans(dsn, BATCH, BATCH)
        desummarize_from = BATCH  # only the new spans' ranges lose their summary
        with psycopg.connect(dsn, autocommit=True) as other:
            other.execute(
                f"""SELECT brin_desummarize_range('{INDEX}'::regclass, b)
                    FROM generate_series((SELECT min((ctid::text::point)[0])::bigint FROM {PARTITION}
                                          WHERE received_at >= %s), %s, 32) AS b""",  # noqa: S608 - test constants
                (DAY + timedelta(milliseconds=desummarize_from), 10**6),
            )
        newest = (2 * BATCH - 1000, 2 * BATCH)
        whole = table_pages(dsn)
        assert pages_read(dsn, *newest) >= 0.4 * whole
        assert await index.catch_up(conn) > whole / 2 / 32 * 0.9
        assert pages_read(dsn, *newest) <= whole / 80 + 2 * 32
        assert await index.catch_up(conn) == 0, "nothing new: nothing summarized"


async def test_the_processor_summarizes_before_it_reads(spans_store: str) -> None:
    dsn = spans_store
    insert_spans(dsn, 0, BATCH)
    desummarize(dsn)
    whole = table_pages(dsn)
    assert pages_read(dsn, BATCH - 1000, BATCH) >= 0.9 * whole
    async with Database(dsn) as database:
        report = await Processor(database, load_settings(settle_delay="1s")).cycle()
    assert "summarize" in report.timings
    assert pages_read(dsn, BATCH - 1000, BATCH) <= whole / 40 + 2 * 32


@pytest.mark.parametrize(
    ("holder", "within"),
    [
        # VACUUM holds the table's lock: waited for briefly, then left for the next cycle.
        (f"LOCK TABLE {PARTITION} IN SHARE UPDATE EXCLUSIVE MODE", 2.0),
        # Another shard is summarizing: gone on from at once, no waiting.
        (f"SELECT pg_advisory_xact_lock({span_ranges._LOCK_KEY})", 0.5),
    ],
    ids=["vacuum-holds-the-table", "another-shard-summarizes"],
)
async def test_a_busy_table_or_shard_is_not_waited_for_and_the_next_cycle_catches_up(
    spans_store: str, holder: str, within: float
) -> None:
    dsn = spans_store
    insert_spans(dsn, 0, BATCH)
    desummarize(dsn)
    index = SpanRanges()
    with psycopg.connect(dsn) as busy:
        busy.execute(holder)  # type: ignore[arg-type]
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            started = time.monotonic()
            assert await index.catch_up(conn) == 0
            assert time.monotonic() - started < within
        busy.rollback()
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        assert await asyncio.wait_for(index.catch_up(conn), 30) >= 0.9 * table_pages(dsn) / 32
    assert pages_read(dsn, BATCH - 1000, BATCH) <= table_pages(dsn) / 40 + 2 * 32
