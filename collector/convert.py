"""From a decoded OTLP request to rows for the store: validate, bound, classify.

Per span, only what the store needs is read from the message: ids, times, name,
kind, status, and the span's own bytes (which keep attributes, events and links
losslessly): as the client sent them where the span is kept unchanged
(:mod:`.span_bytes`), serialized again where it was cut to a limit. Attributes
are decoded only when a span is large enough that one of its values might need
truncating, or when classification needs a value (see :mod:`.tiers`). Spans
that can never be stored (bad ids, absurd timestamps) are rejected one by one,
which the response reports as partial success; the rest of the request is kept.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tierscope.collector import tiers
from tierscope.collector.otlp import attributes
from tierscope.collector.span_bytes import SpanBytes
from tierscope.store.spans import Resource, SpanRows, SpanSource

UNKNOWN_SERVICE = "unknown_service"
NAME_LIMIT = 1024  # span names
LABEL_LIMIT = 256  # service and scope names: they are repeated on every row and used as keys
RESOURCE_ATTRIBUTES_LIMIT = 128
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


@dataclass(frozen=True)
class Limits:
    attribute_value: int = 2048
    event_attribute_value: int = 16384
    max_age_ns: int = 3 * 86_400 * 10**9
    max_future_ns: int = 15 * 60 * 10**9


@dataclass
class Conversion:
    rows: SpanRows
    resources: list[Resource] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    truncated: int = 0
    examples: dict[str, str] = field(default_factory=dict)

    @property
    def rejected_count(self) -> int:
        return sum(self.rejected.values())

    def reject(self, reason: str, example: str) -> None:
        self.rejected[reason] += 1
        self.examples.setdefault(reason, example)

    def message(self, limits: Limits) -> str:
        """The ``error_message`` of partial success: what was dropped or changed, and why."""
        parts = [
            f"{count} span(s) rejected: {reason} (e.g. {self.examples[reason]})"
            for reason, count in sorted(self.rejected.items())
        ]
        if self.truncated:
            parts.append(
                f"{self.truncated} attribute value(s) truncated to {limits.attribute_value} bytes "
                f"({limits.event_attribute_value} for event attributes)"
            )
        return "; ".join(parts)


def resource_id(encoded: bytes) -> int:
    """A stable 63-bit id for a resource, from its serialized form."""
    return int.from_bytes(hashlib.blake2b(encoded, digest_size=8).digest(), "big") >> 1


def _iso(ns: int) -> str:
    try:
        return datetime.fromtimestamp(ns / 1e9, UTC).isoformat().replace("+00:00", "Z")
    except (OverflowError, ValueError, OSError):
        return f"{ns} ns"


def convert(
    request: ExportTraceServiceRequest,
    tenant_id: int,
    limits: Limits,
    now_ns: int,
    originals: SpanBytes | None = None,
) -> Conversion:
    """Turn one request into encoded rows plus the resources they refer to.

    ``originals``: the same request's spans as the bytes the client sent
    (:func:`~tierscope.collector.span_bytes.span_bytes` of a protobuf body),
    stored as they are where a span is kept unchanged; without them, each span
    is serialized again.
    """
    result = Conversion(rows=SpanRows(tenant_id))
    rows_add = result.rows.add
    earliest = now_ns - limits.max_age_ns
    latest = now_ns + limits.max_future_ns
    smallest_limit = min(limits.attribute_value, limits.event_attribute_value)
    seen_resources: set[int] = set()

    sent = _sent_bytes(request, originals)
    for resource_index, resource_spans in enumerate(request.resource_spans):
        resource = resource_spans.resource
        if len(resource.attributes) > RESOURCE_ATTRIBUTES_LIMIT:
            del resource.attributes[RESOURCE_ATTRIBUTES_LIMIT:]
            result.truncated += 1
        for pair in resource.attributes:
            result.truncated += _truncate_value(pair.value, limits.attribute_value)
        resource_attrs = attributes(resource.attributes)
        service = str(resource_attrs.get("service.name") or UNKNOWN_SERVICE)[:LABEL_LIMIT]
        rid = resource_id(resource.SerializeToString())
        if rid not in seen_resources:
            seen_resources.add(rid)
            result.resources.append(Resource(rid, service, resource_attrs))
        browser = resource_attrs.get("telemetry.sdk.language") == "webjs"

        for scope_index, scope_spans in enumerate(resource_spans.scope_spans):
            scope = scope_spans.scope.name[:LABEL_LIMIT] or None
            source = SpanSource(service, rid, scope)
            classify = tiers.classifier(browser=browser, gateway=tiers.is_gateway(scope, service))
            for span, original in zip(scope_spans.spans, sent(resource_index, scope_index), strict=True):
                trace_id = span.trace_id
                span_id = span.span_id
                parent = span.parent_span_id
                if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
                    result.reject(
                        "invalid_trace_id", f"trace_id of {len(trace_id)} bytes in span {span.name!r}"
                    )
                    continue
                if len(span_id) != 8 or span_id == _ZERO_SPAN:
                    result.reject("invalid_span_id", f"span_id of {len(span_id)} bytes in span {span.name!r}")
                    continue
                if parent and (len(parent) != 8):
                    result.reject(
                        "invalid_parent_span_id",
                        f"parent_span_id of {len(parent)} bytes in span {span.name!r}",
                    )
                    continue
                if parent == _ZERO_SPAN:
                    parent = b""  # some SDKs send zeros for "no parent"
                start = span.start_time_unix_nano
                end = span.end_time_unix_nano
                if start < earliest or start > latest:
                    result.reject(
                        "timestamp_out_of_range",
                        f"start {_iso(start)} is outside {_iso(earliest)} .. {_iso(latest)}",
                    )
                    continue
                if end < start:
                    result.reject("end_before_start", f"span {span.name!r} ends before it starts")
                    continue
                if end > latest:
                    result.reject("timestamp_out_of_range", f"end {_iso(end)} is after {_iso(latest)}")
                    continue
                name = span.name
                if len(name) > NAME_LIMIT:
                    span.name = name = name[:NAME_LIMIT]
                    result.truncated += 1
                    original = None  # changed: its bytes are no longer the span's
                encoded = original if original is not None else span.SerializeToString()
                if len(encoded) > smallest_limit:
                    # Only a span this large can hold an oversized value. It is
                    # stored as decoded, never as sent: sent bytes may repeat a
                    # field, and the repeat the decoder dropped would be stored.
                    cut = _truncate(span, limits)
                    result.truncated += cut
                    if cut or original is not None:
                        encoded = span.SerializeToString()
                tier, component, peer = classify(span, encoded)
                kind = span.kind
                status = span.status.code
                rows_add(
                    source,
                    trace_id,
                    span_id,
                    parent,
                    start,
                    end - start,
                    name,
                    kind if 0 <= kind <= 5 else 0,
                    tier,
                    component,
                    status if 0 <= status <= 2 else 0,
                    encoded,
                    peer,
                )
    return result


def _truncate(span: Span, limits: Limits) -> int:
    """Cut oversized attribute values in place; return how many were cut."""
    cut = 0
    for pair in span.attributes:
        cut += _truncate_value(pair.value, limits.attribute_value)
    for link in span.links:
        for pair in link.attributes:
            cut += _truncate_value(pair.value, limits.attribute_value)
    for event in span.events:
        for pair in event.attributes:
            cut += _truncate_value(pair.value, limits.event_attribute_value)
    return cut


def _sent_bytes(
    request: ExportTraceServiceRequest, originals: SpanBytes | None
) -> Callable[[int, int], Sequence[bytes | None]]:
    """For (resource index, scope index): the bytes of each span of that scope as
    sent, or Nones where there are none to trust (no originals, or counts that
    differ from the decoded request's, which one body parsed twice never gives)."""
    if originals is None or len(originals.resource_spans) != len(request.resource_spans):
        return lambda resource, scope: _nones(request, resource, scope)

    def sent(resource: int, scope: int) -> Sequence[bytes | None]:
        scopes = originals.resource_spans[resource].scope_spans
        spans = scopes[scope].spans if scope < len(scopes) else ()
        if len(spans) != len(request.resource_spans[resource].scope_spans[scope].spans):
            return _nones(request, resource, scope)
        return spans

    return sent


def _nones(request: ExportTraceServiceRequest, resource: int, scope: int) -> Sequence[None]:
    return [None] * len(request.resource_spans[resource].scope_spans[scope].spans)


def _truncate_value(value: AnyValue, limit: int) -> int:
    which = value.WhichOneof("value")
    if which == "string_value":
        text = value.string_value
        if len(text) > limit // 4 and len(text.encode()) > limit:
            # Cut on a character boundary so the value stays valid UTF-8.
            value.string_value = text.encode()[:limit].decode("utf-8", "ignore")
            return 1
    elif which == "bytes_value":
        if len(value.bytes_value) > limit:
            value.bytes_value = value.bytes_value[:limit]
            return 1
    elif which == "array_value":
        return sum(_truncate_value(item, limit) for item in value.array_value.values)
    elif which == "kvlist_value":
        return sum(_truncate_value(pair.value, limit) for pair in value.kvlist_value.values)
    return 0
