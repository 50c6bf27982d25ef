"""Real users' network and browser time: signals, and where they point.

No server span sees the network between a user and the estate, nor the time a
page's scripts keep the browser busy; only real users' experiences do (RUM,
joined with their traces and rolled up per minute by ``processing/rum_rollup.py``
per business transaction or page, and site). From those rollups:

- ``network_ms``: the network time per experience of each **site**'s users (a
  branch office's link), over every page they used;
- ``browser_ms``: the browser time per experience of each **page** (business
  transaction, or page name when untraced), over every site.

Each is judged like the transactions' metrics (:mod:`.signals`): against its
hour-of-week band (``slo/baselines.py``, fitted from the hour rollups once an
hour) where learnt, else against its own last 30 minutes (median, robust
spread of at least half the median). What most sites (or pages) share is taken
out first: the median excess of the *other* subjects of the rule. A busy
server makes every user wait longer before their request is served, which the
browser counts as network time at every site alike; a slow link adds it at one.

Localisation is known from the signal: tier ``network`` and the site, tier
``browser`` and the page (from ``rum_experiences``, the page of the
transaction whose browser time grew most), with the evidence of every tier of
those experiences now and in the hour before. So one slow branch link is one
incident (``cause:network:<site>``) with every transaction its users used.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from psycopg import AsyncConnection

from tierscope.alerting.localise import Localisation, _round, tier_table
from tierscope.alerting.rules import RUM_METRICS, SEVERITIES, Rule
from tierscope.alerting.signals import (
    RECENT_MIN_MINUTES,
    RECENT_REFERENCE,
    RECENT_RELATIVE_SPREAD,
    Signal,
    minute_window,
)
from tierscope.processing.query import HOUR, floor
from tierscope.processing.rum_rollup import OTHER, RUM_TIERS
from tierscope.slo.baselines import Baseline, BaselineConfig
from tierscope.slo.calendar import BusinessCalendar
from tierscope.store import alerting as store
from tierscope.store.alerting import RumRow

NETWORK, BROWSER = "network_ms", "browser_ms"
TIER_OF = {NETWORK: "network", BROWSER: "browser"}
REFERENCE = timedelta(hours=1)  # localisation's evidence: the hour before the incident
MAX_BTS = 50  # transactions listed in a network alert (its site's busiest)
# (metric, a, b): a site's network time is (network_ms, site, ""), a page's
# browser time (browser_ms, service, name); service is "" for an untraced page.
Subject = tuple[str, str, str]


def subject_of(metric: str, row: RumRow) -> Subject | None:
    _, service, name, site, _, _ = row
    if metric == NETWORK:
        return None if not site or site == OTHER else (NETWORK, site, "")
    return None if name == OTHER else (BROWSER, service, name)


def _tier_us(metric: str, row: RumRow) -> int:
    return int(row[5][RUM_TIERS.index(TIER_OF[metric])])


@dataclass
class RumWindow:
    """The minute rollups of real users' experiences in ``[start, end)``."""

    start: datetime
    end: datetime
    rows: list[RumRow]

    def sums(self, metric: str) -> dict[Subject, tuple[int, int]]:
        """Per subject: experiences and µs in the metric's tier."""
        out: dict[Subject, tuple[int, int]] = {}
        for row in self.rows:
            subject = subject_of(metric, row)
            if subject is not None:
                count, us = out.get(subject, (0, 0))
                out[subject] = (count + row[4], us + _tier_us(metric, row))
        return out

    def transactions_at(self, site: str) -> list[tuple[str, str]]:
        """The transactions (or untraced pages) a site's users went through, busiest first."""
        counts: dict[tuple[str, str], int] = {}
        for _, service, name, row_site, count, _ in self.rows:
            if row_site == site:
                counts[(service, name)] = counts.get((service, name), 0) + count
        traced = [key for key in counts if key[0]] or list(counts)
        return sorted(traced, key=lambda key: (-counts[key], key))[:MAX_BTS]


async def read_window(conn: AsyncConnection, tenant_id: int, start: datetime, end: datetime) -> RumWindow:
    return RumWindow(start, end, await store.rum_window(conn, tenant_id, "minute", start, end))


# -- baselines -----------------------------------------------------------------


