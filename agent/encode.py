"""OTLP protobuf encoding of finished spans, written by hand, with scrubbing.

The SDK's encoder builds a protobuf object per span, attribute and value, then
serializes the tree: about half of the CPU a span costs. This encoder writes
the wire format directly, and remembers the encoded form of each (key, value)
attribute it has seen (values repeat: the same statement, the same route, the
same peer), so a repeated attribute costs one dictionary lookup. Scrubbing
(:mod:`.scrub`) happens on the way in, so remembered values are scrubbed
values, and a statement's literals are replaced once, not once per span.

With nothing to scrub, the bytes equal the SDK's ``encode_spans(...)
.SerializeToString()`` exactly; ``tests/agent/test_encode.py`` holds them equal.

Field numbers are those of ``opentelemetry/proto/trace/v1/trace.proto`` and
``common/v1/common.proto``.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind

from tierscope.agent.scrub import Scrubber

BACKGROUND_ATTRIBUTE = "tierscope.background"

# OTLP's SpanKind numbers (the SDK's enum starts at 0 for INTERNAL).
_KIND = {
    SpanKind.INTERNAL: b"\x30\x01",
    SpanKind.SERVER: b"\x30\x02",
    SpanKind.CLIENT: b"\x30\x03",
    SpanKind.PRODUCER: b"\x30\x04",
    SpanKind.CONSUMER: b"\x30\x05",
}
_FLAGS = {False: b"\x85\x01" + struct.pack("<I", 0x100), True: b"\x85\x01" + struct.pack("<I", 0x300)}
_SMALL = [bytes([n]) for n in range(128)]
_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_YIELD_EVERY = 16  # spans encoded between two offers of the GIL
_CACHE_LIMIT = 8192  # remembered attributes; the memo is cleared when full
_CACHED_VALUE_LENGTH = 4096  # longer strings (stack traces) are not remembered


def varint(value: int) -> bytes:
    if value < 128:
        return _SMALL[value]
    out = bytearray()
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    return tag + varint(len(payload)) + payload


def _any_value(value: Any) -> bytes:
    """An AnyValue message body (the SDK's ``_encode_value``)."""
    if value is None:
        return b""
    if value is True:
        return b"\x10\x01"
    if value is False:
        return b"\x10\x00"
    if isinstance(value, str):
        return _field(b"\x0a", value.encode("utf-8", "surrogatepass"))
    if isinstance(value, int):
        return b"\x18" + varint(value & 0xFFFFFFFFFFFFFFFF)
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, Sequence):
        return _field(b"\x2a", b"".join(_field(b"\x0a", _any_value(item)) for item in value))
    if isinstance(value, Mapping):
        return _field(b"\x32", b"".join(_field(b"\x0a", _key_value(str(k), v)) for k, v in value.items()))
    raise TypeError(f"cannot encode a {type(value).__name__} attribute value")


def _key_value(key: str, value: Any) -> bytes:
    return (_field(b"\x0a", key.encode()) if key else b"") + _field(b"\x12", _any_value(value))


