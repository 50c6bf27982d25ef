"""The processor sends thousands of (tenant, trace) keys to PostgreSQL packed
into two byte strings; what PostgreSQL unpacks must be exactly what was sent."""

from __future__ import annotations

import itertools
import os
import random
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tierscope.collector.convert import Limits, convert
from tierscope.store import partitions, processing, span_columns
from tierscope.store.spans import write_spans
from tierscope.testing import otlp

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "tenants",
    [
        pytest.param([1], id="one key of the first tenant"),
        pytest.param([1, 255, 256, 65_536, 2_147_483_647], id="tenant ids that need every byte"),
        pytest.param(list(range(1, 5_001)), id="five thousand keys in one cycle"),
    ],
)
async def test_packed_keys_unpack_to_the_same_tenant_and_trace(database_url: str, tenants: list[int]) -> None:
    keys = [(tenant, os.urandom(16)) for tenant in tenants]
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            f"SELECT tenant_id, trace_id FROM ({processing.UNPACK_TRACES}) AS c",  # noqa: S608
            processing.packed_traces(keys),
        )
        assert [(tenant, bytes(trace)) for tenant, trace in await cur.fetchall()] == keys


def test_shards_deal_arrival_time_in_slots_each_read_by_exactly_one() -> None:
    rnd = random.Random(4)
    for count in (1, 2, 3):
        shards = [processing.Shard(index, count) for index in range(count)]
        for _ in range(20):
            start = datetime(2026, 12, 7, tzinfo=UTC) + timedelta(microseconds=rnd.randrange(10**9))
            horizon = start + timedelta(seconds=rnd.uniform(0, 12))
            windows = []
            for shard in shards:
                watermark = start
                while True:
                    since = shard.window_start(watermark)
                    until = shard.window_end(since, horizon, timedelta(seconds=30))
                    if until <= since:
                        break
                    assert until <= horizon
                    assert shard.owns(since)
                    # A window never reaches into another shard's time.
                    assert shard.owns(until - timedelta(microseconds=1))
                    windows.append((since, until))
                    watermark = until
            windows.sort()
            for (_, end), (begin, _) in itertools.pairwise(windows):
                assert end == begin, "no moment read twice, none skipped"
            if windows:
                assert windows[0][0] == start
                # Alone, a shard reads up to the horizon; with others, whole slots only.
                unread = horizon - windows[-1][1]
                assert unread == timedelta(0) if count == 1 else unread < processing.SLOT
            for _ in range(50):  # every moment has exactly one owner
                moment = start + timedelta(microseconds=rnd.randrange(10**8))
                assert sum(shard.owns(moment) for shard in shards) == 1


