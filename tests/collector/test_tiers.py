"""Tiers and components from OpenTelemetry semantic conventions, old names and new."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tierscope.collector.tiers import classify, is_gateway
from tierscope.testing import otlp

SERVER, CLIENT, INTERNAL = Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_INTERNAL
PRODUCER, CONSUMER = Span.SPAN_KIND_PRODUCER, Span.SPAN_KIND_CONSUMER

# name: (kind, attributes, context, expected tier, expected component)
CASES: dict[str, tuple[int, dict[str, Any], dict[str, bool], str, str | None]] = {
    "An HTTP server span of an application is app time": (
        SERVER,
        {"http.request.method": "GET", "http.route": "/leads"},
        {},
        "app",
        None,
    ),
    "A server span from a gateway is web time": (
        SERVER,
        {"http.method": "GET"},
        {"gateway": True},
        "web",
        None,
    ),
    "An internal span is app time": (INTERNAL, {"code.function": "compute_tax"}, {}, "app", None),
    "ASGI send/receive spans are the web server's time": (
        INTERNAL,
        {"asgi.event.type": "http.response.body"},
        {},
        "web",
        None,
    ),
    "A database call with current names is db, named by its statement": (
        CLIENT,
        {"db.system.name": "postgresql", "db.query.text": "SELECT * FROM crm_lead WHERE id = $1"},
        {},
        "db",
        "SELECT * FROM crm_lead WHERE id = $1",
    ),
    "A database call with old names is db, named by its statement": (
        CLIENT,
        {"db.system": "mysql", "db.statement": "UPDATE stock SET qty = ?"},
        {},
        "db",
        "UPDATE stock SET qty = ?",
    ),
    "A query summary is preferred to the full text": (
        CLIENT,
        {
            "db.system.name": "postgresql",
            "db.query.summary": "SELECT crm_lead",
            "db.query.text": "SELECT a, b FROM crm_lead",
        },
        {},
        "db",
        "SELECT crm_lead",
    ),
    "A database call without a statement is named by operation and table": (
        CLIENT,
        {"db.system": "mongodb", "db.operation": "find", "db.collection.name": "orders"},
        {},
        "db",
        "mongodb find orders",
    ),
    "Redis is the cache tier": (
        CLIENT,
        {"db.system": "redis", "db.statement": "GET session:*"},
        {},
        "cache",
        "GET session:*",
    ),
    "Memcached with the new name is the cache tier": (
        CLIENT,
        {"db.system.name": "memcached", "db.operation.name": "get"},
        {},
        "cache",
        "memcached get",
    ),
    "An sqlite call recorded as an internal span is still db": (
        INTERNAL,
        {"db.system": "sqlite", "db.statement": "SELECT 1"},
        {},
        "db",
        "SELECT 1",
    ),
    "An outbound HTTP call is external, named by its peer": (
        CLIENT,
        {"http.request.method": "POST", "server.address": "ext-services", "server.port": 8081},
        {},
        "external",
        "ext-services:8081",
    ),
    "An outbound call with old peer names": (
        CLIENT,
        {"http.method": "GET", "net.peer.name": "credit.example.test", "net.peer.port": 443},
        {},
        "external",
        "credit.example.test:443",
    ),
    "An outbound call known only by its URL": (
        CLIENT,
        {"http.method": "GET", "http.url": "https://api.example.test/v2/check?x=1"},
        {},
        "external",
        "api.example.test:443",
    ),
    "An outbound call with a full URL and an explicit port": (
        CLIENT,
        {"url.full": "http://10.0.0.9:9000/soap"},
        {},
        "external",
        "10.0.0.9:9000",
    ),
    "A gRPC call is external, named by service and method": (
        CLIENT,
        {"rpc.system": "grpc", "rpc.service": "billing.Invoices", "rpc.method": "Post"},
        {},
        "external",
        "billing.Invoices/Post",
    ),
    "A client span with nothing known is external without component": (CLIENT, {}, {}, "external", None),
    "Publishing a message is the queue tier": (
        PRODUCER,
        {"messaging.system": "rabbitmq", "messaging.destination.name": "invoices"},
        {},
        "queue",
        "rabbitmq invoices",
    ),
    "A client span to a broker is the queue tier": (
        CLIENT,
        {"messaging.system": "kafka", "messaging.destination": "orders"},
        {},
        "queue",
        "kafka orders",
    ),
    "Processing a consumed message is the platform tier": (
        CONSUMER,
        {"messaging.system": "celery", "messaging.destination.name": "imports"},
        {},
        "platform",
        "celery imports",
    ),
    "A consumer span without messaging attributes is the platform tier": (CONSUMER, {}, {}, "platform", None),
    "A producer span without messaging attributes is the queue tier": (PRODUCER, {}, {}, "queue", None),
    "A browser's fetch is network time": (
        CLIENT,
        {"http.url": "https://crm/api"},
        {"browser": True},
        "network",
        None,
    ),
    "A browser's document load is browser time": (INTERNAL, {}, {"browser": True}, "browser", None),
    "An explicit tierscope.tier wins": (
        INTERNAL,
        {"tierscope.tier": "platform", "code.function": "run_import"},
        {},
        "platform",
        None,
    ),
    "An explicit tier of db still gets its statement": (
        INTERNAL,
        {"tierscope.tier": "db", "db.statement": "CALL post_invoice(?)"},
        {},
        "db",
        "CALL post_invoice(?)",
    ),
    "An unknown explicit tier is ignored": (SERVER, {"tierscope.tier": "mainframe"}, {}, "app", None),
    "An attribute value that mentions db.system does not make a span db": (
        SERVER,
        {"note": "see db.system docs"},
        {},
        "app",
        None,
    ),
    "A very long statement is cut to 1024 characters": (
        CLIENT,
        {"db.system": "postgresql", "db.statement": "SELECT " + "x, " * 1000},
        {},
        "db",
        ("SELECT " + "x, " * 1000)[:1024],
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_tier_and_component(name: str) -> None:
    kind, attributes, context, tier, component = CASES[name]
    span = otlp.span(kind=kind, attributes=attributes)
    result = classify(span, span.SerializeToString(), **context)
    assert (result.tier, result.component) == (tier, component)


PEERS: dict[str, tuple[int, dict[str, Any], str | None]] = {
    "A database is known by system, address and database name": (
        CLIENT,
        {
            "db.system": "postgresql",
            "server.address": "db1",
            "server.port": 5432,
            "db.namespace": "erp",
            "db.statement": "SELECT 1",
        },
        "postgresql@db1:5432/erp",
    ),
    "A database without address is known by its system": (
        CLIENT,
        {"db.system": "sqlite", "db.statement": "SELECT 1"},
        "sqlite",
    ),
    "An outbound call's peer is host and port": (
        CLIENT,
        {"url.full": "https://credit.example.test/check"},
        "credit.example.test:443",
    ),
    "A gRPC call's peer is the service": (
        CLIENT,
        {"rpc.service": "billing.Invoices", "rpc.method": "Post"},
        "billing.Invoices",
    ),
    "A broker is known by system and address": (
        PRODUCER,
        {"messaging.system": "rabbitmq", "server.address": "mq1", "messaging.destination.name": "jobs"},
        "rabbitmq@mq1",
    ),
    "A server span has no peer": (SERVER, {"http.route": "/x"}, None),
}


@pytest.mark.parametrize("name", list(PEERS))
def test_peer(name: str) -> None:
    kind, attributes, expected = PEERS[name]
    span = otlp.span(kind=kind, attributes=attributes)
    assert classify(span, span.SerializeToString()).peer == expected


def test_keys_outside_the_spans_own_attributes_never_count() -> None:
    """Keys in the name, in events, links, nested maps or values are not attributes."""
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue, KeyValueList

    by_name = otlp.span("load db.system config", kind=INTERNAL)
    assert classify(by_name, by_name.SerializeToString()).tier == "app"
    in_value = otlp.span(kind=CLIENT, attributes={"url.full": "http://x:1/db.system/status"})
    assert classify(in_value, in_value.SerializeToString()).tier == "external"
    in_namespace = otlp.span(kind=INTERNAL, attributes={"code.namespace": "acme.messaging.system.X"})
    assert classify(in_namespace, in_namespace.SerializeToString()).tier == "app"
    in_event = otlp.span(kind=CLIENT, attributes={"server.address": "real-host", "server.port": 80})
    event = in_event.events.add(name="e")
    event.attributes.add(key="server.address").value.string_value = "from-event"
    in_event.events.sort(key=lambda e: 0)
    assert classify(in_event, in_event.SerializeToString()).component == "real-host:80"
    nested = otlp.span(kind=CLIENT)
    nested.attributes.append(
        KeyValue(
            key="meta",
            value=AnyValue(
                kvlist_value=KeyValueList(
                    values=[KeyValue(key="db.statement", value=AnyValue(string_value="NESTED"))]
                )
            ),
        )
    )
    nested.attributes.append(KeyValue(key="db.system", value=AnyValue(string_value="postgresql")))
    nested.attributes.append(KeyValue(key="db.statement", value=AnyValue(string_value="SELECT real")))
    assert classify(nested, nested.SerializeToString()).component == "SELECT real"


@pytest.mark.parametrize(
    ("scope", "service", "expected"),
    [
        ("opentelemetry.instrumentation.flask", "crm-web", False),
        ("nginx", "edge", True),
        (None, "api-gateway", True),
        ("io.opentelemetry.tomcat-10.0", "erp", False),
        ("envoy", "mesh", True),
        (None, "payment-gateway", False),
        (None, "hongkong-crm", False),
        ("io.opentelemetry.spring-cloud-gateway-2.2", "edge", True),
        (None, "kong", True),
    ],
)
def test_gateways_are_recognised(scope: str | None, service: str, expected: bool) -> None:
    assert is_gateway(scope, service) is expected


def test_the_memo_gives_the_answers_of_classify() -> None:
    """Classifier remembers answers per (kind, attribute bytes): it must agree with
    classify on every case, in any order, repeated, with ids, names and times varying."""
    import random

    from tierscope.collector.tiers import Classifier

    for browser, gateway in [(False, False), (True, False), (False, True)]:
        classifier = Classifier(browser=browser, gateway=gateway)
        cases = list(CASES.values()) * 3
        random.Random(3).shuffle(cases)
        for kind, attributes, _, _, _ in cases:
            span = otlp.span(
                f"name {random.random()}",
                kind=kind,
                attributes=attributes,
                parent_span_id=random.choice([b"", b"p" * 8]),
            )
            encoded = span.SerializeToString()
            assert classifier(span, encoded) == classify(span, encoded, browser=browser, gateway=gateway)
        tricky = otlp.span("load db.system config", kind=INTERNAL)  # the memo must not carry it over
        plain = otlp.span("other", kind=INTERNAL)
        assert classifier(tricky, tricky.SerializeToString()) == classify(
            tricky, tricky.SerializeToString(), browser=browser, gateway=gateway
        )
        assert classifier(plain, plain.SerializeToString()) == classify(
            plain, plain.SerializeToString(), browser=browser, gateway=gateway
        )


def test_the_memo_answers_by_what_classification_reads_not_by_the_rest() -> None:
    """Spans that differ only in attributes classification does not read (a body
    size, a thread), in their status or their events get one remembered answer:
    the answer classify gives each of them. The classifier outlives requests."""
    import random

    from tierscope.collector.tiers import Classifier, classifier

    rnd = random.Random(5)
    for browser, gateway in [(False, False), (True, False), (False, True)]:
        memo = Classifier(browser=browser, gateway=gateway)
        for _ in range(3):
            for kind, attributes, _, _, _ in CASES.values():
                varied = {
                    "http.request.body.size": rnd.randint(1, 10**6),
                    **attributes,
                    "thread.id": rnd.randint(1, 99),
                }
                span = otlp.span(kind=kind, attributes=varied, error=rnd.random() < 0.5)
                if rnd.random() < 0.5:
                    span.events.add(name="exception", time_unix_nano=span.start_time_unix_nano)
                encoded = span.SerializeToString()
                assert memo(span, encoded) == classify(span, encoded, browser=browser, gateway=gateway)
        assert classifier(browser=browser, gateway=gateway) is classifier(browser=browser, gateway=gateway)


def test_the_memo_stays_bounded_when_every_span_differs() -> None:
    from tierscope.collector.tiers import MEMO_BYTES, MEMO_LIMIT, Classifier

    memo = Classifier()
    for number in range(MEMO_LIMIT * 2 + 10):
        span = otlp.span(kind=CLIENT, attributes={"server.address": f"host-{number}", "server.port": 443})
        encoded = span.SerializeToString()
        assert memo(span, encoded).peer == f"host-{number}:443"
        assert len(memo._by_bytes) <= MEMO_LIMIT
        assert len(memo._by_values) <= MEMO_LIMIT
    # Large spans are not remembered by their bytes, and long values count
    # against the second level's byte budget.
    memo = Classifier()
    for number in range(1000):  # about 6 MB of statements
        statement = f"{number}" * 2000
        span = otlp.span(kind=CLIENT, attributes={"db.system": "postgresql", "db.statement": statement})
        encoded = span.SerializeToString()
        assert memo(span, encoded).component == statement[:1024]
        assert not memo._by_bytes
        assert memo._by_values_bytes <= MEMO_BYTES


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"parent_span_id": b"p" * 8},
        {"trace_state": "vendor=1,other=2"},
        {"name": "n" * 300},
        {"kind": 0},
        {"start_time_unix_nano": 0},
        {"flags": 257},
    ],
)
def test_attributes_offset_finds_the_first_attribute(changes: dict[str, Any]) -> None:
    from tierscope.collector.wire import attributes_offset

    span = otlp.span(kind=3, attributes={"db.system": "postgresql"})
    for field, value in changes.items():
        setattr(span, field, value)
    encoded = span.SerializeToString()
    offset = attributes_offset(encoded)
    assert offset is not None
    assert encoded[offset:].startswith(b"\x4a")  # field 9: the first attribute


def test_attributes_offset_refuses_an_unknown_layout() -> None:
    from tierscope.collector.wire import attributes_offset

    assert attributes_offset(b"\x12\x08abcdefgh") is None
    assert attributes_offset(b"") is None
