"""Concurrent requests written together: one COPY for many, each still answered
for its own spans, retries and a hung store handled as when written alone."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import psycopg
import pytest

from tierscope.collector.convert import Conversion, Limits, convert
from tierscope.collector.group_write import GroupWriter
from tierscope.store import Database, StoreUnavailable
from tierscope.store.spans import KnownResources, SpanRows, write_spans
from tierscope.testing import otlp

pytestmark = pytest.mark.anyio


async def tenant(conn: psycopg.AsyncConnection, name: str) -> int:
    cur = await conn.execute("INSERT INTO tenants (name) VALUES (%s) RETURNING id", (name,))
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def batch(tenant_id: int, prefix: str, count: int = 20) -> Conversion:
    spans = [otlp.span(f"{prefix}-{i}") for i in range(count)]
    return convert(otlp.request(spans, service="erp-api"), tenant_id, Limits(), time.time_ns())


class Groups:
    """What the writer reports after each store write: (requests, spans)."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def __call__(self, requests: int, spans: int) -> None:
        self.seen.append((requests, spans))


async def store_resources(conn: psycopg.AsyncConnection, *conversions: Conversion) -> None:
    """Store the batches' resources, as a worker's first request of a service does."""
    for conversion in conversions:
        await write_spans(conn, SpanRows(conversion.rows.tenant_id), conversion.resources)


async def stored_by_tenant(conn: psycopg.AsyncConnection) -> dict[int, int]:
    cur = await conn.execute("SELECT tenant_id, count(*) FROM spans GROUP BY tenant_id")
    return {int(t): int(n) for t, n in await cur.fetchall()}


async def writer_blocked_by_a_lock(
    conn: psycopg.AsyncConnection, writer: GroupWriter, first: Conversion
) -> asyncio.Task:
    """Start a write that waits on a lock held by ``conn``'s open transaction, so
    the requests that come next queue behind the only writer."""
    await conn.execute("BEGIN")
    await conn.execute("LOCK TABLE spans IN ACCESS EXCLUSIVE MODE")
    task = asyncio.create_task(writer.write(first.rows, first.resources))
    await asyncio.sleep(0.2)
    return task


async def test_requests_that_wait_together_are_written_in_one_statement(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        first, second = await tenant(conn, "north"), await tenant(conn, "south")
        batches = [batch(first if i % 2 else second, f"r{i}") for i in range(7)]
        await store_resources(conn, batches[0], batches[1])
        groups = Groups()
        async with Database(database_url, pool_size=2) as database:
            known = KnownResources()
            for conversion in batches:  # the resources are known: the usual case under load
                known.remember(conversion.rows.tenant_id, conversion.resources)
            writer = GroupWriter(database, known, writers=1, observe_group=groups)
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as locker:
                head = await writer_blocked_by_a_lock(locker, writer, batches[0])
                rest = [asyncio.create_task(writer.write(b.rows, b.resources)) for b in batches[1:]]
                await asyncio.sleep(0.1)
                await locker.execute("COMMIT")
            results = await asyncio.gather(head, *rest)
        assert [(r.stored, r.duplicates) for r in results] == [(20, 0)] * 7
        assert groups.seen == [(1, 20), (6, 120)]  # the six that queued went in one COPY
        assert await stored_by_tenant(conn) == {first: 60, second: 80}


async def test_a_retried_request_in_a_group_is_skipped_and_the_others_stored(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        tenant_id = await tenant(conn, "acme")
        retried, fresh, blocker = batch(tenant_id, "old"), batch(tenant_id, "new"), batch(tenant_id, "b")
        await write_spans(conn, retried.rows, retried.resources)  # the first attempt was stored
        groups = Groups()
        async with Database(database_url, pool_size=2) as database:
            known = KnownResources()
            known.remember(tenant_id, retried.resources)
            writer = GroupWriter(database, known, writers=1, observe_group=groups)
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as locker:
                head = await writer_blocked_by_a_lock(locker, writer, blocker)
                again = asyncio.create_task(writer.write(retried.rows, retried.resources))
                new = asyncio.create_task(writer.write(fresh.rows, fresh.resources))
                await asyncio.sleep(0.1)
                await locker.execute("COMMIT")
            results = await asyncio.gather(head, again, new)
        assert [(r.stored, r.duplicates) for r in results] == [(20, 0), (0, 20), (20, 0)]
        assert groups.seen == [(1, 20), (2, 40)]
        assert await stored_by_tenant(conn) == {tenant_id: 60}  # no span twice


async def test_a_request_no_writer_takes_in_time_gets_store_unavailable(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        tenant_id = await tenant(conn, "acme")
        stuck, late = batch(tenant_id, "stuck"), batch(tenant_id, "late")
        await store_resources(conn, stuck)
        async with Database(database_url, pool_size=2, statement_timeout=timedelta(seconds=30)) as database:
            known = KnownResources()
            known.remember(tenant_id, stuck.resources)
            writer = GroupWriter(database, known, writers=1, wait_timeout=0.5)
            async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as locker:
                head = await writer_blocked_by_a_lock(locker, writer, stuck)
                started = time.monotonic()
                with pytest.raises(StoreUnavailable, match=r"no store connection within 0\.5s"):
                    await writer.write(late.rows, late.resources)
                waited = time.monotonic() - started
                await locker.execute("COMMIT")
            assert (await head).stored == 20  # the one in the statement still completes
            await writer.close()
        assert 0.4 < waited < 2.0
        assert await stored_by_tenant(conn) == {tenant_id: 20}  # the refused one was not stored
