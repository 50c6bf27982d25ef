"""The real OpenTelemetry Python SDK exports to a running ``tierscope up``; the
spans come back through the query API with tiers, parents and attributes."""

from __future__ import annotations

import time

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from tierscope.testing import otlp
from tierscope.testing.collector import CollectorProcess

RESOURCE = {
    "service.name": "erp-api",
    "service.instance.id": "erp-api-7",
    "host.name": "app-host-3",
    "deployment.environment": "production",
}


def record_invoice_trace(provider: TracerProvider) -> int:
    """What an instrumented ERP does when a user posts an invoice: a server span,
    two database calls (old and new semantic-convention names), an outbound call."""
    tracer = provider.get_tracer("erp.invoices", "1.0")
    with tracer.start_as_current_span(
        "POST /invoices/{id}/post",
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "POST",
            "http.route": "/invoices/{id}/post",
            "url.path": "/invoices/4711/post",
            "http.response.status_code": 200,
        },
    ) as root:
        with tracer.start_as_current_span(
            "UPDATE account_move",
            kind=SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "db.statement": "UPDATE account_move SET state = %s"},
        ):
            time.sleep(0.002)
        with tracer.start_as_current_span(
            "SELECT erp",
            kind=SpanKind.CLIENT,
            attributes={"db.system.name": "postgresql", "db.query.text": "SELECT qty FROM stock_quant"},
        ):
            pass
        with tracer.start_as_current_span(
            "POST",
            kind=SpanKind.CLIENT,
            attributes={
                "http.request.method": "POST",
                "url.full": "http://ext-services:8081/credit-check",
                "server.address": "ext-services",
                "server.port": 8081,
            },
        ) as call:
            call.set_status(Status(StatusCode.ERROR, "credit service timed out"))
        return root.get_span_context().trace_id


def expected_tiers() -> dict[str, tuple[str, str | None]]:
    return {
        "POST /invoices/{id}/post": ("app", None),
        "UPDATE account_move": ("db", "UPDATE account_move SET state = %s"),
        "SELECT erp": ("db", "SELECT qty FROM stock_quant"),
        "POST": ("external", "ext-services:8081"),
    }


def check_trace(collector: CollectorProcess, trace_id: int) -> None:
    token = collector.credentials()["api_token"]
    response = otlp.get_trace(collector.url, token, f"{trace_id:032x}")
    assert response.status_code == 200, response.text
    body = response.json()
    spans = {span["name"]: span for span in body["spans"]}
    assert set(spans) == set(expected_tiers())
    root = spans["POST /invoices/{id}/post"]
    assert root["parent_span_id"] is None
    assert root["kind"] == "server"
    assert root["attributes"]["http.route"] == "/invoices/{id}/post"
    assert root["resource"]["host.name"] == "app-host-3"
    assert root["resource"]["service.instance.id"] == "erp-api-7"
    assert root["resource"]["deployment.environment"] == "production"
    for name, (tier, component) in expected_tiers().items():
        assert spans[name]["tier"] == tier, name
        assert spans[name]["component"] == component, name
        assert spans[name]["service"] == "erp-api"
        if name != "POST /invoices/{id}/post":
            assert spans[name]["parent_span_id"] == root["span_id"]
    assert spans["POST"]["status"] == "error"
    assert spans["POST"]["status_message"] == "credit service timed out"
    assert spans["UPDATE account_move"]["duration_ms"] >= 2.0
    assert root["duration_ms"] >= spans["UPDATE account_move"]["duration_ms"]


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_sdk_protobuf_export_comes_back_with_tiers(
    collector: CollectorProcess, compression: Compression
) -> None:
    key = collector.credentials()["ingest_key"]
    exporter = OTLPSpanExporter(
        endpoint=f"{collector.url}/v1/traces",
        headers={"Authorization": f"Bearer {key}"},
        compression=compression,
    )
    provider = TracerProvider(resource=Resource.create(RESOURCE))
    # Simple (synchronous) processor: each export has returned when the span ends.
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_id = record_invoice_trace(provider)
    provider.shutdown()
    check_trace(collector, trace_id)


@pytest.mark.parametrize("gzip", [False, True])
def test_sdk_spans_as_otlp_json_come_back_with_tiers(collector: CollectorProcess, gzip: bool) -> None:
    """The same spans, encoded by the SDK's own encoder, sent as OTLP/JSON."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create(RESOURCE))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace_id = record_invoice_trace(provider)
    body = otlp.to_json(encode_spans(memory.get_finished_spans()))
    response = otlp.post(
        collector.url, collector.credentials()["ingest_key"], body, content_type=otlp.JSON, gzip=gzip
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {}  # full success: partial_success left unset
    check_trace(collector, trace_id)


def test_recent_traces_lists_the_trace(collector: CollectorProcess) -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({**RESOURCE, "service.name": "crm-web"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    trace_id = record_invoice_trace(provider)
    key = collector.credentials()["ingest_key"]
    assert (
        otlp.post(
            collector.url, key, encode_spans(memory.get_finished_spans()).SerializeToString()
        ).status_code
        == 200
    )

    token = collector.credentials()["api_token"]
    response = httpx.get(
        f"{collector.url}/api/v1/traces",
        params={"service": "crm-web", "since": "10m"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    traces = response.json()["traces"]
    assert [t["trace_id"] for t in traces] == [f"{trace_id:032x}"]
    listed = traces[0]
    assert listed["root_name"] == "POST /invoices/{id}/post"
    assert listed["span_count"] == 4
    assert listed["error_count"] == 1
    assert listed["services"] == ["crm-web"]
    slow = httpx.get(
        f"{collector.url}/api/v1/traces",
        params={"service": "crm-web", "since": "10m", "min_duration_ms": 60_000},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert slow.json()["traces"] == []