async def test_spans_read_as_columns_are_the_stored_spans(database_url: str) -> None:
    """Processing reads a window as packed columns; each position must be one
    stored span, every field of it, with and without a parent."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        row = await (await conn.execute("INSERT INTO tenants (name) VALUES ('c') RETURNING id")).fetchone()
        assert row is not None
        trace = os.urandom(16)
        root = otlp.span(trace_id=trace, name="GET /leads", kind=2)
        spans = [root] + [
            otlp.span(trace_id=trace, parent_span_id=root.span_id, name=f"SELECT {i}", kind=3 if i % 2 else 1)
            for i in range(40)
        ]
        conversion = convert(otlp.request(spans), row[0], Limits(), time.time_ns())
        assert (await write_spans(conn, conversion.rows, conversion.resources)).stored == 41
        since, until = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)
        columns = await span_columns.window_columns(conn, since, until)
        cur = await conn.execute(
            """SELECT span_id, parent_span_id, duration_us, service, kind, tier, component, peer,
                      status_code, resource_id, (date_part('epoch', start_time) * 1000000)::int8
               FROM spans WHERE tenant_id = %s""",
            (row[0],),
        )
        stored = {bytes(r[0]): r for r in await cur.fetchall()}
        read = [columns.row(i) for i in range(len(columns))]
        mine = [r for r in read if r.tenant_id == row[0]]
        assert len(mine) == 41
        for span in mine:
            expected = stored[span.span_id]
            assert span.trace_id == trace
            assert span.parent_span_id == (bytes(expected[1]) if expected[1] else None)
            assert (span.duration_us, span.service, span.kind, span.tier, span.component, span.peer) == tuple(
                expected[2:8]
            )
            assert (span.status_code, span.resource_id, span.start_us) == tuple(expected[8:11])
            # Names and the OTLP bytes are read only for spans that may be an entry.
            assert (span.span_pb is not None) == (span.kind == 2 or span.parent_span_id is None)
        entry = next(r for r in mine if r.parent_span_id is None)
        assert entry.name == "GET /leads"


async def test_text_holding_the_separators_is_read_exactly(database_url: str) -> None:
    """Text fields travel joined by control characters; a value holding one of
    them must still come back whole (the window is then read with arrays)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        row = await (await conn.execute("INSERT INTO tenants (name) VALUES ('sep') RETURNING id")).fetchone()
        assert row is not None
        odd = "GET /a\x1fb\x1ec"
        spans = [otlp.span(trace_id=os.urandom(16), name=odd), otlp.span(trace_id=os.urandom(16))]
        conversion = convert(otlp.request(spans), row[0], Limits(), time.time_ns())
        assert (await write_spans(conn, conversion.rows, conversion.resources)).stored == 2
        since, until = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)
        columns = await span_columns.window_columns(conn, since, until)
        names = [columns.row(i).name for i in range(len(columns)) if columns.row(i).tenant_id == row[0]]
        assert sorted(names) == sorted([odd, "GET /leads"])


async def test_summaries_with_any_text_are_stored_exactly(database_url: str) -> None:
    """Summaries go to the store as hand-written COPY text: names holding tabs,
    newlines and backslashes, and absent fields, must come back unchanged."""
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        row = await (await conn.execute("INSERT INTO tenants (name) VALUES ('copy') RETURNING id")).fetchone()
        assert row is not None
        start_us = int(time.time() * 1e6) // 1000 * 1000 + 123
        odd = "POST /a\tb\nc\\d\r \\N"
        summaries = [
            processing.SummaryRow(
                row[0],
                os.urandom(16),
                start_us,
                1500,
                "crm\\web",
                odd,
                True,
                "db",
                "SELECT\t?",
                "{0,0,0,1200,0,300,0,0,0}",
                4,
                None,
                "s\n1",
                "branch\\b",
            ),
            processing.SummaryRow(
                row[0],
                os.urandom(16),
                start_us + 1,
                10,
                "crm",
                "GET /",
                False,
                None,
                None,
                "{0,0,0,10,0,0,0,0,0}",
                1,
                "u",
                None,
                None,
            ),
        ]
        async with conn.transaction():
            await partitions.ensure_days(conn, {datetime.now(UTC).date()}, "trace_summaries")
            inserted = await processing.insert_summaries(conn, summaries[1:])
            # One stored trace beside a new one: the new one is stored, the other skipped.
            mixed = await processing.insert_summaries(conn, summaries)
            again = await processing.insert_summaries(conn, summaries)
        assert inserted == {(s.tenant_id, s.trace_id) for s in summaries[1:]}
        assert mixed == {(summaries[0].tenant_id, summaries[0].trace_id)}
        assert again == set(), "a trace stored before is skipped"
        cur = await conn.execute(
            """SELECT trace_id, (date_part('epoch', start_time) * 1000000)::int8, duration_us, service, bt,
                      error, error_tier, error_component, tier_us, span_count, user_hash, session_id, site
               FROM trace_summaries WHERE tenant_id = %s""",
            (row[0],),
        )
        stored = {bytes(r[0]): r[1:] for r in await cur.fetchall()}
        for s in summaries:
            tier_us = [int(x) for x in s.tier_us.strip("{}").split(",")]
            assert stored[s.trace_id] == (
                s.start_us,
                s.duration_us,
                s.service,
                s.bt,
                s.error,
                s.error_tier,
                s.error_component,
                tier_us,
                s.span_count,
                s.user_hash,
                s.session_id,
                s.site,
            )
