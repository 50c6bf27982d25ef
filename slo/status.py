"""The state of an SLO now: SLI, budget left, burn rates, attribution, tier availability.

Everything is computed from the rollups when asked for, so an SLO applied
today reports on the history already stored. The SLO window is read from hour
rollups (the window is rounded out to whole hours at its start); burn-rate
windows up to 6 hours are read from minute rollups, longer ones from hours.

Latency and availability SLOs whose transactions have real-user experiences
count user actions instead of requests (``sli_source``), from the RUM rollups,
with attribution by tier and site (:func:`experienced_rows`, slo/experienced.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from psycopg import AsyncConnection

from tierscope.collector.api.deps import iso
from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram
from tierscope.processing.query import HOUR, MINUTE, ceil, floor
from tierscope.slo import attribution, budget, experienced
from tierscope.slo.definitions import CRITICALITIES, BusinessServiceDocument, SLODocument, threshold_us
from tierscope.store import rum_rollups as rum_store
from tierscope.store import slo as store
from tierscope.store.slo import Buckets

SHORT_WINDOWS = timedelta(hours=6)  # burn windows up to this long are read from minute rollups
BURN_WINDOWS_LONG = [length for length in budget.BURN_WINDOWS.values() if length > SHORT_WINDOWS]
TierRows = list[tuple[datetime, str, int, int]]  # bucket, tier, component calls, component errors


@dataclass(frozen=True)
class Objective:
    """An SLO resolved against the tenant's business services."""

    document: SLODocument
    transactions: tuple[tuple[str, str], ...]
    business_service: str | None = None
    criticality: str | None = None

    @classmethod
    def resolve(cls, document: SLODocument, services: dict[str, BusinessServiceDocument]) -> Objective:
        spec = document.spec
        if spec.businessService is None:
            # The model checked that both are given. The transaction's criticality is
            # the highest of the business services it belongs to.
            pair = (str(spec.service), str(spec.bt))
            ranks = [
                CRITICALITIES.index(group.spec.criticality)
                for group in services.values()
                if any((t.service, t.bt) == pair for t in group.spec.transactions)
            ]
            return cls(document, (pair,), criticality=CRITICALITIES[min(ranks)] if ranks else None)
        group = services.get(spec.businessService)
        if group is None:  # removed after the SLO was applied: report nothing rather than fail
            return cls(document, (), spec.businessService)
        pairs = tuple((t.service, t.bt) for t in group.spec.transactions)
        return cls(document, pairs, spec.businessService, group.spec.criticality)

    @property
    def name(self) -> str:
        return self.document.metadata.name


def bad_events(buckets: Buckets, objective: str, threshold: float | None) -> np.ndarray:
    """Bad events per bucket for an objective (latency: slower than the threshold;
    availability: failed; Apdex: frustrated, and tolerating as half)."""
    if objective == "availability":
        return buckets.errors
    if objective == "apdex":
        return buckets.calls - buckets.satisfied - buckets.tolerating / 2
    if threshold is None:
        raise ValueError("a latency objective needs a threshold")  # the definitions model ensures one
    merged = histogram.Merged(range(len(buckets)), buckets.latency)
    fast = merged.at_most(threshold)
    good = np.zeros(len(buckets))
    good[: len(fast)] = fast
    return np.clip(buckets.calls - good, 0, None)


def _events(buckets: Buckets, bad: np.ndarray, since: datetime) -> budget.Events:
    keep = np.asarray([start >= since for start in buckets.starts], dtype=bool)
    return budget.Events(float(buckets.calls[keep].sum()), float(bad[keep].sum()))


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(value, digits)


