"""Read single attribute values straight from a serialized span.

Decoding every attribute of every span into Python objects costs about half a
microsecond per attribute, which at tens of thousands of spans per second is
most of the collector's time. Classification needs two or three values of a
span, and the span is serialized anyway (it is stored as-is), so this module
finds those values in the bytes: an OTLP ``KeyValue`` is written as

    0x0A <key length> <key> 0x12 <AnyValue length> <AnyValue>

and the ``AnyValue`` holds one scalar field. One substring search (in C) and a
few index operations replace decoding the whole attribute list.

The layout above is what every mainstream protobuf encoder writes (fields in
number order). For anything else — a key that appears in the bytes but not in
that layout, or a value that is not a scalar — :class:`SpanAttributes` falls back
to decoding the message properly, so the answer is always the decoder's.
"""

from __future__ import annotations

import struct
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span

_DOUBLE = struct.Struct("<d")
_SCALARS = ("string_value", "int_value", "double_value", "bool_value")
_NOT_FOUND = object()


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


class Key:
    """An attribute key prepared for lookups: its text and its wire pattern."""

    __slots__ = ("name", "pattern", "raw")

    def __init__(self, name: str) -> None:
        raw = name.encode()
        if len(raw) > 127:
            raise ValueError("attribute keys used for lookups are short")
        self.name = name
        self.raw = raw
        self.pattern = b"\x0a" + bytes((len(raw),)) + raw + b"\x12"


def scalar_at(data: bytes, pattern: bytes) -> Any:
    """The scalar value after the first ``pattern`` in ``data``; ``_NOT_FOUND`` when
    the pattern is absent or what follows is not a well-formed scalar ``AnyValue``."""
    index = data.find(pattern)
    if index < 0:
        return _NOT_FOUND
    pos = index + len(pattern)
    try:
        # Fast path: a string shorter than 126 bytes (lengths fit in one byte).
        length = data[pos]
        if length < 0x80 and data[pos + 1] == 0x0A and data[pos + 2] == length - 2:
            return data[pos + 3 : pos + 1 + length].decode("utf-8", "replace")
        length, pos = _varint(data, pos)
        end = pos + length
        if length == 0 or end > len(data):
            return _NOT_FOUND
        tag = data[pos]
        pos += 1
        if tag == 0x0A:  # string_value
            size, pos = _varint(data, pos)
            if pos + size != end:
                return _NOT_FOUND
            return data[pos:end].decode("utf-8", "replace")
        if tag == 0x18:  # int_value: int64, two's complement in a varint
            value, pos = _varint(data, pos)
            if pos != end:
                return _NOT_FOUND
            return value - (1 << 64) if value >= 1 << 63 else value
        if tag == 0x10:  # bool_value
            value, pos = _varint(data, pos)
            return bool(value) if pos == end else _NOT_FOUND
        if tag == 0x21 and pos + 8 == end:  # double_value
            return _DOUBLE.unpack_from(data, pos)[0]
    except (IndexError, ValueError):
        pass
    return _NOT_FOUND


class SpanAttributes:
    """Lazy access to a few scalar attributes of one span.

    A key missing from the standard layout is taken as absent once the span has
    shown it uses that layout (some lookup succeeded); until then, a key whose
    text occurs in the bytes sends the span through the real decoder.
    """

    __slots__ = ("_decoded", "_encoded", "_span", "_standard")

    def __init__(self, span: Span, encoded: bytes) -> None:
        self._span = span
        self._encoded = encoded
        self._decoded: dict[str, Any] | None = None
        self._standard = False

    def get(self, key: Key) -> Any:
        """The attribute's scalar value, or None if the span does not have it."""
        if self._decoded is None:
            value = scalar_at(self._encoded, key.pattern)
            if value is not _NOT_FOUND:
                self._standard = True
                return value
            if self._standard or key.raw not in self._encoded:
                return None
            self._decoded = self._decode()  # unusual layout: ask the real decoder
        return self._decoded.get(key.name)

    def first(self, *keys: Key) -> Any:
        """The first of ``keys`` the span has with a non-empty value."""
        for key in keys:
            value = self.get(key)
            if value is not None and value != "":
                return value
        return None

    def _decode(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for pair in self._span.attributes:
            value = pair.value
            which = value.WhichOneof("value")
            if which in _SCALARS and pair.key not in found:
                found[pair.key] = getattr(value, which)
        return found


def attributes_offset(encoded: bytes) -> int | None:
    """Where a serialized span's attributes begin: past its ids, trace state,
    name, kind and times (fields 1 to 8, in the standard layout). Everything from
    here on (attributes, events, links, status) is what classification reads.
    None if the bytes are not in the standard layout."""
    try:
        if encoded[0] != 0x0A or encoded[1] != 16 or encoded[18] != 0x12 or encoded[19] != 8:
            return None
        pos = 28
        if encoded[pos] == 0x1A:  # trace_state
            size, pos = _varint(encoded, pos + 1)
            pos += size
        if encoded[pos] == 0x22:  # parent_span_id
            if encoded[pos + 1] != 8:
                return None
            pos += 10
        if encoded[pos] == 0x2A:  # name
            size, pos = _varint(encoded, pos + 1)
            pos += size
        if encoded[pos] == 0x30:  # kind
            _, pos = _varint(encoded, pos + 1)
        if encoded[pos] == 0x39:  # start_time_unix_nano
            pos += 9
        if encoded[pos] == 0x41:  # end_time_unix_nano
            pos += 9
    except (IndexError, ValueError):
        return None
    return pos
