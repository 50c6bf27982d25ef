"""Where to look: the suspected tier, then the component within it.

For a latency signal, each tier's time per request now is compared with its
baseline: the hour-of-week median of ``tier_ms.<tier>`` (``slo/baselines.py``)
where the baseline has learnt, else the hour before the incident began (a new
transaction, or a test store). The **excess** of a tier is how much more time
per request it takes than normally; the suspected tier is the one whose excess
explains the largest share of the total excess, and that share is the
**confidence**. Within that tier, components (SQL statement, external peer,
host, page...) are compared the same way, per request of the affected
transactions, from the component rollups; the one with the largest excess is
named.

An error signal is localised by errors instead of time: the tier and then the
component whose errors per request grew the most.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from psycopg import AsyncConnection

from tierscope.alerting.signals import Recent, Signal
from tierscope.alerting.transaction_baselines import BaselineModel
from tierscope.collector.tiers import TIERS
from tierscope.store import alerting as store
from tierscope.store import slo as slo_store

REFERENCE = timedelta(hours=1)  # the fallback baseline: the hour before the incident
ERROR_METRICS = ("error_rate", "availability")
# Tiers whose components are the instances (or hosts) that ran the code: an
# instance id alone says nothing to whoever is paged, so its service is named.
INSTANCE_TIERS = ("app", "web", "platform")


@dataclass
class Localisation:
    tier: str | None = None
    component: str | None = None
    confidence: float = 0.0
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def cause_key(self) -> str | None:
        """The incident a signal belongs to, when the cause is clear enough to share."""
        if self.tier and self.component and self.confidence >= 0.5:
            return f"cause:{self.tier}:{self.component}"
        return None


def _round(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 3)


def tier_table(
    names: Sequence[str], now: np.ndarray, base: np.ndarray, excess: np.ndarray
) -> dict[str, dict[str, float | None]]:
    """The evidence's per-tier rows (now, normal, excess, share of the excess),
    for every tier with time now or normally."""
    total = float(excess.sum())
    return {
        name: {
            "now": _round(now[t]),
            "baseline": _round(base[t]),
            "excess": _round(excess[t]),
            "share": round(float(excess[t] / total), 3) if total > 0 else 0.0,
        }
        for t, name in enumerate(names)
        if np.isfinite(now[t]) and (now[t] > 0 or np.nan_to_num(base[t]) > 0)
    }


async def localise(
    conn: AsyncConnection,
    tenant_id: int,
    signal: Signal,
    recent: Recent,
    model: BaselineModel,
    since: datetime,
) -> Localisation:
    """Localise ``signal`` judged on ``recent``; ``since`` is when its incident began
    (the reference hour ends there)."""
    where = recent.index()
    rows = [where[key] for key in signal.bts if key in where]
    calls = recent.calls[rows] if rows else np.zeros(0)
    requests = float(calls.sum())
    if requests <= 0:
        return Localisation(evidence={"reason": "no requests in the judged window"})
    reference_start = since - REFERENCE
    if signal.detail.get("missing"):
        return await _missing(conn, tenant_id, signal, reference_start, since)
    reference = await slo_store.bt_buckets(conn, tenant_id, signal.bts, "minute", reference_start, since)
    reference_requests = float(reference.calls.sum())
    errors = signal.metric in ERROR_METRICS
    error_components: dict[str, tuple[float, float]] = {}
    if errors:
        tiers_now, tiers_base, basis, error_components = await _tier_errors(
            conn, tenant_id, signal, recent, reference_start, since, requests, reference_requests
        )
    else:
        tiers_now = (np.nan_to_num(recent.tier_ms[rows]) * calls[:, None]).sum(axis=0) / requests
        learnt = _learnt_tiers(model, signal, recent, rows, calls)
        with np.errstate(invalid="ignore", divide="ignore"):
            fallback = (
                reference.tier_us.sum(axis=0) / reference_requests / 1000
                if reference_requests
                else np.full(len(TIERS), np.nan)
            )
        tiers_base = np.where(np.isfinite(learnt), learnt, fallback)
        basis = "baseline" if np.isfinite(learnt).any() else "hour before"
    excess = np.clip(np.nan_to_num(tiers_now - tiers_base), 0, None)
    total = float(excess.sum())
    unit = "errors per request" if errors else "ms per request"
    evidence: dict[str, Any] = {
        "unit": unit,
        "baseline_from": basis,
        "tiers": tier_table(TIERS, tiers_now, tiers_base, excess),
    }
    # A tier_ms signal already knows its tier: another tier's excess in the same
    # window (the tail of an earlier fault) must not take the blame from it.
    judged = signal.detail.get("tier")
    if total <= 0 and judged not in TIERS:
        return Localisation(evidence=evidence)
    top = TIERS.index(judged) if judged in TIERS and not errors else int(np.argmax(excess))
    tier = TIERS[top]
    confidence = float(excess[top] / total) if total > 0 else 1.0
    if errors:
        services = sorted({service for service, _ in signal.bts})
        component, component_evidence = await _error_component(
            conn, tenant_id, tier, error_components, services[0] if len(services) == 1 else None
        )
    else:
        component, component_evidence = await _component(
            conn, tenant_id, signal, tier, recent, reference_start, since, requests, reference_requests
        )
    evidence["component"] = component_evidence
    return Localisation(tier, component, round(confidence, 3), evidence)


def _learnt_tiers(
    model: BaselineModel, signal: Signal, recent: Recent, rows: list[int], calls: np.ndarray
) -> np.ndarray:
    """The request-weighted hour-of-week median of each tier's time (NaN: not learnt)."""
    model_rows = {key: i for i, key in enumerate(model.keys)}
    known = [(j, model_rows[recent.keys[i]]) for j, i in enumerate(rows) if recent.keys[i] in model_rows]
    if not known:
        return np.full(len(TIERS), np.nan)
    middle = recent.start + (recent.end - recent.start) / 2
    expected = model.expected(middle, [m for _, m in known])
    weights = calls[[j for j, _ in known]]
    result = np.full(len(TIERS), np.nan)
    for t, tier in enumerate(TIERS):
        values = expected[f"tier_ms.{tier}"]
        ok = np.isfinite(values)
        if ok.any() and weights[ok].sum() > 0:
            result[t] = float((values[ok] * weights[ok]).sum() / weights[ok].sum())
    return result