@dataclass
class RumModel:
    """Hour-of-week bands of every site's network time and every page's browser time."""

    subjects: list[Subject]
    baseline: Baseline | None
    fitted_for: datetime

    def expected(self, at: datetime) -> dict[Subject, tuple[float, float]]:
        """(median, spread) of every learnt subject at ``at`` (not learnt or excused: absent)."""
        if self.baseline is None:
            return {}
        n = len(self.subjects)
        at_zero = self.baseline.score(np.zeros(n, dtype=np.float32), at)
        at_one = self.baseline.score(np.ones(n, dtype=np.float32), at)
        out = {}
        with np.errstate(invalid="ignore", divide="ignore"):
            spread = 1.0 / (at_one.z - at_zero.z).astype(np.float64)
        for i, subject in enumerate(self.subjects):
            if np.isfinite(at_zero.expected[i]) and np.isfinite(spread[i]):
                out[subject] = (float(at_zero.expected[i]), float(spread[i]))
        return out


async def fit(
    conn: AsyncConnection, tenant_id: int, now: datetime, calendar: BusinessCalendar, config: BaselineConfig
) -> RumModel:
    """Bands from the hour rollups of the last ``config.weeks`` (arithmetic in a thread)."""
    end = floor(now, HOUR)
    steps = config.weeks * 7 * 24
    start = end - steps * HOUR
    points: list[tuple[Subject, datetime, int, int]] = []
    for metric in RUM_METRICS:
        index = RUM_TIERS.index(TIER_OF[metric])
        if metric == NETWORK:
            for site, bucket, count, us in await store.rum_hours(conn, tenant_id, "site", index, start, end):
                if site != OTHER:
                    points.append(((NETWORK, site, ""), bucket, count, us))
        else:
            rows = await store.rum_hours(conn, tenant_id, "page", index, start, end)
            for service, name, bucket, count, us in rows:
                if name != OTHER:
                    points.append(((BROWSER, service, name), bucket, count, us))
    subjects = list(dict.fromkeys(point[0] for point in points))
    if not subjects:
        return RumModel([], None, end)
    where = {subject: i for i, subject in enumerate(subjects)}
    values = np.full((len(subjects), steps), np.nan, dtype=np.float32)
    for subject, bucket, count, us in points:
        if count > 0:
            values[where[subject], int((bucket - start) / HOUR)] = us / count / 1000
    baseline = await asyncio.to_thread(Baseline, values, start, HOUR, calendar, config)
    return RumModel(subjects, baseline, end)


async def refresh(
    conn: AsyncConnection,
    tenant_id: int,
    model: RumModel | None,
    now: datetime,
    calendar: BusinessCalendar,
    config: BaselineConfig,
) -> RumModel:
    """The model of the last whole hour: refitted once an hour (sites and pages
    are few next to transactions' metrics, so a full fit is cheap)."""
    if model is not None and model.fitted_for == floor(now, HOUR):
        return model
    return await fit(conn, tenant_id, now, calendar, config)


def recent_reference(
    rows: list[RumRow], ends: dict[Subject, datetime], floors: dict[str, float]
) -> dict[Subject, tuple[float, float]]:
    """Per subject, (median, spread) of its per-minute figures in ``[ends[s] -
    RECENT_REFERENCE, ends[s])``, once it has :data:`RECENT_MIN_MINUTES` busy
    minutes; the spread is at least half the median and half the rule's floor."""
    minutes: dict[Subject, dict[datetime, tuple[int, int]]] = {}
    for row in rows:
        for metric in RUM_METRICS:
            subject = subject_of(metric, row)
            until = ends.get(subject) if subject else None
            if subject is None or until is None or not until - RECENT_REFERENCE <= row[0] < until:
                continue
            count, us = minutes.setdefault(subject, {}).get(row[0], (0, 0))
            minutes[subject][row[0]] = (count + row[4], us + _tier_us(metric, row))
    out = {}
    for subject, by_minute in minutes.items():
        values = np.asarray([us / count / 1000 for count, us in by_minute.values() if count > 0])
        if len(values) < RECENT_MIN_MINUTES:
            continue
        median = float(np.median(values))
        mad = 1.4826 * float(np.median(np.abs(values - median)))
        out[subject] = (median, max(mad, RECENT_RELATIVE_SPREAD * median, floors.get(subject[0], 0.0) / 2))
    return out


# -- judging -------------------------------------------------------------------


def _applies(rule: Rule, subject: Subject) -> bool:
    if subject[0] == NETWORK:
        return rule.site is None or rule.site == subject[1]
    return rule.applies_to(subject[1], subject[2])


def _describe(subject: Subject) -> dict[str, str]:
    if subject[0] == NETWORK:
        return {"site": subject[1]}
    return {"page": f"{subject[1]} {subject[2]}" if subject[1] else subject[2]}


