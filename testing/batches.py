"""Realistic OTLP trace batches, cheap enough to send at benchmark rates.

A batch looks like what an instrumented ERP sends: traces of one server span
with database and outbound HTTP calls under it, about ten attributes a span,
current semantic-convention names. Building protobuf messages in Python costs
far more than the collector spends reading them, so a load generator cannot
build a fresh batch per request. Instead :class:`BatchTemplate` builds a few
batches once, with every trace and span id starting with a 4-byte marker; each
request replaces the marker with a fresh counter value (one C-level
``bytes.replace``), which makes every span of every request unique.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

MARKER = b"\xf3\x9a\x7c\x51"
_ID_PREFIX = 4


def kv(key: str, value: str | int | float | bool) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


_ROUTES = [
    ("POST", "/invoices/{id}/post"),
    ("GET", "/leads"),
    ("POST", "/leads"),
    ("GET", "/orders/{id}"),
    ("POST", "/orders"),
    ("GET", "/stock/{sku}"),
]
_STATEMENTS = [
    "SELECT id, state, amount FROM account_move WHERE id = %s",
    "UPDATE account_move SET state = %s WHERE id = %s",
    "INSERT INTO account_move_line (move_id, account_id, debit, credit) VALUES (%s, %s, %s, %s)",
    "SELECT qty FROM stock_quant WHERE product_id = %s AND location_id = %s",
    "SELECT * FROM crm_lead WHERE stage_id = %s ORDER BY create_date DESC LIMIT 50",
]


def _server_span(rnd: random.Random, span: Span, start: int) -> None:
    method, route = rnd.choice(_ROUTES)
    span.kind = Span.SPAN_KIND_SERVER
    span.name = f"{method} {route}"
    span.attributes.extend(
        [
            kv("http.request.method", method),
            kv("http.route", route),
            kv("url.path", route.replace("{id}", str(rnd.randint(1, 99999))).replace("{sku}", "SKU-1")),
            kv("url.scheme", "https"),
            kv("server.address", "erp.example.test"),
            kv("server.port", 443),
            kv("http.response.status_code", 200),
            kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
            kv("client.address", f"10.1.{rnd.randint(0, 255)}.{rnd.randint(1, 254)}"),
            kv("network.protocol.version", "1.1"),
        ]
    )


def _db_span(rnd: random.Random, span: Span) -> None:
    statement = rnd.choice(_STATEMENTS)
    span.kind = Span.SPAN_KIND_CLIENT
    span.name = statement.split(" ", 1)[0]
    span.attributes.extend(
        [
            kv("db.system", "postgresql"),
            kv("db.namespace", "erp"),
            kv("db.query.text", statement),
            kv("db.operation.name", span.name),
            kv("server.address", "db1"),
            kv("server.port", 5432),
            kv("network.peer.address", "10.0.0.5"),
            kv("db.user", "erp"),
            kv("thread.id", 4711),
            kv("code.function", "execute"),
        ]
    )


def _http_span(rnd: random.Random, span: Span) -> None:
    span.kind = Span.SPAN_KIND_CLIENT
    span.name = "POST"
    span.attributes.extend(
        [
            kv("http.request.method", "POST"),
            kv("url.full", "http://ext-services:8081/credit-check"),
            kv("server.address", "ext-services"),
            kv("server.port", 8081),
            kv("http.response.status_code", 200),
            kv("network.protocol.version", "1.1"),
            kv("http.request.body.size", rnd.randint(100, 4000)),
            kv("thread.id", 4711),
            kv("code.function", "check_credit"),
            kv("code.namespace", "erp.credit"),
        ]
    )


def build_request(
    spans: int = 512,
    *,
    seed: int = 0,
    service: str = "erp-api",
    now_ns: int | None = None,
    marker: bytes = MARKER,
    spans_per_trace: int = 8,
) -> ExportTraceServiceRequest:
    """One batch of ``spans`` spans in traces of ``spans_per_trace``: a server span,
    then database calls and an outbound HTTP call as its children."""
    rnd = random.Random(seed)
    now_ns = now_ns or time.time_ns()
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        [
            kv("service.name", service),
            kv("service.instance.id", f"{service}-1"),
            kv("host.name", "app-host-1"),
            kv("deployment.environment", "production"),
            kv("telemetry.sdk.language", "python"),
            kv("telemetry.sdk.name", "opentelemetry"),
        ]
    )
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "opentelemetry.instrumentation.flask"
    made = 0
    while made < spans:
        trace_id = marker + rnd.randbytes(16 - _ID_PREFIX)
        root_id = marker + rnd.randbytes(8 - _ID_PREFIX)
        start = now_ns - rnd.randint(1, 5) * 10**9
        total = rnd.randint(50, 2000) * 10**6
        for index in range(min(spans_per_trace, spans - made)):
            span = scope_spans.spans.add()
            span.trace_id = trace_id
            span.status.code = Status.STATUS_CODE_UNSET
            if index == 0:
                span.span_id = root_id
                span.start_time_unix_nano = start
                span.end_time_unix_nano = start + total
                _server_span(rnd, span, start)
            else:
                span.span_id = marker + rnd.randbytes(8 - _ID_PREFIX)
                span.parent_span_id = root_id
                offset = rnd.randint(0, total // 2)
                span.start_time_unix_nano = start + offset
                span.end_time_unix_nano = start + offset + rnd.randint(1, total // 4)
                (_http_span if index == spans_per_trace - 1 else _db_span)(rnd, span)
                if rnd.random() < 0.01:
                    span.status.code = Status.STATUS_CODE_ERROR
            made += 1
    return request


@dataclass
class BatchTemplate:
    """Serialized batches whose ids are made unique per request by :meth:`next_body`."""

    bodies: list[bytes]
    spans_per_body: int
    first: int = 1  # the number of the first body

    @classmethod
    def build(
        cls, spans: int = 512, variants: int = 8, service: str = "erp-api", first: int = 1
    ) -> BatchTemplate:
        bodies = []
        for seed in range(variants):
            body = build_request(spans, seed=seed, service=service).SerializeToString()
            roots = -(-spans // 8)
            # Every span has a trace id and a span id, every child a parent id,
            # and the marker must appear nowhere else.
            if body.count(MARKER) != 3 * spans - roots:
                raise RuntimeError("the id marker occurs outside the ids; pick another marker")
            bodies.append(body)
        return cls(bodies=bodies, spans_per_body=spans, first=first)

    def __post_init__(self) -> None:
        self._counter = itertools.count(self.first)
        self._lock = threading.Lock()

    def trace_ids(self, number: int) -> list[bytes]:
        """The trace ids of the body :meth:`next_body` returned for ``number``
        (for a reader that fetches acknowledged traces back)."""
        request = ExportTraceServiceRequest.FromString(self.bodies[number % len(self.bodies)])
        prefix = number.to_bytes(_ID_PREFIX, "big")
        ids = dict.fromkeys(
            span.trace_id
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        )
        return [prefix + trace_id[_ID_PREFIX:] for trace_id in ids]

    def next_body(self) -> tuple[int, bytes]:
        """A body no other call returned, and its sequence number."""
        with self._lock:
            number = next(self._counter)
        prefix = number.to_bytes(_ID_PREFIX, "big")
        return number, self.bodies[number % len(self.bodies)].replace(MARKER, prefix)
