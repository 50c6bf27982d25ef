"""``/api/v1/slos``, ``/api/v1/baselines``, ``/api/v1/forecasts``: service levels,
what is normal, and where the trend goes.

Every route needs an API token and sees its own tenant only. ``at`` evaluates
as of another instant than now (reports, reproducible checks); it takes the
same forms as the other time parameters.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from tierscope.collector.api.deps import api_tenant, iso, parse_time
from tierscope.config import Settings, parse_duration
from tierscope.processing.query import HOUR, MINUTE, floor
from tierscope.slo import series, status
from tierscope.slo.baselines import BASIS_NAMES, Baseline, BaselineConfig
from tierscope.slo.calendar import HOURS_PER_WEEK, BusinessCalendar, timeline
from tierscope.slo.definitions import BusinessCalendarDocument, threshold_us
from tierscope.slo.forecast import fit_trend
from tierscope.store import Database
from tierscope.store import rum_rollups as rum_store
from tierscope.store import slo as slo_store
from tierscope.store.tenants import KeyInfo

router = APIRouter(prefix="/api/v1", tags=["slo"])

Caller = Annotated[KeyInfo, Depends(api_tenant)]
At = Annotated[str | None, Query(max_length=64, description="evaluate as of this time (default now)")]


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def _now(at: str | None) -> datetime:
    now = datetime.now(UTC)
    try:
        return parse_time(at, now, now)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


@router.get("/slos", summary="Every SLO with its SLI, error budget, burn rates and attribution")
async def slos(request: Request, caller: Caller, at: At = None) -> dict[str, Any]:
    now = _now(at)
    async with _database(request).connection() as conn:
        found = await status.objectives(conn, caller.tenant_id)
        listed = [await status.evaluate(conn, caller.tenant_id, slo, now) for slo in found]
    return {"at": iso(now), "slos": listed}


@router.get("/slos/{slo_id}", summary="One SLO, with its day-by-day history over the window")
async def slo(
    request: Request,
    caller: Caller,
    slo_id: Annotated[str, Path(max_length=63, description="the SLO's metadata.name")],
    at: At = None,
) -> dict[str, Any]:
    now = _now(at)
    async with _database(request).connection() as conn:
        found = {o.name: o for o in await status.objectives(conn, caller.tenant_id)}
        if slo_id not in found:
            raise HTTPException(404, f"no SLO named {slo_id!r}")
        return await status.evaluate(conn, caller.tenant_id, found[slo_id], now, history=True)


Service = Annotated[str, Query(min_length=1, max_length=256, description="the service")]
Bt = Annotated[str, Query(min_length=1, max_length=512, description="the business transaction")]
DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


async def _calendar(request: Request, tenant_id: int) -> BusinessCalendar:
    """The tenant's business calendar (tierscope slo apply), else the TIERSCOPE_BUSINESS_* defaults."""
    async with _database(request).connection() as conn:
        stored = await slo_store.get_calendar(conn, tenant_id)
    if stored is not None:
        return BusinessCalendarDocument.model_validate(stored).spec.calendar()
    settings: Settings = request.app.state.settings
    return BusinessCalendar(
        time_zone=settings.business_time_zone,
        country=settings.business_country,
        month_end_days=settings.month_end_days,
        blackout=frozenset(settings.blackout_days),
    )


