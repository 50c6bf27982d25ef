"""``/experiences``: what real users experienced, per page or transaction and
site, and one experience with its tier split and the trace it was joined with.

The per-(page, site) figures come from the RUM rollups plus what is not
rolled up yet (``rum_figures``), merged as ``/api/v1/experiences/summary``
merges them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from tierscope.collector.api.deps import time_window
from tierscope.dashboards.console import rum_figures, svg
from tierscope.dashboards.console.common import guarded, page, window_of
from tierscope.processing import experiences_api
from tierscope.processing.experiences_api import DEFAULT_WINDOW, MAX_WINDOW
from tierscope.store.tenants import KeyInfo

router = APIRouter(include_in_schema=False)
VITAL_NAMES = {"lcp": "LCP", "inp": "INP", "cls": "CLS", "fcp": "FCP", "ttfb": "TTFB"}


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
            _, groups = await rum_figures.experience_groups(conn, caller.tenant_id, start, end, apdex_t_ms)
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
