"""From rollups to signals: which rules hold now, for which transactions, how badly.

A :class:`Signal` is one rule holding for one subject (a business transaction,
or an SLO's transactions) at one evaluation, with its severity and the figures
that made it hold. Signals are then localised, grouped into incidents and
stepped through their lifecycle (:mod:`tierscope.alerting.evaluator`).

Reads are few and wide: one query for every transaction's minutes of the
judged window, one for the hour rollups baselines learn from (refitted once an
hour, :mod:`tierscope.alerting.transaction_baselines`), and per SLO the windows
of its burn rates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg import AsyncConnection

from tierscope.alerting import burn
from tierscope.alerting.rules import RUM_METRICS, SEVERITIES, Rule
from tierscope.alerting.transaction_baselines import BaselineModel
from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram
from tierscope.processing.query import HOUR, MINUTE, floor
from tierscope.slo import budget
from tierscope.slo.definitions import threshold_us
from tierscope.slo.status import Objective, bad_events
from tierscope.store import alerting as store
from tierscope.store import slo as slo_store

Array = npt.NDArray[np.float64]
# A transaction whose hour-of-week baseline has not learnt yet (a new estate,
# a new transaction) is held against its own recent minutes instead.
RECENT_REFERENCE = timedelta(minutes=30)
# Platform time of at least this much per request, down to under this share of
# it: the transaction's jobs no longer finish within its trace (a backlog).
MISSING_MIN_MS, MISSING_SHARE = 15.0, 0.2
COMMON_MIN_TRANSACTIONS = 5  # fewer judged alike: no common slowdown is taken out
RECENT_MIN_MINUTES = 3  # fewer busy minutes than this: no reference, no judgement
# A response time left its band only when this many requests of the window
# were that slow: one request is an accident (as one failed request is, burn.MIN_BAD_SHORT).
MIN_SLOW_REQUESTS = 2
# A recent reference's spread is at least this share of its median: half an
# hour is a weak estimate of normal (a busy host doubles response times for
# minutes), so with bands 3 and 4 a warning needs 2.5 times the median.
RECENT_RELATIVE_SPREAD = 0.5


@dataclass
class Recent:
    """Every transaction's figures over the judged window ``[start, end)``."""

    start: datetime
    end: datetime
    keys: list[tuple[str, str]]
    calls: Array
    errors: Array
    p95_ms: Array
    tier_ms: Array  # transactions x tiers, mean per request
    # The p95 that at least two requests reached: below about 20 requests the p95
    # lies between the two slowest, and one slow request alone would move it.
    p95_held_ms: Array

    def index(self) -> dict[tuple[str, str], int]:
        return {key: i for i, key in enumerate(self.keys)}

    def metric(self, name: str) -> Array:
        if name == "p95_ms":
            return self.p95_ms
        if name == "work_ms":
            return np.nansum(self.tier_ms, axis=1) if len(self.keys) else np.zeros(0)
        if name == "tier_ms":  # the busiest tier (a threshold on any tier)
            return np.nanmax(self.tier_ms, axis=1) if len(self.keys) else np.zeros(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.calls > 0, self.errors / self.calls, np.nan)


