"""The span writer: durable, idempotent, and safe with hostile text."""

from __future__ import annotations

import os
import time

import psycopg
import pytest

from tierscope.collector.convert import Limits, convert
from tierscope.store.spans import KnownResources, write_spans
from tierscope.testing import otlp

pytestmark = pytest.mark.anyio


async def tenant_id(conn: psycopg.AsyncConnection, name: str = "acme") -> int:
    row = await (
        await conn.execute("INSERT INTO tenants (name) VALUES (%s) RETURNING id", (name,))
    ).fetchone()
    assert row is not None
    return int(row[0])


async def write(
    conn: psycopg.AsyncConnection, tenant: int, spans: list, service: str = "erp"
) -> tuple[int, int]:
    conversion = convert(otlp.request(spans, service=service), tenant, Limits(), time.time_ns())
    result = await write_spans(conn, conversion.rows, conversion.resources)
    return result.stored, result.duplicates


async def test_partial_overlap_stores_only_the_new_spans(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        tenant = await tenant_id(conn)
        spans = [otlp.span(f"s{i}") for i in range(10)]
        assert await write(conn, tenant, spans[:6]) == (6, 0)
        assert await write(conn, tenant, spans[3:]) == (4, 3)
        assert await write(conn, tenant, spans) == (0, 10)
        count = await (await conn.execute("SELECT count(*) FROM spans")).fetchone()
        assert count == (10,)


async def test_the_same_span_ids_in_two_tenants_are_two_spans(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        first, second = await tenant_id(conn, "a"), await tenant_id(conn, "b")
        span = otlp.span()
        assert await write(conn, first, [span]) == (1, 0)
        assert await write(conn, second, [span]) == (1, 0)


async def test_nul_characters_and_odd_text_are_stored_safely(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        tenant = await tenant_id(conn)
        span = otlp.span(
            "bad\x00name <script>alert(1)</script> ünïcødé 🚀",
            kind=3,
            attributes={"db.system": "postgresql", "db.statement": "SELECT '\x00'"},
        )
        conversion = convert(
            otlp.request(
                [span], service="svc\x00name", resource={"host.name": "h\x00", "literal": "\\u0000"}
            ),
            tenant,
            Limits(),
            time.time_ns(),
        )
        assert (await write_spans(conn, conversion.rows, conversion.resources)).stored == 1
        row = await (await conn.execute("SELECT name, service, component FROM spans")).fetchone()
        assert row == (
            "bad\ufffdname <script>alert(1)</script> ünïcødé 🚀",
            "svc\ufffdname",
            "SELECT '\ufffd'",
        )
        resource = await (await conn.execute("SELECT service, attributes FROM resources")).fetchone()
        assert resource is not None
        assert resource[0] == "svc\ufffdname"
        assert resource[1]["host.name"] == "h\ufffd"
        assert resource[1]["literal"] == "\\u0000", "text that merely looks like an escape is kept"


async def test_a_resource_is_stored_once(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        tenant = await tenant_id(conn)
        for _ in range(3):
            await write(conn, tenant, [otlp.span(), otlp.span()], service="crm-web")
        rows = await (await conn.execute("SELECT service, attributes FROM resources")).fetchall()
        assert rows == [("crm-web", {"service.name": "crm-web"})]


async def test_out_of_range_kind_and_status_are_stored_as_unspecified(database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        tenant = await tenant_id(conn)
        span = otlp.span(trace_id=os.urandom(16))
        span.kind = 40000  # proto3 enums are open: any int32 can arrive
        span.status.code = 99
        assert await write(conn, tenant, [span]) == (1, 0)
        row = await (await conn.execute("SELECT kind, status_code FROM spans")).fetchone()
        assert row == (0, 0)


async def test_when_the_writer_returns_the_spans_are_committed_for_every_other_session(
    database_url: str,
) -> None:
    # The first batch brings a new resource (a transaction of its own), the
    # next ones only known resources: the COPY alone, its own transaction.
    known = KnownResources()
    async with (
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as other,
    ):
        tenant = await tenant_id(conn)
        for batch in range(3):
            spans = [otlp.span(f"s{batch}-{i}") for i in range(5)]
            conversion = convert(otlp.request(spans), tenant, Limits(), time.time_ns())
            result = await write_spans(conn, conversion.rows, conversion.resources, known)
            assert result.stored == 5
            assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
            count = await (await other.execute("SELECT count(*) FROM spans")).fetchone()
            assert count == (5 * (batch + 1),)
        resources = await (await other.execute("SELECT count(*) FROM resources")).fetchone()
        assert resources == (1,)
