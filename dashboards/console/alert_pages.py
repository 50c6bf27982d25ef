"""``/alerts``: open alerts first, ranked by business impact, each with the
evidence that names the faulty tier and component, who is affected and what it
costs; a firing alert can be acknowledged from the page when the caller may."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from tierscope.alerting import api as alerting_api
from tierscope.dashboards.console.common import HEADERS, guarded, may, page, window_of
from tierscope.store.tenants import KeyInfo

router = APIRouter(include_in_schema=False)


def minutes_between(start: str | None, end: str | None) -> float | None:
    """Minutes from one API timestamp to another (or to now)."""
    if start is None:
        return None
    began = datetime.fromisoformat(start)
    ended = datetime.fromisoformat(end) if end else datetime.now(began.tzinfo)
    return (ended - began).total_seconds() / 60


@router.get("/alerts")
async def alerts(request: Request, window: str | None = None, done: str | None = None) -> Response:
    async def render(caller: KeyInfo) -> Response:
        chosen = window_of(window or "24h")
        listed = await alerting_api.alerts(request, caller, since=chosen, state=None)
        return page(
            "alerts.html.j2",
            caller=caller,
            window=chosen,
            alerts=listed["alerts"],
            may_acknowledge=may(caller, "acknowledge"),
            minutes_between=minutes_between,
            notice=done if done in ("acknowledged",) else None,
        )

    return await guarded(request, render)


@router.post("/alerts/{alert_id}/ack")
async def acknowledge(
    request: Request, alert_id: int, by: str = Form(default="", max_length=200)
) -> Response:
    async def act(caller: KeyInfo) -> Response:
        if not may(caller, "acknowledge"):
            raise HTTPException(403, "your token may look at alerts but not acknowledge them")
        if not 1 <= alert_id <= 2**62:
            raise HTTPException(404, "no such alert")
        await alerting_api.acknowledge(
            request,
            caller,
            alert_id,
            alerting_api.Acknowledgement(by=by.strip() or f"console ({caller.tenant})"),
        )
        return RedirectResponse("/alerts?done=acknowledged", status_code=303, headers=HEADERS)

    return await guarded(request, act)