def summarise(
    rows: list[tuple[str, str, datetime, int, int, bytes, list[int]]], start: datetime, end: datetime
) -> Recent:
    """Rows of ``bt_window`` summed per transaction."""
    keys: list[tuple[str, str]] = []
    where: dict[tuple[str, str], int] = {}
    owners: list[int] = []
    for service, bt, *_ in rows:
        key = (service, bt)
        if key not in where:
            where[key] = len(keys)
            keys.append(key)
        owners.append(where[key])
    n = len(keys)
    calls, errors, tier_us = np.zeros(n), np.zeros(n), np.zeros((n, len(TIERS)))
    if rows:
        index = np.asarray(owners)
        np.add.at(calls, index, [row[3] for row in rows])
        np.add.at(errors, index, [row[4] for row in rows])
        np.add.at(tier_us, index, np.asarray([row[6] for row in rows], dtype=np.float64))
    merged = histogram.Merged(owners, (row[5] for row in rows))
    p95 = merged.quantile_of_each(0.95)[:n] / 1000 if rows else np.zeros(0)
    p95 = np.concatenate([p95, np.full(n - len(p95), np.nan)])
    second = merged.largest_of_each(MIN_SLOW_REQUESTS)[:n] / 1000 if rows else np.zeros(0)
    # NaN where fewer than two requests have a latency: then no p95 is judged at all.
    held = np.minimum(p95, np.concatenate([second, np.full(n - len(second), np.nan)]))
    with np.errstate(invalid="ignore", divide="ignore"):
        tier_ms = np.where(calls[:, None] > 0, tier_us / calls[:, None] / 1000, np.nan)
    return Recent(start, end, keys, calls, errors, p95, tier_ms, held)


async def read_recent(conn: AsyncConnection, tenant_id: int, start: datetime, end: datetime) -> Recent:
    return summarise(await store.bt_window(conn, tenant_id, "minute", start, end), start, end)


@dataclass
class RecentReference:
    """Median and robust spread of each transaction's per-minute p95, error rate
    and work over the minutes before ``end`` (see :data:`RECENT_REFERENCE`):
    the reference of transactions the hour-of-week baseline has not learnt."""

    figures: dict[tuple[str, str], dict[str, tuple[float, float]]]  # key -> metric -> (median, spread)

    def get(self, key: tuple[str, str], metric: str) -> tuple[float, float]:
        return self.figures.get(key, {}).get(metric, (np.nan, np.nan))


def recent_reference(
    rows: list[tuple[str, str, datetime, int, int, bytes, list[int]]],
    ends: dict[tuple[str, str], datetime],
    floors: dict[str, float],
) -> RecentReference:
    """Per transaction, the figures of its minutes in ``[ends[key] - RECENT_REFERENCE,
    ends[key])``; ``floors`` are the metrics' smallest meaningful excess, which
    also bounds their spread from below (half of it: a flat series is not a
    license to page on noise)."""

    def within(row: tuple[Any, ...]) -> bool:
        until = ends.get((row[0], row[1]))
        return until is not None and until - RECENT_REFERENCE <= row[2] < until and row[3] > 0

    chosen = [row for row in rows if within(row)]
    if not chosen:
        return RecentReference({})
    p95 = histogram.Merged(list(range(len(chosen))), (row[5] for row in chosen)).quantile_of_each(0.95)
    series: dict[tuple[str, str], dict[str, list[float]]] = {}
    for i, (service, bt, _, calls, errors, _, tier_us) in enumerate(chosen):
        figures = series.setdefault((service, bt), {})
        figures.setdefault("p95_ms", []).append(float(p95[i]) / 1000)
        figures.setdefault("error_rate", []).append(errors / calls)
        figures.setdefault("work_ms", []).append(sum(tier_us) / calls / 1000)
        for t, tier in enumerate(TIERS):
            figures.setdefault(f"tier_ms.{tier}", []).append(tier_us[t] / calls / 1000)
    reference: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    for key, figures in series.items():
        if len(figures["p95_ms"]) < RECENT_MIN_MINUTES:
            continue
        reference[key] = {}
        for metric, values in figures.items():
            array = np.asarray(values)
            median = float(np.median(array))
            mad = 1.4826 * float(np.median(np.abs(array - median)))
            floor_spread = floors.get(metric.partition(".")[0], 0.0) / 2
            reference[key][metric] = (median, max(mad, RECENT_RELATIVE_SPREAD * abs(median), floor_spread))
    return RecentReference(reference)


