"""Building and sending OTLP trace requests by hand, for contract tests.

The OpenTelemetry Python SDK only exports protobuf; :func:`to_json` produces the
OTLP/JSON encoding other SDKs (browser, Node) send: lowerCamelCase keys, ids as
hex strings, enums as integers, 64-bit integers as strings.
"""

from __future__ import annotations

import base64
import gzip as gzip_module
import json
import os
import time
from typing import Any

import httpx
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tierscope.testing.batches import kv

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def span(
    name: str = "GET /leads",
    *,
    kind: int = Span.SPAN_KIND_SERVER,
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
    parent_span_id: bytes = b"",
    start_ns: int | None = None,
    duration_ms: float = 12.5,
    attributes: dict[str, Any] | None = None,
    error: bool = False,
) -> Span:
    start = start_ns if start_ns is not None else time.time_ns() - 2 * 10**9
    result = Span(
        name=name,
        kind=kind,
        trace_id=trace_id if trace_id is not None else os.urandom(16),
        span_id=span_id if span_id is not None else os.urandom(8),
        parent_span_id=parent_span_id,
        start_time_unix_nano=start,
        end_time_unix_nano=start + int(duration_ms * 1e6),
    )
    result.attributes.extend(kv(key, value) for key, value in (attributes or {}).items())
    if error:
        result.status.code = 2
    return result


def request(
    spans: list[Span], service: str = "crm-web", resource: dict[str, Any] | None = None
) -> ExportTraceServiceRequest:
    message = ExportTraceServiceRequest()
    resource_spans = message.resource_spans.add()
    attrs = {"service.name": service, **(resource or {})}
    resource_spans.resource.attributes.extend(kv(key, value) for key, value in attrs.items())
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "tierscope.tests"
    scope_spans.spans.extend(spans)
    return message


def request_of(by_service: dict[str, list[Span]]) -> ExportTraceServiceRequest:
    """One request holding each service's spans under its own resource, as an
    OpenTelemetry Collector's batch does: the store receives them all at once."""
    message = ExportTraceServiceRequest()
    for service, spans in by_service.items():
        message.resource_spans.extend(request(spans, service=service).resource_spans)
    return message


def _hex_ids(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids(item)


def to_json(message: ExportTraceServiceRequest) -> bytes:
    """The OTLP/JSON encoding of a request."""
    data = json_format.MessageToDict(message, use_integers_for_enums=True)
    _hex_ids(data)
    return json.dumps(data).encode()


def post(
    url: str,
    key: str | None,
    body: bytes,
    *,
    content_type: str = PROTOBUF,
    gzip: bool = False,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> httpx.Response:
    """POST a body to ``{url}/v1/traces``, with the key as a bearer token."""
    sent_headers = {"Content-Type": content_type, **(headers or {})}
    if key is not None:
        sent_headers["Authorization"] = f"Bearer {key}"
    if gzip:
        body = gzip_module.compress(body)
        sent_headers["Content-Encoding"] = "gzip"
    return httpx.post(f"{url}/v1/traces", content=body, headers=sent_headers, timeout=timeout)


def get_trace(url: str, token: str, trace_id: bytes | str) -> httpx.Response:
    trace_hex = trace_id.hex() if isinstance(trace_id, bytes) else trace_id
    return httpx.get(
        f"{url}/api/v1/traces/{trace_hex}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10.0,
    )
