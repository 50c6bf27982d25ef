"""The agent's settings: each declared once here, read from the environment.

Precedence is argument to :func:`tierscope.agent.init` > ``TIERSCOPE_*`` >
standard ``OTEL_*`` > default. The agent sits inside someone else's application,
so a bad value never stops it: it logs "Defaulting to ..." and carries on.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import unquote

logger = logging.getLogger("tierscope.agent")

# Query parameters whose values never leave the process (case-insensitive).
DEFAULT_SENSITIVE_PARAMS = (
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
    "api_key",
    "apikey",
    "key",
    "auth",
    "authorization",
    "session",
    "sessionid",
    "sid",
    "sig",
    "signature",
    "code",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "X-Goog-Signature",
    "X-Goog-Credential",
)


@dataclass(frozen=True)
class AgentConfig:
    """Everything the agent can be told. Field docs name the variable that sets each."""

    endpoint: str | None = None
    """TIERSCOPE_ENDPOINT (collector base URL), else OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
    (full URL) or OTEL_EXPORTER_OTLP_ENDPOINT. None: the agent stays a no-op."""
    ingest_key: str | None = None
    """TIERSCOPE_INGEST_KEY, else an ``Authorization`` in OTEL_EXPORTER_OTLP_(TRACES_)HEADERS."""
    service: str = "unknown_service"
    """TIERSCOPE_SERVICE, else OTEL_SERVICE_NAME / service.name of OTEL_RESOURCE_ATTRIBUTES."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """OTEL_EXPORTER_OTLP_(TRACES_)HEADERS: extra headers on every export."""
    compression: str = "gzip"
    """OTEL_EXPORTER_OTLP_(TRACES_)COMPRESSION: gzip or none."""
    request_timeout: float = 10.0
    """OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT (ms): one HTTP request."""
    export_deadline: float = 30.0
    """OTEL_BSP_EXPORT_TIMEOUT (ms): one batch, retries included; then it is dropped, counted."""
    max_queue_size: int = 2048
    """OTEL_BSP_MAX_QUEUE_SIZE: spans waiting; when full the oldest is dropped, counted."""
    max_batch_size: int = 512
    """OTEL_BSP_MAX_EXPORT_BATCH_SIZE."""
    schedule_delay: float = 1.0
    """OTEL_BSP_SCHEDULE_DELAY (ms): longest wait before a partial batch is sent."""
    shutdown_timeout: float = 5.0
    """TIERSCOPE_SHUTDOWN_TIMEOUT (s): the flush at exit never holds the process longer."""
    sensitive_params: tuple[str, ...] = DEFAULT_SENSITIVE_PARAMS
    """TIERSCOPE_SENSITIVE_PARAMS: more query parameter names to redact (comma-separated,
    added to the defaults)."""
    mask: frozenset[str] = frozenset({"email", "phone"})
    """TIERSCOPE_MASK: what to mask in attribute values: ``email,phone`` (default), or ``none``."""
    capture_headers: tuple[str, ...] = ()
    """TIERSCOPE_CAPTURE_HEADERS: request/response header names that may be captured
    (comma-separated); no other header is sent, except the User-Agent and Host the
    server instrumentations record as attributes of their own."""
    server_timing: bool = True
    """TIERSCOPE_SERVER_TIMING: add ``Server-Timing: traceparent`` to responses."""
    timing_allow_origin: str | None = None
    """TIERSCOPE_TIMING_ALLOW_ORIGIN: value of a ``Timing-Allow-Origin`` response header."""
    rum_inject: bool = False
    """TIERSCOPE_RUM_INJECT: add the RUM snippet to HTML responses (opt-in)."""
    rum_key: str | None = None
    """TIERSCOPE_RUM_KEY: the tenant's public RUM key, written into the snippet."""
    rum_url: str | None = None
    """TIERSCOPE_RUM_URL: where browsers send beacons and load the snippet (default: endpoint)."""
    disabled: frozenset[str] = frozenset()
    """OTEL_PYTHON_DISABLED_INSTRUMENTATIONS: instrumentations not to load (e.g. ``sqlite3,urllib3``)."""
    sdk_disabled: bool = False
    """OTEL_SDK_DISABLED=true: the agent does nothing."""

    @property
    def traces_url(self) -> str | None:
        if self.endpoint is None:
            return None
        if self.endpoint.rstrip("/").endswith("/v1/traces"):
            return self.endpoint
        return self.endpoint.rstrip("/") + "/v1/traces"

    @property
    def enabled(self) -> bool:
        return self.endpoint is not None and not self.sdk_disabled


def _get(env: Mapping[str, str], *names: str) -> str | None:
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return value
    return None


