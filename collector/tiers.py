"""Which tier a span's time belongs to, from OpenTelemetry semantic conventions.

Tiers are derived here, in the collector, so spans from any OpenTelemetry SDK in
any language get them, not only spans from tierscope's agent. Old and new
attribute names are both understood (``db.statement``/``db.query.text``,
``net.peer.name``/``server.address``, ``http.url``/``url.full``, ...).

Each span also gets a *component*: what it used (SQL statement, called endpoint,
queue destination), which becomes the "top components" of a business
transaction, and a *peer*: whom it talked to (database instance, host:port,
broker), a node of the service map.

Cost matters: this runs for every span at ingest. The few values a tier needs
are read from the span's serialized bytes (:mod:`.wire`), a server span is
classified without reading any attribute, and each distinct set of the values
classification reads is classified once per worker (:class:`Classifier`).
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import urlsplit

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tierscope.collector.wire import Key, SpanAttributes, attribute_index, attributes_offset

TIERS = ("browser", "network", "web", "app", "platform", "db", "cache", "queue", "external")
_TIER_SET = frozenset(TIERS)

INTERNAL, SERVER, CLIENT, PRODUCER, CONSUMER = (
    Span.SPAN_KIND_INTERNAL,
    Span.SPAN_KIND_SERVER,
    Span.SPAN_KIND_CLIENT,
    Span.SPAN_KIND_PRODUCER,
    Span.SPAN_KIND_CONSUMER,
)

# db.system values that are caches rather than databases of record.
CACHE_SYSTEMS = frozenset({"redis", "memcached", "hazelcast", "coherence", "ignite", "geode", "valkey"})

# Instrumentation scopes and service names that mark a web server or gateway.
_GATEWAY_HINTS = frozenset(
    {
        "nginx",
        "envoy",
        "apache",
        "httpd",
        "haproxy",
        "traefik",
        "kong",
        "istio",
        "iis",
        "caddy",
    }
)
_WORDS = re.compile(r"[^a-z0-9]+")

COMPONENT_LIMIT = 1024

# Every attribute classification reads, prepared once for wire lookups.
K = {
    name: Key(name)
    for name in (
        "tierscope.tier",
        "db.system",
        "db.system.name",
        "db.query.summary",
        "db.query.text",
        "db.statement",
        "db.operation.name",
        "db.operation",
        "db.collection.name",
        "db.sql.table",
        "db.namespace",
        "db.name",
        "messaging.system",
        "messaging.destination.name",
        "messaging.destination",
        "rpc.service",
        "rpc.method",
        "server.address",
        "server.port",
        "net.peer.name",
        "net.peer.port",
        "network.peer.address",
        "network.peer.port",
        "net.sock.peer.addr",
        "url.full",
        "http.url",
        "asgi.event.type",
    )
}


def _clip(text: str) -> str:
    return text if len(text) <= COMPONENT_LIMIT else text[:COMPONENT_LIMIT]


def is_gateway(scope: str | None, service: str) -> bool:
    """Whether a resource/scope is a web server or gateway (its spans are ``web``).

    Names are compared word by word (``api-gateway`` yes, ``hongkong`` no); the
    bare word "gateway" counts only in an instrumentation scope (such as
    spring-cloud-gateway), since a service called payment-gateway is an application.
    """
    scope_words = set(_WORDS.split((scope or "").lower()))
    service_words = set(_WORDS.split(service.lower()))
    return (
        bool((scope_words | service_words) & _GATEWAY_HINTS)
        or "gateway" in scope_words
        or (service.lower() in ("gateway", "api-gateway", "api_gateway"))
    )


class Classification(NamedTuple):
    """What a span's time is (tier), what it used (component), whom it talked to (peer)."""

    tier: str
    component: str | None = None
    peer: str | None = None


