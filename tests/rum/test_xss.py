"""Stored XSS through telemetry, in a real browser (RELIABILITY.md T-16).

Script markup arrives the ways an attacker can send it: a RUM beacon's page
URL, name and script error (the public, write-only RUM key is all it takes), and
a span's name, route and attributes. Headless Chromium then signs in to the
console and opens every page the router serves, and the API answers that carry
the markup: no dialog opens, no injected element exists in any page's DOM, and
the console's Content-Security-Policy forbids scripts anyway.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tierscope.testing import otlp
from tierscope.testing.browser import NOT_LOOPBACK
from tierscope.testing.collector import CollectorProcess
from tierscope.testing.figures import tally
from tierscope.testing.routes import collector_app, endpoints

from .conftest import FAST, credentials, tierscope

ORIGIN = "https://erp.example.test"
HOSTILE = "<img src=x onerror=alert('xss')>"
SCRIPT = "\"><script>alert('xss')</script>"
INJECTED = "img[src='x'], script, [onerror]"


@pytest.fixture(scope="module")
def hostile(collector_factory: Callable[..., CollectorProcess]) -> tuple[CollectorProcess, str, str]:
    collector = collector_factory(**FAST)
    tierscope(collector, "rum", "origins", ORIGIN)
    keys = credentials(collector)
    now = time.time() * 1000
    experience_id = os.urandom(16).hex()
    beacon = {
        "v": 1,
        "session": "s1",
        "items": [
            {
                "type": "page_load",
                "id": experience_id,
                "start": now - 4000,
                "name": f"/invoices/{HOSTILE}",
                "url": f"{ORIGIN}/invoices/{HOSTILE}?q={SCRIPT}",
                "status": 200,
                "timing": {"requestStart": 5, "responseStart": 105, "responseEnd": 125, "end": 600},
            },
            {
                "type": "error",
                "id": os.urandom(16).hex(),
                "page_view": os.urandom(16).hex(),
                "time": now - 3000,
                "page": f"/invoices/{HOSTILE}",
                "message": SCRIPT,
            },
        ],
    }
    sent = httpx.post(
        f"{collector.url}/v1/rum",
        params={"key": keys["rum_key"]},
        content=json.dumps(beacon).encode(),
        headers={"content-type": "text/plain;charset=UTF-8", "origin": ORIGIN},
    )
    assert sent.status_code in {200, 202, 204}, sent.text
    trace_id = os.urandom(16)
    span = otlp.span(
        name=f"GET {HOSTILE}",
        trace_id=trace_id,
        attributes={"http.route": f"/leads/{HOSTILE}", "http.request.method": "GET", "note": SCRIPT},
    )
    body = otlp.request([span], service="crm-web").SerializeToString()
    assert otlp.post(collector.url, keys["ingest_key"], body).status_code == 200
    token = keys["api_token"]
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # processing names the transaction after its settle delay
        listed = httpx.get(
            f"{collector.url}/api/v1/transactions", headers={"Authorization": f"Bearer {token}"}
        ).text
        if "onerror" in listed:
            break
        time.sleep(0.5)
    return collector, trace_id.hex(), experience_id


def _visit(page: Any, url: str, dialogs: list[str]) -> dict[str, Any]:
    response = page.goto(url)
    assert response is not None
    return {
        "status": response.status,
        "csp": response.headers.get("content-security-policy", ""),
        "injected": page.locator(INJECTED).count(),
        "text": page.locator("body").inner_text(),
        "dialogs": list(dialogs),
    }


def test_no_script_from_telemetry_runs_in_the_console_or_the_api(
    browser: Any, hostile: tuple[CollectorProcess, str, str]
) -> None:
    collector, trace_id, experience_id = hostile
    token = credentials(collector)["api_token"]
    context = browser.new_context()
    context.route(NOT_LOOPBACK, lambda route: route.abort())
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        page.goto(f"{collector.url}/login")
        page.fill("input[name=token]", token)
        page.click("button[type=submit]")
        console_pages = [
            e
            for e in endpoints(collector_app())
            if e.method == "GET"
            and e.module.startswith("tierscope.dashboards.console")
            and e.path != "/login"
        ]
        assert len(console_pages) >= 5
        seen_escaped = False
        for endpoint in console_pages:
            url = collector.url + endpoint.url({"trace_id": trace_id, "experience_id": experience_id})
            if endpoint.path == "/bt":
                url += "?service=crm-web&bt=" + httpx.QueryParams({"b": f"GET /leads/{HOSTILE}"})["b"]
            seen = _visit(page, url, dialogs)
            assert seen["status"] == 200, (url, seen["status"], seen["text"][:300])
            assert seen["csp"].startswith("default-src 'none'"), url
            assert "script-src" not in seen["csp"]
            assert seen["injected"] == 0, url
            seen_escaped = seen_escaped or "onerror" in seen["text"]
        assert seen_escaped, "the hostile text is shown, as text, somewhere in the console"
        page.set_extra_http_headers({"Authorization": f"Bearer {token}"})
        for path in ("/api/v1/experiences?since=1h", f"/api/v1/traces/{trace_id}", "/api/v1/transactions"):
            seen = _visit(page, collector.url + path, dialogs)
            assert seen["status"] == 200, path
            assert seen["injected"] == 0, path
            assert "onerror" in seen["text"], f"{path} carries the markup, inert, as JSON text"
        assert dialogs == []
        tally("T-16").describe(
            "<img src=x onerror=alert()> and \"><script> in a RUM beacon's URL, page name and script "
            "error (sent with the public RUM key) and in a span's name, route and attributes; headless "
            "Chromium signs in and opens every console page the router serves, then the API answers",
            "no dialog opened; no injected element in any page's DOM; the markup shows as text; every "
            "console page sends Content-Security-Policy: default-src 'none' with no script-src",
        ).note(console_pages=len(console_pages), api_answers=3, dialogs=len(dialogs), injected_elements=0)
    finally:
        context.close()
