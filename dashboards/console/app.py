"""The console's pages, mounted by the collector at ``/``.

Sign-in takes an API token (the same one the query API takes) and keeps it in
an HttpOnly, SameSite=Strict cookie; every page checks it as the API does and
shows only the caller's tenant. Pages call the query API's own functions, so
the console and the API never disagree. Experiences and alerts have their own
modules (``experience_pages``, ``alert_pages``); what pages share is in
``common``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tierscope.collector.api import traces as trace_api
from tierscope.collector.auth import AuthError, KeyVerifier
from tierscope.dashboards.console import alert_pages, experience_pages, svg
from tierscope.dashboards.console.common import COOKIE, HEADERS, guarded, page, static, window_of
from tierscope.processing import api as processing_api
from tierscope.slo import api as slo_api
from tierscope.store import reports as reports_store
from tierscope.store.tenants import KeyInfo

__all__ = ["router", "static"]

router = APIRouter(include_in_schema=False)


@router.get("/login")
async def login_form() -> HTMLResponse:
    return page("login.html.j2")


@router.post("/login")
async def login(request: Request, token: str = Form(max_length=256)) -> Response:
    verifier: KeyVerifier = request.app.state.verifier
    try:
        await verifier.verify(f"Bearer {token.strip()}", "api")
    except AuthError as exc:
        return page("login.html.j2", 401, error=f"That token was refused: {exc}")
    response = RedirectResponse("/", status_code=303, headers=HEADERS)
    response.set_cookie(
        COOKIE,
        token.strip(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/login", status_code=303, headers=HEADERS)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/")
async def overview(request: Request, window: str | None = None) -> Response:
    async def render(caller: KeyInfo) -> Response:
        chosen = window_of(window)
        listed = await processing_api.transactions(request, caller, since=chosen)
        slos = (await slo_api.slos(request, caller))["slos"]
        by_bt = {(s["service"], s["bt"]): s for s in slos if s["bt"]}
        return page(
            "overview.html.j2",
            caller=caller,
            window=chosen,
            transactions=listed["transactions"],
            slo_of=by_bt,
            slos=slos,
        )

    return await guarded(request, render)


@router.get("/bt")
async def transaction(request: Request, service: str, bt: str, window: str | None = None) -> Response:
    async def render(caller: KeyInfo) -> Response:
        chosen = window_of(window)
        series = await processing_api.series(request, caller, bt=bt, service=service, since=chosen)
        components = await processing_api.components(request, caller, bt=bt, service=service, since=chosen)
        recent = await trace_api.list_traces(request, caller, service=service, since=chosen, limit=15)
        points = series["points"]
        labels = [p["time"][11:16] for p in points]
        return page(
            "bt.html.j2",
            caller=caller,
            window=chosen,
            service=service,
            bt=bt,
            calls=svg.lines({"calls": [p["count"] for p in points]}, labels, "calls per step"),
            latency=svg.lines(
                {"p50": [p["p50_ms"] for p in points], "p95": [p["p95_ms"] for p in points]}, labels, "ms"
            ),
            tiers=svg.lines(
                {tier: [p["tier_ms"].get(tier, 0.0) for p in points] for tier in _tiers_present(points)},
                labels,
                "ms per call, by tier",
            ),
            components=components["components"],
            traces=[t for t in recent["traces"] if t["root_service"] == service],
        )

    return await guarded(request, render)


def _tiers_present(points: list[dict[str, Any]]) -> list[str]:
    present = {tier for p in points for tier in p["tier_ms"]}
    return [tier for tier in svg.TIERS if tier in present]


@router.get("/trace/{trace_id}")
async def trace(request: Request, trace_id: str) -> Response:
    async def render(caller: KeyInfo) -> Response:
        found = await trace_api.get_trace(request, trace_id, caller)
        async with request.app.state.database.connection() as conn:
            experience = await reports_store.experience_for_trace(
                conn, caller.tenant_id, bytes.fromhex(trace_id)
            )
        return page(
            "trace.html.j2",
            caller=caller,
            trace=found,
            experience=experience,
            waterfall=svg.waterfall(found["spans"], experience),
        )

    return await guarded(request, render)


@router.get("/slos")
async def slos(request: Request) -> Response:
    async def render(caller: KeyInfo) -> Response:
        return page("slos.html.j2", caller=caller, slos=(await slo_api.slos(request, caller))["slos"])

    return await guarded(request, render)


@router.get("/services")
async def services(request: Request, window: str | None = None) -> Response:
    async def render(caller: KeyInfo) -> Response:
        chosen = window_of(window)
        found = await processing_api.service_map(request, caller, since=chosen)
        return page(
            "services.html.j2",
            caller=caller,
            window=chosen,
            edges=found["edges"],
            graph=svg.service_map(found["nodes"], found["edges"]),
        )

    return await guarded(request, render)


router.include_router(experience_pages.router)
router.include_router(alert_pages.router)
