"""The server's settings: every option declared once, read from ``TIERSCOPE_*``.

Precedence is the usual one: an argument given to :func:`load_settings` (the
CLI passes its flags this way) beats the environment, which beats the default
declared here. ``docs/configuration.md`` documents each option; a test keeps
the two in step.

The server fails fast: a bad value stops start-up with a message that names the
variable, the value and what was expected (see :class:`SettingsError`).
"""

from __future__ import annotations

import ipaddress
import os
import re
import zoneinfo
from datetime import date, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "TIERSCOPE_"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"^\s*(\d+)\s*(b|kib|mib|gib|kb|mb|gb|k|m|g)?\s*$", re.IGNORECASE)
_UNIT_BYTES = {
    "b": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
}


def parse_duration(value: Any) -> timedelta:
    """Read ``"15s"``, ``"2m"``, ``"7d"``, ``"500ms"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise ValueError("expected a duration such as 500ms, 15s, 2m, 6h or 7d")
    number, unit = match.groups()
    return timedelta(seconds=float(number) * _UNIT_SECONDS[unit or "s"])


def parse_size(value: Any) -> int:
    """Read ``"64MiB"``, ``"2KiB"``, ``"1048576"`` (bytes)."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError("expected a size such as 2048, 2KiB or 64MiB")
    number, unit = match.groups()
    return int(number) * _UNIT_BYTES[(unit or "b").lower()]


