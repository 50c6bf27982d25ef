"""Alert rules and the alerting configuration of a tenant: the YAML document.

One document per tenant holds its rules, receivers, routes, maintenance
windows and costs (``PUT /api/v1/alerting/config``). Rules come in three kinds:

- ``slo_burn``: multi-window, multi-burn-rate alerts on an SLO's error budget
  (windows in :mod:`tierscope.alerting.burn`), with a minimum-traffic guard;
- ``baseline``: a business transaction's metric outside its hour-of-week band
  (``slo/baselines.py``) by at least a band width, which sets the severity;
- ``threshold``: a metric above a fixed limit (an SLA).

Defaults need no document: a ``slo_burn`` rule for every SLO, ``baseline``
rules on p95 latency and error rate for every business transaction, and on
real users' network time for every site and browser time for every page. A rule of
the document with a default's name replaces it; ``defaults: false`` drops them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from tierscope.config import parse_duration

SEVERITIES = ("info", "warning", "critical")  # in increasing order
Severity = Literal["info", "warning", "critical"]


def _written(value: timedelta) -> str:
    """A duration as the document writes it (2m, 90s, 6h), for JSON answers."""
    seconds = int(value.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(_written, when_used="json")]
METRICS = ("p95_ms", "error_rate", "work_ms", "tier_ms", "network_ms", "browser_ms")
# Metrics judged from real users' experiences (RUM, ``alerting/experiences.py``):
# network time per experience of each site, browser time of each page.
RUM_METRICS = ("network_ms", "browser_ms")
# Below these, a deviation is noise whatever the band says (a band of a flat
# series is narrow): latency or work 50 ms above normal, errors 5 points above,
# users' network or browser time 100 ms above.
DEFAULT_MIN_EXCESS = {
    "p95_ms": 50.0,
    "error_rate": 0.05,
    "work_ms": 50.0,
    "tier_ms": 50.0,
    "network_ms": 100.0,
    "browser_ms": 100.0,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Rule(_Strict):
    name: str = Field(min_length=1, max_length=200)
    kind: Literal["slo_burn", "baseline", "threshold"]
    service: str | None = None  # baseline/threshold: only this service's transactions
    bt: str | None = None  # ...and only this transaction (browser_ms: or untraced page)
    site: str | None = None  # network_ms: only this site
    # p95_ms: response time; error_rate; work_ms: time spent per request in all
    # tiers, asynchronous jobs included (p95 does not see a slow job a request
    # queued); tier_ms: each tier's time per request, judged on its own (a slow
    # database stands out there long before it moves a noisy p95); network_ms:
    # real users' network time per experience, per site; browser_ms: their
    # browser time (scripts, rendering) per experience, per page
    metric: Literal["p95_ms", "error_rate", "work_ms", "tier_ms", "network_ms", "browser_ms"] = "p95_ms"
    window: Duration = timedelta(minutes=5)  # recent minutes judged at each evaluation
    min_requests: int = Field(default=20, ge=1)  # fewer requests in the window: no judgement
    for_: Duration = Field(default=timedelta(minutes=2), alias="for")
    keep_firing_for: Duration = timedelta(minutes=5)
    # baseline: the band half-width (robust standard deviations) each severity starts at
    bands: dict[Severity, float] | None = None
    min_excess: float | None = Field(default=None, ge=0)
    # threshold
    above: float | None = None
    severity: Severity = "critical"
    # slo_burn
    slo: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> Rule:
        if self.kind == "threshold" and self.above is None:
            raise ValueError("a threshold rule needs 'above'")
        if self.kind == "slo_burn" and not self.slo:
            raise ValueError("an slo_burn rule needs 'slo' (the SLO's name)")
        if self.bt is not None and self.service is None:
            raise ValueError("'bt' needs 'service'")
        if self.site is not None and self.metric != "network_ms":
            raise ValueError("'site' is for network_ms rules")
        if not timedelta(minutes=1) <= self.window <= timedelta(hours=1):
            raise ValueError("window must be from 1m to 1h")
        return self

    def excess_floor(self) -> float:
        return self.min_excess if self.min_excess is not None else DEFAULT_MIN_EXCESS[self.metric]

    def applies_to(self, service: str, bt: str) -> bool:
        return (self.service is None or self.service == service) and (self.bt is None or self.bt == bt)


class Webhook(_Strict):
    url: str
    secret: str | None = None  # HMAC-SHA256 key; unsigned without one


class AlertmanagerTarget(_Strict):
    url: str  # base URL; alerts go to <url>/api/v2/alerts


class Email(_Strict):
    host: str
    port: int = 25
    sender: str = Field(alias="from")
    to: list[str] = Field(min_length=1)
    starttls: bool = False
    username: str | None = None
    password: str | None = None


class Chat(_Strict):
    url: str  # a Slack-compatible incoming webhook


class Receiver(_Strict):
    name: str = Field(min_length=1, max_length=100)
    webhook: Webhook | None = None
    alertmanager: AlertmanagerTarget | None = None
    email: Email | None = None
    chat: Chat | None = None
    send_resolved: bool = True

    @model_validator(mode="after")
    def _one(self) -> Receiver:
        given = [k for k in ("webhook", "alertmanager", "email", "chat") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("a receiver has exactly one of webhook, alertmanager, email, chat")
        return self

    @property
    def type(self) -> str:
        return next(k for k in ("webhook", "alertmanager", "email", "chat") if getattr(self, k) is not None)


class Route(_Strict):
    receiver: str
    severity: list[Severity] | None = None  # None: any
    service: list[str] | None = None  # application or business service
    continue_: bool = Field(default=False, alias="continue")


class Maintenance(_Strict):
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    matchers: dict[str, str] = Field(default_factory=dict)
    comment: str = ""


class Heartbeat(_Strict):
    """The watchdog's beats (``alerting/heartbeat.py``)."""

    receiver: str
    every: Duration = timedelta(minutes=1)
    # No minute of data newer than this: the pipeline is silent and beats stop.
    max_silence: Duration = timedelta(minutes=10)

    @model_validator(mode="after")
    def _sane(self) -> Heartbeat:
        if self.every < timedelta(seconds=10):
            raise ValueError("every must be at least 10s")
        if self.max_silence < timedelta(minutes=2):
            raise ValueError("max_silence must be at least 2m (minutes are judged once complete)")
        return self


