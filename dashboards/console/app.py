"""The console's pages, mounted by the collector at ``/``.

Sign-in takes an API token (the same one the query API takes) and keeps it in
an HttpOnly, SameSite=Strict cookie; every page checks it as the API does and
shows only the caller's tenant. Pages call the query API's own functions, so
the console and the API never disagree. Experiences and alerts have their own
modules (``experience_pages``, ``alert_pages``); what pages share is in
``common``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from tierscope.collector.api import traces as trace_api
from tierscope.collector.api.deps import iso, time_window
from tierscope.collector.api.traces import MAX_WINDOW
from tierscope.collector.auth import AuthError, KeyVerifier
from tierscope.dashboards.console import alert_pages, experience_pages, rum_figures, svg
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
        by_bt: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for slo in slos:  # a transaction may have several (latency and availability)
            if slo["bt"]:
                by_bt.setdefault((slo["service"], slo["bt"]), []).append(slo)
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
        start, end = time_window(chosen, None, timedelta(hours=1), MAX_WINDOW)
        apdex_t_ms = request.app.state.settings.rum_apdex_t.total_seconds() * 1000
        async with request.app.state.database.connection() as conn:
            recent = await reports_store.transaction_traces(conn, caller.tenant_id, service, bt, start, end)
            served = await reports_store.transaction_sites(conn, caller.tenant_id, service, bt, start, end)
            experienced = await rum_figures.transaction_sites(
                conn, caller.tenant_id, service, bt, start, end, apdex_t_ms
            )
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
            sites=_sites(served, experienced),
            traces=[
                {
                    "trace_id": bytes(t["trace_id"]).hex(),
                    "start": iso(t["start_time"]),
                    "duration_ms": t["duration_us"] / 1000,
                    "span_count": t["span_count"],
                    "error": t["error"],
                    "error_tier": t["error_tier"],
                    "site": t["site"],
                }
                for t in recent
            ],
        )

    return await guarded(request, render)


def _sites(served: list[dict[str, Any]], experienced: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per site: the server's side (traces) beside the users' (RUM);
    the sites whose users waited longest first."""
    rows: dict[str, dict[str, Any]] = {
        row["site"]: {"site": row["site"], "server": row | {"error_rate": float(row["error_rate"])}}
        for row in served
    }
    for site, figures in experienced.items():
        rows.setdefault(site, {"site": site, "server": None})["users"] = figures
    for row in rows.values():
        row.setdefault("users", None)

    def slowest_first(row: dict[str, Any]) -> tuple[float, float, str]:
        waited = (row["users"] or {}).get("waited_p95_ms") or 0.0
        served_ms = (row["server"] or {}).get("p95_ms") or 0.0
        return (-waited, -served_ms, row["site"])

    return sorted(rows.values(), key=slowest_first)


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