async def _tier_errors(
    conn: AsyncConnection,
    tenant_id: int,
    signal: Signal,
    recent: Recent,
    reference_start: datetime,
    since: datetime,
    requests: float,
    reference_requests: float,
) -> tuple[np.ndarray, np.ndarray, str, dict[str, tuple[float, float]]]:
    """Failed requests per request, by the tier where each failure began (its
    deepest failing span, not every span the failure passed through: the app
    that answers 500 because a partner failed did not fail first), now and in
    the reference hour; and the same per component of each tier."""
    now = await store.error_origins(conn, tenant_id, signal.bts, recent.start, recent.end)
    before = await store.error_origins(conn, tenant_id, signal.bts, reference_start, since)

    def per_request(rows: list[tuple[str, str, int]], total: float) -> np.ndarray:
        sums = np.zeros(len(TIERS))
        for tier, _, count in rows:
            if tier in TIERS:
                sums[TIERS.index(tier)] += count
        return sums / total if total > 0 else np.zeros(len(TIERS))

    components: dict[str, tuple[float, float]] = {}
    for rows, total, slot in ((now, requests, 0), (before, reference_requests, 1)):
        for tier, component, count in rows:
            key = f"{tier}\x00{component}"
            pair = list(components.get(key, (0.0, 0.0)))
            pair[slot] += count / total if total > 0 else 0.0
            components[key] = (pair[0], pair[1])
    return per_request(now, requests), per_request(before, reference_requests), "hour before", components