class SpanEncoder:
    """Encodes batches of SDK spans into an ``ExportTraceServiceRequest``.

    Args:
        scrubber: the scrubbing rules; None sends values as they are (tests, and
            the equality check against the SDK's encoder).
        mark_background: give root spans that are not requests or jobs (threads
            with no request: schedulers, mail senders) ``tierscope.background=true``.
    """

    def __init__(self, scrubber: Scrubber | None = None, *, mark_background: bool = True) -> None:
        self._scrubber = scrubber
        self._mark_background = mark_background
        self._memo: dict[tuple[str, type, Any], bytes] = {}
        self._names: dict[str, bytes] = {}
        self._texts: dict[tuple[str, str], str] = {}
        self._resources: dict[int, tuple[Any, bytes]] = {}
        self._forked = False
        self._background = _field(b"\x4a", _key_value(BACKGROUND_ATTRIBUTE, True))

    # -- attributes ---------------------------------------------------------------------------

    def _attribute(self, key: str, value: Any) -> bytes | None:
        """A KeyValue's length-prefixed body (the caller adds the field tag), scrubbed."""
        kind = type(value)
        memo_key = (key, kind, value)
        try:
            cached = self._memo.get(memo_key)
        except TypeError:  # an unhashable value (a list): encode each time
            cached, memo_key = None, None
        if cached is not None:
            return cached
        scrubber = self._scrubber
        if scrubber is not None:
            if not scrubber.keeps(key):
                return None
            if kind is str:
                value = scrubber.value(key, value)
            elif isinstance(value, (tuple, list)):
                value = [scrubber.value(key, v) if isinstance(v, str) else v for v in value]
        body = _key_value(key, value)
        encoded = varint(len(body)) + body
        if memo_key is not None and (kind is not str or len(value) <= _CACHED_VALUE_LENGTH):
            if len(self._memo) >= _CACHE_LIMIT:
                self._memo.clear()
            self._memo[memo_key] = encoded
        return encoded

    def _attributes(self, tag: bytes, attributes: Mapping[str, Any] | None) -> list[bytes]:
        parts: list[bytes] = []
        if attributes:
            for key, value in attributes.items():
                encoded = self._attribute(key, value)
                if encoded is not None:
                    parts.append(tag)
                    parts.append(encoded)
        return parts

    def _name(self, name: str) -> bytes:
        cached = self._names.get(name)
        if cached is None:
            text = name
            if self._scrubber is not None:
                text = self._scrubber.mask(self._scrubber.text(text))
            cached = _field(b"\x2a", text.encode("utf-8", "surrogatepass")) if text else b""
            if len(self._names) >= _CACHE_LIMIT:
                self._names.clear()
            self._names[name] = cached
        return cached

    # -- spans --------------------------------------------------------------------------------

    def span(self, span: ReadableSpan) -> bytes:
        """One Span message body."""
        context = span.context
        parent = span.parent
        parts = [
            b"\x0a\x10",
            context.trace_id.to_bytes(16, "big"),
            b"\x12\x08",
            context.span_id.to_bytes(8, "big"),
        ]
        trace_state = context.trace_state
        if trace_state:
            parts.append(_field(b"\x1a", ",".join(f"{k}={v}" for k, v in trace_state.items()).encode()))
        if parent is not None:
            parts.append(b"\x22\x08")
            parts.append(parent.span_id.to_bytes(8, "big"))
        parts.append(self._name(span.name))
        kind = span.kind
        parts.append(_KIND[kind])
        if span.start_time:
            parts.append(b"\x39" + _pack_fixed64(span.start_time))
        if span.end_time:
            parts.append(b"\x41" + _pack_fixed64(span.end_time))
        parts += self._attributes(b"\x4a", span.attributes)
        if (
            parent is None
            and self._mark_background
            and kind is not SpanKind.SERVER
            and kind is not SpanKind.CONSUMER
        ):
            parts.append(self._background)
        if span.dropped_attributes:
            parts.append(b"\x50" + varint(span.dropped_attributes))
        for event in span.events:
            body = [b"\x09", _pack_fixed64(event.timestamp)]
            if event.name:
                name = self._scrub_text("", event.name)
                body.append(_field(b"\x12", name.encode("utf-8", "surrogatepass")))
            body += self._event_attributes(event.attributes)
            if event.dropped_attributes:
                body.append(b"\x20" + varint(event.dropped_attributes))
            parts.append(_field(b"\x5a", b"".join(body)))
        if span.dropped_events:
            parts.append(b"\x60" + varint(span.dropped_events))
        for link in span.links:
            link_context = link.context
            body = [b"\x0a\x10", link_context.trace_id.to_bytes(16, "big"), b"\x12\x08"]
            body.append(link_context.span_id.to_bytes(8, "big"))
            body += self._attributes(b"\x22", link.attributes)
            if link.dropped_attributes:
                body.append(b"\x28" + varint(link.dropped_attributes))
            body.append(b"\x35" + struct.pack("<I", 0x300 if link_context.is_remote else 0x100))
            parts.append(_field(b"\x6a", b"".join(body)))
        if span.dropped_links:
            parts.append(b"\x70" + varint(span.dropped_links))
        status = span.status
        code = status.status_code.value
        description = status.description
        if code or description:
            body = b""
            if description:
                description = self._scrub_text("exception.message", description)
                body += _field(b"\x12", description.encode("utf-8", "surrogatepass"))
            if code:
                body += b"\x18" + _SMALL[code]
            parts.append(_field(b"\x7a", body))
        else:
            parts.append(b"\x7a\x00")
        parts.append(_FLAGS[parent is not None and parent.is_remote])
        return b"".join(parts)

    def _scrub_text(self, key: str, text: str) -> str:
        """A free text scrubbed as the value of ``key`` (a status description as an error
        text); remembered, as the same exception message recurs span after span."""
        scrubber = self._scrubber
        if scrubber is None:
            return text
        cached = self._texts.get((key, text))
        if cached is None:
            cached = scrubber.value(key, text) if key else scrubber.mask(scrubber.text(text))
            if len(text) <= _CACHED_VALUE_LENGTH:
                if len(self._texts) >= _CACHE_LIMIT:
                    self._texts.clear()
                self._texts[(key, text)] = cached
        return cached

    def _event_attributes(self, attributes: Mapping[str, Any] | None) -> list[bytes]:
        # Event values (exception messages, stack traces) are mostly unique: they are
        # scrubbed apart from the attribute memo (stack traces are too long to keep).
        if not attributes:
            return []
        parts: list[bytes] = []
        scrubber = self._scrubber
        for key, value in attributes.items():
            if scrubber is not None and isinstance(value, str):
                value = self._scrub_text(key, value)
            body = _key_value(key, value)
            parts.append(b"\x1a" + varint(len(body)) + body)
        return parts

    # -- the request --------------------------------------------------------------------------

    def _resource(self, resource: Any) -> bytes:
        # Resources are built once per process: keep their encoding by identity.
        cached = self._resources.get(id(resource))
        if cached is None or cached[0] is not resource:
            attributes = dict(resource.attributes or {})
            if self._forked and "process.pid" in attributes:
                # The resource was made before a fork (gunicorn --preload): say which process sent.
                attributes["process.pid"] = os.getpid()
            body = b"".join(b"\x0a" + _field(b"", _key_value(k, v)) for k, v in attributes.items())
            cached = (resource, _field(b"\x0a", body))
            self._resources[id(resource)] = cached
        return cached[1]

    def after_fork(self) -> None:
        """In a forked child: resources are encoded again (their ``process.pid`` changed)."""
        self._resources = {}
        self._forked = True

    @staticmethod
    def _scope(scope: Any) -> bytes:
        if scope is None:
            return b"\x0a\x00"
        body = b""
        if scope.name:
            body += _field(b"\x0a", scope.name.encode())
        if scope.version:
            body += _field(b"\x12", scope.version.encode())
        for key, value in (scope.attributes or {}).items():
            body += _field(b"\x1a", _key_value(key, value))
        return _field(b"\x0a", body)

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """An ``ExportTraceServiceRequest``: spans grouped by resource, then scope."""
        # Grouped by the resource's identity: the SDK's Resource hashes by dumping its
        # attributes to JSON, which per span cost more than encoding the span. Equal
        # resources that are distinct objects become separate groups, which OTLP allows.
        groups: dict[int, dict[Any, list[bytes]]] = {}
        resources: dict[int, Any] = {}
        for number, span in enumerate(spans):
            if number % _YIELD_EVERY == _YIELD_EVERY - 1:
                # Let the application's threads have the GIL: a thread returning from
                # I/O would otherwise wait out the interpreter's switch interval (5 ms).
                time.sleep(0)
            resource = span.resource
            by_scope = groups.get(id(resource))
            if by_scope is None:
                by_scope = groups[id(resource)] = {}
                resources[id(resource)] = resource  # (held: its id stays its own)
            scope = span.instrumentation_scope or None
            encoded = self.span(span)
            bucket = by_scope.get(scope)
            if bucket is None:
                by_scope[scope] = bucket = []
            bucket.append(b"\x12" + varint(len(encoded)) + encoded)
        out: list[bytes] = []
        for identity, by_scope in groups.items():
            resource = resources[identity]
            body = [self._resource(resource)]
            for scope, encoded_spans in by_scope.items():
                scope_body = self._scope(scope) + b"".join(encoded_spans)
                if scope is not None and scope.schema_url:
                    scope_body += _field(b"\x1a", scope.schema_url.encode())
                body.append(_field(b"\x12", scope_body))
            if resource.schema_url:
                body.append(_field(b"\x1a", resource.schema_url.encode()))
            out.append(_field(b"\x0a", b"".join(body)))
        return b"".join(out)