@dataclass
class Signal:
    """A rule holding for a subject at one evaluation."""

    rule: Rule
    severity: str
    bts: list[tuple[str, str]]
    metric: str  # p95_ms, error_rate, or the SLO's objective
    value: float | None
    expected: float | None
    threshold_us: float  # a request slower than this counts as affected (inf: errors only)
    detail: dict[str, Any] = field(default_factory=dict)
    slo: str | None = None
    business_service: str | None = None
    subject: str | None = None  # the group key without a shared cause, when not the first transaction's

    @property
    def subject_key(self) -> str:
        if self.subject:
            return self.subject
        if self.slo:
            return f"slo:{self.slo}"
        service, bt = self.bts[0]
        return f"{self.rule.name}:{service}:{bt}"


def _band_severity(z: float, bands: dict[str, float]) -> str | None:
    held = [s for s in SEVERITIES if s in bands and z >= bands[s]]
    return held[-1] if held else None


def _against(
    name: str,
    row: int | None,
    expected: dict[str, Array],
    key: tuple[str, str],
    reference: RecentReference | None,
) -> tuple[float, float, str]:
    """(median, spread, where from) a transaction's metric is judged against:
    its learnt hour-of-week band (``row`` of ``expected``), else its recent minutes."""
    base = float(expected[name][row]) if row is not None else np.nan
    spread = float(expected[name + ":spread"][row]) if row is not None else np.nan
    if not np.isfinite(base) and reference is not None:
        return (*reference.get(key, name), "recent minutes")
    return base, spread, "baseline"


def _common_slowdown(
    recent: Recent,
    chosen: list[int],
    learnt: dict[int, int],
    expected: dict[str, Array],
    reference: RecentReference | None,
) -> float:
    """How much slower than their recent minutes most transactions are now (the
    median ratio of p95s, at least 1): a busy host or a saturated database slows
    everything alike. Against recent minutes, each transaction is judged after
    taking that common factor out, so what stands out is what differs."""
    ratios = []
    for i in chosen:
        base, _, basis = _against("p95_ms", learnt.get(i), expected, recent.keys[i], reference)
        value = recent.p95_held_ms[i]  # as judged: one slow request does not slow "everything"
        if basis == "recent minutes" and np.isfinite(base) and base > 0 and np.isfinite(value):
            ratios.append(float(value) / base)
    return max(1.0, float(np.median(ratios))) if len(ratios) >= COMMON_MIN_TRANSACTIONS else 1.0


def _missing_work(
    rule: Rule,
    recent: Recent,
    i: int,
    judged: tuple[int | None, dict[str, Array], tuple[str, str], RecentReference | None],
    common: float,
    alone: bool = True,
) -> list[Signal]:
    """Asynchronous work that stopped showing up: a transaction whose requests
    always had jobs finishing within their trace (``platform`` time) now has
    next to none. The jobs are queued behind a stalled or starved worker and
    finish too late to be part of their trace (processing does not reopen a
    settled trace), so the backlog shows as work missing, not as work slower."""
    base, _, basis = _against("tier_ms.platform", *judged)
    value = float(np.nan_to_num(recent.tier_ms[i, TIERS.index("platform")]))
    if not np.isfinite(base) or base < MISSING_MIN_MS or value > MISSING_SHARE * base:
        return []
    return [
        Signal(
            rule,
            "warning",
            [recent.keys[i]],
            rule.metric,
            value,
            float(base),
            float("inf"),
            {"tier": "platform", "missing": True, "baseline_from": basis, "common": round(common, 2)},
            # beside another tier's signal of the transaction: an incident of its own
            subject=None if alone else f"{rule.name}:{recent.keys[i][0]}:{recent.keys[i][1]}:missing",
        )
    ]


