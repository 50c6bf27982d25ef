"""Real headless Chromium loads instrumented pages on 127.0.0.1; the RUM script's
beacons become experiences joined to the app's traces, split into tiers."""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tierscope.testing.apps import AppProcess
from tierscope.testing.collector import CollectorProcess, free_port
from tierscope.testing.latency_proxy import LatencyProxy

from .conftest import BROWSER_RATE_PER_IP, api, credentials, tierscope
from .pages import OtherOrigin, PageApp, wait_until

WAN_DELAY = 0.12  # seconds each way through the proxy


@pytest.fixture(scope="module")
def app(rum_collector: CollectorProcess, database_factory: Any, web_vitals_script: Path) -> Iterator[PageApp]:
    keys = credentials(rum_collector)
    started = PageApp(
        rum_collector.url, keys["ingest_key"], keys["rum_key"], database_factory(), web_vitals_script
    ).start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def proxy(app: PageApp) -> Iterator[LatencyProxy]:
    with LatencyProxy(("127.0.0.1", app.port), WAN_DELAY) as started:
        yield started


@pytest.fixture(scope="module")
def stranger(app: PageApp) -> Iterator[OtherOrigin]:
    """A site whose origin is not on the key's allow-list, with the RUM tag copied onto its page."""
    html = f"<!doctype html><html><head>{app.snippet()}</head><body><p>Copied tag</p></body></html>"
    with OtherOrigin(html) as started:
        yield started


@pytest.fixture(scope="module")
def partner(app: PageApp) -> Iterator[OtherOrigin]:
    """Another origin the pages call, named in the tag's data-propagate."""
    with OtherOrigin() as started:
        app.propagate = started.url
        yield started
        app.propagate = ""


@pytest.fixture(scope="module")
def shop_port() -> int:
    return free_port()


@pytest.fixture(scope="module", autouse=True)
def allowed(rum_collector: CollectorProcess, app: PageApp, proxy: LatencyProxy, shop_port: int) -> None:
    origins = (app.url, f"http://127.0.0.1:{proxy.port}", f"http://127.0.0.1:{shop_port}")
    tierscope(rum_collector, "rum", "origins", *origins)


