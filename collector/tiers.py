"""Which tier a span's time belongs to, from OpenTelemetry semantic conventions.

Tiers are derived here, in the collector, so spans from any OpenTelemetry SDK in
any language get them, not only spans from tierscope's agent. Old and new
attribute names are both understood (``db.statement``/``db.query.text``,
``net.peer.name``/``server.address``, ``http.url``/``url.full``, ...).

Each span also gets a *component*: what it talked to (SQL statement, peer
``host:port``, queue destination), which later becomes the "top components" of
a business transaction.

Cost matters: this runs for every span at ingest. Attribute keys are searched
for in the span's serialized bytes (one C-level substring search), and the few
values a tier needs are read from those bytes too (:mod:`.wire`); a server span
is classified without reading any attribute at all.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tierscope.collector.wire import Key, SpanAttributes, attributes_offset

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
_GATEWAY_HINTS = (
    "nginx",
    "envoy",
    "apache",
    "httpd",
    "haproxy",
    "traefik",
    "kong",
    "istio",
    "gateway",
    "iis",
    "caddy",
    "tomcat-valve",
)

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
    )
}


def _clip(text: str) -> str:
    return text if len(text) <= COMPONENT_LIMIT else text[:COMPONENT_LIMIT]


def is_gateway(scope: str | None, service: str) -> bool:
    """Whether a resource/scope is a web server or gateway (its spans are ``web``)."""
    text = f"{scope or ''} {service}".lower()
    return any(hint in text for hint in _GATEWAY_HINTS)


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


def _database(values: SpanAttributes) -> tuple[str, str | None]:
    # Older name first: most SDKs still send it, and both carry the same value.
    system = str(values.first(K["db.system"], K["db.system.name"]) or "")
    tier = "cache" if system.lower() in CACHE_SYSTEMS else "db"
    statement = values.first(K["db.query.summary"], K["db.query.text"], K["db.statement"])
    if statement is None:
        operation = values.first(K["db.operation.name"], K["db.operation"])
        target = values.first(K["db.collection.name"], K["db.sql.table"], K["db.namespace"], K["db.name"])
        statement = " ".join(str(p) for p in (system, operation, target) if p) or None
    return tier, _clip(str(statement)) if statement is not None else None


def classify(
    span: Span, encoded: bytes, *, browser: bool = False, gateway: bool = False
) -> tuple[str, str | None]:
    """Return ``(tier, component)`` for one span.

    Args:
        span: the span.
        encoded: the span's serialized bytes, searched for attribute keys first.
        browser: the span comes from a browser SDK (resource ``telemetry.sdk.language``
            is ``webjs``): its outbound calls are ``network``, the rest ``browser``.
        gateway: the span comes from a web server or gateway (see :func:`is_gateway`).
    """
    kind = span.kind
    if b"tierscope.tier" in encoded:
        values = SpanAttributes(span, encoded)
        explicit = values.get(K["tierscope.tier"])
        if explicit in _TIER_SET:
            return explicit, _component_for(explicit, values)
    if browser:
        return ("network" if kind == CLIENT else "browser"), None
    if kind == SERVER:
        return ("web" if gateway else "app"), None
    if b"db.system" in encoded:
        return _database(SpanAttributes(span, encoded))
    if b"messaging.system" in encoded:
        return ("platform" if kind == CONSUMER else "queue"), _queue(SpanAttributes(span, encoded))
    if kind == CLIENT:
        return "external", _remote(SpanAttributes(span, encoded))
    if kind == PRODUCER:
        return "queue", None
    if kind == CONSUMER:
        return "platform", None
    if b"asgi.event.type" in encoded or gateway:
        return "web", None  # the server sending and receiving the HTTP message
    return "app", None


def _queue(values: SpanAttributes) -> str | None:
    system = values.first(K["messaging.system"])
    destination = values.first(K["messaging.destination.name"], K["messaging.destination"])
    text = " ".join(str(p) for p in (system, destination) if p)
    return _clip(text) if text else None


def _remote(values: SpanAttributes) -> str | None:
    target = peer(values)
    service = values.first(K["rpc.service"]) if target is None else None
    if service is not None:
        method = values.first(K["rpc.method"])
        target = f"{service}/{method}" if method else str(service)
    return _clip(target) if target else None


def _component_for(tier: str, values: SpanAttributes) -> str | None:
    if tier in ("db", "cache"):
        return _database(values)[1]
    if tier in ("queue", "platform"):
        return _queue(values)
    if tier in ("external", "network"):
        return _remote(values)
    return None


class Classifier:
    """Classifies the spans of one scope of one request.

    Within a batch, most non-server spans repeat the same attributes byte for
    byte (the same statement to the same database, the same call to the same
    peer). Classification reads nothing but the kind and the bytes from the
    attributes on, so spans equal in those get the same answer, which is
    remembered for the rest of the request.
    """

    __slots__ = ("_memo", "browser", "gateway")

    def __init__(self, *, browser: bool = False, gateway: bool = False) -> None:
        self.browser = browser
        self.gateway = gateway
        self._memo: dict[tuple[int, bytes], tuple[str, str | None]] = {}

    def __call__(self, span: Span, encoded: bytes) -> tuple[str, str | None]:
        kind = span.kind
        if kind == SERVER and not self.browser and b"tierscope.tier" not in encoded:
            return ("web" if self.gateway else "app"), None  # no attribute needed
        offset = attributes_offset(encoded)
        if offset is None:
            return classify(span, encoded, browser=self.browser, gateway=self.gateway)
        key = (kind, encoded[offset:])
        answer = self._memo.get(key)
        if answer is None:
            answer = self._memo[key] = classify(span, encoded, browser=self.browser, gateway=self.gateway)
        return answer
