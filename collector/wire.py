"""Read a span's own attribute values straight from its serialized bytes.

Decoding every attribute of every span into Python objects costs about half a
microsecond per attribute, which at tens of thousands of spans per second is
most of the collector's time. Classification needs two or three values of a
span, and its bytes are at hand anyway (it is stored as-is, as its client sent
it: :mod:`.span_bytes`), so this module reads those values from the bytes. A
span is written field by field in number order: ids, trace state, parent,
name, kind, times (fields 1 to 8), then its attributes (field 9), each an OTLP
``KeyValue``:

    0x4A <length> 0x0A <key length> <key> 0x12 <AnyValue length> <AnyValue>

:func:`attribute_index` walks exactly those entries, so a key inside an event,
a link, a nested map or the span's name is never mistaken for an attribute.
That layout is what every mainstream protobuf encoder writes; for anything else
(another order, a value in a form a canonical encoder never writes, such as an
over-long varint or a repeated member of the value) the readers ask the real
decoder, so the answer is always the decoder's (tests/collector/test_wire.py
and the wire fuzz target hold them equal).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator, Mapping
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tierscope.collector.otlp import attributes

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
    """An attribute key prepared for lookups: its text and its bytes."""

    __slots__ = ("name", "raw")

    def __init__(self, name: str) -> None:
        self.name = name
        self.raw = name.encode()


def attributes_offset(encoded: bytes) -> int | None:
    """Where a serialized span's attributes begin: past its ids, trace state,
    parent, name, kind and times (fields 1 to 8, in the standard layout).
    Everything from here on (attributes, events, links, status) is what
    classification may read. None if the bytes are not in that layout."""
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


def attribute_index(encoded: bytes) -> dict[bytes, tuple[int, int]] | None:
    """Where each of the span's own attributes keeps its value: ``{key: (start, end)}``
    of the ``AnyValue`` bytes, the first of repeated keys winning. None if the
    bytes are not in the standard layout."""
    offset = attributes_offset(encoded)
    if offset is None:
        return None
    index: dict[bytes, tuple[int, int]] = {}
    size = len(encoded)
    pos = offset
    try:
        while pos < size and encoded[pos] == 0x4A:
            # Lengths under 128 take one byte: the common case, read inline.
            length = encoded[pos + 1]
            start = pos + 2
            if length >= 0x80:
                length, start = _varint(encoded, pos + 1)
            end = start + length
            if end > size or encoded[start] != 0x0A:  # a KeyValue starts with its key
                return None
            key_length = encoded[start + 1]
            key_start = start + 2
            if key_length >= 0x80:
                key_length, key_start = _varint(encoded, start + 1)
            after_key = key_start + key_length
            if after_key == end:
                value = (end, end)  # no value
            elif encoded[after_key] == 0x12:
                value_length = encoded[after_key + 1]
                value_start = after_key + 2
                if value_length >= 0x80:
                    value_length, value_start = _varint(encoded, after_key + 1)
                if value_start + value_length != end:
                    return None
                value = (value_start, end)
            else:
                return None
            key = encoded[key_start:after_key]
            if key not in index:
                index[key] = value
            pos = end
        # Everything after the attributes must be a later field (10 and up:
        # dropped count, events, links, status, flags). A repeated id or name
        # there, or more attributes after an event, is valid protobuf but not
        # the standard layout: the decoder answers instead. Spans are stored
        # as their clients sent them (span_bytes.py), so any encoder's order
        # reaches this function. Found by fuzzing (tests/fuzz/crashers/wire/).
        if not _only_later_fields(encoded, pos, size):
            return None
    except (IndexError, ValueError):
        return None
    return index


def _only_later_fields(encoded: bytes, pos: int, size: int) -> bool:
    """True if every field from ``pos`` to the end is numbered 10 or more and
    ends within the bytes. A span has few of them (status, flags, an event or
    two): each is skipped by its length, not read."""
    while pos < size:
        key = encoded[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _varint(encoded, pos)
        if key < 0x50:  # field number under 10
            return False
        wire_type = key & 7
        if wire_type == 2:
            length, pos = _varint(encoded, pos)
            pos += length
        elif wire_type == 0:
            _, pos = _varint(encoded, pos)
        elif wire_type == 5:
            pos += 4
        elif wire_type == 1:
            pos += 8
        else:
            return False
    return pos == size


def _scalar(data: bytes, start: int, end: int) -> Any:
    """The scalar held by the ``AnyValue`` in ``data[start:end]``; ``_NOT_FOUND``
    for no value, arrays, maps and bytes."""
    if start >= end:
        return _NOT_FOUND
    tag = data[start]
    try:
        if tag == 0x0A:  # string_value
            size, pos = _varint(data, start + 1)
            if pos + size != end:
                return _NOT_FOUND
            return data[pos:end].decode("utf-8", "replace")
        if tag == 0x18:  # int_value: int64, two's complement in a varint
            number, pos = _varint(data, start + 1)
            if pos != end or number >= 1 << 64:  # bits past 64: the decoder drops them
                return _NOT_FOUND
            return number - (1 << 64) if number >= 1 << 63 else number
        if tag == 0x10:  # bool_value
            number, pos = _varint(data, start + 1)
            return bool(number) if pos == end and number < 1 << 64 else _NOT_FOUND
        if tag == 0x21 and start + 9 == end:  # double_value
            return _DOUBLE.unpack_from(data, start + 1)[0]
    except (IndexError, ValueError):
        pass
    return _NOT_FOUND


class SpanAttributes:
    """Lazy access to the scalar attributes of one span, straight from its bytes.

    The span's own attributes are indexed on first use; if its bytes are not in
    the standard layout, the real decoder answers instead.
    """

    __slots__ = ("_decoded", "_encoded", "_index", "_span")

    def __init__(self, span: Span, encoded: bytes, index: dict[bytes, tuple[int, int]] | None = None) -> None:
        self._span = span
        self._encoded = encoded
        self._index = index  # attribute_index(encoded), if the caller has it
        self._decoded: dict[str, Any] | None = None

    def get(self, key: Key) -> Any:
        """The attribute's scalar value, or None if the span has no such scalar attribute."""
        if self._index is None and self._decoded is None:
            self._index = attribute_index(self._encoded)
            if self._index is None:
                self._decoded = self._decode()  # unusual layout: ask the real decoder
        if self._index is not None:
            where = self._index.get(key.raw)
            if where is None:
                return None
            value = _scalar(self._encoded, *where)
            if value is not _NOT_FOUND:
                return value
            # Not a scalar in its canonical form (a list, a map, bytes, or an
            # unusual encoding of a scalar): the decoder decides.
        if self._decoded is None:
            self._decoded = self._decode()
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


