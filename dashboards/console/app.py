"""The console's pages, mounted by the collector at ``/``.

Sign-in takes an API token (the same one the query API takes) and keeps it in
an HttpOnly, SameSite=Strict cookie; every page checks it as the API does and
shows only the caller's tenant. Pages call the query API's own functions, so
the console and the API never disagree. Every response carries a strict
Content-Security-Policy: no script may run, styles come from one file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from tierscope.collector.api import traces as trace_api
from tierscope.collector.api.deps import required_role
from tierscope.collector.auth import AuthError, KeyVerifier
from tierscope.dashboards.console import svg
from tierscope.processing import api as processing_api
from tierscope.slo import api as slo_api
from tierscope.store.tenants import KeyInfo

COOKIE = "tierscope_token"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}
WINDOWS = {
    "15m": "15 minutes",
    "1h": "1 hour",
    "6h": "6 hours",
    "24h": "24 hours",
    "7d": "7 days",
    "30d": "30 days",
}

router = APIRouter(include_in_schema=False)
static = StaticFiles(directory=Path(__file__).parent / "static")
_templates = Environment(
    loader=PackageLoader("tierscope.dashboards.console", "templates"), autoescape=select_autoescape(["j2"])
)
_templates.filters["q"] = lambda value: quote(str(value), safe="")


class _SignIn(Exception):
    """The caller must sign in (no token, or one that no longer works)."""


async def _caller(request: Request) -> KeyInfo:
    """Who is signed in, and whether their token's role allows this request.

    Like the API, a page that changes something (any method but GET/HEAD)
    needs an editor token: a viewer's token cannot acknowledge or silence.
    """
    token = request.cookies.get(COOKIE)
    if not token:
        raise _SignIn
    verifier: KeyVerifier = request.app.state.verifier
    try:
        caller = await verifier.verify(f"Bearer {token}", "api")
    except AuthError:
        raise _SignIn from None
    role = required_role(request.method)
    if not caller.can(role):
        raise _Forbidden(caller, f"Your token's role is {caller.role}; this needs an {role} token.")
    return caller


class _Forbidden(Exception):
    def __init__(self, caller: KeyInfo, message: str) -> None:
        super().__init__(message)
        self.caller = caller


def _page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    body = _templates.get_template(name).render(windows=WINDOWS, svg=svg, **context)
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def _window(value: str | None) -> str:
    return value if value in WINDOWS else "1h"


async def _guarded(request: Request, render: Any) -> Response:
    try:
        caller = await _caller(request)
    except _SignIn:
        return RedirectResponse("/login", status_code=303, headers=HEADERS)
    except _Forbidden as exc:
        return _page("error.html.j2", 403, message=str(exc), caller=exc.caller)
    try:
        return await render(caller)
    except HTTPException as exc:
        return _page("error.html.j2", exc.status_code, message=exc.detail, caller=caller)


@router.get("/login")
async def login_form() -> HTMLResponse:
    return _page("login.html.j2")


@router.post("/login")
async def login(request: Request, token: str = Form(max_length=256)) -> Response:
    verifier: KeyVerifier = request.app.state.verifier
    try:
        await verifier.verify(f"Bearer {token.strip()}", "api")
    except AuthError as exc:
        return _page("login.html.j2", 401, error=f"That token was refused: {exc}")
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
        chosen = _window(window)
        listed = await processing_api.transactions(request, caller, since=chosen)
        slos = (await slo_api.slos(request, caller))["slos"]
        by_bt = {(s["service"], s["bt"]): s for s in slos if s["bt"]}
        return _page(
            "overview.html.j2",
            caller=caller,
            window=chosen,
            transactions=listed["transactions"],
            slo_of=by_bt,
            slos=slos,
        )

    return await _guarded(request, render)


@router.get("/bt")
async def transaction(request: Request, service: str, bt: str, window: str | None = None) -> Response:
    async def render(caller: KeyInfo) -> Response:
        chosen = _window(window)
        series = await processing_api.series(request, caller, bt=bt, service=service, since=chosen)
        components = await processing_api.components(request, caller, bt=bt, service=service, since=chosen)
        recent = await trace_api.list_traces(request, caller, service=service, since=chosen, limit=15)
        points = series["points"]
        labels = [p["time"][11:16] for p in points]
        return _page(
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

    return await _guarded(request, render)


def _tiers_present(points: list[dict[str, Any]]) -> list[str]:
    present = {tier for p in points for tier in p["tier_ms"]}
    return [tier for tier in svg.TIERS if tier in present]


@router.get("/trace/{trace_id}")
async def trace(request: Request, trace_id: str) -> Response:
    async def render(caller: KeyInfo) -> Response:
        found = await trace_api.get_trace(request, trace_id, caller)
        return _page("trace.html.j2", caller=caller, trace=found, waterfall=svg.waterfall(found["spans"]))

    return await _guarded(request, render)


@router.get("/slos")
async def slos(request: Request) -> Response:
    async def render(caller: KeyInfo) -> Response:
        return _page("slos.html.j2", caller=caller, slos=(await slo_api.slos(request, caller))["slos"])

    return await _guarded(request, render)


@router.get("/services")
async def services(request: Request, window: str | None = None) -> Response:
    async def render(caller: KeyInfo) -> Response:
        chosen = _window(window)
        found = await processing_api.service_map(request, caller, since=chosen)
        return _page(
            "services.html.j2",
            caller=caller,
            window=chosen,
            edges=found["edges"],
            graph=svg.service_map(found["nodes"], found["edges"]),
        )

    return await _guarded(request, render)