class AlertingConfig(_Strict):
    defaults: bool = True
    rules: list[Rule] = Field(default_factory=list)
    receivers: list[Receiver] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    severity_names: dict[Severity, str] = Field(default_factory=dict)  # e.g. critical: page
    cost_per_user_minute: dict[str, float] = Field(default_factory=dict)  # business service -> cost
    maintenance: list[Maintenance] = Field(default_factory=list)
    heartbeat: Heartbeat | None = None

    @model_validator(mode="after")
    def _names(self) -> AlertingConfig:
        names = [r.name for r in self.receivers]
        if len(names) != len(set(names)):
            raise ValueError("receiver names must be unique")
        for route in self.routes:
            if route.receiver not in names:
                raise ValueError(f"route to unknown receiver {route.receiver!r}")
        if self.heartbeat is not None:
            beat_to = self.receiver(self.heartbeat.receiver)
            if beat_to is None:
                raise ValueError(f"heartbeat to unknown receiver {self.heartbeat.receiver!r}")
            if beat_to.type not in ("webhook", "alertmanager"):
                raise ValueError("the heartbeat receiver must be a webhook or an alertmanager")
        rule_names = [r.name for r in self.rules]
        if len(rule_names) != len(set(rule_names)):
            raise ValueError("rule names must be unique")
        return self

    def receiver(self, name: str) -> Receiver | None:
        return next((r for r in self.receivers if r.name == name), None)

    def display(self, severity: str) -> str:
        return self.severity_names.get(severity, severity)  # type: ignore[call-overload]


class ConfigError(ValueError):
    """An alerting document that cannot be used; the message says where."""


def parse(text: str) -> AlertingConfig:
    """The configuration from YAML text (ConfigError naming the field otherwise)."""
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"not YAML: {exc}") from None
    return from_document(data)


def from_document(data: Any) -> AlertingConfig:
    if not isinstance(data, dict):
        raise ConfigError("the alerting document must be a mapping")
    try:
        return AlertingConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or '(document)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise ConfigError(problems) from None


def default_rules(slo_names: list[str]) -> list[Rule]:
    """The rules every tenant has without writing any."""
    rules = [
        Rule(name="baseline-latency", kind="baseline", metric="p95_ms"),
        Rule(name="baseline-errors", kind="baseline", metric="error_rate"),
        Rule(name="baseline-network", kind="baseline", metric="network_ms"),
        Rule(name="baseline-browser", kind="baseline", metric="browser_ms"),
    ]
    rules += [Rule(name=f"slo-burn:{name}", kind="slo_burn", slo=name) for name in slo_names]
    return rules


def effective_rules(config: AlertingConfig, slo_names: list[str]) -> list[Rule]:
    """The document's rules, plus the defaults it does not replace (when enabled)."""
    own = {rule.name: rule for rule in config.rules}
    defaults = [r for r in default_rules(slo_names) if r.name not in own] if config.defaults else []
    return [*defaults, *config.rules]


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)