async def evaluate(
    conn: AsyncConnection, tenant_id: int, slo: Objective, now: datetime, history: bool = False
) -> dict[str, Any]:
    """The SLO's figures as the API returns them (see docs/slo.md)."""
    spec = slo.document.spec
    window = spec.timeWindow
    start = budget.window_start(window.kind, window.duration, window.time_zone, now)
    first_hour = floor(start, HOUR)
    end_hour = ceil(now, HOUR)
    longest = max(BURN_WINDOWS_LONG, default=timedelta(0))
    read_from = min(first_hour, floor(now - longest, HOUR))
    threshold = threshold_us(spec)
    hours = await store.bt_buckets(conn, tenant_id, slo.transactions, "hour", read_from, end_hour)
    minutes = await store.bt_buckets(
        conn, tenant_id, slo.transactions, "minute", floor(now - SHORT_WINDOWS, MINUTE), ceil(now, MINUTE)
    )
    hour_bad = bad_events(hours, spec.objective, threshold)
    minute_bad = bad_events(minutes, spec.objective, threshold)
    events = _events(hours, hour_bad, first_hour)
    burn_rates = {}
    for name, length in budget.BURN_WINDOWS.items():
        if length <= SHORT_WINDOWS:
            windowed = _events(minutes, minute_bad, floor(now - length, MINUTE))
        else:
            windowed = _events(hours, hour_bad, floor(now - length, HOUR))
        burn_rates[name] = _round(budget.burn_rate(windowed, spec.target), 4)
    remaining = budget.budget_remaining(events, spec.target)
    in_window = np.asarray([s >= first_hour for s in hours.starts], dtype=bool)
    tiers = await store.tier_buckets(conn, tenant_id, slo.transactions, "hour", first_hour, end_hour)
    shares = _attribution(hours, hour_bad, in_window, tiers, spec.objective)
    spent = 0.0 if remaining is None else max(0.0, 1 - remaining)
    by_site = await _sites(conn, tenant_id, slo, first_hour, now, threshold)
    result: dict[str, Any] = {
        "id": slo.name,
        "name": slo.document.metadata.displayName or slo.name,
        "description": spec.description,
        "service": spec.service,
        "bt": spec.bt,
        "business_service": slo.business_service,
        "criticality": slo.criticality,
        "objective": spec.objective,
        "threshold_ms": None if threshold is None else threshold / 1000,
        "target": spec.target,
        "window": {**window.describe(), "from": iso(first_hour), "to": iso(now)},
        "sli": _round(events.sli),
        "events": {"total": events.total, "bad": round(events.bad, 3)},
        "error_budget_remaining": _round(remaining, 4),
        "burn_rates": burn_rates,
        "attribution": shares,
        "attribution_of_budget": {owner: round(share * spent, 4) for owner, share in shares.items()},
        "attribution_by_site": by_site,
        "availability": _availability(hours, in_window, tiers),
    }
    if history:
        result["history"] = _history(hours, hour_bad, first_hour, now, window.time_zone, spec.target)
    result["sli_source"] = "server"
    felt = await _as_users_feel_it(conn, tenant_id, slo, now, read_from, first_hour, threshold, history)
    if felt is not None:
        felt["availability"] = {
            "end_to_end": felt.pop("end_to_end"),
            "server_end_to_end": result["availability"]["end_to_end"],
            "tiers": {**result["availability"]["tiers"], **felt.pop("tier_availability")},
        }
        result.update(felt)
    return result


async def experienced_rows(
    conn: AsyncConnection,
    tenant_id: int,
    slo: Objective,
    resolution: str,
    start: datetime,
    end: datetime,
    felt: set[tuple[str, str]] | None = None,
) -> tuple[experienced.SiteRows, set[tuple[str, str]]] | None:
    """The SLO's events per (bucket, site) in ``[start, end)`` as users feel them:
    user actions of the transactions with real-user experiences (``felt``; by
    default those with experiences in these rows), requests of the others. None
    when no transaction has experiences, or for Apdex objectives (the server
    rollups are then the SLI's). Burn-rate alerts can read their windows here
    to agree with the SLO status."""
    if slo.document.spec.objective not in ("latency", "availability") or not slo.transactions:
        return None
    rows = await rum_store.transaction_rows(conn, tenant_id, slo.transactions, resolution, start, end)
    if felt is None:
        felt = {(row["service"], row["name"]) for row in rows if row["count"]}
    if not felt:
        return None
    found = experienced.SiteRows.of_experiences([r for r in rows if (r["service"], r["name"]) in felt])
    requested = [pair for pair in slo.transactions if pair not in felt]
    if requested:
        server = await store.bt_buckets(conn, tenant_id, requested, resolution, start, end)
        tiers = await store.tier_buckets(conn, tenant_id, requested, resolution, start, end)
        found = found + experienced.SiteRows.of_requests(server, _tier_matrix(server, tiers)[1])
    return found, felt