def judge_transactions(
    rules: list[Rule],
    recent_by_window: dict[timedelta, Recent],
    model: BaselineModel,
    widths: tuple[float, ...],
    reference: RecentReference | None = None,
    explained: dict[tuple[str, str], set[str]] | None = None,
) -> list[Signal]:
    """Baseline and threshold rules over every transaction's judged window.

    A baseline rule holds a transaction against its hour-of-week band; where
    that band has not learnt yet, against its ``reference`` minutes.
    ``explained`` is, per transaction, the tiers its open alerts already name:
    when the worst tier of a ``tier_ms`` rule is one of them, the worst tier
    that is not speaks too, so a second cause in a transaction already alerted
    on (a lock while a partner is still slow) gets an alert of its own at once
    rather than when the first one's minutes leave the window."""
    default_bands = dict(zip(SEVERITIES, widths, strict=False))
    signals: list[Signal] = []
    model_rows = {key: i for i, key in enumerate(model.keys)}
    for rule in rules:
        if rule.kind not in ("baseline", "threshold") or rule.metric in RUM_METRICS:
            continue
        recent = recent_by_window[rule.window]
        chosen = [i for i, (s, b) in enumerate(recent.keys) if rule.applies_to(s, b)]
        if not chosen:
            continue
        values = recent.metric(rule.metric)
        if rule.kind == "threshold":
            for i in chosen:
                value = values[i]
                if recent.calls[i] >= rule.min_requests and np.isfinite(value) and value > (rule.above or 0):
                    limit_us = (rule.above or 0) * 1000 if rule.metric == "p95_ms" else float("inf")
                    signals.append(
                        Signal(
                            rule,
                            rule.severity,
                            [recent.keys[i]],
                            rule.metric,
                            float(value),
                            rule.above,
                            limit_us,
                            {"above": rule.above},
                        )
                    )
            continue
        if rule.metric == "p95_ms":
            values = recent.p95_held_ms
        known = [i for i in chosen if recent.keys[i] in model_rows]
        middle = recent.start + (recent.end - recent.start) / 2
        expected = model.expected(middle, [model_rows[recent.keys[i]] for i in known])
        learnt = {i: j for j, i in enumerate(known)}
        bands = rule.bands or default_bands
        # tier_ms: each tier's time per request is judged; the worst one speaks.
        names = [f"tier_ms.{tier}" for tier in TIERS] if rule.metric == "tier_ms" else [rule.metric]
        common = 1.0
        if rule.metric != "error_rate":
            common = _common_slowdown(recent, chosen, learnt, expected, reference)
        for i in chosen:
            if recent.calls[i] < rule.min_requests:
                continue
            if rule.metric == "error_rate" and recent.errors[i] < burn.MIN_BAD_SHORT:
                continue  # one failed request at night (1 in 20) is no incident, whatever the band
            judged = (learnt.get(i), expected, recent.keys[i], reference)

            held: list[tuple[float, str, float, float, str]] = []
            for name in names:
                value = values[i] if len(names) == 1 else recent.tier_ms[i, TIERS.index(name[8:])]
                base, spread, basis = _against(name, *judged)
                if basis == "recent minutes":  # the whole estate slowing is not this transaction's fault
                    base = base * common
                    spread = max(spread, RECENT_RELATIVE_SPREAD * base)
                if not (np.isfinite(value) and np.isfinite(base) and np.isfinite(spread)) or spread <= 0:
                    continue
                if value - base < rule.excess_floor():
                    continue
                held.append((float((value - base) / spread), name, float(value), float(base), basis))
            held.sort(key=lambda h: -h[0])
            if rule.metric == "tier_ms" and not (held and held[0][1] == "tier_ms.platform"):
                # Work missing is a finding of its own: a busy host slowing another
                # tier of the same transaction must not hide a stalled worker.
                signals += _missing_work(rule, recent, i, judged, common, alone=not held)
            if not held:
                continue
            speaking = [held[0]]
            known = (explained or {}).get(recent.keys[i], set())
            if rule.metric == "tier_ms" and held[0][1][8:] in known:
                fresh = [h for h in held[1:] if h[1][8:] not in known and _band_severity(h[0], bands)]
                speaking += fresh[:1]
            # Requests slower than the edge of the p95 band count as affected.
            p95_base, p95_spread, _ = _against("p95_ms", *judged)
            lowest = min(bands.values())
            edge_us = (p95_base + lowest * p95_spread) * 1000 if rule.metric != "error_rate" else float("inf")
            for rank, (z, name, value, base, basis) in enumerate(speaking):
                severity = _band_severity(z, bands)
                if severity is None:
                    continue
                detail: dict[str, Any] = {"z": round(z, 2), "bands": bands, "baseline_from": basis}
                if basis == "recent minutes" and common > 1:
                    detail["common"] = round(common, 2)  # the slowdown shared by most transactions
                if rule.metric == "tier_ms":
                    detail["tier"] = name[8:]
                service, bt = recent.keys[i]
                signals.append(
                    Signal(
                        rule,
                        severity,
                        [recent.keys[i]],
                        rule.metric,
                        value,
                        base,
                        float(edge_us) if np.isfinite(edge_us) else float("inf"),
                        detail,
                        # the second cause is an incident of its own even when it cannot be localised
                        subject=f"{rule.name}:{service}:{bt}:{name}" if rank else None,
                    )
                )
    return signals


