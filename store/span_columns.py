"""Spans read for processing as columns, not as rows.

Trace processing reads every span once, and building a Python object per span
(and per field of it) cost more than all its arithmetic. So the window is read
as one row of aggregates: numeric fields packed into byte strings that numpy
reads without a copy, text fields as arrays. PostgreSQL feeds every aggregate
of one query the same rows in the same order, so position *i* of each column
is the same span.

A :class:`~tierscope.store.processing.SpanRow` is still built where Python
needs one: for each trace's entry, and for the spans of failed traces.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg import AsyncConnection

from tierscope.store.errors import translate, wrap_errors
from tierscope.store.processing import UNPACK_TRACES, SpanRow, packed_traces

I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]
Objects = npt.NDArray[np.object_]
_NO_PARENT = b"\x00" * 8  # not a valid span id (ingest rejects it), so it means "none"

# Every column a span needs in processing, aggregated over the selected spans:
# the fixed-width fields as one 72-byte record per span (read by numpy as
# :data:`_RECORD`), the text fields joined by separators (split in one call),
# the OTLP bytes as an array. A name is read only where processing uses it
# (entries, spans without a component); the OTLP bytes only for spans that may
# be an entry. Measured on a 2-core machine, this costs PostgreSQL about as
# much per span as returning rows, and Python a tenth.
_RECORDS = """string_agg(int4send(s.tenant_id) || s.trace_id || s.span_id
                  || CASE WHEN octet_length(s.parent_span_id) = 8 THEN s.parent_span_id
                          ELSE '\\x0000000000000000'::bytea END
                  || timestamptz_send(s.start_time)
                  || int8send(s.duration_us) || int2send(s.kind) || int2send(s.status_code)
                  || int8send(s.resource_id)
                  || timestamptz_send(s.received_at), '')"""
_NAME = "CASE WHEN s.kind IN (2, 5) OR s.parent_span_id IS NULL OR s.component IS NULL THEN s.name END"
_SPAN_PB = "array_agg(CASE WHEN s.kind IN (2, 5) OR s.parent_span_id IS NULL THEN s.span_pb END)"
# Text joined by control characters: should a value ever hold one, the count
# of fields comes out wrong and the window is read again with text arrays.
_FIELD, _SPAN = "\x1f", "\x1e"
_TEXTS = f"""string_agg(s.service || E'\\x1f' || s.tier || E'\\x1f' || COALESCE(s.component, '')
                  || E'\\x1f' || COALESCE(s.peer, '') || E'\\x1f' || COALESCE({_NAME}, ''), E'\\x1e')"""
_TEXT_ARRAYS = f"""array_agg(s.service), array_agg(s.tier), array_agg(s.component), array_agg(s.peer),
       array_agg({_NAME})"""
_AGGREGATES = f"count(*), {_RECORDS}, {_TEXTS}, {_SPAN_PB}"
_SAFE_AGGREGATES = f"count(*), {_RECORDS}, {_TEXT_ARRAYS}, {_SPAN_PB}"
_RECORD = np.dtype(
    [
        ("tenant", ">i4"),
        ("trace", "V16"),
        ("span", ">u8"),
        ("parent", ">u8"),
        ("start", ">i8"),
        ("duration", ">i8"),
        ("kind", ">i2"),
        ("status", ">i2"),
        ("resource", ">i8"),
        ("received", ">i8"),
    ]
)
_TEXT_FIELDS = 5
# timestamptz travels as microseconds since 2000-01-01 UTC (cheaper for
# PostgreSQL to send than to convert to epoch seconds)
_POSTGRES_EPOCH_US = 946_684_800_000_000


class _SeparatorInText(Exception):
    """A text value holds one of the separators: read the window with arrays."""


@dataclass
class SpanColumns:
    """Spans as parallel arrays: element *i* of every field is span *i*."""

    tenant: I64
    trace: npt.NDArray[np.void]  # 16-byte trace ids
    span: U64  # span ids as big-endian numbers
    parent: U64  # 0: no parent
    start: I64  # microseconds since the epoch
    duration: I64
    kind: I64
    status: I64
    resource: I64
    received: I64
    service: Objects
    tier: Objects
    component: Objects  # None or "" where a span has none (both read as none)
    peer: Objects
    name: Objects
    span_pb: Objects

    def __len__(self) -> int:
        return len(self.tenant)

    @classmethod
    def empty(cls) -> SpanColumns:
        return cls.of_rows([])

    @classmethod
    def of_rows(cls, rows: Sequence[SpanRow]) -> SpanColumns:
        """The same spans as rows (tests, and the reference path)."""
        count = len(rows)
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(SpanRow._fields)
        field = dict(zip(SpanRow._fields, columns, strict=True))

        def ints(name: str) -> I64:
            return np.fromiter(field[name], np.int64, count)

        def objects(name: str) -> Objects:
            array = np.empty(count, dtype=object)
            array[:] = field[name]
            return array

        return cls(
            tenant=ints("tenant_id"),
            trace=np.frombuffer(b"".join(field["trace_id"]), dtype="V16"),
            span=_ids(b"".join(field["span_id"])),
            parent=_ids(b"".join(p if p else _NO_PARENT for p in field["parent_span_id"])),
            start=ints("start_us"),
            duration=ints("duration_us"),
            kind=ints("kind"),
            status=ints("status_code"),
            resource=ints("resource_id"),
            received=ints("received_us"),
            service=objects("service"),
            tier=objects("tier"),
            component=objects("component"),
            peer=objects("peer"),
            name=objects("name"),
            span_pb=objects("span_pb"),
        )

    @classmethod
    def of_aggregates(cls, row: Sequence[Any]) -> SpanColumns:
        """Parse the one row :data:`_AGGREGATES` (or :data:`_SAFE_AGGREGATES`) selects."""
        count = int(row[0])
        if count == 0:
            return cls.empty()
        records = np.frombuffer(row[1], dtype=_RECORD)
        if len(records) != count:
            raise ValueError(f"{len(records)} span records for {count} spans")
        if len(row) == 4:  # text joined by separators
            fields_ = row[2].replace(_SPAN, _FIELD).split(_FIELD)
            if len(fields_) != count * _TEXT_FIELDS:
                raise _SeparatorInText
            texts = [fields_[i::_TEXT_FIELDS] for i in range(_TEXT_FIELDS)]
            span_pb = row[3]
        else:
            texts = list(row[2:7])
            span_pb = row[7]

        def objects(values: list[Any]) -> Objects:
            array = np.empty(count, dtype=object)
            array[:] = values
            return array

        def number(name: str) -> I64:
            return records[name].astype(np.int64)

        def micros(name: str) -> I64:
            return number(name) + _POSTGRES_EPOCH_US

        return cls(
            tenant=number("tenant"),
            trace=records["trace"].copy(),
            span=records["span"].astype(np.uint64),
            parent=records["parent"].astype(np.uint64),
            start=micros("start"),
            duration=number("duration"),
            kind=number("kind"),
            status=number("status"),
            resource=number("resource"),
            received=micros("received"),
            service=objects(texts[0]),
            tier=objects(texts[1]),
            component=objects(texts[2]),
            peer=objects(texts[3]),
            name=objects(texts[4]),
            span_pb=objects(span_pb),
        )

    def take(self, indices: I64) -> SpanColumns:
        """The spans at these positions, in this order."""
        return SpanColumns(*(getattr(self, f.name)[indices] for f in fields(self)))

    def concat(self, other: SpanColumns) -> SpanColumns:
        if not len(other):
            return self
        return SpanColumns(
            *(np.concatenate((getattr(self, f.name), getattr(other, f.name))) for f in fields(self))
        )

    def row(self, index: int) -> SpanRow:
        """Span ``index`` as a row."""
        parent = int(self.parent[index])
        return SpanRow(
            int(self.tenant[index]),
            self.trace[index].tobytes(),
            int(self.span[index]).to_bytes(8, "big"),
            parent.to_bytes(8, "big") if parent else None,
            int(self.start[index]),
            int(self.duration[index]),
            self.service[index],
            self.name[index] or None,
            int(self.kind[index]),
            self.tier[index],
            self.component[index] or None,
            self.peer[index] or None,
            int(self.status[index]),
            int(self.resource[index]),
            int(self.received[index]),
            self.span_pb[index],
        )


def _ids(packed: bytes) -> U64:
    return np.frombuffer(packed, dtype=">u8").astype(np.uint64)


_WINDOW = """SELECT {aggregates} FROM spans s
             WHERE s.received_at >= %(since)s AND s.received_at < %(until)s"""

_SIBLINGS = f"""SELECT {{aggregates}}
                FROM ({UNPACK_TRACES}) AS c
                CROSS JOIN LATERAL (
                    SELECT * FROM spans x
                    WHERE x.tenant_id = c.tenant_id AND x.trace_id = c.trace_id
                      AND x.start_time >= %(earliest)s AND x.start_time < %(latest)s
                      AND (x.received_at < %(since)s OR x.received_at >= %(until)s)
                ) s"""  # noqa: S608 - constant SQL


def _queries(template: str) -> tuple[str, str]:
    return template.format(aggregates=_AGGREGATES), template.format(aggregates=_SAFE_AGGREGATES)


_WINDOW_QUERIES = _queries(_WINDOW)
_SIBLING_QUERIES = _queries(_SIBLINGS)


def _window(since: datetime, until: datetime) -> dict[str, Any]:
    return {"since": since, "until": until}


async def _read(conn: AsyncConnection, queries: tuple[str, str], params: dict[str, Any]) -> SpanColumns:
    async with conn.cursor(binary=True) as cur:
        for query in queries:
            await cur.execute(query, params)
            row = await cur.fetchone()
            try:
                return SpanColumns.of_aggregates(row) if row else SpanColumns.empty()
            except _SeparatorInText:
                continue
    raise AssertionError("the safe query has no separators")


@wrap_errors
async def window_columns(conn: AsyncConnection, since: datetime, until: datetime) -> SpanColumns:
    """Every span received in ``[since, until)``."""
    return await _read(conn, _WINDOW_QUERIES, _window(since, until))


def window_columns_blocking(conn: psycopg.Connection, since: datetime, until: datetime) -> SpanColumns:
    """The same, on a blocking connection (the processor prefetches in a thread)."""
    try:
        with conn.cursor(binary=True) as cur:
            for query in _WINDOW_QUERIES:
                cur.execute(query, _window(since, until))
                row = cur.fetchone()
                try:
                    return SpanColumns.of_aggregates(row) if row else SpanColumns.empty()
                except _SeparatorInText:
                    continue
    except psycopg.Error as exc:
        raise translate(exc) from exc
    raise AssertionError("the safe query has no separators")


@wrap_errors
async def sibling_columns(
    conn: AsyncConnection,
    traces: Sequence[tuple[int, bytes]],
    since: datetime,
    until: datetime,
    earliest: datetime,
    latest: datetime,
) -> SpanColumns:
    """Spans of these traces received outside ``[since, until)`` (earlier, or after:
    the trace is still receiving), starting in ``[earliest, latest)``. One index
    probe per trace."""
    if not traces:
        return SpanColumns.empty()
    params = {**packed_traces(traces), "since": since, "until": until, "earliest": earliest, "latest": latest}
    return await _read(conn, _SIBLING_QUERIES, params)
