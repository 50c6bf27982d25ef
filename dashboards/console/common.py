"""What every console page shares: sign-in, the one place that decides what a
caller may do, rendering with autoescaping, and the security headers.

Every response carries a strict Content-Security-Policy: no script may run,
styles come from one file. Every page says how long the server took to make it
in a ``Server-Timing`` header (``page;dur=<ms>``: from the request reaching the
page's handler to its body rendered, sign-in check included), which browsers'
developer tools show and the speed tests read: a figure free of the client's
and the loopback's share.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape

from tierscope.collector.api.deps import required_role
from tierscope.collector.auth import AuthError, KeyVerifier
from tierscope.dashboards.console import svg
from tierscope.dashboards.report import budget_left
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

static = StaticFiles(directory=Path(__file__).parent / "static")
_templates = Environment(
    loader=PackageLoader("tierscope.dashboards.console", "templates"), autoescape=select_autoescape(["j2"])
)
_templates.filters["q"] = lambda value: quote(str(value), safe="")
# The error budget left, worded as the SLA report words it ("exhausted (3.0× spent)").
_templates.filters["budget"] = budget_left


class SignIn(Exception):
    """The caller must sign in (no token, or one that no longer works)."""


class Forbidden(Exception):
    def __init__(self, caller: KeyInfo, message: str) -> None:
        super().__init__(message)
        self.caller = caller


async def caller_of(request: Request) -> KeyInfo:
    """Who is signed in, and whether their token's role allows this request.

    Like the API, a page that changes something (any method but GET/HEAD)
    needs an editor token: a viewer's token cannot acknowledge or silence.
    """
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignIn
    verifier: KeyVerifier = request.app.state.verifier
    try:
        caller = await verifier.verify(f"Bearer {token}", "api")
    except AuthError:
        raise SignIn from None
    role = required_role(request.method)
    if not caller.can(role):
        raise Forbidden(caller, f"Your token's role is {caller.role}; this needs an {role} token.")
    return caller


def page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    body = _templates.get_template(name).render(windows=WINDOWS, svg=svg, **context)
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def window_of(value: str | None) -> str:
    return value if value in WINDOWS else "1h"


async def guarded(request: Request, render: Any) -> Response:
    started = time.perf_counter()
    response = await _guarded(request, render)
    response.headers["Server-Timing"] = f"page;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response


async def _guarded(request: Request, render: Any) -> Response:
    try:
        caller = await caller_of(request)
    except SignIn:
        return RedirectResponse("/login", status_code=303, headers=HEADERS)
    except Forbidden as exc:
        return page("error.html.j2", 403, message=str(exc), caller=exc.caller)
    try:
        return await render(caller)
    except HTTPException as exc:
        return page("error.html.j2", exc.status_code, message=exc.detail, caller=caller)


# Actions that change something, and the least role that may take them: a
# viewer's token may look but not act. With caller_of (which refuses any
# non-GET request below editor), the one place the console decides.
ACTIONS = {"acknowledge": "editor"}


def may(caller: KeyInfo, action: str) -> bool:
    return caller.can(ACTIONS[action])