async def _history(
    request: Request, tenant_id: int, service: str, bt: str, now: datetime
) -> tuple[datetime, int, dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Hourly metrics over the configured weeks up to the last whole hour, and the
    metrics of the last 60 minutes (from minute rollups)."""
    settings: Settings = request.app.state.settings
    end = floor(now, HOUR)
    steps = settings.baseline_weeks * 7 * 24
    start = end - steps * HOUR
    async with _database(request).connection() as conn:
        hours = await slo_store.bt_buckets(conn, tenant_id, [(service, bt)], "hour", start, end)
        recent = await slo_store.bt_buckets(
            conn, tenant_id, [(service, bt)], "minute", floor(now, MINUTE) - HOUR, floor(now, MINUTE)
        )
        felt_hours = await rum_store.transaction_rows(conn, tenant_id, [(service, bt)], "hour", start, end)
        felt_recent = await rum_store.transaction_rows(
            conn, tenant_id, [(service, bt)], "minute", floor(now, MINUTE) - HOUR, floor(now, MINUTE)
        )
    last_hour = floor(now, MINUTE) - HOUR
    recent.starts = [last_hour] * len(recent)  # the last 60 minutes as one step
    history = series.regular(hours, start, steps, HOUR) | series.network_by_site(
        felt_hours, start, steps, HOUR
    )
    latest = series.regular(recent, last_hour, 1, HOUR)
    sites = series.network_by_site([row | {"bucket": last_hour} for row in felt_recent], last_hour, 1, HOUR)
    for metric in history:
        if metric.startswith(series.SITE_NETWORK):
            latest[metric] = sites.get(metric, np.full(1, np.nan))
    return start, steps, history, latest


def _number(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 6)


@router.get("/baselines", summary="What is normal for a business transaction at each hour of the week")
async def baselines(
    request: Request,
    caller: Caller,
    service: Service,
    bt: Bt,
    metric: Annotated[str | None, Query(max_length=64, description="one metric (default: all)")] = None,
    at: At = None,
) -> dict[str, Any]:
    if metric is not None and not series.known(metric):
        raise HTTPException(
            400, f"metric must be one of {', '.join(series.METRICS)}, or {series.SITE_NETWORK}<site>"
        )
    settings: Settings = request.app.state.settings
    now = _now(at)
    start, steps, history, recent = await _history(request, caller.tenant_id, service, bt, now)
    if metric is not None and metric not in history:
        raise HTTPException(404, f"no real-user experiences at site {metric[len(series.SITE_NETWORK) :]!r}")
    metrics = [metric] if metric else series.present(history)
    calendar = await _calendar(request, caller.tenant_id)
    config = BaselineConfig(weeks=settings.baseline_weeks, widths=settings.baseline_bands)
    model = Baseline(np.stack([history[m] for m in metrics]), start, HOUR, calendar, config)
    current = np.asarray([recent[m][0] for m in metrics])
    # The last 60 minutes are judged against the hour of the week their middle falls in.
    middle = floor(now, MINUTE) - HOUR / 2
    judged_up = model.score(current, middle)
    judged_both = model.score(current, middle, both_ways=True)
    listed = []
    for index, name in enumerate(metrics):
        judged = judged_up if series.upwards_only(name) else judged_both
        listed.append(
            {
                "metric": name,
                "judged": "upwards" if series.upwards_only(name) else "both ways",
                "slots": [_slot(model.bands, index, slot) for slot in range(HOURS_PER_WEEK)],
                "month_end": [_month_end_hour(model.bands, index, hour) for hour in range(24)],
                "current": {
                    "from": iso(floor(now, MINUTE) - HOUR),
                    "to": iso(floor(now, MINUTE)),
                    "value": _number(current[index]),
                    "expected": _number(judged.expected[index]),
                    "z": _number(judged.z[index]),
                    "severity": int(judged.severity[index]),
                    "excused": bool(judged.excused[index]),
                },
            }
        )
    return {
        "service": service,
        "bt": bt,
        "from": iso(start),
        "to": iso(start + steps * HOUR),
        "time_zone": calendar.time_zone,
        "widths": list(config.widths),
        "baselines": listed,
    }


def _bands(bands: Any, median: float, spread: float) -> dict[str, list[float | None]]:
    return {
        f"{width:g}": [_number(median - width * spread), _number(median + width * spread)]
        for width in bands.widths
    }


def _slot(bands: Any, index: int, slot: int) -> dict[str, Any]:
    median, spread = float(bands.median[index, slot]), float(bands.spread[index, slot])
    return {
        "hour_of_week": slot,
        "day": DAY_NAMES[slot // 24],
        "hour": slot % 24,
        "basis": BASIS_NAMES[int(bands.basis[index, slot])],
        "median": _number(median),
        "bands": _bands(bands, median, spread),
    }


def _month_end_hour(bands: Any, index: int, hour: int) -> dict[str, Any]:
    median, spread = float(bands.month_end_median[index, hour]), float(bands.month_end_spread[index, hour])
    return {"hour": hour, "median": _number(median), "bands": _bands(bands, median, spread)}


@router.get("/forecasts", summary="Trends of throughput and p95 with the weekly pattern removed")
async def forecasts(
    request: Request,
    caller: Caller,
    service: Service,
    bt: Bt,
    horizon: Annotated[
        str, Query(max_length=16, description="how far ahead (default 30d, at most 90d)")
    ] = "30d",
    at: At = None,
) -> dict[str, Any]:
    try:
        horizon_days = parse_duration(horizon) / timedelta(days=1)
    except ValueError as exc:
        raise HTTPException(400, f"horizon: {exc}") from None
    if not 0 < horizon_days <= 90:
        raise HTTPException(400, "horizon must be more than 0 and at most 90d")
    now = _now(at)
    start, steps, history, _ = await _history(request, caller.tenant_id, service, bt, now)
    line = timeline(start, steps, HOUR, await _calendar(request, caller.tenant_id))
    async with _database(request).connection() as conn:
        objectives = await status.objectives(conn, caller.tenant_id)
    latency = [
        o for o in objectives if o.document.spec.objective == "latency" and (service, bt) in o.transactions
    ]
    result: dict[str, Any] = {}
    for name in ("throughput", "p95_ms"):
        trend = fit_trend(history[name], line)
        if trend is None:
            result[name] = None
            continue
        central, low, high = trend.at(horizon_days)
        figures: dict[str, Any] = {
            "level": round(trend.level, 3),
            "slope_per_day": round(trend.slope_per_day, 4),
            "slope_band": [round(trend.slope_low, 4), round(trend.slope_high, 4)],
            "at_horizon": {
                "level": round(float(central), 3),
                "low": round(float(low), 3),
                "high": round(float(high), 3),
            },
            "busiest_hour_at_horizon": round(float(central) + float(trend.pattern.max()), 3),
            "hours_used": trend.hours,
        }
        if name == "throughput":
            busiest = float(np.nanmax(history[name]))
            figures["busiest_hour_seen"] = round(busiest, 3)
            peak = float(central) + float(trend.pattern.max())
            figures["headroom"] = round(busiest / peak - 1, 4) if peak > 0 else None
        elif latency:
            slo = latency[0]
            threshold = float(threshold_us(slo.document.spec) or 0) / 1000
            crossing = trend.crossing(threshold, horizon_days)
            figures["objective"] = {"slo": slo.name, "threshold_ms": threshold}
            figures["crossing"] = crossing
            figures["busiest_hour_crossing"] = trend.crossing(
                threshold, horizon_days, float(trend.pattern.max())
            )
            figures["summary"] = _summary(bt, threshold, crossing)
        result[name] = figures
    return {
        "service": service,
        "bt": bt,
        "from": iso(start),
        "to": iso(start + steps * HOUR),
        "horizon_days": horizon_days,
        "forecasts": result,
    }


def _summary(bt: str, threshold_ms: float, crossing: dict[str, float | None]) -> str:
    days, earliest, latest = crossing["days"], crossing["earliest_days"], crossing["latest_days"]
    objective = f"{threshold_ms / 1000:g} s" if threshold_ms >= 1000 else f"{threshold_ms:g} ms"
    if days is None:
        return f"at this trend {bt} p95 stays within its {objective} objective over the horizon"
    if days == 0:
        return f"{bt} p95 is at or over its {objective} objective (trend, weekly pattern removed)"
    span = f"{earliest:g} to {latest:g}" if latest is not None else f"at least {earliest:g}"
    return f"at this trend {bt} p95 crosses its {objective} objective in about {days:.0f} days ({span} days)"