async def judge_slos(
    conn: AsyncConnection,
    tenant_id: int,
    rules: list[Rule],
    objectives: dict[str, Objective],
    end: datetime,
) -> list[Signal]:
    """``slo_burn`` rules: each SLO's burn rates over the window pairs of :mod:`burn`."""
    signals: list[Signal] = []
    short_limit = timedelta(hours=6)
    for rule in rules:
        objective = objectives.get(rule.slo or "") if rule.kind == "slo_burn" else None
        if objective is None or not objective.transactions:
            continue
        spec = objective.document.spec
        threshold = threshold_us(spec)
        minutes = await slo_store.bt_buckets(
            conn, tenant_id, objective.transactions, "minute", end - short_limit, end
        )
        hours = await slo_store.bt_buckets(
            conn,
            tenant_id,
            objective.transactions,
            "hour",
            floor(end - timedelta(days=3), HOUR),
            floor(end, HOUR),
        )
        minute_bad = bad_events(minutes, spec.objective, threshold)
        hour_bad = bad_events(hours, spec.objective, threshold)
        events: dict[timedelta, budget.Events] = {}
        for window in burn.windows_needed():
            if window <= short_limit:
                keep = np.asarray([s >= end - window for s in minutes.starts], dtype=bool)
                events[window] = budget.Events(
                    float(minutes.calls[keep].sum()), float(minute_bad[keep].sum())
                )
            else:
                # Hours up to the last whole one, plus the minutes of the hour in progress.
                since = floor(end - window, HOUR)
                keep = np.asarray([s >= since for s in hours.starts], dtype=bool)
                current = np.asarray([s >= floor(end, HOUR) for s in minutes.starts], dtype=bool)
                events[window] = budget.Events(
                    float(hours.calls[keep].sum() + minutes.calls[current].sum()),
                    float(hour_bad[keep].sum() + minute_bad[current].sum()),
                )
        result = burn.judge(events, spec.target, rule.min_requests)
        if result.severity is None or result.pair is None:
            continue
        signals.append(
            Signal(
                rule,
                result.severity,
                list(objective.transactions),
                spec.objective,
                round(result.short_rate or 0, 3),
                result.pair.factor,
                float("inf") if threshold is None else threshold,
                {
                    "burn_rate_long": round(result.long_rate or 0, 3),
                    "burn_rate_short": round(result.short_rate or 0, 3),
                    "long_window": str(result.pair.long),
                    "short_window": str(result.pair.short),
                    "factor": round(result.pair.factor, 2),
                    "target": spec.target,
                },
                slo=objective.name,
                business_service=objective.business_service,
            )
        )
    return signals


def minute_window(end: datetime, length: timedelta) -> tuple[datetime, datetime]:
    end = floor(end, MINUTE)
    return end - length, end