def _split(value: Any) -> Any:
    """Comma-separated text as a list (environment variables are text)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _time_zone(value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("expected an IANA time zone such as Europe/Berlin") from None
    return value


def _country(value: str | None) -> str | None:
    import holidays  # only the server side needs it

    if value is not None and value not in holidays.list_supported_countries():
        raise ValueError("expected a country code known to the holidays package, such as DE or US")
    return value


def _increasing(value: tuple[float, ...]) -> tuple[float, ...]:
    if not value or any(w <= 0 for w in value) or list(value) != sorted(set(value)):
        raise ValueError("expected positive, increasing widths such as 2,3,4")
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
Widths = Annotated[tuple[float, ...], NoDecode, BeforeValidator(_split), AfterValidator(_increasing)]
Dates = Annotated[tuple[date, ...], NoDecode, BeforeValidator(_split)]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Networks = Annotated[tuple[Network, ...], NoDecode, BeforeValidator(_split)]


def default_data_dir() -> Path:
    return Path.home() / ".local" / "share" / "tierscope"


class Settings(BaseSettings):
    """All server options. Field docs become docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, validate_default=True
    )

    # -- where things live -------------------------------------------------
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Directory for the embedded PostgreSQL and credentials.json.",
    )
    database_url: str | None = Field(
        default=None,
        description="PostgreSQL/TimescaleDB DSN. Unset: an embedded PostgreSQL "
        "is started under the data directory.",
    )
    host: str = Field(default="127.0.0.1", description="Address the collector listens on.")
    port: int = Field(default=4318, ge=0, le=65535, description="Port the collector listens on.")
    workers: int = Field(
        default_factory=lambda: min(os.cpu_count() or 1, 4),
        ge=1,
        le=64,
        description="Collector worker processes sharing the port (default: one per CPU, "
        "at most 4). A worker that dies is replaced.",
    )

    # -- ingest limits -----------------------------------------------------
    max_body_size: Size = Field(
        default=64 * 1024**2,
        gt=0,
        description="Largest request body accepted, measured after decompression "
        "(OTLP recommends 64 MiB). Larger bodies get 413.",
    )
    max_inflight_bytes: Size = Field(
        default=512 * 1024**2,
        gt=0,
        description="Decompressed request bytes a worker holds at once across its requests; "
        "past it the collector answers 503 with Retry-After. Bounds the collector's memory.",
    )
    attribute_value_limit: Size = Field(
        default=2048,
        ge=64,
        description="Span and link attribute values longer than this (bytes) are truncated, and counted.",
    )
    event_attribute_value_limit: Size = Field(
        default=16384,
        ge=64,
        description="The same limit for span event attributes (exception stack traces need more room).",
    )
    span_max_age: Duration = Field(
        default=timedelta(days=3),
        description="Spans that started longer ago than this are rejected (partial "
        "success). Must be shorter than the span retention.",
    )
    span_max_future: Duration = Field(
        default=timedelta(minutes=15),
        description="Spans that start further in the future than this (clock skew) are rejected.",
    )
    max_inflight_requests: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="Trace ingest requests a worker works on at once, counted from when a "
        "request's body is in (a slow upload holds no slot); past it the "
        "collector answers 503 with Retry-After at once instead of queueing (overload sheds load "
        "early and keeps latency and memory bounded).",
    )
    ingest_rate_per_tenant: float = Field(
        default=0.0,
        ge=0,
        description="Spans per second one tenant may send to a collector worker (bursts of twice as "
        "many); past it, TIERSCOPE_INGEST_RATE_STATUS with Retry-After. 0: no limit.",
    )
    ingest_rate_status: int = Field(
        default=429,
        description="The answer to a tenant over its rate: 429 (a quota; SDKs before 1.45 drop "
        "the batch) or 503 (every SDK retries).",
    )
    header_timeout: Duration = Field(
        default=timedelta(seconds=10),
        description="A connection must finish each request's line and headers within this time "
        "or it is closed (slow-header and idle-connection floods).",
    )
    body_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="A request's body must arrive in full within this time after its headers, or "
        "it is answered 408 and the connection closed (slow-body floods; an SDK gives up on an "
        "export after 10 s by default).",
    )
    retry_after: Duration = Field(
        default=timedelta(seconds=2),
        description="Retry-After sent with 503 when the store is unavailable or the collector is saturated.",
    )

    # -- store -------------------------------------------------------------
    db_pool_size: int = Field(default=6, ge=1, le=200, description="Store connections per collector worker.")
    db_acquire_timeout: Duration = Field(
        default=timedelta(seconds=1),
        description="How long a request waits for a store connection before 503.",
    )
    db_statement_timeout: Duration = Field(
        default=timedelta(seconds=5),
        description="Longest a single store statement may run (a hung store gives 503, not a hung client).",
    )
    retention_spans: Duration = Field(
        default=timedelta(days=7),
        description="How long raw spans are kept; older partitions are dropped.",
    )
    retention_traces: Duration = Field(
        default=timedelta(days=30),
        description="How long trace summaries (a row per processed trace) are kept.",
    )
    retention_minute_rollups: Duration = Field(
        default=timedelta(days=8),
        description="How long per-minute rollups are kept (queries over older times use hours).",
    )
    retention_hour_rollups: Duration = Field(
        default=timedelta(days=90),
        description="How long per-hour rollups are kept.",
    )
    retention_day_rollups: Duration = Field(
        default=timedelta(days=800),
        description="How long per-day (and per-week) rollups are kept (SLA reports read them).",
    )
    maintenance_interval: Duration = Field(
        default=timedelta(minutes=10),
        description="How often partitions are created ahead and expired ones dropped.",
    )

    # -- processing --------------------------------------------------------
    processing: bool = Field(
        default=True,
        description="Run trace processing with this collector (one processor per shard is elected "
        "among all collectors of a store; set false to run it elsewhere with tierscope process).",
    )
    settle_delay: Duration = Field(
        default=timedelta(seconds=15),
        description="A trace is processed once no span of it has arrived for this long.",
    )
    processing_shards: int = Field(
        default=2,
        ge=1,
        le=64,
        description="Processes trace processing runs in, each owning every Nth half second of arrival "
        "time (more keep up with more ingest; every collector of a store must use the same number).",
    )
    processing_interval: Duration = Field(
        default=timedelta(seconds=1),
        description="How often the processor looks for settled traces.",
    )
    processing_window: Duration = Field(
        default=timedelta(seconds=30),
        description="The most arrival time one processing cycle covers (bounds its memory and "
        "transaction; with several shards, a cycle covers one of its half seconds); a processor "
        "that is behind runs cycles back to back.",
    )
    top_components: int = Field(
        default=20,
        ge=1,
        le=1000,
        description="Components kept per business transaction, tier and stored minute, hour or day "
        "(the rest are summed as _other).",
    )

    # -- SLOs and baselines (slo/) -----------------------------------------
    baseline_weeks: int = Field(
        default=6, ge=1, le=8, description="Weeks of history a baseline learns from (hour rollups)."
    )
    baseline_bands: Widths = Field(
        default=(2.0, 3.0, 4.0),
        description="Baseline band half-widths in robust standard deviations, comma-separated and "
        "increasing; alerting turns them into severity tiers.",
    )
    business_time_zone: Annotated[str, AfterValidator(_time_zone)] = Field(
        default="UTC",
        description="Time zone of the business week: a baseline's hours of the week and the "
        "business calendar's days are local to it.",
    )
    business_country: Annotated[str | None, AfterValidator(_country)] = Field(
        default=None,
        description="Country whose public holidays (holidays package, e.g. DE) baselines neither "
        "learn nor judge. Unset: no holidays.",
    )
    month_end_days: int = Field(
        default=2,
        ge=0,
        le=10,
        description="The last N business days of each month are month-end, learnt as a profile of "
        "their own (0: ordinary days).",
    )
    blackout_days: Dates = Field(
        default=(),
        description="Comma-separated dates (2026-12-24,2026-12-31) that baselines neither learn nor "
        "judge, e.g. planned migrations.",
    )

    # -- real-user monitoring (collector/rum.py) ---------------------------
    rum_max_body_size: Size = Field(
        default=64 * 1024,
        gt=0,
        le=1024**2,
        description="Largest RUM beacon accepted (bytes, after decompression); larger ones get 413.",
    )
    rum_rate_per_ip: float = Field(
        default=50.0,
        gt=0,
        description="Beacons per second one client IP may send to a collector worker (bursts of twice "
        "as many); past it, 429 with Retry-After. Offices behind one NAT address share it.",
    )
    rum_rate_per_key: float = Field(
        default=2000.0,
        gt=0,
        description="Beacons per second one RUM key may send to a collector worker (bursts of twice as "
        "many); past it, 429 with Retry-After.",
    )
    rum_trusted_proxies: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_split)] = Field(
        default=(),
        description="Comma-separated addresses or CIDR ranges of reverse proxies whose X-Forwarded-For "
        "names the client IP of a beacon (rate limits, sites). Unset: the TCP peer is the client.",
    )
    rum_join_wait: Duration = Field(
        default=timedelta(minutes=6),
        description="How long an experience waits for its trace to be processed before it counts "
        "without one (browser, network and server time from the browser's timings).",
    )
    rum_rollup_wait: Duration = Field(
        default=timedelta(minutes=5),
        description="How long a finished page load waits for its final Web Vitals (sent when the page "
        "is hidden) before it is added to the per-minute RUM rollups without them; requests and page "
        "loads whose final beacon came are added at once.",
    )
    rum_apdex_t: Duration = Field(
        default=timedelta(seconds=1),
        description="Apdex threshold T of real-user experiences (satisfied up to T, tolerating up to 4T).",
    )

    # -- alerting (alerting/) ------------------------------------------------
    alerting: bool = Field(
        default=True,
        description="Run the alert evaluator and notification sender in a process of its own under "
        "tierscope up (one leader per store).",
    )
    alert_interval: Duration = Field(
        default=timedelta(seconds=30), description="How often alert rules are evaluated."
    )
    alert_delay: Duration = Field(
        default=timedelta(minutes=1),
        description="Minutes younger than this are not judged yet: processing may still be adding "
        "traces to them.",
    )
    alert_allowed_networks: Networks = Field(
        default=(),
        description="Comma-separated addresses or networks (127.0.0.1/32) that receivers may point "
        "at although loopback, private or link-local. Unset: none.",
    )
    alert_retry_initial: Duration = Field(
        default=timedelta(seconds=10),
        description="First wait before a failed notification is tried again; doubles on each failure.",
    )
    alert_retry_max: Duration = Field(
        default=timedelta(minutes=5), description="Longest wait between attempts to deliver a notification."
    )
    alert_cost_per_user_minute: float = Field(
        default=0.0,
        ge=0,
        description="Estimated cost of one user affected for one minute, for business services without "
        "a cost of their own in the alerting document.",
    )
    alert_runbook_url: str = Field(
        default="docs/runbook.md",
        max_length=500,
        description="Where alerts link their runbook sections (#anchors are appended).",
    )

    # -- scheduled reports (dashboards/schedule.py) ------------------------
    report_schedule_interval: Duration = Field(
        default=timedelta(minutes=5),
        description="How often tierscope up looks for scheduled SLA reports whose period has ended "
        "(tierscope report-schedule); 0 turns the e-mails off.",
    )

    # -- keys --------------------------------------------------------------
    key_cache_ttl: Duration = Field(
        default=timedelta(seconds=2),
        description="How long a verified key is trusted without asking the store; "
        "a revocation takes effect within this time.",
    )

    # -- process -----------------------------------------------------------
    shutdown_timeout: Duration = Field(
        default=timedelta(seconds=20),
        description="On SIGTERM/Ctrl-C, how long in-flight requests may take to finish.",
    )
    log_level: str = Field(
        default="info",
        pattern=r"^(?i:debug|info|warning|error)$",
        description="debug, info, warning or error.",
    )

    def model_post_init(self, __context: Any) -> None:
        if self.ingest_rate_status not in (429, 503):
            raise ValueError(f"{ENV_PREFIX}INGEST_RATE_STATUS ({self.ingest_rate_status}) must be 429 or 503")
        if self.max_body_size > self.max_inflight_bytes:
            raise ValueError(
                f"{ENV_PREFIX}MAX_BODY_SIZE ({self.max_body_size}) must not be larger than "
                f"{ENV_PREFIX}MAX_INFLIGHT_BYTES ({self.max_inflight_bytes}): such a body could never be read"
            )
        if self.retention_traces < self.retention_spans:
            raise ValueError(
                f"{ENV_PREFIX}RETENTION_TRACES ({self.retention_traces}) must not be shorter than "
                f"{ENV_PREFIX}RETENTION_SPANS ({self.retention_spans})"
            )
        if self.span_max_age >= self.retention_spans:
            raise ValueError(
                f"{ENV_PREFIX}SPAN_MAX_AGE ({self.span_max_age}) must be shorter than "
                f"{ENV_PREFIX}RETENTION_SPANS ({self.retention_spans}): spans older than "
                "the retention would be dropped as soon as they are stored"
            )

    @property
    def table_retention(self) -> dict[str, timedelta]:
        """Retention of each day-partitioned table."""
        return {"spans": self.retention_spans, "trace_summaries": self.retention_traces}

    @property
    def rollup_retention(self) -> dict[str, timedelta]:
        """Retention of each rollup resolution."""
        return {
            "minute": self.retention_minute_rollups,
            "hour": self.retention_hour_rollups,
            "day": self.retention_day_rollups,
            "week": self.retention_day_rollups,  # business transactions' weeks: kept as their days
        }


class SettingsError(Exception):
    """A setting has a value tierscope cannot use; the message says which and why."""


def load_settings(**overrides: Any) -> Settings:
    """Build the settings from the environment, with CLI flags as overrides.

    Raises:
        SettingsError: naming each bad variable, its value and what is expected.
    """
    given = {key: value for key, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            if not error["loc"]:  # a rule across fields: the message names them
                lines.append(message)
                continue
            variable = ENV_PREFIX + str(error["loc"][0]).upper()
            lines.append(f"{variable}={error.get('input')!r} is not valid: {message}")
        raise SettingsError("; ".join(lines)) from None
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
