"""Writing spans: binary COPY, idempotent, durable on return.

This is the hot path of the whole platform. A request's spans are encoded
straight into PostgreSQL's binary COPY format (no intermediate row objects;
timestamps as integers, ids as raw bytes) and written in one transaction with
the resources they refer to. :func:`write_spans` returns only after COMMIT, with
``synchronous_commit`` on: when it returns, the spans are on disk.

Retries are expected (an SDK that timed out resends the same batch), so writes
are idempotent on ``(tenant_id, trace_id, span_id, start_time)``. COPY cannot
skip duplicates, so the common case COPYs directly into ``spans`` inside a
savepoint; only when that hits the unique index does the batch go through a
staging table and ``INSERT ... ON CONFLICT DO NOTHING``.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import psycopg.errors
from psycopg import AsyncConnection

from tierscope.store import partitions
from tierscope.store.errors import wrap_errors
from tierscope.store.queries import QUERIES

COLUMNS = (
    "tenant_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "start_time",
    "duration_us",
    "service",
    "name",
    "kind",
    "tier",
    "component",
    "status_code",
    "resource_id",
    "scope",
    "span_pb",
)
_COPY_SPANS = f"COPY spans ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_COPY_STAGING = f"COPY spans_incoming ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
_CREATE_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS spans_incoming (LIKE spans INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
)
_MERGE_STAGING = (  # built from the constant column list above, never from input
    f"INSERT INTO spans ({', '.join(COLUMNS)}) "  # noqa: S608
    f"SELECT {', '.join(COLUMNS)} FROM spans_incoming ON CONFLICT DO NOTHING"
)

_HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
_TRAILER = b"\xff\xff"
_NULL = b"\xff\xff\xff\xff"
# PostgreSQL timestamps count microseconds from 2000-01-01 UTC.
_PG_EPOCH_US = 946_684_800 * 1_000_000
_NS_PER_DAY = 86_400 * 10**9

_ids = struct.Struct(">hii i16s i8s")  # field count, tenant_id, trace_id, span_id
_times = struct.Struct(">iqiq")  # start_time, duration_us
_int2 = struct.Struct(">ih")
_len = struct.Struct(">i")


def _no_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL: it becomes U+FFFD, the replacement character."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def _no_nul_json(value: Any) -> Any:
    """The same for every string in a JSON value (jsonb refuses ``\\u0000`` too)."""
    if isinstance(value, str):
        return _no_nul(value)
    if isinstance(value, dict):
        return {_no_nul(key): _no_nul_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_no_nul_json(item) for item in value]
    return value


def _text(value: str) -> bytes:
    """A text field: length, then UTF-8."""
    data = _no_nul(value).encode()
    return _len.pack(len(data)) + data


def _small(value: int) -> bytes:
    return _int2.pack(2, value)


_SMALL = {value: _small(value) for value in range(-1, 8)}


@dataclass(frozen=True)
class Resource:
    """An OpenTelemetry resource, written once per tenant and referred to by id."""

    resource_id: int
    service: str
    attributes: dict[str, Any]


class SpanSource:
    """The fields shared by every span of one resource and scope, pre-encoded."""

    __slots__ = ("head", "tail")

    def __init__(self, service: str, resource_id: int, scope: str | None) -> None:
        self.head = _text(service)
        self.tail = struct.pack(">iq", 8, resource_id) + (_text(scope) if scope else _NULL)


class SpanRows:
    """The spans of one request, encoded for ``COPY ... (FORMAT BINARY)``."""

    def __init__(self, tenant_id: int) -> None:
        self.tenant_id = tenant_id
        self.count = 0
        self.first_ns = 0
        self.last_ns = 0
        self._parts: list[bytes] = [_HEADER]
        # Names, tiers and components repeat within a batch: encode each once.
        self._texts: dict[str, bytes] = {}

    def add(
        self,
        source: SpanSource,
        trace_id: bytes,
        span_id: bytes,
        parent_span_id: bytes,
        start_ns: int,
        duration_ns: int,
        name: str,
        kind: int,
        tier: str,
        component: str | None,
        status_code: int,
        span_pb: bytes,
    ) -> None:
        """Append one span. Ids must already be validated (16 and 8 bytes)."""
        texts = self._texts
        name_field = texts.get(name)
        if name_field is None:
            name_field = texts[name] = _text(name)
        tier_field = texts.get(tier)
        if tier_field is None:
            tier_field = texts[tier] = _text(tier)
        if component is None:
            component_field = _NULL
        else:
            component_field = texts.get(component)
            if component_field is None:
                component_field = texts[component] = _text(component)
        self._parts.append(
            b"".join(
                (
                    _ids.pack(15, 4, self.tenant_id, 16, trace_id, 8, span_id),
                    _len.pack(8) + parent_span_id if parent_span_id else _NULL,
                    _times.pack(8, start_ns // 1000 - _PG_EPOCH_US, 8, duration_ns // 1000),
                    source.head,
                    name_field,
                    _SMALL.get(kind) or _small(kind),
                    tier_field,
                    component_field,
                    _SMALL.get(status_code) or _small(status_code),
                    source.tail,
                    _len.pack(len(span_pb)),
                    span_pb,
                )
            )
        )
        if self.count == 0 or start_ns < self.first_ns:
            self.first_ns = start_ns
        if start_ns > self.last_ns:
            self.last_ns = start_ns
        self.count += 1

    def copy_data(self) -> bytes:
        return b"".join((*self._parts, _TRAILER))

    def days(self) -> set[date]:
        """The UTC days the spans start on (the partitions they need)."""
        first, last = self.first_ns // _NS_PER_DAY, self.last_ns // _NS_PER_DAY
        epoch = date(1970, 1, 1)
        return {epoch + timedelta(days=day) for day in range(first, last + 1)}


@dataclass(frozen=True)
class WriteResult:
    stored: int
    duplicates: int


@wrap_errors
async def write_spans(conn: AsyncConnection, rows: SpanRows, resources: list[Resource]) -> WriteResult:
    """Store a request's spans durably; spans already stored are skipped.

    Raises:
        StoreUnavailable: the store is down, hung or out of resources (retry).
        StoreError: the store refused the data.
    """
    if rows.count == 0:
        return WriteResult(stored=0, duplicates=0)
    data = rows.copy_data()
    try:
        return await _write(conn, rows, data, resources)
    except psycopg.errors.CheckViolation as exc:
        # "no partition of relation spans found for row": a day maintenance has not
        # prepared yet (it runs every few minutes); prepare it and try once more.
        if "partition" not in str(exc):
            raise
        await partitions.ensure_days(conn, rows.days())
        return await _write(conn, rows, data, resources)


async def _write(
    conn: AsyncConnection, rows: SpanRows, data: bytes, resources: list[Resource]
) -> WriteResult:
    async with conn.transaction():
        for resource in resources:
            await conn.execute(
                QUERIES["insert_resource"],
                {
                    "tenant_id": rows.tenant_id,
                    "resource_id": resource.resource_id,
                    "service": _no_nul(resource.service),
                    "attributes": json.dumps(_no_nul_json(resource.attributes)),
                },
            )
        try:
            # A savepoint: the fast path fails on a span stored before.
            async with conn.transaction(), conn.cursor().copy(_COPY_SPANS) as copy:
                await copy.write(data)
            return WriteResult(stored=rows.count, duplicates=0)
        except psycopg.errors.UniqueViolation:
            pass
        # Some spans are stored already (a retried request): merge, skipping those.
        await conn.execute(_CREATE_STAGING)
        async with conn.cursor().copy(_COPY_STAGING) as copy:
            await copy.write(data)
        cur = await conn.execute(_MERGE_STAGING)
        stored = max(cur.rowcount, 0)
    return WriteResult(stored=stored, duplicates=rows.count - stored)
