"""Writing spans: binary COPY, idempotent, durable on return.

This is the hot path of the whole platform. A request's spans are encoded
straight into PostgreSQL's binary COPY format (no intermediate row objects;
timestamps as integers, ids as raw bytes) and written in one transaction with
the resources they refer to. :func:`write_spans` returns only after COMMIT, with
``synchronous_commit`` on: when it returns, the spans are on disk.

Most requests refer only to resources this worker has stored already, so
their transaction is the COPY alone: on an autocommit connection one statement
is its own transaction, which the server commits (and, with
``synchronous_commit`` on, flushes) before it answers the statement. That
spares the BEGIN and COMMIT round trips, two of the five a request made.

Retries are expected (an SDK that timed out resends the same batch), so writes
are idempotent on ``(tenant_id, trace_id, span_id, start_time)``. COPY cannot
skip duplicates, so the common case COPYs directly into ``spans``; only when
that hits the unique index (and so stores nothing) does the batch go through a
staging table and ``INSERT ... ON CONFLICT DO NOTHING`` in a new transaction.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import psycopg.errors
from psycopg import AsyncConnection

from tierscope.store import partitions
from tierscope.store.errors import StoreUnavailable, translate, wrap_errors
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
    "peer",
)
_USUAL_STATEMENT_ROWS = 100_000  # a batch larger than this gets a longer statement timeout
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

# The fixed head of a row: field count, tenant_id, trace_id, span_id,
# parent_span_id (or NULL), start_time, duration_us; one pack call per span.
_head_child = struct.Struct(">hii i16s i8s i8s iqiq")
_head_root = struct.Struct(">hii i16s i8s i iqiq")
_FIELDS = len(COLUMNS)
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
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # jsonb has no NaN or infinity
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
        self.first_ns = 1 << 64
        self.last_ns = 0
        self._parts: list[bytes] = [_HEADER]
        # Names, tiers and components repeat within a batch: encode each once.
        self._texts: dict[str, bytes] = {}
        self._kind_tier: dict[tuple[int, str], bytes] = {}

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
        peer: str | None = None,
    ) -> None:
        """Append one span. Ids must already be validated (16 and 8 bytes)."""
        texts = self._texts
        name_field = texts.get(name)
        if name_field is None:
            name_field = texts[name] = _text(name)
        kind_tier = self._kind_tier.get((kind, tier))
        if kind_tier is None:
            kind_tier = self._kind_tier[kind, tier] = _small(kind) + _text(tier)
        if component is None:
            component_field = _NULL
        else:
            component_field = texts.get(component)
            if component_field is None:
                component_field = texts[component] = _text(component)
        if peer is None:
            peer_field = _NULL
        else:
            peer_field = texts.get(peer)
            if peer_field is None:
                peer_field = texts[peer] = _text(peer)
        start_us = start_ns // 1000 - _PG_EPOCH_US
        if parent_span_id:
            head = _head_child.pack(
                _FIELDS,
                4,
                self.tenant_id,
                16,
                trace_id,
                8,
                span_id,
                8,
                parent_span_id,
                8,
                start_us,
                8,
                duration_ns // 1000,
            )
        else:
            head = _head_root.pack(
                _FIELDS, 4, self.tenant_id, 16, trace_id, 8, span_id, -1, 8, start_us, 8, duration_ns // 1000
            )
        self._parts.append(
            b"".join(
                (
                    head,
                    source.head,
                    name_field,
                    kind_tier,
                    component_field,
                    _SMALL.get(status_code) or _small(status_code),
                    source.tail,
                    _len.pack(len(span_pb)),
                    span_pb,
                    peer_field,
                )
            )
        )
        if start_ns < self.first_ns:
            self.first_ns = start_ns
        if start_ns > self.last_ns:
            self.last_ns = start_ns
        self.count += 1

    def copy_data(self) -> bytes:
        return b"".join((*self._parts, _TRAILER))

    def rows_data(self) -> bytes:
        """The rows alone, without COPY's header and trailer: to join with others'."""
        return b"".join(self._parts[1:])

    def days(self) -> set[date]:
        """The UTC days the spans start on (the partitions they need)."""
        first, last = self.first_ns // _NS_PER_DAY, self.last_ns // _NS_PER_DAY
        epoch = date(1970, 1, 1)
        return {epoch + timedelta(days=day) for day in range(first, last + 1)}


@dataclass(frozen=True)
class WriteResult:
    stored: int
    duplicates: int


class KnownResources:
    """Resources this process has seen committed, so it need not write them again.

    Resources are written once and never deleted, so remembering them is safe;
    the set is bounded (cleared when full) because every resource is cheap to
    write again.
    """

    def __init__(self, limit: int = 100_000) -> None:
        self.limit = limit
        self._seen: set[tuple[int, int]] = set()

    def unknown(self, tenant_id: int, resources: list[Resource]) -> list[Resource]:
        return [r for r in resources if (tenant_id, r.resource_id) not in self._seen]

    def remember(self, tenant_id: int, resources: list[Resource]) -> None:
        if len(self._seen) + len(resources) > self.limit:
            self._seen.clear()
        self._seen.update((tenant_id, r.resource_id) for r in resources)


@wrap_errors
async def write_spans(
    conn: AsyncConnection,
    rows: SpanRows,
    resources: list[Resource],
    known: KnownResources | None = None,
) -> WriteResult:
    """Store a request's spans durably; spans already stored are skipped.

    Args:
        known: resources already stored, shared across calls (optional).

    Raises:
        StoreUnavailable: the store is down, hung or out of resources (retry).
        StoreError: the store refused the data.
    """
    new_resources = known.unknown(rows.tenant_id, resources) if known else resources
    if rows.count == 0 and not new_resources:
        return WriteResult(stored=0, duplicates=0)
    data = rows.copy_data()
    for attempt in range(2):
        try:
            try:
                await _copy(conn, rows.tenant_id, data, new_resources, rows.count)
                stored = rows.count
            except psycopg.errors.UniqueViolation:
                # Some spans are stored already (a retried request): merge, skipping those.
                stored = await _merge(conn, rows.tenant_id, data, new_resources, rows.count)
            break
        except psycopg.errors.CheckViolation as exc:
            # "no partition of relation spans found for row": a day maintenance has not
            # prepared yet (it runs every few minutes); prepare it and try once more.
            if attempt or "partition" not in str(exc):
                raise
            await partitions.ensure_days(conn, rows.days())
    if known:
        known.remember(rows.tenant_id, new_resources)
    return WriteResult(stored=stored, duplicates=rows.count - stored)


async def write_together(conn: AsyncConnection, batches: Sequence[SpanRows]) -> bool:
    """Store several requests' spans in one COPY: one statement and one commit.

    For requests whose resources are stored already (``conn`` in autocommit).
    True when all were stored. False when nothing was: a span was stored
    before (a retried request) or the store refused some row; then each
    request must be written alone (:func:`write_spans`), so only the one at
    fault fails and duplicates are skipped and counted.

    Raises:
        StoreUnavailable: the store is down, hung or out of resources (retry).
    """
    data = b"".join((_HEADER, *(batch.rows_data() for batch in batches), _TRAILER))
    try:
        async with conn.cursor().copy(_COPY_SPANS) as copy:
            await copy.write(data)
    except psycopg.Error as exc:
        error = translate(exc)
        if isinstance(error, StoreUnavailable):
            raise error from exc
        return False
    return True


async def _insert_resources(conn: AsyncConnection, tenant_id: int, resources: list[Resource]) -> None:
    # In id order: two requests inserting the same new resources never deadlock.
    for resource in sorted(resources, key=lambda r: r.resource_id):
        await conn.execute(
            QUERIES["insert_resource"],
            {
                "tenant_id": tenant_id,
                "resource_id": resource.resource_id,
                "service": _no_nul(resource.service),
                "attributes": json.dumps(_no_nul_json(resource.attributes), allow_nan=False),
            },
        )


async def _allow_for_size(conn: AsyncConnection, rows: int) -> None:
    """A very large batch gets more than the usual statement timeout (one second
    per 20,000 spans beyond the first 100,000), or it would time out on every retry."""
    if rows > _USUAL_STATEMENT_ROWS:
        await conn.execute(
            "SELECT set_config('statement_timeout', (current_setting('statement_timeout')::interval"
            " + make_interval(secs => %s))::text, true)",
            (rows // 20_000,),
        )


async def _copy(
    conn: AsyncConnection, tenant_id: int, data: bytes, resources: list[Resource], rows: int = 0
) -> None:
    """The fast path: COPY straight into ``spans``; fails whole on a stored span."""
    if not resources and rows <= _USUAL_STATEMENT_ROWS and conn.autocommit:
        # One statement, its own transaction (see the module's docstring).
        async with conn.cursor().copy(_COPY_SPANS) as copy:
            await copy.write(data)
        return
    async with conn.transaction():
        await _allow_for_size(conn, rows)
        await _insert_resources(conn, tenant_id, resources)
        async with conn.cursor().copy(_COPY_SPANS) as copy:
            await copy.write(data)


async def _merge(
    conn: AsyncConnection, tenant_id: int, data: bytes, resources: list[Resource], rows: int = 0
) -> int:
    """The retry path: COPY into a staging table, then insert what is new."""
    async with conn.transaction():
        await _allow_for_size(conn, rows)
        await _insert_resources(conn, tenant_id, resources)
        await conn.execute(_CREATE_STAGING)
        async with conn.cursor().copy(_COPY_STAGING) as copy:
            await copy.write(data)
        cur = await conn.execute(_MERGE_STAGING)
        return max(cur.rowcount, 0)