async def _as_users_feel_it(
    conn: AsyncConnection,
    tenant_id: int,
    slo: Objective,
    now: datetime,
    read_from: datetime,
    first_hour: datetime,
    threshold: float | None,
    history: bool,
) -> dict[str, Any] | None:
    """The SLO's figures counted in user actions (slo/experienced.py), or None
    when none of its transactions has real-user experiences in the data read."""
    spec = slo.document.spec
    if spec.objective not in ("latency", "availability") or not slo.transactions:
        return None
    found = await experienced_rows(conn, tenant_id, slo, "hour", read_from, ceil(now, HOUR))
    if found is None:
        return None
    hours, felt = found
    requested = [pair for pair in slo.transactions if pair not in felt]
    minutes, _ = await experienced_rows(
        conn, tenant_id, slo, "minute", floor(now - SHORT_WINDOWS, MINUTE), ceil(now, MINUTE), felt
    ) or (experienced.SiteRows.of_experiences([]), felt)
    hour_bad = bad_events(hours, spec.objective, threshold)
    minute_bad = bad_events(minutes, spec.objective, threshold)
    events = _events(hours, hour_bad, first_hour)
    burn_rates = {}
    for name, length in budget.BURN_WINDOWS.items():
        if length <= SHORT_WINDOWS:
            windowed = _events(minutes, minute_bad, floor(now - length, MINUTE))
        else:
            windowed = _events(hours, hour_bad, floor(now - length, HOUR))
        burn_rates[name] = _round(budget.burn_rate(windowed, spec.target), 4)
    remaining = budget.budget_remaining(events, spec.target)
    spent = 0.0 if remaining is None else max(0.0, 1 - remaining)
    in_window = np.asarray([s >= first_hour for s in hours.starts], dtype=bool)
    attributed = experienced.attribute(hours, hour_bad, in_window, spec.objective)
    for pair in attributed["attribution_by_tier_and_site"]:
        pair["budget"] = round(pair["share"] * spent, 4)  # the share of the error budget it consumed
    calls, errors = float(hours.calls[in_window].sum()), float(hours.errors[in_window].sum())
    result: dict[str, Any] = {
        "sli_source": "mixed" if requested else "rum",
        "sli_sources": [
            {"service": service, "bt": bt, "sli_source": "rum" if (service, bt) in felt else "server"}
            for service, bt in slo.transactions
        ],
        "sli": _round(events.sli),
        "events": {"total": events.total, "bad": round(events.bad, 3)},
        "error_budget_remaining": _round(remaining, 4),
        "burn_rates": burn_rates,
        **attributed,
        "attribution_of_budget": {
            owner: round(share * spent, 4) for owner, share in attributed["attribution"].items()
        },
        "end_to_end": _round(1 - errors / calls) if calls else None,
        "tier_availability": experienced.tier_availability(hours, in_window),
    }
    if history:
        result["history"] = _history(hours, hour_bad, first_hour, now, spec.timeWindow.time_zone, spec.target)
    return result


def _tier_matrix(
    buckets: Buckets, tiers: list[tuple[datetime, str, int, int]]
) -> tuple[np.ndarray, np.ndarray]:
    """Component calls and errors per bucket (rows of ``buckets``) and tier."""
    row_of = {start: index for index, start in enumerate(buckets.starts)}
    calls = np.zeros((len(buckets), len(TIERS)))
    errors = np.zeros((len(buckets), len(TIERS)))
    for start, tier, tier_calls, tier_errors in tiers:
        if start in row_of and tier in TIERS:
            calls[row_of[start], TIERS.index(tier)] += tier_calls
            errors[row_of[start], TIERS.index(tier)] += tier_errors
    return calls, errors


