"""``/experiences``: what real users experienced, per page or transaction and
site, and one experience with its tier split and the trace it was joined with.

The per-(page, site) figures come from the RUM rollups, merged as
``/api/v1/experiences/summary`` merges them (its ``summarize``), over the rows
the transaction pages read too (minutes up to 6 hours, then hours and days:
processing/query.py ``plan``). To those the page adds the finished experiences
the rollups do not hold yet (a page load waits up to ``rum_rollup_wait`` for
its final Web Vitals), so the last minutes show at once. Reading raw
experiences instead took over 300 ms for an hour of a busy estate.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from psycopg import AsyncConnection

from tierscope.collector.api.deps import time_window
from tierscope.dashboards.console import svg
from tierscope.dashboards.console.common import guarded, page, window_of
from tierscope.processing import experiences_api, histogram, query, rum_rollup
from tierscope.processing.experiences_api import DEFAULT_WINDOW, MAX_WINDOW
from tierscope.store import rum as rum_store
from tierscope.store import rum_rollups
from tierscope.store.tenants import KeyInfo

router = APIRouter(include_in_schema=False)
VITAL_NAMES = {"lcp": "LCP", "inp": "INP", "cls": "CLS", "fcp": "FCP", "ttfb": "TTFB"}
MAX_GROUPS = 200  # (page, site) rows on the page, the busiest first


async def experience_groups(
    conn: AsyncConnection, tenant_id: int, start: datetime, end: datetime, apdex_t_ms: float
) -> tuple[query.Plan, list[dict[str, Any]]]:
    """Figures per (business transaction or page, site) over ``[start, end)``
    rounded out to whole rollup buckets (the returned plan says to what), with
    the experiences not rolled up yet counted in: the rows of
    ``/api/v1/experiences/summary``'s ``groups``."""
    covered = query.plan(start, end)
    async with conn.transaction():
        # One snapshot: an experience the joiner rolls up meanwhile is counted once.
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        rows = await rum_rollups.window_groups(
            conn, tenant_id, [(s.resolution, s.start, s.end) for s in covered.segments]
        )
        fresh = await rum_store.not_rolled_up(conn, tenant_id, covered.start, covered.end)
    merged: dict[tuple[str, str, str], rum_rollup.RumFigures] = {}
    for (_, service, name, site, _), figures in rum_rollup.roll_up(fresh, apdex_t_ms).items():
        merged.setdefault((service, name, site), rum_rollup.RumFigures()).add(figures)
    rows += [
        {
            "service": service,
            "name": name,
            "site": site,
            "count": f.count,
            "errors": f.errors,
            "duration_sum_ms": f.duration_sum_ms,
            "apdex_satisfied": f.apdex_satisfied,
            "apdex_tolerating": f.apdex_tolerating,
            "latency": histogram.encode(f.latency),
            "tier_sum_us": f.tier_sum_us,
            "tier_errors": f.tier_errors,
            "vital_count": f.vital_count,
            "vital_good": f.vital_good,
            "vital_poor": f.vital_poor,
            "vitals": histogram.encode(f.vitals),
        }
        for (service, name, site), f in merged.items()
    ]
    return covered, experiences_api.summarize(rows)[:MAX_GROUPS]


def rating(vital: str, value: float | None) -> str:
    """web.dev's rating of one value: good, needs-improvement or poor."""
    if value is None:
        return ""
    good, poor = experiences_api.THRESHOLDS[vital]
    return "good" if value <= good else ("poor" if value > poor else "needs-improvement")


@router.get("/experiences")
async def experiences(request: Request, window: str | None = None) -> Response:
    async def render(caller: KeyInfo) -> Response:
        chosen = window_of(window)
        start, end = time_window(chosen, None, DEFAULT_WINDOW, MAX_WINDOW)
        apdex_t_ms = request.app.state.settings.rum_apdex_t.total_seconds() * 1000
        async with request.app.state.database.connection() as conn:
            _, groups = await experience_groups(conn, caller.tenant_id, start, end, apdex_t_ms)
        recent = await experiences_api.list_experiences(
            request, caller, since=chosen, until=None, bt=None, site=None, page=None, limit=50
        )
        return page(
            "experiences.html.j2",
            caller=caller,
            window=chosen,
            groups=groups,
            apdex_t_ms=apdex_t_ms,
            recent=recent["experiences"],
            vital_names=VITAL_NAMES,
            rating=rating,
        )

    return await guarded(request, render)


@router.get("/experiences/{experience_id}")
async def experience(request: Request, experience_id: str) -> Response:
    async def render(caller: KeyInfo) -> Response:
        found: dict[str, Any] = await experiences_api.get_experience(request, experience_id, caller)
        trace = found["trace"]
        spans = trace["spans"] if trace else []
        return page(
            "experience.html.j2",
            caller=caller,
            experience=found,
            vital_names=VITAL_NAMES,
            rating=rating,
            waterfall=svg.waterfall(spans, found) if spans else None,
            bar=svg.tier_bar(found["tier_ms"] or {}, width=640, height=22),
        )

    return await guarded(request, render)
