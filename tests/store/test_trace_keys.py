"""The processor sends thousands of (tenant, trace) keys to PostgreSQL packed
into two byte strings; what PostgreSQL unpacks must be exactly what was sent."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tierscope.collector.convert import Limits, convert
from tierscope.store import processing
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
            f"SELECT tenant_id, trace_id FROM ({processing._UNPACK_TRACES}) AS c",  # noqa: S608
            processing._packed(keys),
        )
        assert [(tenant, bytes(trace)) for tenant, trace in await cur.fetchall()] == keys


async def test_each_span_is_read_by_exactly_the_shard_that_owns_its_trace(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        row = await (await conn.execute("INSERT INTO tenants (name) VALUES ('t') RETURNING id")).fetchone()
        assert row is not None
        spans = [otlp.span(trace_id=os.urandom(16)) for _ in range(300)]
        conversion = convert(otlp.request(spans), row[0], Limits(), time.time_ns())
        assert (await write_spans(conn, conversion.rows, conversion.resources)).stored == 300
        since, until = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)
        read: list[bytes] = []
        for index in range(3):
            shard = processing.Shard(index, 3)
            mine = [s.trace_id for s in await processing.window_spans(conn, since, until, shard)]
            assert mine, "every shard of three gets some of 300 random traces"
            assert all(shard.owns(trace) for trace in mine)
            read += mine
        assert sorted(read) == sorted(s.trace_id for s in spans)