def peer(values: SpanAttributes) -> str | None:
    """``host:port`` of the other side of an outbound call."""
    host = values.first(
        K["server.address"], K["net.peer.name"], K["network.peer.address"], K["net.sock.peer.addr"]
    )
    port = values.first(K["server.port"], K["net.peer.port"], K["network.peer.port"])
    if host is None:
        url = values.first(K["url.full"], K["http.url"])
        if isinstance(url, str):
            try:
                parts = urlsplit(url)
                host, port = parts.hostname, parts.port or port
                if port is None and parts.scheme in ("http", "https"):
                    port = 443 if parts.scheme == "https" else 80
            except ValueError:
                host = None
    if host is None:
        return None
    return f"{host}:{port}" if port not in (None, "") else str(host)


def _clip_optional(text: object) -> str | None:
    return _clip(str(text)) if text not in (None, "") else None


def _database(values: SpanAttributes, tier: str | None = None) -> Classification:
    # Older name first: most SDKs still send it, and both carry the same value.
    system = str(values.first(K["db.system"], K["db.system.name"]) or "")
    tier = tier or ("cache" if system.lower() in CACHE_SYSTEMS else "db")
    statement = values.first(K["db.query.summary"], K["db.query.text"], K["db.statement"])
    namespace = values.first(K["db.namespace"], K["db.name"])
    if statement is None:
        operation = values.first(K["db.operation.name"], K["db.operation"])
        target = values.first(K["db.collection.name"], K["db.sql.table"], K["db.namespace"], K["db.name"])
        statement = " ".join(str(p) for p in (system, operation, target) if p) or None
    # The service-map node is the database instance, e.g. postgresql@db1:5432/erp.
    where = peer(values)
    node = (system or tier) + (f"@{where}" if where else "") + (f"/{namespace}" if namespace else "")
    return Classification(tier, _clip_optional(statement), _clip(node))


def _queue(tier: str, values: SpanAttributes) -> Classification:
    system = values.first(K["messaging.system"])
    destination = values.first(K["messaging.destination.name"], K["messaging.destination"])
    where = values.first(K["server.address"], K["net.peer.name"])
    text = " ".join(str(p) for p in (system, destination) if p)
    node = (str(system) if system else "broker") + (f"@{where}" if where else "")
    return Classification(tier, _clip_optional(text), _clip(node) if system or where else None)


def _remote(tier: str, values: SpanAttributes) -> Classification:
    target = peer(values)
    if target is None:
        service = values.first(K["rpc.service"])
        if service is not None:
            method = values.first(K["rpc.method"])
            call = f"{service}/{method}" if method else str(service)
            return Classification(tier, _clip(call), _clip(str(service)))
    return Classification(tier, _clip_optional(target), _clip_optional(target))


def _explicit(tier: str, values: SpanAttributes) -> Classification:
    if tier in ("db", "cache"):
        return _database(values, tier)
    if tier in ("queue", "platform"):
        return _queue(tier, values)
    if tier in ("external", "network"):
        return _remote(tier, values)
    return Classification(tier)


def classify(
    span: Span,
    encoded: bytes,
    *,
    browser: bool = False,
    gateway: bool = False,
    index: dict[bytes, tuple[int, int]] | None = None,
) -> Classification:
    """Classify one span by its kind and its own attributes.

    Args:
        span: the span.
        encoded: the span's serialized bytes (attributes are read from them).
        browser: the span comes from a browser SDK (resource ``telemetry.sdk.language``
            is ``webjs``): its outbound calls are ``network``, the rest ``browser``.
        gateway: the span comes from a web server or gateway (see :func:`is_gateway`).
        index: the span's :func:`~tierscope.collector.wire.attribute_index`, when
            the caller has it already.
    """
    kind = span.kind
    values = SpanAttributes(span, encoded, index)
    explicit = values.get(K["tierscope.tier"])
    if explicit in _TIER_SET:
        return _explicit(explicit, values)
    if browser:
        if kind == CLIENT:
            return Classification("network", None, _remote("network", values).peer)
        return Classification("browser")
    if kind == SERVER:
        return Classification("web" if gateway else "app")
    if values.first(K["db.system"], K["db.system.name"]) is not None:
        return _database(values)
    if values.get(K["messaging.system"]) is not None:
        return _queue("platform" if kind == CONSUMER else "queue", values)
    if kind == CLIENT:
        return _remote("external", values)
    if kind == PRODUCER:
        return Classification("queue")
    if kind == CONSUMER:
        return Classification("platform")
    if gateway or values.get(K["asgi.event.type"]) is not None:
        return Classification("web")  # the server sending and receiving the HTTP message
    return Classification("app")


