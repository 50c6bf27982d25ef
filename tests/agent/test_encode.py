"""The agent's hand-written OTLP encoder writes exactly the bytes of the SDK's
encoder (``encode_spans(...).SerializeToString()``) for any spans, when there is
nothing to scrub; and remembered attributes never leak between keys or types."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tierscope.agent.encode import SpanEncoder

keys = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
scalars = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False),
)
values = st.one_of(
    scalars,
    st.lists(st.text(max_size=5), max_size=3),
    st.lists(st.integers(min_value=-1000, max_value=1000), max_size=3),
    st.lists(st.floats(allow_nan=False), max_size=3),
    st.lists(st.booleans(), max_size=3),
)
attribute_maps = st.dictionaries(keys, values, max_size=6)
span_specs = st.lists(
    st.tuples(
        st.text(max_size=20),  # name
        st.sampled_from(list(SpanKind)),
        attribute_maps,
        st.lists(st.tuples(st.text(max_size=8), attribute_maps), max_size=2),  # events
        st.sampled_from([None, (StatusCode.OK, None), (StatusCode.ERROR, "boom"), (StatusCode.ERROR, None)]),
        st.integers(min_value=0, max_value=2),  # nesting: 0 root, else child of the previous
        st.sampled_from(["scope.a", "scope.b"]),
        st.booleans(),  # link to the previous span
    ),
    min_size=1,
    max_size=6,
)


def record(specs: list) -> list:
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create({"service.name": "enc", "process.pid": 42}), shutdown_on_exit=False
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    previous = None
    for name, kind, attributes, events, status, nesting, scope, link in specs:
        tracer = provider.get_tracer(scope, "1.2" if scope == "scope.a" else None, schema_url="")
        context = None
        if nesting and previous is not None:
            from opentelemetry import trace

            context = trace.set_span_in_context(previous)
        links = [Link(previous.get_span_context(), {"why": "because"})] if link and previous else []
        span = tracer.start_span(name, context=context, kind=kind, attributes=attributes, links=links)
        for event_name, event_attributes in events:
            span.add_event(event_name, event_attributes)
        if status is not None:
            span.set_status(Status(*status))
        span.end()
        previous = span
    return list(memory.get_finished_spans())


@settings(max_examples=150, deadline=None)
@given(span_specs)
def test_the_bytes_equal_the_sdk_encoders(specs: list) -> None:
    spans = record(specs)
    encoder = SpanEncoder(None, mark_background=False)
    assert encoder.encode(spans) == encode_spans(spans).SerializeToString()
    # Again, from the remembered attributes.
    assert encoder.encode(spans) == encode_spans(spans).SerializeToString()


def test_equal_values_of_different_types_are_not_confused() -> None:
    spans = record([("s", SpanKind.INTERNAL, {"v": 1, "w": True, "x": 1.0}, [], None, 0, "scope.a", False)])
    spans += record([("s", SpanKind.INTERNAL, {"v": True, "w": 1, "x": 1}, [], None, 0, "scope.a", False)])
    encoder = SpanEncoder(None, mark_background=False)
    for span in spans:
        assert encoder.encode([span]) == encode_spans([span]).SerializeToString()


def test_background_roots_are_marked_and_requests_are_not() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    specs = [
        ("mail", SpanKind.INTERNAL, {}, [], None, 0, "scope.a", False),
        ("GET /", SpanKind.SERVER, {}, [], None, 0, "scope.a", False),
        ("child", SpanKind.CLIENT, {}, [], None, 1, "scope.a", False),
        ("job", SpanKind.CONSUMER, {}, [], None, 0, "scope.a", False),
    ]
    message = ExportTraceServiceRequest.FromString(SpanEncoder().encode(record(specs)))
    marked = {
        span.name: any(kv.key == "tierscope.background" and kv.value.bool_value for kv in span.attributes)
        for span in message.resource_spans[0].scope_spans[0].spans
    }
    assert marked == {"mail": True, "GET /": False, "child": False, "job": False}


def test_spans_of_equal_resources_from_two_providers_all_arrive() -> None:
    # Groups are keyed by the resource object, not by its (costly) hash: two equal
    # resources become two groups, and no span is lost or filed under the wrong one.
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans = []
    for service in ("crm", "crm", "erp"):
        memory = InMemorySpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": service}), shutdown_on_exit=False)
        provider.add_span_processor(SimpleSpanProcessor(memory))
        provider.get_tracer("scope.a").start_span(f"work of {service}").end()
        spans += memory.get_finished_spans()
    request = ExportTraceServiceRequest.FromString(SpanEncoder(None).encode(spans))
    found = []
    for resource_spans in request.resource_spans:
        service = next(
            a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"
        )
        for scope_spans in resource_spans.scope_spans:
            found += [(service, span.name) for span in scope_spans.spans]
    assert sorted(found) == [("crm", "work of crm"), ("crm", "work of crm"), ("erp", "work of erp")]
