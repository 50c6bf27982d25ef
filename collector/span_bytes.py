"""Each span's bytes as the client sent them, so they need not be serialized again.

A span is stored as its OTLP ``Span`` message (``spans.span_pb``). Serializing
every decoded span back to bytes cost the ingest worker about 1.3 µs per span,
a tenth of its time, although the request body already holds those bytes. So a
protobuf request is parsed a second time against a schema that declares
``ScopeSpans.spans`` as ``repeated bytes``: protobuf's wire format gives a
length-delimited field the same encoding whether it holds a message or bytes,
so the C parser hands back each span's bytes, unparsed, for about 0.1 µs a
span. Every other field of that schema is left out and kept as unknown bytes.

Both parses read the same body, so the spans come out in the same order and
number; :func:`tierscope.collector.convert.convert` still checks the counts
and falls back to serializing where they differ, where it changed a span
(a name or a value cut to its limit), and for JSON requests, which have no
protobuf bytes. The bytes are the client's: a valid ``Span`` (the full parse
accepted them), with its fields in the client's order, which readers of
``span_pb`` never rely on (:mod:`.wire` checks the layout and otherwise asks
the decoder).
"""

from __future__ import annotations

from typing import Any, Protocol

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

_PACKAGE = "tierscope.span_bytes"


class SpanBytes(Protocol):
    """What :func:`span_bytes` returns: the request's shape down to each span's bytes."""

    @property
    def resource_spans(self) -> Any: ...  # each has .scope_spans, each of which has .spans: bytes


def _request_type() -> Any:
    """The message class of a request whose spans are left as bytes."""
    file = descriptor_pb2.FileDescriptorProto(
        name="tierscope/span_bytes.proto", package=_PACKAGE, syntax="proto3"
    )
    field = descriptor_pb2.FieldDescriptorProto
    repeated = field.LABEL_REPEATED
    for message, number, name, kind, of in (
        # The same field numbers as opentelemetry/proto/trace/v1/trace.proto.
        ("ScopeSpans", 2, "spans", field.TYPE_BYTES, None),
        ("ResourceSpans", 2, "scope_spans", field.TYPE_MESSAGE, "ScopeSpans"),
        # and as .../collector/trace/v1/trace_service.proto
        ("ExportTraceServiceRequest", 1, "resource_spans", field.TYPE_MESSAGE, "ResourceSpans"),
    ):
        declared = file.message_type.add(name=message)
        declared.field.add(name=name, number=number, type=kind, label=repeated)
        if of is not None:
            declared.field[0].type_name = f".{_PACKAGE}.{of}"
    pool = descriptor_pool.DescriptorPool()  # its own: nothing else sees these names
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PACKAGE}.ExportTraceServiceRequest")
    )


_REQUEST = _request_type()


def span_bytes(body: bytes) -> SpanBytes | None:
    """The spans of a protobuf ``ExportTraceServiceRequest`` body as bytes,
    nested as in the request; None if the body does not parse (the caller's
    full decode has already said why)."""
    try:
        parsed: SpanBytes = _REQUEST.FromString(body)
    except (DecodeError, RuntimeError):
        return None
    return parsed