class Classifier:
    """Classifies spans, remembering answers; one per (browser, gateway) pair
    lives as long as the worker (:func:`classifier`).

    Classification is a pure function of the span's kind and of the few
    attributes it reads (:data:`K`), so answers are remembered at two levels:

    - by the span's bytes from its attributes on: most non-server spans repeat
      theirs byte for byte (the same statement to the same database), and this
      costs one slice and one hash;
    - by the values of the attributes classification reads, for spans whose
      other attributes vary (a body size, a thread, a URL's query string): one
      walk over the attributes instead of classifying again.

    Both are bounded (:data:`MEMO_LIMIT` entries each, keys of at most
    :data:`MEMO_KEY_BYTES` or :data:`MEMO_BYTES` in all; emptied when full), so
    spans that are all different cost a walk, never unbounded memory: under
    10 MB per classifier.
    """

    __slots__ = ("_by_bytes", "_by_values", "_by_values_bytes", "browser", "gateway")

    def __init__(self, *, browser: bool = False, gateway: bool = False) -> None:
        self.browser = browser
        self.gateway = gateway
        self._by_bytes: dict[tuple[int, bytes], Classification] = {}
        self._by_values: dict[tuple[object, ...], Classification] = {}
        self._by_values_bytes = 0

    def __call__(self, span: Span, encoded: bytes) -> Classification:
        kind = span.kind
        if kind == SERVER and not self.browser and b"tierscope.tier" not in encoded:
            return _SERVER_GATEWAY if self.gateway else _SERVER_APP  # no attribute needed
        offset = attributes_offset(encoded)
        if offset is None:
            return classify(span, encoded, browser=self.browser, gateway=self.gateway)
        key = (kind, encoded[offset:])
        answer = self._by_bytes.get(key)
        if answer is not None:
            return answer
        index = attribute_index(encoded)
        if index is None:
            return classify(span, encoded, browser=self.browser, gateway=self.gateway)
        read = [(name, encoded[start:end]) for name, (start, end) in index.items() if name in _READ]
        values = (kind, *read)
        answer = self._by_values.get(values)
        if answer is None:
            answer = classify(span, encoded, browser=self.browser, gateway=self.gateway, index=index)
            size = sum(len(value) for _, value in read)
            if len(self._by_values) >= MEMO_LIMIT or self._by_values_bytes + size > MEMO_BYTES:
                self._by_values.clear()
                self._by_values_bytes = 0
            self._by_values[values] = answer
            self._by_values_bytes += size
        if len(key[1]) <= MEMO_KEY_BYTES:  # a large span's walk is worth its bytes
            if len(self._by_bytes) >= MEMO_LIMIT:
                self._by_bytes.clear()
            self._by_bytes[key] = answer
        return answer


# Answers remembered per level and classifier: enough for the distinct calls
# of a large application.
MEMO_LIMIT = 4096
MEMO_KEY_BYTES = 1024  # spans with more attribute bytes are not remembered by their bytes
MEMO_BYTES = 4 * 2**20  # attribute values held by the second level
_READ = frozenset(key.raw for key in K.values())
_CLASSIFIERS: dict[tuple[bool, bool], Classifier] = {}


def classifier(*, browser: bool = False, gateway: bool = False) -> Classifier:
    """The worker's classifier for spans of this kind of source, its answers kept
    across requests (an agent exporting small batches repeats calls across them)."""
    found = _CLASSIFIERS.get((browser, gateway))
    if found is None:
        found = _CLASSIFIERS[browser, gateway] = Classifier(browser=browser, gateway=gateway)
    return found


_SERVER_APP = Classification("app")
_SERVER_GATEWAY = Classification("web")
