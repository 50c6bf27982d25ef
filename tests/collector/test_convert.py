"""Conversion of OTLP requests into rows: what is kept, cut and refused."""

from __future__ import annotations

import time

from tierscope.collector.convert import UNKNOWN_SERVICE, Limits, convert
from tierscope.testing import otlp


def test_a_span_without_service_name_belongs_to_unknown_service() -> None:
    request = otlp.request([otlp.span()])
    del request.resource_spans[0].resource.attributes[:]
    result = convert(request, 1, Limits(), time.time_ns())
    assert [r.service for r in result.resources] == [UNKNOWN_SERVICE]
    assert result.rows.count == 1


def test_overlong_names_are_cut_and_counted() -> None:
    result = convert(otlp.request([otlp.span("n" * 5000)]), 1, Limits(), time.time_ns())
    assert result.truncated == 1
    assert result.rows.count == 1


def test_event_attributes_have_their_own_larger_limit() -> None:
    span = otlp.span()
    event = span.events.add(name="exception", time_unix_nano=span.start_time_unix_nano)
    event.attributes.add(key="exception.stacktrace").value.string_value = "frame\n" * 1000  # 6000 bytes
    event.attributes.add(key="huge").value.string_value = "y" * 40000
    result = convert(otlp.request([span]), 1, Limits(), time.time_ns())
    assert result.truncated == 1  # only the 40 kB value; the stack trace fits in 16 KiB
    assert result.rows.count == 1


def test_the_message_names_reasons_and_examples() -> None:
    spans = [otlp.span(start_ns=0), otlp.span(start_ns=0), otlp.span(span_id=b"x")]
    result = convert(otlp.request(spans), 1, Limits(), time.time_ns())
    assert result.rejected_count == 3
    message = result.message(Limits())
    assert "2 span(s) rejected: timestamp_out_of_range (e.g. start 1970-01-01T00:00:00Z" in message
    assert "1 span(s) rejected: invalid_span_id (e.g. span_id of 1 bytes" in message


def test_an_all_zero_parent_means_no_parent() -> None:
    span = otlp.span(parent_span_id=bytes(8))
    result = convert(otlp.request([span]), 1, Limits(), time.time_ns())
    assert result.rejected_count == 0
    assert result.rows.count == 1