def judge(
    rules: list[Rule],
    windows: dict[timedelta, RumWindow],
    expected: dict[Subject, tuple[float, float]],
    reference: dict[Subject, tuple[float, float]],
    widths: tuple[float, ...],
) -> list[Signal]:
    """``network_ms`` and ``browser_ms`` rules (baseline or threshold) over the windows."""
    default_bands = dict(zip(SEVERITIES, widths, strict=False))
    signals: list[Signal] = []
    for rule in rules:
        if rule.metric not in RUM_METRICS or rule.kind not in ("baseline", "threshold"):
            continue
        window = windows[rule.window]
        sums = {
            s: figures
            for s, figures in window.sums(rule.metric).items()
            if _applies(rule, s) and figures[0] >= rule.min_requests
        }
        values = {s: us / count / 1000 for s, (count, us) in sums.items()}
        if rule.kind == "threshold":
            for s, value in values.items():
                if value > (rule.above or 0):
                    detail = {"tier": TIER_OF[rule.metric], **_describe(s), "above": rule.above}
                    detail["edge_ms"] = rule.above
                    signals.append(_signal(rule, rule.severity, s, window, value, rule.above, detail, sums))
            continue
        against: dict[Subject, tuple[float, float, str]] = {}
        for s in values:
            if s in expected:
                against[s] = (*expected[s], "baseline")
            elif s in reference:
                against[s] = (*reference[s], "recent minutes")
        excess = {s: values[s] - against[s][0] for s in against}
        bands = rule.bands or default_bands
        for s, (base, spread, basis) in against.items():
            others = [max(e, 0.0) for o, e in excess.items() if o != s]
            common = float(np.median(others)) if others else 0.0
            own = excess[s] - common
            if spread <= 0 or own < rule.excess_floor():
                continue
            z = own / spread
            held = [name for name in SEVERITIES if name in bands and z >= bands[name]]
            if not held:
                continue
            detail: dict[str, Any] = {
                "tier": TIER_OF[rule.metric],
                **_describe(s),
                "z": round(z, 2),
                "bands": bands,
                "baseline_from": basis,
                "common_ms": round(common, 1),  # the excess shared by the rule's other subjects
                "edge_ms": round(base + common + min(bands.values()) * spread, 1),
            }
            signals.append(_signal(rule, held[-1], s, window, values[s], base, detail, sums))
    return signals


def _signal(
    rule: Rule,
    severity: str,
    subject: Subject,
    window: RumWindow,
    value: float,
    base: float | None,
    detail: dict[str, Any],
    sums: dict[Subject, tuple[int, int]],
) -> Signal:
    detail["experiences"] = sums[subject][0]
    if subject[0] == NETWORK:
        bts, key = window.transactions_at(subject[1]), f"{rule.name}:site:{subject[1]}"
    else:
        bts, key = [(subject[1], subject[2])], f"{rule.name}:{subject[1]}:{subject[2]}"
    return Signal(rule, severity, bts, rule.metric, value, base, float("inf"), detail, subject=key)


def _open_since(open_rows: dict[str, dict[str, Any]], subject: Subject) -> datetime | None:
    """When an open alert about this subject began (its tier and site, or its page)."""
    found = [
        row["pending_since"]
        for row in open_rows.values()
        if row["tier"] == TIER_OF[subject[0]]
        and (
            row["component"] == subject[1]
            if subject[0] == NETWORK
            else [subject[1], subject[2]] in (row["bts"] or [])
        )
    ]
    return min(found) if found else None


def subject_of_signal(signal: Signal) -> Subject:
    if signal.metric == NETWORK:
        return (NETWORK, str(signal.detail["site"]), "")
    service, name = signal.bts[0]
    return (BROWSER, service, name)


async def evaluate(
    conn: AsyncConnection,
    tenant_id: int,
    rules: list[Rule],
    end: datetime,
    model: RumModel,
    widths: tuple[float, ...],
    open_rows: dict[str, dict[str, Any]],
) -> tuple[list[Signal], dict[timedelta, RumWindow]]:
    """The RUM rules' signals at ``end``, and the windows they judged (for localisation)."""
    chosen = [r for r in rules if r.metric in RUM_METRICS and r.kind in ("baseline", "threshold")]
    if not chosen:
        return [], {}
    windows = {}
    for length in {r.window for r in chosen}:
        windows[length] = await read_window(conn, tenant_id, *minute_window(end, length))
    reference: dict[Subject, tuple[float, float]] = {}
    baseline_rules = [r for r in chosen if r.kind == "baseline"]
    expected: dict[Subject, tuple[float, float]] = {}
    if baseline_rules:
        longest = max(r.window for r in baseline_rules)
        judged_from = end - longest
        expected = model.expected(judged_from + longest / 2)
        subjects = {s for w in windows.values() for m in RUM_METRICS for s in w.sums(m)}
        ends = {}
        for s in subjects - set(expected):
            since = _open_since(open_rows, s)
            ends[s] = judged_from if since is None else min(judged_from, since)
        if ends:
            floors: dict[str, float] = {}
            for rule in baseline_rules:
                floors[rule.metric] = min(floors.get(rule.metric, float("inf")), rule.excess_floor())
            rows = await store.rum_window(
                conn, tenant_id, "minute", min(ends.values()) - RECENT_REFERENCE, judged_from
            )
            reference = recent_reference(rows, ends, floors)
    return judge(chosen, windows, expected, reference, widths), windows


