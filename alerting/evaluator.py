"""One evaluation cycle: signals → localised incidents → lifecycle → outbox.

For each tenant, at the end of the last complete minute:

1. the rules hold or not (:mod:`signals`), each holding one is localised
   (:mod:`localise`) and signals sharing a cause (tier and component) become
   one incident with all their transactions; other signals are incidents of
   their own, keyed by rule and subject;
2. every incident, and every open alert of the store, takes one lifecycle
   step (:mod:`lifecycle`), written to the store with its impact;
3. notifications are queued in the same transaction as the state they
   announce (the outbox, delivered by :mod:`delivery`): a restart neither
   loses nor repeats one, because both live in the store.

A cycle that cannot read a tenant's data changes nothing for that tenant, and
a window without any rollup (processing stalled) does not resolve anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from psycopg import AsyncConnection

from tierscope.alerting import lifecycle, mute, routing, rum
from tierscope.alerting.impact import assess
from tierscope.alerting.localise import Localisation, localise
from tierscope.alerting.rules import (
    RUM_METRICS,
    SEVERITIES,
    AlertingConfig,
    Rule,
    effective_rules,
    from_document,
)
from tierscope.alerting.signals import (
    RECENT_REFERENCE,
    Recent,
    RecentReference,
    Signal,
    judge_slos,
    judge_transactions,
    minute_window,
    read_recent,
    recent_reference,
)
from tierscope.alerting.transaction_baselines import BaselineModel, refresh_baselines
from tierscope.alerting.views import view
from tierscope.config import Settings
from tierscope.slo import status
from tierscope.slo.baselines import BaselineConfig
from tierscope.slo.calendar import BusinessCalendar
from tierscope.slo.definitions import BusinessCalendarDocument
from tierscope.store import Database
from tierscope.store import alerting as store
from tierscope.store import slo as slo_store

_logger = logging.getLogger(__name__)
DEFAULT_FOR, DEFAULT_KEEP = timedelta(minutes=2), timedelta(minutes=5)
AM_REFRESH = timedelta(minutes=5)  # re-send firing alerts to Alertmanager this often


@dataclass
class Incident:
    key: str
    signals: list[Signal]
    localisation: Localisation

    @property
    def main(self) -> Signal:
        return max(self.signals, key=lambda s: SEVERITIES.index(s.severity))

    @property
    def severity(self) -> str:
        return self.main.severity

    @property
    def bts(self) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        for signal in self.signals:
            seen += [key for key in signal.bts if key not in seen]
        return seen


@dataclass
class CycleReport:
    tenants: int = 0
    evaluated: list[int] = field(default_factory=list)  # judged without failure
    signals: int = 0
    failed: list[int] = field(default_factory=list)
    fired: int = 0
    resolved: int = 0
    escalated: int = 0


def _ms(value: float) -> str:
    return f"{value / 1000:.1f} s" if value >= 1000 else f"{value:.0f} ms"


def title(incident: Incident) -> str:
    main, loc = incident.main, incident.localisation
    service, bt = main.bts[0] if main.bts else ("", "")
    reference = "baseline" if main.rule.kind == "baseline" else "limit"
    if main.metric == rum.NETWORK:
        used = len(incident.bts)
        text = (
            f"users at {main.detail['site']}: network time {_ms(main.value or 0)} per experience"
            f" ({reference} {_ms(main.expected or 0)}) in {used} transaction{'s' if used != 1 else ''}"
        )
    elif main.metric == rum.BROWSER:
        text = (
            f"{main.detail['page']} browser time {_ms(main.value or 0)} per experience"
            f" ({reference} {_ms(main.expected or 0)})"
        )
    elif main.slo:
        text = f"SLO {main.slo} burning {main.detail['burn_rate_short']}x its error budget"
    elif main.metric in ("p95_ms", "work_ms", "tier_ms"):
        reference = "baseline" if main.rule.kind == "baseline" else "limit"
        what = {"p95_ms": "p95", "work_ms": "work per request"}.get(
            main.metric, f"{main.detail.get('tier', 'tier')} time per request"
        )
        if main.detail.get("missing"):
            what = "jobs missing from the traces (a backlog?):" + " " + what
        text = f"{service} / {bt} {what} {_ms(main.value or 0)} ({reference} {_ms(main.expected or 0)})"
    else:
        reference = "baseline" if main.rule.kind == "baseline" else "limit"
        text = f"{service} / {bt} error rate {main.value or 0:.1%} ({reference} {main.expected or 0:.1%})"
    others = len(incident.bts) - 1
    if others > 0 and not main.slo and main.metric != rum.NETWORK:
        text += f" and {others} more transaction{'s' if others > 1 else ''}"
    if loc.tier:
        share = loc.evidence["tiers"].get(loc.tier, {}).get("share", loc.confidence)
        where = f" in {loc.component}" if loc.component else ""
        text += f"; {share:.0%} of the excess is {loc.tier} time{where}"
    return text


class Evaluator:
    """Evaluates every tenant's rules; keeps only caches (baselines), never state."""

    def __init__(
        self,
        database: Database,
        settings: Settings,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.database = database
        self.settings = settings
        self.clock = clock
        self._models: dict[int, BaselineModel] = {}
        self._rum_models: dict[int, rum.RumModel] = {}

    async def cycle(self, now: datetime | None = None) -> CycleReport:
        now = now or self.clock()
        end = minute_window(now - self.settings.alert_delay, timedelta(0))[1]
        report = CycleReport()
        async with self.database.connection() as conn:
            tenants = await store.tenant_ids(conn)
        for tenant_id in tenants:
            report.tenants += 1
            try:
                async with self.database.connection() as conn:
                    await self.evaluate_tenant(conn, tenant_id, end, report)
                report.evaluated.append(tenant_id)
            except Exception as exc:  # a failed evaluation changes nothing; the next cycle tries again
                _logger.warning("alert evaluation of tenant %d failed: %s", tenant_id, exc)
                report.failed.append(tenant_id)
        return report

    async def _calendar(self, conn: AsyncConnection, tenant_id: int) -> BusinessCalendar:
        stored = await slo_store.get_calendar(conn, tenant_id)
        if stored is not None:
            return BusinessCalendarDocument.model_validate(stored).spec.calendar()
        s = self.settings
        return BusinessCalendar(
            time_zone=s.business_time_zone,
            country=s.business_country,
            month_end_days=s.month_end_days,
            blackout=frozenset(s.blackout_days),
        )

    def _baseline_config(self) -> BaselineConfig:
        return BaselineConfig(weeks=self.settings.baseline_weeks, widths=self.settings.baseline_bands)

    async def _rum_model(self, conn: AsyncConnection, tenant_id: int, end: datetime) -> rum.RumModel:
        """The bands of the tenant's sites and pages, refitted once an hour."""
        model = await rum.refresh(
            conn,
            tenant_id,
            self._rum_models.get(tenant_id),
            end,
            await self._calendar(conn, tenant_id),
            self._baseline_config(),
        )
        self._rum_models[tenant_id] = model
        return model

    async def _model(self, conn: AsyncConnection, tenant_id: int, end: datetime) -> BaselineModel:
        """The tenant's bands, fitted once and then brought up to date hour by hour."""
        config = self._baseline_config()
        model = await refresh_baselines(
            conn, tenant_id, self._models.get(tenant_id), end, await self._calendar(conn, tenant_id), config
        )
        self._models[tenant_id] = model
        return model

    async def evaluate_tenant(
        self, conn: AsyncConnection, tenant_id: int, end: datetime, report: CycleReport
    ) -> None:
        stored = await store.get_config(conn, tenant_id)
        config = from_document(stored) if stored else AlertingConfig()
        objectives = {o.name: o for o in await status.objectives(conn, tenant_id)}
        rules = effective_rules(config, sorted(objectives))
        recent_by_window: dict[timedelta, Recent] = {}
        # At least one window is read, if only to tell "no data at all" from "all is well".
        for window in {r.window for r in rules if r.kind != "slo_burn"} or {timedelta(minutes=5)}:
            start, stop = minute_window(end, window)
            recent_by_window[window] = await read_recent(conn, tenant_id, start, stop)
        model = await self._model(conn, tenant_id, end)
        open_rows = {row["group_key"]: row for row in await store.open_alerts(conn, tenant_id)}
        reference = await self._recent_reference(
            conn, tenant_id, rules, recent_by_window, model, open_rows, end
        )
        explained: dict[tuple[str, str], set[str]] = {}
        for row in open_rows.values():
            for service, bt in row["bts"] or []:
                if row["tier"]:
                    explained.setdefault((service, bt), set()).add(row["tier"])
        signals = judge_transactions(
            rules, recent_by_window, model, self.settings.baseline_bands, reference, explained
        )
        signals += await judge_slos(conn, tenant_id, rules, objectives, end)
        rum_rules = [r for r in rules if r.metric in RUM_METRICS and r.kind != "slo_burn"]
        rum_windows: dict[timedelta, rum.RumWindow] = {}
        if rum_rules:
            rum_model = await self._rum_model(conn, tenant_id, end)
            rum_signals, rum_windows = await rum.evaluate(
                conn, tenant_id, rum_rules, end, rum_model, self.settings.baseline_bands, open_rows
            )
            signals += rum_signals
        report.signals += len(signals)
        no_data = all(not len(r.keys) for r in recent_by_window.values())
        no_experiences = all(not w.rows for w in rum_windows.values())
        incidents = await self._incidents(
            conn, tenant_id, signals, recent_by_window, rum_windows, model, open_rows, end
        )
        services = await slo_store.list_business_services(conn, tenant_id)
        silences = mute.from_rows(await store.list_silences(conn, tenant_id, end))
        muter = mute.AnyOf((*silences, *self._maintenance(config)))
        by_name = {rule.name: rule for rule in rules}
        for key in sorted(set(incidents) | set(open_rows)):
            incident, row = incidents.get(key), open_rows.get(key)
            if incident is None and no_data and row is not None:
                continue  # no rollup at all: processing is behind, which says nothing of the incident
            rule = incident.main.rule if incident else by_name.get(row["rule"]) if row else None
            if incident is None and no_experiences and rule is not None and rule.metric in RUM_METRICS:
                continue  # no experience rolled up at all: the same, for real users' alerts
            await self._step(conn, tenant_id, key, incident, row, rule, end, config, services, muter, report)

    async def _recent_reference(
        self,
        conn: AsyncConnection,
        tenant_id: int,
        rules: list[Rule],
        recent_by_window: dict[timedelta, Recent],
        model: BaselineModel,
        open_rows: dict[str, dict[str, Any]],
        end: datetime,
    ) -> RecentReference | None:
        """The recent minutes of the transactions whose baseline has not learnt.

        Each one's reference ends where its judged window starts, or where an
        open alert of it began: a fault that lasts does not become normal."""
        baseline_rules = [r for r in rules if r.kind == "baseline"]
        if not baseline_rules:
            return None
        judged_from = end - max(r.window for r in baseline_rules)
        keys = sorted({key for recent in recent_by_window.values() for key in recent.keys})
        in_model = {key: i for i, key in enumerate(model.keys)}
        known = [key for key in keys if key in in_model]
        learnt = model.expected(judged_from, [in_model[key] for key in known])["p95_ms"]
        unlearnt = set(keys) - {key for key, value in zip(known, learnt, strict=True) if np.isfinite(value)}
        if not unlearnt:
            return None
        ends = dict.fromkeys(unlearnt, judged_from)
        for row in open_rows.values():
            for service, bt in row["bts"]:
                if (service, bt) in ends:
                    ends[(service, bt)] = min(ends[(service, bt)], row["pending_since"])
        floors: dict[str, float] = {}
        for rule in baseline_rules:
            floors[rule.metric] = min(floors.get(rule.metric, float("inf")), rule.excess_floor())
        since = min(ends.values()) - RECENT_REFERENCE
        rows = await store.bt_window(conn, tenant_id, "minute", since, judged_from)
        return recent_reference(rows, ends, floors)

    async def _incidents(
        self,
        conn: AsyncConnection,
        tenant_id: int,
        signals: list[Signal],
        recent_by_window: dict[timedelta, Recent],
        rum_windows: dict[timedelta, rum.RumWindow],
        model: BaselineModel,
        open_rows: dict[str, dict[str, Any]],
        end: datetime,
    ) -> dict[str, Incident]:
        incidents: dict[str, Incident] = {}
        for signal in signals:
            if signal.metric in RUM_METRICS:
                window = rum_windows[signal.rule.window]
                found = await rum.localise(conn, tenant_id, signal, window, open_rows)
                self._join(incidents, found.cause_key or signal.subject_key, signal, found)
                continue
            recent = recent_by_window.get(signal.rule.window)
            if recent is None:  # an SLO signal: localise on the judged window of its transactions
                start, stop = minute_window(end, signal.rule.window)
                recent = await read_recent(conn, tenant_id, start, stop)
                recent_by_window[signal.rule.window] = recent
            since = min(
                [
                    row["pending_since"]
                    for row in open_rows.values()
                    if any(list(key) in row["bts"] for key in signal.bts)
                ]
                + [recent.start]
            )
            found = await localise(conn, tenant_id, signal, recent, model, since)
            self._join(incidents, found.cause_key or signal.subject_key, signal, found)
        return incidents

    @staticmethod
    def _join(incidents: dict[str, Incident], key: str, signal: Signal, found: Localisation) -> None:
        """One incident per cause: a signal joins the incident of its key."""
        if key in incidents:
            incidents[key].signals.append(signal)
            if found.confidence > incidents[key].localisation.confidence:
                incidents[key].localisation = found
        else:
            incidents[key] = Incident(key, [signal], found)

    def _maintenance(self, config: AlertingConfig) -> list[mute.Window]:
        return [
            mute.Window(item.starts_at, item.ends_at, dict(item.matchers), "maintenance")
            for item in config.maintenance
        ]

    async def _step(
        self,
        conn: AsyncConnection,
        tenant_id: int,
        key: str,
        incident: Incident | None,
        row: dict[str, Any] | None,
        rule: Rule | None,
        now: datetime,
        config: AlertingConfig,
        services: list[dict[str, Any]],
        muter: mute.Muter,
        report: CycleReport,
    ) -> None:
        current = None
        if row is not None:
            current = lifecycle.Lifecycle(
                row["state"],
                row["pending_since"],
                row["last_active_at"],
                row["started_at"],
                row["resolved_at"],
            )
        transition = lifecycle.step(
            current,
            incident is not None,
            now,
            rule.for_ if rule else DEFAULT_FOR,
            rule.keep_firing_for if rule else DEFAULT_KEEP,
        )
        if transition.lifecycle is None:
            if row is not None:
                await store.delete_pending(conn, tenant_id, row["id"])
            return
        state = transition.lifecycle
        fields = dict(row) if row else {}
        if incident is not None:
            loc, main = incident.localisation, incident.main
            service = main.business_service if main.slo and main.business_service else main.bts[0][0]
            fields.update(
                group_key=key,
                severity=incident.severity,
                kind=main.rule.kind,
                rule=main.rule.name,
                title=title(incident),
                service=service,
                bts=[list(k) for k in incident.bts],
                tier=loc.tier,
                component=loc.component,
                confidence=loc.confidence,
                evidence={
                    **loc.evidence,
                    "signals": [_signal_evidence(s) for s in incident.signals],
                    **({"rum_scope": found} if (found := rum.scope(incident.signals)) else {}),
                },
                threshold_us=main.threshold_us,
            )
        if not fields.get("bts"):
            return
        fields.update(
            state=state.state,
            pending_since=state.pending_since,
            last_active_at=state.last_active_at,
            started_at=state.started_at,
            resolved_at=state.resolved_at,
        )
        if state.state != lifecycle.PENDING:
            threshold = fields.get("threshold_us")
            if threshold is None:
                threshold = fields["evidence"].get("threshold_us")
            threshold = float("inf") if threshold is None else threshold
            since = state.started_at or state.pending_since
            impact = await assess(
                conn,
                tenant_id,
                [tuple(k) for k in fields["bts"]],
                since,
                now,
                threshold,
                fields["severity"],
                services,
                config.cost_per_user_minute,
                self.settings.alert_cost_per_user_minute,
                fields["evidence"].get("rum_scope"),
            )
            fields["impact"], fields["priority"] = impact.as_dict(), impact.priority
        fields.setdefault("impact", {})
        fields.setdefault("priority", 0.0)
        fields["evidence"] = {**fields["evidence"], "threshold_us": _finite(fields.get("threshold_us"))}
        fields.pop("threshold_us", None)
        async with conn.transaction():
            if row is None:
                fields["id"] = await store.insert_alert(conn, tenant_id, fields)
                fields["notified"] = False
            else:
                await store.update_alert(conn, tenant_id, fields)
            await self._notify(conn, tenant_id, fields, transition.notify, now, config, muter, report)

    async def _notify(
        self,
        conn: AsyncConnection,
        tenant_id: int,
        fields: dict[str, Any],
        event: str | None,
        now: datetime,
        config: AlertingConfig,
        muter: mute.Muter,
        report: CycleReport,
    ) -> None:
        shown = view(
            {**fields, "tenant_id": tenant_id},
            self.settings.alert_runbook_url,
            config.display(fields["severity"]),
        )
        labels = _labels(fields, shown)
        receivers = routing.receivers_for(config, labels)
        if event == "resolved":
            report.resolved += 1
            if fields.get("notified"):
                for name in receivers:
                    receiver = config.receiver(name)
                    if receiver is not None and receiver.send_resolved:
                        await store.enqueue(conn, tenant_id, fields["id"], name, "resolved", shown, now)
            return
        if fields["state"] not in lifecycle.ACTIVE_STATES:
            return
        if event == "firing":
            report.fired += 1
        if not fields.get("notified"):
            if muter.mutes(labels, now):
                return  # held back; sent once the mute ends, if it still fires
            for name in receivers:
                await store.enqueue(conn, tenant_id, fields["id"], name, "firing", shown, now)
            await store.mark_notified(conn, tenant_id, fields["id"])
            return
        for name in receivers:
            # Worse than when it was sent (warning -> critical): sent again, now,
            # even muted (the mute was judged when it first fired).
            if await store.escalate(conn, tenant_id, fields["id"], name, shown, now):
                report.escalated += 1
                continue
            # Alertmanager forgets an alert not re-sent: refresh it
            receiver = config.receiver(name)
            if receiver is not None and receiver.type == "alertmanager":
                await store.refresh(conn, tenant_id, fields["id"], name, shown, now, now - AM_REFRESH)


def _finite(value: float | None) -> float | None:
    return None if value is None or value == float("inf") else value


def _signal_evidence(signal: Signal) -> dict[str, Any]:
    return {
        "rule": signal.rule.name,
        "kind": signal.rule.kind,
        "severity": signal.severity,
        "bts": [list(k) for k in signal.bts],
        "metric": signal.metric,
        "value": signal.value,
        "expected": signal.expected,
        **signal.detail,
    }


def _labels(fields: dict[str, Any], shown: dict[str, Any]) -> mute.Labels:
    impact = fields.get("impact") or {}
    return {
        "severity": [fields["severity"]],
        "service": sorted(
            {b[0] for b in fields["bts"]} | ({fields["service"]} if fields.get("service") else set())
        ),
        "bt": sorted({b[1] for b in fields["bts"]}),
        "tier": [fields["tier"]] if fields.get("tier") else [],
        "component": [fields["component"]] if fields.get("component") else [],
        "rule": [fields["rule"]],
        "kind": [fields["kind"]],
        "business_service": list(impact.get("business_services", [])),
    }