def _attribution(
    buckets: Buckets,
    bad: np.ndarray,
    in_window: np.ndarray,
    tiers: TierRows,
    objective: str,
) -> dict[str, float]:
    if objective == "availability":
        _, tier_errors = _tier_matrix(buckets, tiers)
        owned, unattributed = attribution.error_owners(bad[in_window], tier_errors[in_window])
        return attribution.shares(TIERS, owned, unattributed)
    owned = attribution.latency_owners(bad[in_window], buckets.calls[in_window], buckets.tier_us[in_window])
    return attribution.shares(TIERS, owned)


async def _sites(
    conn: AsyncConnection,
    tenant_id: int,
    slo: Objective,
    start: datetime,
    end: datetime,
    threshold: float | None,
) -> dict[str, float]:
    """Shares of the bad events by site, from processed traces (kept TIERSCOPE_RETENTION_TRACES):
    empty when no trace of the transactions names a site. Apdex needs each trace's
    threshold, which traces do not keep: not attributed by site."""
    objective = slo.document.spec.objective
    if objective == "apdex" or not slo.transactions:
        return {}
    rows = await store.bad_by_site(conn, tenant_id, slo.transactions, start, end, threshold or 0)
    column = 1 if objective == "availability" else 2  # failed, or slower than the threshold
    named = [(row[0], float(row[column])) for row in rows if row[0] is not None and row[column]]
    if not named:
        return {}
    unnamed = float(sum(row[column] for row in rows if row[0] is None))
    sites = [site for site, _ in named]
    return attribution.shares(sites, np.asarray([bad for _, bad in named]), unnamed)


def _availability(buckets: Buckets, in_window: np.ndarray, tiers: TierRows) -> dict[str, Any]:
    """What users got end to end, beside each tier's own success rate (its calls)."""
    calls, errors = float(buckets.calls[in_window].sum()), float(buckets.errors[in_window].sum())
    tier_calls, tier_errors = _tier_matrix(buckets, tiers)
    per_tier = {}
    for index, tier in enumerate(TIERS):
        total = tier_calls[in_window, index].sum()
        if total > 0:
            per_tier[tier] = round(1 - tier_errors[in_window, index].sum() / total, 6)
    return {"end_to_end": _round(1 - errors / calls) if calls else None, "tiers": per_tier}


def _history(
    buckets: Buckets, bad: np.ndarray, start: datetime, now: datetime, time_zone: str, target: float
) -> list[dict[str, Any]]:
    """Per local day of the window: the day's SLI and the budget left at its end."""
    starts = np.asarray([s.timestamp() for s in buckets.starts])
    points = []
    cumulative = budget.Events(0, 0)
    for day_start, day_end in budget.local_days(start, now, time_zone):
        keep = (starts >= day_start.timestamp()) & (starts < day_end.timestamp())
        day = budget.Events(float(buckets.calls[keep].sum()), float(bad[keep].sum()))
        cumulative = cumulative + day
        points.append(
            {
                "from": iso(day_start),
                "to": iso(day_end),
                "total": day.total,
                "bad": round(day.bad, 3),
                "sli": _round(day.sli),
                "error_budget_remaining": _round(budget.budget_remaining(cumulative, target), 4),
            }
        )
    return points


async def objectives(conn: AsyncConnection, tenant_id: int) -> list[Objective]:
    """The tenant's SLOs as applied, resolved against its business services."""
    services = {
        row["name"]: BusinessServiceDocument.model_validate(row["document"])
        for row in await store.list_business_services(conn, tenant_id)
    }
    return [
        Objective.resolve(SLODocument.model_validate(row["document"]), services)
        for row in await store.list_slos(conn, tenant_id)
    ]