# -- localisation --------------------------------------------------------------


def _per_experience(rows: list[RumRow]) -> np.ndarray:
    count = sum(row[4] for row in rows)
    if not count:
        return np.full(len(RUM_TIERS), np.nan)
    return np.asarray([row[5] for row in rows], dtype=np.float64).sum(axis=0) / count / 1000


async def localise(
    conn: AsyncConnection,
    tenant_id: int,
    signal: Signal,
    window: RumWindow,
    open_rows: dict[str, dict[str, Any]],
) -> Localisation:
    """Tier ``network`` and the site, or tier ``browser`` and the page, with
    every tier of the subject's experiences now against the hour before (the
    judged tier against the baseline the signal used)."""
    subject = subject_of_signal(signal)
    tier = TIER_OF[signal.metric]
    since = min(_open_since(open_rows, subject) or window.start, window.start)
    before_rows = await store.rum_window(conn, tenant_id, "minute", since - REFERENCE, since)
    now = _per_experience([r for r in window.rows if subject_of(signal.metric, r) == subject])
    base = _per_experience([r for r in before_rows if subject_of(signal.metric, r) == subject])
    judged = RUM_TIERS.index(tier)
    if signal.expected is not None:
        base[judged] = signal.expected  # what the signal was judged against
    excess = np.clip(np.nan_to_num(now - base), 0, None)
    total = float(excess.sum())
    evidence: dict[str, Any] = {
        "unit": "ms per experience",
        "baseline_from": signal.detail.get("baseline_from", "limit"),
        "experiences": signal.detail.get("experiences"),
        "tiers": tier_table(RUM_TIERS, now, base, excess),
    }
    confidence = float(excess[judged] / total) if total > 0 else 1.0
    if signal.metric == NETWORK:
        component: str | None = subject[1]
        evidence["component"] = {
            "name": subject[1],
            "now": _round(now[judged]),
            "baseline": _round(base[judged]),
            "excess": _round(excess[judged]),
        }
    else:
        component, evidence["component"] = await _page(conn, tenant_id, subject, tier, window, since)
    return Localisation(tier, component, round(confidence, 3), evidence)


async def _page(
    conn: AsyncConnection, tenant_id: int, subject: Subject, tier: str, window: RumWindow, since: datetime
) -> tuple[str, dict[str, Any]]:
    """The page of the transaction whose time in ``tier`` per experience grew
    most (a transaction's experiences may come from several pages), named
    ``<service> <page>``."""
    _, service, name = subject
    pages = await store.rum_page_tier(
        conn, tenant_id, [(service, name)], tier, (window.start, window.end), (since - REFERENCE, since)
    )
    best: tuple[float, str, float, float] | None = None
    for page, (count, ms, count_before, ms_before) in pages.items():
        if not count:
            continue
        current, usual = ms / count, (ms_before / count_before if count_before else 0.0)
        if best is None or current - usual > best[0]:
            best = (current - usual, page, current, usual)
    if best is None:  # no experience row left (retention): the rollup's name
        return (f"{service} {name}" if service else name), {}
    named = f"{service} {best[1]}" if service else best[1]
    return named, {
        "name": named,
        "now": round(best[2], 3),
        "baseline": round(best[3], 3),
        "excess": round(best[0], 3),
    }


def scope(signals: list[Signal]) -> dict[str, Any] | None:
    """Whose experiences an incident of RUM signals concerns (for its impact):
    the tier, the sites or pages, and the slowest edge of normal."""
    rum = [s for s in signals if s.metric in RUM_METRICS]
    if not rum:
        return None
    sites = sorted({str(s.detail["site"]) for s in rum if s.metric == NETWORK})
    names = sorted({tuple(s.bts[0]) for s in rum if s.metric == BROWSER})
    edges = [float(s.detail["edge_ms"]) for s in rum if s.detail.get("edge_ms") is not None]
    return {
        "tier": TIER_OF[rum[0].metric],
        "sites": sites or None,
        "names": [list(n) for n in names] or None,
        "edge_ms": min(edges) if edges else 0.0,
    }
