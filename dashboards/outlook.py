"""Forecasts and capacity headroom for the SLA report: where the busiest
transactions are heading over the next month, in plain language.

For each transaction, hourly throughput and p95 over the baseline weeks up to
the report's end are fitted with :func:`tierscope.slo.forecast.fit_trend` (level
+ trend + weekly pattern, outages set aside) — the same fit ``/api/v1/forecasts``
makes. **Headroom** is how much busier than its projected busiest hour the
transaction has already been served: the busiest hour seen divided by the
trend's busiest hour at the horizon, minus one (negative: the trend will take
it past anything served so far). Where a latency SLO covers the transaction,
the report says when the p95 trend crosses its threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
from psycopg import AsyncConnection

from tierscope.processing.query import HOUR, floor
from tierscope.slo import series, status
from tierscope.slo.calendar import BusinessCalendar, timeline
from tierscope.slo.definitions import BusinessCalendarDocument, threshold_us
from tierscope.slo.forecast import MIN_HOURS, fit_trend
from tierscope.store import slo as slo_store

HORIZON_DAYS = 30
HISTORY_WEEKS = 6  # as baselines learn (TIERSCOPE_BASELINE_WEEKS' default)
MOST = 5  # transactions forecast in a report: the busiest of the history
HISTORY = timedelta(weeks=HISTORY_WEEKS)


@dataclass(frozen=True)
class Outlook:
    service: str
    bt: str
    hours_used: int
    throughput_now: float  # requests per minute, the weekly average (trend level)
    throughput_at_horizon: float
    growth_per_day: float  # relative change of throughput per day
    busiest_seen: float  # requests per minute in the busiest hour of the history
    busiest_at_horizon: float
    headroom: float | None
    p95_now_ms: float | None
    p95_at_horizon_ms: float | None
    objective_ms: float | None
    crossing_days: float | None

    def sentence(self) -> str:
        """The outlook in one plain sentence."""
        name = f"{self.service} / {self.bt}"
        growth = f"{self.growth_per_day * 100:+.1f} % a day"
        text = (
            f"{name}: load {self.throughput_now:.1f} requests/min, trend {growth}, "
            f"{self.throughput_at_horizon:.1f} requests/min in {HORIZON_DAYS} days"
        )
        if self.headroom is not None:
            text += (
                f"; headroom {self.headroom:.0%} over the busiest hour served so far"
                if self.headroom >= 0
                else f"; the busiest hour will exceed anything served so far by {-self.headroom:.0%}"
            )
        if self.objective_ms is not None and self.p95_now_ms is not None:
            if self.crossing_days is None:
                text += f"; p95 stays within its {self.objective_ms:.0f} ms objective"
            elif self.crossing_days == 0:
                text += f"; p95 is already at or over its {self.objective_ms:.0f} ms objective"
            else:
                text += (
                    f"; p95 reaches its {self.objective_ms:.0f} ms objective in about "
                    f"{self.crossing_days:.0f} days"
                )
        return text + "."


async def calendar_of(conn: AsyncConnection, tenant_id: int) -> BusinessCalendar:
    """The tenant's business calendar (tierscope slo apply), else UTC with no holidays."""
    stored = await slo_store.get_calendar(conn, tenant_id)
    if stored is not None:
        return BusinessCalendarDocument.model_validate(stored).spec.calendar()
    return BusinessCalendar()


async def outlooks(
    conn: AsyncConnection,
    tenant_id: int,
    transactions: list[tuple[str, str]],
    at: datetime,
    calendar: BusinessCalendar | None = None,
) -> list[Outlook]:
    """The outlook of each transaction with at least a week of history before ``at``."""
    calendar = calendar or await calendar_of(conn, tenant_id)
    end = floor(at, HOUR)
    steps = int(HISTORY / HOUR)
    start = end - steps * HOUR
    latency = [o for o in await status.objectives(conn, tenant_id) if o.document.spec.objective == "latency"]
    found = []
    for service, bt in transactions:
        hours = await slo_store.bt_buckets(conn, tenant_id, [(service, bt)], "hour", start, end)
        history = series.regular(hours, start, steps, HOUR)
        served = np.flatnonzero(history["throughput"] > 0)
        if len(served) == 0 or steps - served[0] < MIN_HOURS:
            continue  # less than a week since its first request: no trend to tell yet
        # From its first request on: the hours before it are not "no load", it did not exist.
        first = int(served[0])
        history = {name: values[first:] for name, values in history.items()}
        line = timeline(start + first * HOUR, steps - first, HOUR, calendar)
        load = fit_trend(history["throughput"], line)
        if load is None:
            continue
        load_at, _, _ = load.at(HORIZON_DAYS)
        busiest_at = float(load_at) + float(load.pattern.max())
        busiest_seen = float(np.nanmax(history["throughput"]))
        p95 = fit_trend(history["p95_ms"], line)
        objective = next((o for o in latency if (service, bt) in o.transactions), None)
        threshold = float(threshold_us(objective.document.spec) or 0) / 1000 if objective else None
        crossing = p95.crossing(threshold, HORIZON_DAYS)["days"] if p95 and threshold else None
        found.append(
            Outlook(
                service=service,
                bt=bt,
                hours_used=load.hours,
                throughput_now=load.level,
                throughput_at_horizon=float(load_at),
                growth_per_day=load.slope_per_day / load.level if load.level > 0 else 0.0,
                busiest_seen=busiest_seen,
                busiest_at_horizon=busiest_at,
                headroom=busiest_seen / busiest_at - 1 if busiest_at > 0 else None,
                p95_now_ms=p95.level if p95 else None,
                p95_at_horizon_ms=float(p95.at(HORIZON_DAYS)[0]) if p95 else None,
                objective_ms=threshold,
                crossing_days=crossing,
            )
        )
    return found