_log = logging.getLogger(__name__)
_corrupt_seen = False


def _warn_corrupt_once() -> None:
    global _corrupt_seen  # one warning per process, not one per span
    if not _corrupt_seen:
        _corrupt_seen = True
        _log.warning("a stored span's bytes do not decode; its attributes are read as none")


class AttributeMap(Mapping[str, Any]):
    """A span's own attributes as a read-only mapping, decoded only as they are
    asked for (trace processing names transactions from two or three of them).

    Scalars come from the bytes; anything else (lists, maps, bytes), and spans
    not in the standard layout, from the real decoder.
    """

    __slots__ = ("_all", "_encoded", "_index")

    def __init__(self, encoded: bytes) -> None:
        self._encoded = encoded
        self._index = attribute_index(encoded)
        self._all: dict[str, Any] | None = None

    def _decoded(self) -> dict[str, Any]:
        if self._all is None:
            try:
                self._all = attributes(Span.FromString(self._encoded).attributes)
            except DecodeError:
                # Ingest stored only what it decoded, so these bytes were damaged
                # at rest. One span's attributes are lost; stalling processing on
                # it would lose every trace after it.
                _warn_corrupt_once()
                self._all = {}
        return self._all

    def __getitem__(self, key: str) -> Any:
        if self._index is None:
            return self._decoded()[key]
        where = self._index.get(key.encode())
        if where is None:
            raise KeyError(key)
        value = _scalar(self._encoded, *where)
        return self._decoded()[key] if value is _NOT_FOUND else value

    def get(self, key: str, default: Any = None) -> Any:
        # Without Mapping.get's KeyError: naming asks for several keys a span
        # rarely has, for every trace.
        if self._index is None:
            return self._decoded().get(key, default)
        where = self._index.get(key.encode())
        if where is None:
            return default
        value = _scalar(self._encoded, *where)
        return self._decoded().get(key, default) if value is _NOT_FOUND else value

    def __contains__(self, key: object) -> bool:
        if self._index is None:
            return key in self._decoded()
        return isinstance(key, str) and key.encode() in self._index

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())