async def _component(
    conn: AsyncConnection,
    tenant_id: int,
    signal: Signal,
    tier: str,
    recent: Recent,
    reference_start: datetime,
    since: datetime,
    requests: float,
    reference_requests: float,
) -> tuple[str | None, dict[str, Any]]:
    now = await store.component_window(conn, tenant_id, signal.bts, tier, recent.start, recent.end)
    before = await store.component_window(conn, tenant_id, signal.bts, tier, reference_start, since)
    best: tuple[float, str, float, float] | None = None
    for name, (_, _, self_us) in now.items():
        if name == "_other":
            continue
        value = self_us / 1000
        _, _, ref_us = before.get(name, (0, 0, 0))
        ref_value = ref_us / 1000
        current = value / requests
        usual = ref_value / reference_requests if reference_requests > 0 else 0.0
        if best is None or current - usual > best[0]:
            best = (current - usual, name, current, usual)
    if best is None or best[0] <= 0:
        return None, {}
    return await _named(conn, tenant_id, tier, best)


async def _error_component(
    conn: AsyncConnection,
    tenant_id: int,
    tier: str,
    components: dict[str, tuple[float, float]],
    service: str | None,
) -> tuple[str | None, dict[str, Any]]:
    """The component of ``tier`` whose failures per request grew the most. In
    the code's tiers that is the failing operation, named with its service."""
    best: tuple[float, str, float, float] | None = None
    for key, (now, usual) in components.items():
        component_tier, _, name = key.partition("\x00")
        if component_tier != tier or not name:
            continue
        if best is None or now - usual > best[0]:
            best = (now - usual, name, now, usual)
    if best is None or best[0] <= 0:
        return None, {}
    if tier in INSTANCE_TIERS and service:
        best = (best[0], f"{service} {best[1]}", best[2], best[3])
        return best[1], {"name": best[1], "now": round(best[2], 3), "baseline": round(best[3], 3)}
    return await _named(conn, tenant_id, tier, best)


async def _named(
    conn: AsyncConnection, tenant_id: int, tier: str, best: tuple[float, str, float, float]
) -> tuple[str, dict[str, Any]]:
    name = best[1]
    if tier in INSTANCE_TIERS:
        name = await _instance_name(conn, tenant_id, name)
    return name, {
        "name": name,
        "now": round(best[2], 3),
        "baseline": round(best[3], 3),
        "excess": round(best[0], 3),
    }


async def _instance_name(conn: AsyncConnection, tenant_id: int, instance: str) -> str:
    """``<service> <instance>`` when the instance (or host) is known to run one service."""
    services = await store.instance_services(conn, tenant_id, instance)
    if len(services) == 1 and services[0] != instance:
        return f"{services[0]} {instance}"
    return instance


async def _missing(
    conn: AsyncConnection, tenant_id: int, signal: Signal, reference_start: datetime, since: datetime
) -> Localisation:
    """Work that stopped showing up is blamed on its tier and on the component
    that did most of it before (the worker instance whose jobs are missing)."""
    tier = str(signal.detail["tier"])
    before = await store.component_window(conn, tenant_id, signal.bts, tier, reference_start, since)
    named = [(self_us, name) for name, (_, _, self_us) in before.items() if name != "_other"]
    evidence: dict[str, Any] = {
        "unit": "ms per request",
        "baseline_from": "hour before",
        "tiers": {tier: {"now": _round(signal.value or 0.0), "baseline": _round(signal.expected or 0.0)}},
        "missing": True,
    }
    if not named:
        return Localisation(tier, None, 1.0, evidence)
    self_us, name = max(named)
    component, detail = await _named(conn, tenant_id, tier, (0.0, name, 0.0, self_us / 1000))
    evidence["component"] = detail
    return Localisation(tier, component, 1.0, evidence)
