"""What ``spans.span_pb`` holds: the span's bytes as its client sent them where
ingest kept the span unchanged, and the decoded span serialized again where it
cut something or cannot trust the bytes (``collector/span_bytes.py``)."""

from __future__ import annotations

import time

import psycopg
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tierscope.collector import otlp as codec
from tierscope.collector.convert import NAME_LIMIT, Limits, convert
from tierscope.collector.span_bytes import span_bytes
from tierscope.store.spans import write_spans
from tierscope.testing import otlp

from .test_spans import tenant_id

pytestmark = pytest.mark.anyio


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _fields(encoded: bytes) -> list[bytes]:
    """A message's top-level fields, each as its bytes (tag included)."""
    found, pos = [], 0
    while pos < len(encoded):
        begin = pos
        key, pos = _read_varint(encoded, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _read_varint(encoded, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            size, pos = _read_varint(encoded, pos)
            pos += size
        found.append(encoded[begin:pos])
    return found


def _read_varint(encoded: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = encoded[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def _body(resources: list[tuple[str, list[list[bytes]]]]) -> bytes:
    """A request body from spans given as bytes: per resource (its service), its
    scopes, each a list of span bytes."""
    request = b""
    for service, scopes in resources:
        resource = otlp.request([], service=service).resource_spans[0].resource.SerializeToString()
        body = _field(1, resource)
        for number, spans in enumerate(scopes):
            scope = _field(1, _field(1, f"tierscope.tests.{number}".encode()))
            body += _field(2, scope + b"".join(_field(2, span) for span in spans))
        request += _field(1, body)
    return request


async def _ingest(
    conn: psycopg.AsyncConnection, tenant: int, body: bytes, media: str = otlp.PROTOBUF
) -> None:
    request = codec.decode_traces(body, media)
    originals = span_bytes(body) if media == otlp.PROTOBUF else None
    conversion = convert(request, tenant, Limits(), time.time_ns(), originals)
    assert conversion.rejected_count == 0, conversion.message(Limits())
    await write_spans(conn, conversion.rows, conversion.resources)


async def _stored(conn: psycopg.AsyncConnection) -> dict[bytes, tuple[bytes, str, str | None]]:
    rows = await (await conn.execute("SELECT span_id, span_pb, tier, component FROM spans")).fetchall()
    return {bytes(span_id): (bytes(pb), tier, component) for span_id, pb, tier, component in rows}


def _db_span(name: str = "SELECT erp") -> Span:
    return otlp.span(
        name,
        kind=Span.SPAN_KIND_CLIENT,
        attributes={"db.system": "postgresql", "db.statement": "SELECT * FROM invoices WHERE id = ?"},
    )


async def test_a_span_kept_unchanged_is_stored_as_the_bytes_its_client_sent(database_url: str) -> None:
    # Two resources, one with two scopes; one span's fields in reverse order, as
    # an encoder other than protobuf's own may write them.
    canonical = _db_span()
    reordered_span = _db_span()
    reordered = b"".join(reversed(_fields(reordered_span.SerializeToString())))
    assert reordered != reordered_span.SerializeToString()
    sent = {
        "erp": [[otlp.span().SerializeToString(), canonical.SerializeToString()], [reordered]],
        "crm": [[otlp.span("POST /leads", attributes={"http.route": "/leads"}).SerializeToString()]],
    }
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await _ingest(conn, await tenant_id(conn), _body(list(sent.items())))
        stored = await _stored(conn)
    every_sent = [span for scopes in sent.values() for spans in scopes for span in spans]
    assert len(stored) == len(every_sent) == 4
    for span in every_sent:
        assert stored[Span.FromString(span).span_id][0] == span
    # The reordered span is read like its canonical twin: the same tier and component.
    assert stored[reordered_span.span_id][1:] == stored[canonical.span_id][1:]
    assert stored[canonical.span_id][1] == "db"


async def test_a_span_cut_to_a_limit_is_stored_as_cut(database_url: str) -> None:
    long_name = otlp.span("n" * (NAME_LIMIT + 500))
    long_value = otlp.span(attributes={"note": "v" * 10_000})
    body = _body([("erp", [[long_name.SerializeToString(), long_value.SerializeToString()]])])
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await _ingest(conn, await tenant_id(conn), body)
        stored = await _stored(conn)
    name = Span.FromString(stored[long_name.span_id][0])
    assert name.name == "n" * NAME_LIMIT
    value = Span.FromString(stored[long_value.span_id][0])
    assert len(value.attributes[0].value.string_value) == Limits().attribute_value


async def test_a_large_span_is_stored_as_decoded_not_with_a_field_it_repeats(database_url: str) -> None:
    # A repeated name: the decoder keeps the last, so the first (large) one is
    # nothing the span holds, and must not reach the store beside it.
    span = otlp.span("GET /short")
    sent = _field(5, b"x" * 5000) + span.SerializeToString()
    assert Span.FromString(sent) == span
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await _ingest(conn, await tenant_id(conn), _body([("erp", [[sent]])]))
        stored = await _stored(conn)
    assert stored[span.span_id][0] == span.SerializeToString()


async def test_json_requests_store_each_span_serialized(database_url: str) -> None:
    span = _db_span()
    body = otlp.to_json(otlp.request([span]))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await _ingest(conn, await tenant_id(conn), body, otlp.JSON)
        stored = await _stored(conn)
    assert stored[span.span_id][0] == span.SerializeToString()


async def test_bytes_of_another_request_are_never_stored_for_these_spans(database_url: str) -> None:
    # The counts differ (one span against two): ingest serializes the decoded
    # spans instead of pairing them with bytes that are not theirs.
    spans = [otlp.span("GET /a"), otlp.span("GET /b")]
    other = span_bytes(ExportTraceServiceRequest.SerializeToString(otlp.request([otlp.span("GET /c")])))
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        tenant = await tenant_id(conn)
        conversion = convert(otlp.request(spans), tenant, Limits(), time.time_ns(), other)
        await write_spans(conn, conversion.rows, conversion.resources)
        stored = await _stored(conn)
    assert {stored[span.span_id][0] for span in spans} == {span.SerializeToString() for span in spans}