@pytest.fixture(scope="module")
def shop(
    rum_collector: CollectorProcess,
    database_factory: Any,
    shop_port: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[AppProcess]:
    """A Flask app under the real agent (``tierscope-agent run``), which injects the
    RUM tag into its pages and exports its spans to the collector."""
    keys = credentials(rum_collector)
    env = {
        **os.environ,
        # gunicorn is beside this interpreter
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        "DATABASE_URL": database_factory(),
        "TIERSCOPE_SERVICE": "shop-web",
        "TIERSCOPE_ENDPOINT": rum_collector.url,
        "TIERSCOPE_INGEST_KEY": keys["ingest_key"],
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "TIERSCOPE_RUM_INJECT": "true",
        "TIERSCOPE_RUM_KEY": keys["rum_key"],
        "TIERSCOPE_RUM_URL": rum_collector.url,
    }
    command = ["gunicorn", "-w", "1", "-b", f"127.0.0.1:{shop_port}", "shop_page:app"]
    log = tmp_path_factory.mktemp("shop") / "shop.log"
    started = AppProcess(command, env, log, shop_port, cwd=Path(__file__).parent / "apps").start()
    yield started
    started.stop()


def experiences(collector: CollectorProcess, **params: Any) -> list[dict[str, Any]]:
    response = api(collector, "/api/v1/experiences", **{"from": "1h", **params})
    assert response.status_code == 200, response.text
    return list(response.json()["experiences"])


def finished(collector: CollectorProcess, url_part: str, kind: str, count: int = 1) -> list[dict[str, Any]]:
    """The experiences of that kind whose URL contains ``url_part``, once all are joined or untraced."""

    def check() -> list[dict[str, Any]] | None:
        found = [e for e in experiences(collector) if e["kind"] == kind and url_part in e["url"]]
        done = [e for e in found if e["state"] != "pending"]
        return done if len(done) >= count else None

    return list(wait_until(check, 60, f"{count} finished {kind} experience(s) of {url_part}"))


# What the browser itself measured, read from its own timing entries (not from a
# beacon): the page load ends at the load event's end (the end rum.js reports, from
# the navigation's start), an in-page call at its Resource Timing entry's responseEnd.
MEASURED = """(path) => {
  const nav = performance.getEntriesByType('navigation')[0];
  const call = performance.getEntriesByType('resource').find((e) =>
    new URL(e.name).pathname === path && ['fetch', 'xmlhttprequest'].includes(e.initiatorType));
  return {page_load: nav.loadEventEnd - nav.startTime,
          request: call ? call.responseEnd - call.startTime : null};
}"""


def timed_in_browser(page: Any, call_path: str | None = None) -> dict[str, float]:
    """Milliseconds of the page load and of the call to ``call_path``, per the browser."""
    found = page.evaluate(MEASURED, call_path)
    assert found["page_load"] > 0, found
    if call_path is None:
        return {"page_load": float(found["page_load"])}
    assert found["request"], found
    return {kind: float(ms) for kind, ms in found.items()}


def assert_adds_up(experience: dict[str, Any], measured_ms: float) -> None:
    """The experience's end-to-end time, and its tiers added up, are within 5 % of
    what the browser measured."""
    total = sum(experience["tier_ms"].values())
    assert abs(experience["duration_ms"] - measured_ms) <= 0.05 * measured_ms, (measured_ms, experience)
    assert abs(total - measured_ms) <= 0.05 * measured_ms, (measured_ms, total, experience)


def server_ms(experience: dict[str, Any]) -> float:
    return sum(v for tier, v in experience["tier_ms"].items() if tier not in ("browser", "network"))


def test_a_page_load_and_an_in_page_fetch_become_experiences_joined_to_their_traces(
    rum_collector: CollectorProcess, app: PageApp, page: Any
) -> None:
    app.db_seconds = 0.05
    page.goto(f"{app.url}/invoices/4711")
    page.click("#post")
    page.wait_for_function("document.getElementById('result').textContent === 'posted'")
    browser_ms = timed_in_browser(page, "/api/invoices/4711/post")
    page.evaluate("tierscope.flush()")
    app.flush()

    (load,) = finished(rum_collector, "/invoices/4711", "page_load")
    assert load["state"] == "joined"
    assert load["trace_id"] == app.traces["/invoices/4711"]
    assert load["bt"] == "GET /invoices/{id}"
    assert load["page"] == "/invoices/{id}"
    assert load["site"] == "branch-b"
    assert load["user"] is not None
    assert "clerk" not in load["user"]
    assert load["browser"].startswith("Chrome")
    assert load["outcome"] == "ok"
    assert load["tier_ms"]["db"] >= 45
    assert load["tier_ms"]["browser"] > 0
    assert_adds_up(load, browser_ms["page_load"])

    (call,) = finished(rum_collector, "/api/invoices/4711/post", "request")
    assert call["state"] == "joined"
    assert call["trace_id"] == app.traces["/api/invoices/4711/post"]
    assert call["page"] == "Post invoice"  # named by the button's data-tierscope-action
    assert call["bt"] == "POST /api/invoices/{id}/post"
    assert call["method"] == "POST"
    assert call["status"] == 200
    assert call["tier_ms"]["db"] >= 45
    assert_adds_up(call, browser_ms["request"])

    detail = api(rum_collector, f"/api/v1/experiences/{call['id']}").json()
    assert detail["trace"]["summary"]["bt"] == "POST /api/invoices/{id}/post"
    names = {span["name"] for span in detail["trace"]["spans"]}
    assert names == {"POST /api/invoices/{id}/post", "SELECT"}
    assert detail["timing"]["responseEnd"] > 0


def test_the_browser_reaches_nothing_but_loopback(page: Any) -> None:
    failures: list[str] = []
    page.on("requestfailed", lambda request: failures.append(request.failure))
    page.goto("about:blank")
    outcome = page.evaluate("fetch('http://example.invalid/').then(() => 'reached', () => 'blocked')")
    assert outcome == "blocked"
    assert failures == ["net::ERR_FAILED"]  # aborted by the route, not a failed name lookup


def test_a_script_error_is_captured_with_its_page_view(
    rum_collector: CollectorProcess, app: PageApp, page: Any
) -> None:
    app.db_seconds = 0.0
    page.goto(f"{app.url}/invoices/31")
    # The error is thrown from a timer after the click: wait for it (the page's
    # own listeners, rum.js among them, have seen it by then), not for a guess.
    with page.expect_event("pageerror"):
        page.click("#break")
    page.evaluate("tierscope.flush()")
    (load,) = finished(rum_collector, "/invoices/31", "page_load")
    detail = wait_until(
        lambda: (d := api(rum_collector, f"/api/v1/experiences/{load['id']}").json())["script_errors"] and d,
        20,
        "the script error",
    )
    (error,) = detail["script_errors"]
    assert "null" in error["message"]  # TypeError: Cannot read properties of null (reading 'total')
    assert error["source"].startswith(f"{app.url}/invoices/31:")
    assert "TypeError" in error["stack"]
    assert error["page"] == "/invoices/{id}"
    assert page.page_errors  # the page itself saw the error too


def test_delay_on_the_wan_shows_as_network_and_a_slow_database_as_db(
    rum_collector: CollectorProcess, app: PageApp, proxy: LatencyProxy, page: Any
) -> None:
    browser_ms: dict[str, dict[str, float]] = {}
    for base, number, db_seconds in (
        (app.url, "500", 0.01),
        (f"http://127.0.0.1:{proxy.port}", "501", 0.01),
        (app.url, "502", 0.4),
    ):
        app.db_seconds = db_seconds
        page.goto(f"{base}/invoices/{number}")
        page.click("#post")
        page.wait_for_function("document.getElementById('result').textContent === 'posted'", timeout=10_000)
        browser_ms[number] = timed_in_browser(page, f"/api/invoices/{number}/post")
        page.evaluate("tierscope.flush()")
    app.db_seconds = 0.0
    app.flush()

    for kind, url in (("page_load", "/invoices/{}"), ("request", "/api/invoices/{}/post")):
        (direct,) = finished(rum_collector, url.format("500"), kind)
        (far,) = finished(rum_collector, url.format("501"), kind)
        (slow,) = finished(rum_collector, url.format("502"), kind)
        for number, experience in (("500", direct), ("501", far), ("502", slow)):
            assert experience["state"] == "joined"
            assert_adds_up(experience, browser_ms[number][kind])
        # A request and its response each cross the proxy once: at least one round trip more,
        # all of it network; the server's tiers are what its trace measured, and no more.
        round_trip_ms = 2 * WAN_DELAY * 1000
        assert far["tier_ms"]["network"] >= round_trip_ms, far
        assert direct["tier_ms"]["network"] < far["tier_ms"]["network"], (direct, far)
        measured = api(rum_collector, f"/api/v1/experiences/{far['id']}").json()["trace"]["summary"]
        assert server_ms(far) == pytest.approx(measured["duration_ms"], abs=0.01), (far, measured)
        assert slow["tier_ms"]["db"] >= 0.95 * 400, slow
        assert slow["tier_ms"]["network"] < slow["tier_ms"]["db"] / 2, slow
        assert max(slow["tier_ms"], key=slow["tier_ms"].get) == "db" or kind == "page_load"


def test_an_xhr_call_becomes_a_request_experience_joined_to_its_trace(
    rum_collector: CollectorProcess, app: PageApp, page: Any
) -> None:
    app.db_seconds = 0.03
    page.goto(f"{app.url}/invoices/321")
    status = page.evaluate(
        """() => new Promise((done) => {
          const x = new XMLHttpRequest();
          x.open('POST', '/api/invoices/321/post');
          x.onloadend = () => done(x.status);
          x.send();
        })"""
    )
    assert status == 200
    browser_ms = timed_in_browser(page, "/api/invoices/321/post")
    page.evaluate("tierscope.flush()")
    app.db_seconds = 0.0
    app.flush()

    (call,) = finished(rum_collector, "/api/invoices/321/post", "request")
    assert call["state"] == "joined"
    assert call["trace_id"] == app.traces["/api/invoices/321/post"]
    assert call["bt"] == "POST /api/invoices/{id}/post"
    assert call["method"] == "POST"
    assert call["status"] == 200
    assert call["tier_ms"]["db"] >= 25
    assert_adds_up(call, browser_ms["request"])


TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")


def test_a_traceparent_goes_to_allow_listed_origins_and_not_to_others(
    app: PageApp, partner: OtherOrigin, stranger: OtherOrigin, page: Any
) -> None:
    partner.calls.clear()
    stranger.calls.clear()
    page.goto(f"{app.url}/invoices/322")
    statuses = page.evaluate(
        "(urls) => Promise.all(urls.map((url) => fetch(url).then((r) => r.json().then(() => r.status))))",
        [f"{partner.url}/ping", f"{stranger.url}/ping"],
    )
    assert statuses == [200, 200]
    ((method, header),) = partner.calls
    assert method == "GET"
    assert header is not None
    assert TRACEPARENT.match(header), header
    assert stranger.calls == [("GET", None)]  # what the servers received, not what the page meant to send


def test_tierscope_action_names_the_request_that_follows(
    rum_collector: CollectorProcess, app: PageApp, page: Any
) -> None:
    app.db_seconds = 0.0
    page.goto(f"{app.url}/invoices/323")
    # The body is read: Chromium adds a fetch's Resource Timing entry only then.
    post = """(number) => fetch('/api/invoices/' + number + '/post', {method: 'POST'})
      .then((r) => r.json().then(() => r.status))"""
    assert page.evaluate(post, "323") == 200  # no action named: named by method and path
    page.evaluate("tierscope.action('Recalculate totals')")
    assert page.evaluate(post, "324") == 200
    page.evaluate("tierscope.flush()")
    app.flush()

    (plain,) = finished(rum_collector, "/api/invoices/323/post", "request")
    (named,) = finished(rum_collector, "/api/invoices/324/post", "request")
    assert plain["page"] == "POST /api/invoices/{id}/post"  # ids collapsed, like a page's path
    assert named["page"] == "Recalculate totals"
    assert named["bt"] == "POST /api/invoices/{id}/post"  # the server's name stays the server's


VITALS = {"lcp": "LCP", "cls": "CLS", "inp": "INP", "fcp": "FCP", "ttfb": "TTFB"}  # ours: web-vitals'


def test_the_web_vitals_agree_with_googles_web_vitals_library(
    rum_collector: CollectorProcess, app: PageApp, page: Any
) -> None:
    """LCP, CLS, INP, FCP and TTFB (the same definitions in both). The same page,
    the same browser, both measuring: a late banner shifts the layout, a click
    blocks the main thread for 250 ms, and leaving the page makes both report
    their final values."""
    app.db_seconds = 0.0
    app.reference.clear()
    page.goto(f"{app.url}/invoices/900?vitals=1")
    page.wait_for_timeout(700)  # the banner comes at 300 ms
    page.click("#slow")
    page.click("#slow")
    page.wait_for_timeout(300)
    page.goto("about:blank")  # the page is hidden: final values from both
    (load,) = finished(rum_collector, "/invoices/900", "page_load")

    def reported() -> dict[str, float] | None:
        values = {m["name"]: float(m["value"]) for m in app.reference}
        vitals = api(rum_collector, f"/api/v1/experiences/{load['id']}").json()["vitals"]
        if set(VITALS.values()) <= values.keys() and set(VITALS) <= vitals.keys():
            return {**values, **{k: float(v) for k, v in vitals.items()}}
        return None

    both = wait_until(reported, 20, "both reports")
    for ours, theirs in VITALS.items():
        assert both[theirs] > 0, both
        assert abs(both[ours] - both[theirs]) <= 0.1 * both[theirs], (ours, both)
    assert both["inp"] >= 250
    assert both["cls"] > 0.05


def test_a_page_the_agent_put_the_tag_into_sends_a_page_load_joined_to_the_apps_trace(
    rum_collector: CollectorProcess, shop: AppProcess, page: Any
) -> None:
    """End to end with no hand-written tag: the agent injects rum.js and names the
    trace in Server-Timing; the browser's beacon is joined to that trace."""
    page.goto(f"{shop.url}/orders/88")
    assert page.locator("script[data-key]").get_attribute("src") == f"{rum_collector.url}/rum.js"
    page.wait_for_function("window.tierscope && window.tierscope.v === 1")  # the tag is async
    traceparent = page.evaluate(
        "performance.getEntriesByType('navigation')[0].serverTiming"
        ".find((s) => s.name === 'traceparent').description"
    )
    browser_ms = timed_in_browser(page)
    page.evaluate("new Promise((done) => setTimeout(done, 0))")  # after the script's own load handler
    page.evaluate("tierscope.flush()")

    (load,) = finished(rum_collector, f"{shop.url}/orders/88", "page_load")
    assert load["state"] == "joined"
    assert load["trace_id"] == traceparent.split("-")[1]
    assert load["service"] == "shop-web"
    assert load["bt"].startswith("GET /orders/"), load
    assert load["page"] == "/orders/{id}"
    assert load["tier_ms"]["db"] >= 45
    assert_adds_up(load, browser_ms["page_load"])
    detail = api(rum_collector, f"/api/v1/experiences/{load['id']}").json()
    kinds = {span["kind"] for span in detail["trace"]["spans"]}
    assert {"server", "client"} <= kinds, detail["trace"]["spans"]


def test_beacons_from_a_page_whose_origin_the_key_does_not_allow_are_refused_and_not_stored(
    rum_collector: CollectorProcess, stranger: OtherOrigin, page: Any
) -> None:
    # An earlier test's page may have listened on the same loopback port: only
    # what happened from now on can come from this page.
    since = datetime.now(UTC) - timedelta(seconds=1)
    page.goto(f"{stranger.url}/page")
    page.evaluate("new Promise((done) => setTimeout(done, 0))")  # after the script's own load handler
    with page.expect_response(lambda r: "/v1/rum" in r.url) as answered:
        page.evaluate("tierscope.flush()")
    response = answered.value
    assert response.request.headers["origin"] == stranger.url
    assert response.status == 403
    # No CORS headers on the refusal: the page cannot even read it.
    outcome = page.evaluate(
        """() => { const tag = document.querySelector('script[data-key]');
          return fetch(new URL(tag.src).origin + '/v1/rum?key=' + tag.dataset.key,
                       {method: 'POST', body: '{}', headers: {'content-type': 'text/plain'}})
            .then((r) => 'read ' + r.status, () => 'hidden'); }"""
    )
    assert outcome == "hidden"

    # The collector answers only after the store has committed (or it refused): nothing came of it.
    def started(e: dict[str, Any]) -> datetime:
        return datetime.fromisoformat(e["start"].replace("Z", "+00:00"))

    ours = [
        e for e in experiences(rum_collector) if e["url"].startswith(stranger.url) and started(e) >= since
    ]
    assert ours == []


FLOOD = """(count) => {
  const tag = document.querySelector('script[data-key]');
  const url = new URL(tag.src).origin + '/v1/rum?key=' + encodeURIComponent(tag.dataset.key);
  const id = () => Array.from(crypto.getRandomValues(new Uint8Array(16)),
    (b) => b.toString(16).padStart(2, '0')).join('');
  const beacon = (n) => JSON.stringify({v: 1, items: [{type: 'error', id: id(), page_view: id(),
    time: Date.now(), page: '/flood', message: 'flood ' + n}]});
  return Array.from({length: count}, (_, n) => navigator.sendBeacon(url, beacon(n)));
}"""


def test_a_flood_of_beacons_from_one_browser_gets_429(app: PageApp, page: Any) -> None:
    """Beacons sent the way rum.js sends them (sendBeacon), a hundred at once. Last in
    this module: it spends this address's rate for a while (10 beacons/s, bursts of 20)."""
    answers: list[Any] = []
    page.on("response", lambda r: answers.append(r) if "/v1/rum" in r.url else None)
    page.goto(f"{app.url}/invoices/66")
    began = time.monotonic()
    assert all(page.evaluate(FLOOD, 100))  # all queued by the browser
    wait_until(lambda: page.wait_for_timeout(50) or len(answers) >= 100, 20, "the answers to the flood")
    elapsed = time.monotonic() - began
    statuses = [r.status for r in answers]
    assert set(statuses) <= {200, 429}, statuses
    # Most of a burst got through, then no more than the rate gave back meanwhile.
    accepted = statuses.count(200)
    assert BROWSER_RATE_PER_IP <= accepted <= BROWSER_RATE_PER_IP * (2 + elapsed) + 1, (elapsed, statuses)
    assert statuses.count(429) >= 100 - accepted, statuses
    # (Retry-After and the missing CORS headers of a 429: test_endpoint.py; Chromium does
    # not show the headers of beacon answers to Playwright.)
