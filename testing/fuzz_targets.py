"""What the fuzzers feed: one function per decoder, taking raw bytes.

Each target runs the code an attacker's bytes reach and lets only the errors
that code documents for bad input pass (the collector answers those with 400).
Anything else escaping a target is a crash: the collector would answer 500,
or the agent would raise into the monitored app. Targets also check a property
where one is cheap: the lazy wire reader agrees with the real decoder, and a
planted secret never survives the scrubbers.

Used by ``tests/fuzz/run_atheris.py`` (coverage-guided, libFuzzer under the
hood) and by the regression tests that replay every saved input.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from google.protobuf.message import DecodeError
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from pydantic import ValidationError

from tierscope.agent.scrub import REDACTED, Scrubber, scrub_sql
from tierscope.collector import beacon, otlp, wire
from tierscope.collector.convert import Limits, convert
from tierscope.collector.span_bytes import span_bytes
from tierscope.config import load_settings
from tierscope.processing import sqlnorm

_LIMITS = Limits()
_SETTINGS = load_settings()
_KEYS = [wire.Key(name) for name in ("http.route", "url.path", "db.system", "http.request.method", "")]
_SCRUBBER = Scrubber(sensitive_params=("token", "sig", "x-amz-signature", "password"))
_PLANTED = "s3cr3tV4lu3"  # a value the scrubbers must remove


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def otlp_request(data: bytes) -> None:
    """An OTLP/HTTP body: decoded as protobuf or JSON (the first byte chooses),
    converted to rows as ingest does, and read with the lazy wire reader."""
    media = otlp.JSON if data[:1] in (b"{", b" ", b"[") else otlp.PROTOBUF
    try:
        request = otlp.decode_traces(data, media)
    except otlp.BadRequest:
        return
    originals = span_bytes(data) if media == otlp.PROTOBUF else None
    # The readers see the bytes as the client sent them (stored as they are)
    # and as serialized again (spans cut to a limit, JSON): both must agree.
    sent = [
        (Span.FromString(encoded), encoded)
        for resource_spans in (originals.resource_spans if originals is not None else ())
        for scope_spans in resource_spans.scope_spans
        for encoded in scope_spans.spans
    ]
    convert(request, 1, _LIMITS, time.time_ns(), originals)
    for span, encoded in sent:
        _agree(span, encoded)
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                _agree(span, span.SerializeToString())


def wire_span(data: bytes) -> None:
    """Arbitrary bytes as a span for the lazy wire readers."""
    try:
        span = Span.FromString(data)
    except (DecodeError, RuntimeWarning):
        return
    # Any bytes that decode as a span may be stored as they are (spans are
    # kept as their clients sent them): the readers agree with the decoder on
    # them, and on the collector's own serialization.
    _agree(span, data)
    _agree(span, span.SerializeToString())


def _json_form(value: Any) -> Any:
    # The decoder's view is JSON-ready: NaN and infinities become "nan", "inf"
    # (collector/otlp.py any_value); the lazy readers give the float itself.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _agree(span: Any, encoded: bytes) -> None:
    """The lazy readers give the decoder's value for every key the span has once.

    A key repeated within one span breaks the OTLP rule that keys are unique;
    which copy wins is then unspecified, so those keys are not compared (found
    by this fuzzer: tests/fuzz/crashers/otlp/).
    """
    lazy = wire.SpanAttributes(span, encoded)
    mapping = wire.AttributeMap(encoded)
    decoded = otlp.attributes(span.attributes)
    counts = Counter(pair.key for pair in span.attributes)
    for key in _KEYS:
        if counts[key.name] != 1:
            continue
        value = lazy.get(key)
        if value is not None:
            assert decoded[key.name] == _json_form(value), (key.name, value, decoded[key.name])
        assert _json_form(mapping.get(key.name)) == decoded.get(key.name), (key.name, mapping.get(key.name))


def rum_beacon(data: bytes) -> None:
    """A RUM beacon body: parsed and turned into rows as the endpoint does."""
    try:
        parsed = beacon.parse_beacon(data)
        # "Now" is the first item's time, so saved inputs stay inside the accepted window.
        first = parsed.items[0]
        now = (first.time if isinstance(first, beacon.ScriptError) else first.start) / 1000
        beacon.rows_of(parsed, site=None, now=now, settings=_SETTINGS, user_agent=_text(data[:64]))
    except (ValueError, ValidationError):
        return


def sql_normalize(data: bytes) -> None:
    """A statement from a span: normalized for grouping (processing/sqlnorm.py)."""
    text = _text(data)
    result = sqlnorm.normalize(text)
    assert isinstance(result, str)
    assert len(result) <= max(len(text), 1) * 3 + 16, "normalization does not blow a statement up"


def agent_scrub(data: bytes) -> None:
    """Attribute values through the agent's scrubbers; a planted token never survives."""
    text = _text(data)
    scrub_sql(text)
    for key in ("db.statement", "url.full", "http.target", "user.note"):
        _SCRUBBER.value(key, text)
    _SCRUBBER.keeps("http.request.header." + text[:32])
    planted = f"https://user:{_PLANTED}@example.test/p?{text[:40]}&token={_PLANTED}"
    scrubbed = _SCRUBBER.url(planted)
    if _PLANTED not in text:
        assert _PLANTED not in scrubbed, scrubbed
        assert REDACTED in scrubbed


TARGETS: dict[str, Callable[[bytes], None]] = {
    "otlp": otlp_request,
    "wire": wire_span,
    "beacon": rum_beacon,
    "sqlnorm": sql_normalize,
    "scrub": agent_scrub,
}