def _number(env: Mapping[str, str], names: tuple[str, ...], default: float, scale: float = 1.0) -> float:
    raw = _get(env, *names)
    if raw is None:
        return default
    try:
        value = float(raw) * scale
        if value <= 0:
            raise ValueError(raw)
        return value
    except ValueError:
        logger.warning(
            "Unable to parse value %r of %s as a positive number. Defaulting to %s.", raw, names[0], default
        )
        return default


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    logger.warning("Unable to parse value %r of %s as true/false. Defaulting to %s.", raw, name, default)
    return default


def _names(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())


def parse_headers(raw: str | None) -> dict[str, str]:
    """``key1=value1,key2=value2`` as the OTLP exporter specification writes headers."""
    headers: dict[str, str] = {}
    for part in _names(raw):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            headers[unquote(key.strip())] = unquote(value.strip())
    return headers


def _service(env: Mapping[str, str]) -> str:
    named = _get(env, "TIERSCOPE_SERVICE", "OTEL_SERVICE_NAME")
    if named:
        return named
    for part in _names(env.get("OTEL_RESOURCE_ATTRIBUTES")):
        key, _, value = part.partition("=")
        if key.strip() == "service.name" and value.strip():
            return unquote(value.strip())
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return f"unknown_service:{program}" if program else "unknown_service"


def from_environment(env: Mapping[str, str] | None = None, **overrides: Any) -> AgentConfig:
    """Read the configuration; keyword arguments (the names of :class:`AgentConfig`) win."""
    env = os.environ if env is None else env
    endpoint = _get(env, "TIERSCOPE_ENDPOINT")
    if endpoint is None:
        endpoint = _get(env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        if endpoint is None and (base := _get(env, "OTEL_EXPORTER_OTLP_ENDPOINT")):
            endpoint = base.rstrip("/") + "/v1/traces"
    headers = {
        **parse_headers(env.get("OTEL_EXPORTER_OTLP_HEADERS")),
        **parse_headers(env.get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")),
    }
    key = _get(env, "TIERSCOPE_INGEST_KEY")
    if key is None:
        auth = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
        if auth and auth.lower().startswith("bearer "):
            key = auth[7:].strip()
    headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    compression = (
        _get(env, "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "OTEL_EXPORTER_OTLP_COMPRESSION") or "gzip"
    )
    if compression.lower() not in ("gzip", "none"):
        logger.warning("Unsupported OTLP compression %r. Defaulting to gzip.", compression)
        compression = "gzip"
    mask_raw = _get(env, "TIERSCOPE_MASK")
    mask = frozenset({"email", "phone"})
    if mask_raw is not None:
        mask = frozenset(n.lower() for n in _names(mask_raw) if n.lower() != "none")
        unknown = mask - {"email", "phone"}
        if unknown:
            logger.warning("Unknown TIERSCOPE_MASK entries %s are ignored.", sorted(unknown))
            mask = mask - unknown
    values: dict[str, Any] = {
        "endpoint": endpoint,
        "ingest_key": key,
        "service": _service(env),
        "headers": headers,
        "compression": compression.lower(),
        "request_timeout": _number(
            env, ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"), 10.0, 0.001
        ),
        "export_deadline": _number(env, ("OTEL_BSP_EXPORT_TIMEOUT",), 30.0, 0.001),
        "max_queue_size": int(_number(env, ("OTEL_BSP_MAX_QUEUE_SIZE",), 2048)),
        "max_batch_size": int(_number(env, ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE",), 512)),
        "schedule_delay": _number(env, ("OTEL_BSP_SCHEDULE_DELAY",), 1.0, 0.001),
        "shutdown_timeout": _number(env, ("TIERSCOPE_SHUTDOWN_TIMEOUT",), 5.0),
        "sensitive_params": DEFAULT_SENSITIVE_PARAMS + _names(env.get("TIERSCOPE_SENSITIVE_PARAMS")),
        "mask": mask,
        "capture_headers": tuple(n.lower() for n in _names(env.get("TIERSCOPE_CAPTURE_HEADERS"))),
        "server_timing": _flag(env, "TIERSCOPE_SERVER_TIMING", True),
        "timing_allow_origin": _get(env, "TIERSCOPE_TIMING_ALLOW_ORIGIN"),
        "rum_inject": _flag(env, "TIERSCOPE_RUM_INJECT", False),
        "rum_key": _get(env, "TIERSCOPE_RUM_KEY"),
        "rum_url": _get(env, "TIERSCOPE_RUM_URL"),
        "disabled": frozenset(_names(env.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"))),
        "sdk_disabled": _flag(env, "OTEL_SDK_DISABLED", False),
    }
    known = {f.name for f in fields(AgentConfig)}
    for name, value in overrides.items():
        if name not in known:
            raise TypeError(f"init() got an unknown setting {name!r}; known: {', '.join(sorted(known))}")
        if value is not None:
            values[name] = value
    return AgentConfig(**values)
