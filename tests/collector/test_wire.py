"""Attribute values read from a span's bytes always equal the decoder's."""

from __future__ import annotations

import math
from random import Random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tierscope.collector import wire
from tierscope.collector.otlp import attributes
from tierscope.collector.wire import AttributeMap, Key, SpanAttributes

keys = st.sampled_from(["db.system", "db.statement", "server.port", "http.url", "a", "x.y.z", "note"])
scalars = st.one_of(
    st.text(max_size=400),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.booleans(),
    st.floats(allow_nan=False),
)


def any_value(value: object) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(keys, scalars), max_size=12), st.text(max_size=50))
def test_wire_lookups_match_the_decoder(pairs: list[tuple[str, object]], name: str) -> None:
    span = Span(name=name, trace_id=b"t" * 16, span_id=b"s" * 8)
    span.attributes.extend(KeyValue(key=k, value=any_value(v)) for k, v in pairs)
    attributes = SpanAttributes(span, span.SerializeToString())
    first: dict[str, object] = {}
    for key, value in pairs:
        first.setdefault(key, value)
    for key in ["db.system", "db.statement", "server.port", "http.url", "a", "x.y.z", "note", "absent"]:
        assert attributes.get(Key(key)) == first.get(key)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(keys, scalars), max_size=8), st.integers(0, 2), st.randoms(use_true_random=False))
def test_spans_with_their_fields_in_any_order_read_as_the_decoder_reads_them(
    pairs: list[tuple[str, object]], events: int, random: Random
) -> None:
    # Spans are stored as their clients sent them, and an encoder may write the
    # fields in any order: attributes after an event, the name after them.
    # Each piece is one field; joined in any order they are a valid Span.
    # The ids stay first, as every encoder writes them, so that the fast path
    # (not only the decoder) is what is compared.
    ids = Span(trace_id=b"t" * 16, span_id=b"s" * 8).SerializeToString()
    pieces = [
        Span(name="GET /leads").SerializeToString(),
        Span(kind=Span.SPAN_KIND_SERVER).SerializeToString(),
        Span(start_time_unix_nano=1, end_time_unix_nano=2).SerializeToString(),
        Span(status=Status(code=Status.STATUS_CODE_ERROR)).SerializeToString(),
        *(Span(attributes=[KeyValue(key=k, value=any_value(v))]).SerializeToString() for k, v in pairs),
        *(Span(events=[Span.Event(name=f"event {i}")]).SerializeToString() for i in range(events)),
    ]
    random.shuffle(pieces)
    encoded = ids + b"".join(pieces)
    span = Span.FromString(encoded)
    first: dict[str, object] = {}
    for pair in span.attributes:
        first.setdefault(pair.key, getattr(pair.value, str(pair.value.WhichOneof("value"))))
    decoded = attributes(span.attributes)  # processing's view: JSON-ready ("inf" for infinity)
    for key in ["db.system", "db.statement", "server.port", "http.url", "a", "x.y.z", "note", "absent"]:
        assert SpanAttributes(span, encoded).get(Key(key)) == first.get(key)
        value = AttributeMap(encoded).get(key)
        assert (str(value) if value in (math.inf, -math.inf) else value) == decoded.get(key)


def _attribute(key: str, any_value_bytes: bytes) -> bytes:
    """One attribute (Span field 9) holding these AnyValue bytes."""
    pair = (
        b"\x0a" + bytes([len(key)]) + key.encode() + b"\x12" + bytes([len(any_value_bytes)]) + any_value_bytes
    )
    return b"\x4a" + bytes([len(pair)]) + pair


def test_attributes_after_an_event_are_read_as_the_decoder_reads_them() -> None:
    head = Span(trace_id=b"t" * 16, span_id=b"s" * 8, name="SELECT").SerializeToString()
    event = Span(events=[Span.Event(name="retry")]).SerializeToString()
    port = AnyValue(int_value=5432).SerializeToString()
    encoded = head + _attribute("db.system", AnyValue(string_value="postgresql").SerializeToString())
    encoded += event + _attribute("server.port", port)
    span = Span.FromString(encoded)
    assert SpanAttributes(span, encoded).get(Key("server.port")) == 5432
    assert AttributeMap(encoded).get("server.port") == 5432
    assert AttributeMap(encoded).get("db.system") == "postgresql"


def test_values_in_a_form_no_canonical_encoder_writes_are_read_as_the_decoder_reads_them() -> None:
    head = Span(trace_id=b"t" * 16, span_id=b"s" * 8, name="SELECT").SerializeToString()
    # 443 in a ten-byte varint with a bit past 64, which the decoder drops.
    number = 443 + (1 << 65)
    varint = bytearray()
    while number >= 0x80:
        varint.append(number & 0x7F | 0x80)
        number >>= 7
    varint.append(number)
    port = b"\x18" + bytes(varint)
    # The value's string member twice: the decoder keeps the last.
    system = (
        AnyValue(string_value="postgresql").SerializeToString()
        + AnyValue(string_value="mysql").SerializeToString()
    )
    encoded = head + _attribute("server.port", port) + _attribute("db.system", system)
    span = Span.FromString(encoded)
    assert span.attributes[0].value.int_value == 443
    assert span.attributes[1].value.string_value == "mysql"
    lazy = SpanAttributes(span, encoded)
    assert (lazy.get(Key("server.port")), lazy.get(Key("db.system"))) == (443, "mysql")
    mapping = AttributeMap(encoded)
    assert (mapping.get("server.port"), mapping.get("db.system")) == (443, "mysql")


def test_arrays_and_maps_are_not_scalars() -> None:
    span = Span(name="x")
    span.attributes.append(
        KeyValue(key="db.system", value=AnyValue(array_value={"values": [AnyValue(string_value="a")]}))
    )
    assert SpanAttributes(span, span.SerializeToString()).get(Key("db.system")) is None


def test_an_unusual_field_order_falls_back_to_the_decoder() -> None:
    # A KeyValue written value-first is valid protobuf that no mainstream encoder emits.
    value = AnyValue(string_value="postgresql").SerializeToString()
    key = b"db.system"
    kv = b"\x12" + bytes([len(value)]) + value + b"\x0a" + bytes([len(key)]) + key
    head = Span(trace_id=b"t" * 16, span_id=b"s" * 8, name="x").SerializeToString()
    encoded = head + b"\x4a" + bytes([len(kv)]) + kv  # Span field 9 (attributes)
    span = Span.FromString(encoded)
    assert SpanAttributes(span, encoded).get(Key("db.system")) == "postgresql"


def test_bytes_without_the_standard_head_fall_back_to_the_decoder() -> None:
    span = Span(name="x")  # no ids: not the standard layout
    span.attributes.append(KeyValue(key="db.system", value=AnyValue(string_value="mysql")))
    assert SpanAttributes(span, span.SerializeToString()).get(Key("db.system")) == "mysql"


def test_damaged_stored_bytes_read_as_no_attributes_instead_of_stopping_processing(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "_corrupt_seen", False)
    damaged = ("c4ca4238a0b923820dcc509a6f75849b" * 18).encode()  # no protobuf at all
    attributes = AttributeMap(damaged)
    assert attributes.get("rpc.method") is None
    assert "db.system" not in attributes
    assert dict(attributes) == {}
    assert AttributeMap(damaged).get("http.route", "none") == "none"
    assert sum("do not decode" in r.getMessage() for r in caplog.records) == 1, "warned once, not per span"
