"""``tierscope demo`` end to end: the estate starts, every business transaction of
both apps is in ``/api/v1/transactions``, worker jobs join the traces that enqueued
them, each fault leaves its signature where it should and not elsewhere, and
Ctrl-C stops everything. One estate serves the module; tests run in file order.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tierscope.collector.tiers import TIERS
from tierscope.demo.faults import CATALOG
from tierscope.slo import definitions
from tierscope.testing.browser import screenshot
from tierscope.testing.routes import collector_app, endpoints

from .conftest import DemoProcess

pytestmark = pytest.mark.timeout(600)

CRM = [
    "CRM / Login",
    "CRM / Lead list",
    "CRM / Search leads",
    "CRM / Create lead",
    "CRM / Contact detail",
    "CRM / Opportunity pipeline",
]
ERP = [
    "ERP / Order desk",  # the HTML page the browser users open
    "ERP / Create sales order",
    "ERP / View sales order",
    "ERP / Check inventory",
    "ERP / Post invoice",
    "ERP / Import customers",
    "ERP / partner.search",
    "ERP / product.read",
]
SETTLE = 12.0  # settle delay (5 s) + a processing cycle + export batching, with room


def test_every_business_transaction_of_both_apps_appears(demo: DemoProcess) -> None:
    # The README promises the URLs within about 20 s on a quiet machine; here the machine
    # may run other test suites at a load of 10 and more.
    assert demo.ready_after < 90, demo.ready_after
    assert "crm-web: http://127.0.0.1:" in demo.log()
    deadline = time.monotonic() + 120
    seen: set[tuple[str, str]] = set()
    while time.monotonic() < deadline:
        rows = demo.api("/api/v1/transactions", **{"from": "15m"})["transactions"]
        seen = {(row["service"], row["bt"]) for row in rows}
        if {("crm-web", bt) for bt in CRM} | {("erp-api", bt) for bt in ERP} <= seen:
            break
        time.sleep(2)
    assert {("crm-web", bt) for bt in CRM} <= seen, demo.log()
    assert {("erp-api", bt) for bt in ERP} <= seen
    assert not {bt for _, bt in seen if bt == "_other" or bt.startswith(("GET ", "POST "))}, seen


def test_worker_jobs_appear_in_the_trace_of_the_request_that_enqueued_them(demo: DemoProcess) -> None:
    traces = demo.api("/api/v1/traces", service="erp-worker", since="15m", limit=50)["traces"]
    assert traces, "no trace touches erp-worker"
    checked = 0
    for summary in traces[:10]:
        spans = demo.api(f"/api/v1/traces/{summary['trace_id']}")["spans"]
        by_id = {span["span_id"]: span for span in spans}
        jobs = [span for span in spans if span["service"] == "erp-worker" and span["kind"] == "consumer"]
        roots = [span for span in spans if span["parent_span_id"] is None]
        if not jobs or len(roots) != 1:
            continue  # the request's spans may still be on their way
        root = roots[0]
        assert root["service"] == "erp-api", root
        assert root["kind"] == "server", root
        assert root["attributes"].get("http.route") in ("/api/invoices/{order_id}/post", "/api/imports"), root
        for job in jobs:
            assert job["tier"] == "platform", job
            assert job["name"] in ("invoice_workflow", "import_customers"), job
            assert job["parent_span_id"] in by_id, job  # the job's parent is a span of the request
            assert any(s["tier"] == "db" and s["parent_span_id"] == job["span_id"] for s in spans), spans
        checked += 1
    assert checked >= 3, traces


def test_the_demo_slos_are_live_with_budgets_and_burn_rates(demo: DemoProcess) -> None:
    """The SLOs the demo ships (demo/slos.yaml) are applied at start: ``/api/v1/slos`` lists
    each with its SLI, budget and burn rates from the live traffic, as after ``make run``."""
    with resources.as_file(resources.files("tierscope.demo").joinpath("slos.yaml")) as path:
        shipped = {slo.metadata.name: slo for slo in definitions.load(Path(path)).slos}
    assert len(shipped) >= 4
    deadline = time.monotonic() + 120
    while True:
        slos = {slo["id"]: slo for slo in demo.api("/api/v1/slos")["slos"]}
        live = [s for s in slos.values() if s["events"]["total"] > 0 and s["burn_rates"]["5m"] is not None]
        if (set(slos) == set(shipped) and len(live) == len(shipped)) or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert set(slos) == set(shipped), slos
    for name, spec in shipped.items():
        slo = slos[name]
        assert slo["objective"] == spec.spec.objective, slo
        assert slo["target"] == spec.spec.target, slo
        assert (slo["window"]["kind"], slo["window"]["duration"]) == ("rolling", "7d"), slo
        assert slo["events"]["total"] > 0, slo  # the users' requests of the last minutes count
        assert 0 <= slo["sli"] <= 1, slo
        # No fault is on yet: well within budget, and whatever was bad is in the burn rates.
        assert slo["error_budget_remaining"] is not None, slo
        assert slo["error_budget_remaining"] <= 1, slo
        assert set(slo["burn_rates"]) == {"5m", "30m", "1h", "6h", "1d", "3d"}, slo
        assert all(rate is not None and rate >= 0 for rate in slo["burn_rates"].values()), slo
    assert slos["order-to-cash-availability"]["criticality"] == "critical"
    assert slos["post-invoice-latency"]["bt"] == "ERP / Post invoice"


def _experiences(demo: DemoProcess, **params: str) -> list[dict[str, Any]]:
    return list(demo.api("/api/v1/experiences", **{"from": "30m", "limit": "1000", **params})["experiences"])


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def test_browser_users_produce_experiences_joined_to_traces(demo: DemoProcess) -> None:
    """Headless Chromium users at hq and branch-east: page loads and in-page fetches
    of both apps become experiences with their trace, site and tiers; the branch's
    WAN shows as network time."""
    assert "2 browser user(s) (headless Chromium) at hq, branch-east" in demo.log()
    wanted = {"CRM / Lead list", "ERP / Order desk", "CRM / Search leads", "ERP / Check inventory"}
    deadline = time.monotonic() + 120
    joined: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        joined = [e for e in _experiences(demo) if e["trace_id"] and e["bt"] and e["tier_ms"]]
        if wanted <= {e["bt"] for e in joined} and {"hq", "branch-east"} <= {e["site"] for e in joined}:
            break
        time.sleep(3)
    assert wanted <= {e["bt"] for e in joined}, {(e["bt"], e["kind"]) for e in joined}
    assert {"hq", "branch-east"} <= {e["site"] for e in joined}
    kinds = {e["kind"] for e in joined}
    assert {"page_load", "request"} <= kinds, kinds  # pages, and the fetches they make
    for experience in joined:
        tiers = experience["tier_ms"]
        assert "browser" in tiers, experience
        assert "network" in tiers, experience
        # The tiers split the user's wait: they add up to it (within 5 %, and 5 ms of rounding).
        assert sum(tiers.values()) == pytest.approx(experience["duration_ms"], rel=0.05, abs=5), experience
    # Every request to the branch crosses its WAN twice: 40 ms each way, at least.
    network = {
        site: _median(
            [e["tier_ms"]["network"] for e in joined if e["site"] == site and e["kind"] == "page_load"]
        )
        for site in ("hq", "branch-east")
    }
    assert network["branch-east"] > network["hq"] + 60, network
    # The experience's own API gives its trace.
    one = demo.api(f"/api/v1/experiences/{joined[0]['id']}")
    assert one["trace_id"] == joined[0]["trace_id"]


# The catalog as docs/demo.md documents it: each fault's tier and component.
FAULTS = {
    "db_slow": ("db", "SELECT sku, on_hand, pg_sleep(?) FROM inventory WHERE sku = ?"),
    "db_lock": ("db", "INSERT INTO leads"),
    "external_slow": ("external", "ext-services /verify-address"),
    "external_down": ("external", "ext-services /credit-check"),
    "app_cpu": ("app", "crm-web /pipeline"),
    "worker_backlog": ("platform", "erp-worker jobs"),
    "wan_latency": ("network", "branch-east link"),
    "browser_slow": ("browser", "crm-web /pipeline heavy.js"),
    "error_spike": ("app", "erp-api POST /api/orders"),
}


def test_faults_are_listed_with_tier_and_component(demo: DemoProcess) -> None:
    listing = demo.cli("faults")
    assert listing.returncode == 0, listing.stderr
    # One table row per fault: name, tier, component, what it affects, until when it is on.
    rows = {}
    for line in listing.stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
        if cells and cells[0] in FAULTS:
            rows[cells[0]] = cells
    assert set(rows) == set(FAULTS), listing.stdout
    for name, (tier, component) in FAULTS.items():
        assert rows[name][1:3] == [tier, component], rows[name]
    assert rows["worker_backlog"][3] == "ERP / Post invoice, ERP / Import customers"
    assert rows["wan_latency"][3] == "site branch-east"
    # --json: the same, for scripts.
    listed = demo.cli("faults", "--json")
    assert listed.returncode == 0, listed.stderr
    faults = {fault["fault"]: fault for fault in json.loads(listed.stdout)}
    assert {name: (f["tier"], f["component"]) for name, f in faults.items()} == FAULTS
    assert faults["db_slow"]["affected_bts"] == ["ERP / Check inventory"]
    assert faults["wan_latency"]["site"] == "branch-east"
    assert all(fault["active_until"] is None for fault in faults.values()), faults  # none on yet
    refused = demo.cli("fault", "disk_full", "--for", "1m")
    assert refused.returncode != 0
    assert "no fault 'disk_full'" in refused.stderr


def _summaries(demo: DemoProcess, since: float, until: float) -> dict[str, list[tuple[list[int], bool, str]]]:
    """Trace summaries by BT: (time per tier in µs, error, error tier)."""
    found: dict[str, list[tuple[list[int], bool, str]]] = {}
    with demo.store() as conn:
        rows = conn.execute(
            "SELECT bt, tier_us, error, coalesce(error_tier, '') FROM trace_summaries"
            " WHERE start_time >= %s AND start_time < %s",
            (datetime.fromtimestamp(since, UTC), datetime.fromtimestamp(until, UTC)),
        ).fetchall()
    for bt, tier_us, error, error_tier in rows:
        found.setdefault(bt, []).append((list(tier_us), bool(error), error_tier))
    return found


def _tier_ms(rows: Iterable[tuple[list[int], bool, str]], tier: str) -> float:
    values = [row[0][TIERS.index(tier)] / 1000 for row in rows]
    return sum(values) / len(values) if values else 0.0


def _tier_median(rows: Iterable[tuple[list[int], bool, str]], tier: str) -> float:
    return _median([row[0][TIERS.index(tier)] / 1000 for row in rows])


def _slow_share(rows: list[tuple[list[int], bool, str]], tier: str, ms: float) -> tuple[float, int]:
    """Of the calls that spent any time in ``tier``, the share that spent at least
    ``ms`` there, and how many calls that share is of."""
    column = TIERS.index(tier)
    seen = [row[0][column] / 1000 for row in rows if row[0][column] > 0]
    return (sum(1 for value in seen if value >= ms) / len(seen) if seen else 0.0), len(seen)


def _error_rate(rows: list[tuple[list[int], bool, str]], tier: str | None = None) -> float:
    if not rows:
        return 0.0
    return sum(1 for row in rows if row[1] and (tier is None or row[2] == tier)) / len(rows)


def _switch(demo: DemoProcess, names: list[str], seconds: int) -> dict[str, float]:
    """Switches the faults on; returns when each was on, at the latest."""
    on = {}
    for name in names[:1]:  # the CLI, as a user would...
        done = demo.cli("fault", name, "--for", f"{seconds}s")
        assert done.returncode == 0, done.stderr
        on[name] = time.time()
    for name in names[1:]:  # ...and the HTTP endpoint
        response = httpx.post(
            f"{demo.state()['control_url']}/faults/{name}", params={"for": seconds}, timeout=30
        )
        assert response.status_code == 200, response.text
        on[name] = time.time()
    return on


# What each fault must raise, in its targeted BT: (bt, tier, "time" in ms, "errors" as a rate, or
# "slow": calls seen in the tier take at least that many ms there).
SIGNATURES = {
    "db_slow": ("ERP / Check inventory", "db", "time", 200.0),
    "db_lock": ("CRM / Create lead", "db", "time", 150.0),
    "external_down": ("CRM / Contact detail", "external", "errors", 0.5),
    # Jobs run 0.4 s longer, and at busy times the queue grows: a job that starts more than the
    # settle delay (5 s here) after its request is a late span, counted and left out of the
    # summary processed before it came. What holds: of the posted invoices whose job is in
    # their summary, most spent >= 350 ms in it during the fault, and none before. Import
    # customers, its other BT, has too few calls in the window to judge.
    "worker_backlog": ("ERP / Post invoice", "platform", "slow", 350.0),
    "external_slow": ("CRM / Create lead", "external", "time", 800.0),
    "app_cpu": ("CRM / Opportunity pipeline", "app", "time", 80.0),
    "error_spike": ("ERP / Create sales order", "app", "errors", 0.25),
}
# For a "slow" signature: the share of the targeted BT's calls seen in the tier that must be
# past the limit during the fault (it is all of them once the fault is on, in runs so far).
SLOW_SHARE = 0.5
PHASES = [
    ["db_slow", "db_lock", "external_down", "worker_backlog", "wan_latency", "browser_slow"],
    ["external_slow", "app_cpu", "error_spike"],
]
FAULT_SECONDS = 40
# Tiers of an unrelated BT that must stay where they were: app_cpu spilling into the
# pipeline's neighbours shows in app (or web), error_spike in the error rate.
UNRELATED_TIERS = ("web", "app", "db", "external", "platform")
# Unrelated BTs with enough calls in a phase's window to be judged, at the least: a
# window with hardly any traffic must not pass by having nothing to compare.
MIN_UNRELATED = 4


def test_each_fault_leaves_its_signature_where_it_should_and_nowhere_else(demo: DemoProcess) -> None:
    # Every fault of the catalog is switched on, and has its signature checked below.
    assert sorted(name for phase in PHASES for name in phase) == sorted(CATALOG)
    assert set(CATALOG) - set(SIGNATURES) == {"wan_latency", "browser_slow"}  # checked from the users' side
    baseline_end = time.time()
    baseline = _summaries(demo, baseline_end - 600, baseline_end)
    control = demo.state()["control_url"]
    windows = []
    switched_on: dict[str, float] = {}
    for phase in PHASES:
        start = time.time()
        switched_on.update(_switch(demo, phase, FAULT_SECONDS))
        switched = time.time()  # the CLI takes seconds on a busy machine: the last fault is on from here
        time.sleep(FAULT_SECONDS)  # until every fault of the phase is off again
        # Judged while every fault of the phase is on: from the last switch to the first's end.
        windows.append((phase, switched + 3, start + FAULT_SECONDS - 1))
    time.sleep(SETTLE)
    problems = []
    for phase, since, until in windows:
        during = _summaries(demo, since, until)
        targets = {bt for name in phase for bt in CATALOG[name].bts}
        for name in phase:
            if name not in SIGNATURES:
                continue
            bt, tier, kind, rise = SIGNATURES[name]
            if len(during.get(bt, [])) < 3:
                problems.append(f"{name}: too few {bt} traces during the fault: {len(during.get(bt, []))}")
                continue
            if kind == "time":
                before, now = _tier_ms(baseline[bt], tier), _tier_ms(during[bt], tier)
                if now < before + rise:
                    problems.append(
                        f"{name}: {bt} {tier} {before:.0f} ms -> {now:.0f} ms, expected +{rise:.0f}"
                    )
            elif kind == "slow":
                # From the moment this fault was on: the first seconds are the ones whose jobs
                # still make it into their traces' summaries.
                own = _summaries(demo, switched_on[name], until).get(bt, [])
                (before, _), (now, seen) = _slow_share(baseline[bt], tier, rise), _slow_share(own, tier, rise)
                if seen < 3 or before > 0.1 or now < SLOW_SHARE:
                    problems.append(
                        f"{name}: {bt} calls with {tier} >= {rise:.0f} ms: {before:.0%} before, {now:.0%}"
                        f" of {seen} during, expected {SLOW_SHARE:.0%}"
                    )
            elif _error_rate(during[bt], tier) < rise:
                origins = sorted({row[2] for row in during[bt] if row[1]})
                problems.append(
                    f"{name}: {bt} errors in {tier} {_error_rate(during[bt], tier):.2f} < {rise}"
                    f" (all errors {_error_rate(during[bt]):.2f}, from {origins})"
                )
        # Unrelated business transactions: no tier rose beyond noise, no errors appeared.
        checked = []
        for bt, rows in during.items():
            # A mean of fewer calls is one slow call on a busy machine (imports are rare).
            if bt in targets or bt not in baseline or len(rows) < 5:
                continue
            checked.append(bt)
            for tier in UNRELATED_TIERS:
                # Medians: on a loaded 2-core machine (the browsers' own CPU included) a few
                # calls stall for a while, which moves a mean of a few dozen calls but not
                # what most users saw; a fault moves the median too.
                before, now = _tier_median(baseline[bt], tier), _tier_median(rows, tier)
                if now > 2 * before + 60:
                    problems.append(f"{phase}: unrelated {bt} {tier} {before:.0f} ms -> {now:.0f} ms")
            if _error_rate(rows) > _error_rate(baseline[bt]) + 0.1:
                problems.append(f"{phase}: unrelated {bt} errors {_error_rate(rows):.2f}")
        if len(checked) < MIN_UNRELATED:
            problems.append(f"{phase}: only {len(checked)} unrelated BTs had calls enough to judge {checked}")

    # The WAN fault is seen by users of one site only (no server span sees the network).
    def site_ms(site: str, since: float, until: float) -> float:
        sites = httpx.get(f"{control}/stats", params={"since": since, "until": until}, timeout=10).json()[
            "sites"
        ]
        # Actions no other fault of the phase touches: only the network differs.
        actions = [a for name, a in sites[site].items() if name in ("search", "leads", "rpc", "view_order")]
        return sum(a["mean_ms"] * a["count"] for a in actions) / sum(a["count"] for a in actions)

    # +250 ms each way is +500 ms a request; branch-east's users, slowed, then load the
    # shared apps less, so on a busy machine their server time shrinks a little.
    for site, rise in (("branch-east", 300), ("hq", 0), ("branch-west", 0)):
        before, now = site_ms(site, 0, baseline_end), site_ms(site, windows[0][1], windows[0][2])
        if (rise and now < before + rise) or (not rise and now > 2 * before + 100):
            problems.append(f"wan_latency: users at {site} saw {before:.0f} ms -> {now:.0f} ms")

    problems += _browser_slow_problems(demo, baseline_end, windows[0][1], windows[0][2])
    assert not problems, "\n".join(problems)
    # Every activation is recorded, with its tier, component, BTs and window.
    with demo.store() as conn:
        rows = conn.execute(
            "SELECT fault, tier, component, affected_bts, started_at, ended_at FROM demo_faults ORDER BY id"
        ).fetchall()
    assert [row[0] for row in rows] == [name for phase in PHASES for name in phase]
    for fault, tier, component, bts, started, ended in rows:
        assert (tier, component) == FAULTS[fault], fault
        assert (ended - started).total_seconds() == pytest.approx(FAULT_SECONDS, abs=1)
        if fault in SIGNATURES:
            assert SIGNATURES[fault][0] in bts
            assert SIGNATURES[fault][1] == tier
        if fault == "worker_backlog":
            assert "ERP / Import customers" in bts


def _browser_slow_problems(demo: DemoProcess, baseline_end: float, since: float, until: float) -> list[str]:
    """browser_slow: the pipeline page's browser tier rises (its script holds the main
    thread 1.2 s); its server tiers, hq's network and other pages' browser tier do not."""
    loads = [e for e in _experiences(demo) if e["kind"] == "page_load" and e["tier_ms"]]

    def tier(page: str, name: str, start: float, end: float, site: str | None = None) -> list[float]:
        return [
            e["tier_ms"].get(name, 0.0)
            for e in loads
            if e["page"] == page
            and (site is None or e["site"] == site)
            and start <= datetime.fromisoformat(e["start"]).timestamp() < end
        ]

    problems = []
    before, during = tier("/pipeline", "browser", 0, baseline_end), tier("/pipeline", "browser", since, until)
    if len(before) < 2 or len(during) < 2:
        return [f"browser_slow: too few /pipeline page loads ({len(before)} before, {len(during)} during)"]
    if _median(during) < _median(before) + 600:
        problems.append(f"browser_slow: /pipeline browser {_median(before):.0f} -> {_median(during):.0f} ms")
    checks = [("/pipeline", name, None) for name in ("app", "db")]
    # The WAN fault is on for branch-east at the same time: its pages fetch their
    # style sheets over the slow link after the response, which is browser time too
    # (one CI run: /contacts/{id} 113 -> 390 ms, both sites together). So hq only.
    checks += [("/pipeline", "network", "hq")]
    checks += [(page, "browser", "hq") for page in ("/leads", "/orders", "/contacts/{id}")]
    for page, name, site in checks:
        before = tier(page, name, 0, baseline_end, site)
        during = tier(page, name, since, until, site)
        if len(before) >= 2 and len(during) >= 2 and _median(during) > 2 * _median(before) + 150:
            problems.append(
                f"browser_slow: unrelated {page} {name} {_median(before):.0f} -> {_median(during):.0f} ms"
            )
    return problems


# The console's pages (GET routes of tierscope.dashboards.console, sign-in aside), each
# with what it must show of the demo. A page added to the router fails the test until
# it is checked here too.
CONSOLE_PAGES = {"/", "/bt", "/trace/{trace_id}", "/experiences", "/experiences/{experience_id}"}
CONSOLE_PAGES |= {"/services", "/slos", "/alerts"}
CONSOLE_ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
CONSOLE_BT = ("crm-web", "CRM / Lead list")  # a page the browser users open, from every site


def _console_ready(demo: DemoProcess) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """An experience joined with its trace, and the transactions, once the demo has
    them (at once after the tests above; within a couple of minutes when run alone)."""
    deadline = time.monotonic() + 180
    while True:
        rows = demo.api("/api/v1/transactions", **{"from": "1h"})["transactions"]
        names = {row["bt"] for row in rows}
        joined = [
            e
            for e in _experiences(demo)
            if e["trace_id"] and e["bt"] == CONSOLE_BT[1] and e["kind"] == "page_load" and e["tier_ms"]
        ]
        if (set(CRM) | set(ERP)) <= names and joined:
            return joined[0], rows
        if time.monotonic() > deadline:
            raise AssertionError(f"the demo has no data for the console yet: {sorted(names)}, {len(joined)}")
        time.sleep(3)


def test_every_console_page_renders_the_demo_in_chromium(demo: DemoProcess, page: Any) -> None:
    """Sign in to the running demo's console with its API token, in real headless
    Chromium, and open every console page: each answers 200 and shows the demo's
    transactions, sites, services, SLOs and traces, with no script error or
    console error; a screenshot of each is kept in test-artifacts/console/demo-*.png."""
    experience, transactions = _console_ready(demo)
    console = [
        endpoint
        for endpoint in endpoints(collector_app())
        if endpoint.method == "GET"
        and endpoint.module.startswith("tierscope.dashboards.console")
        and endpoint.path != "/login"
    ]
    assert {endpoint.path for endpoint in console} == CONSOLE_PAGES

    problems: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None,
    )
    page.goto(f"{demo.url}/")
    assert page.url.endswith("/login")
    page.fill("input[name=token]", json.loads((demo.data_dir / "credentials.json").read_text())["api_token"])
    page.click("button[type=submit]")
    page.wait_for_url(f"{demo.url}/")

    def text(selector: str) -> str:  # text content: SVG elements have no innerText
        return " ".join(page.locator(selector).all_text_contents())

    def overview() -> None:
        rows = page.locator("table.transactions tbody tr")
        assert rows.count() >= len(CRM) + len(ERP), rows.count()
        shown = text("table.transactions tbody")
        assert all(bt in shown for bt in CRM + ERP), shown
        assert page.locator("table.transactions svg.bar rect").count() >= rows.count()  # time per tier
        assert "%" in text("table.transactions td.slo")  # the demo's SLOs, achieved against target

    def transaction() -> None:
        assert page.locator("h1").inner_text() == CONSOLE_BT[1]
        assert page.locator("svg.chart").count() == 3  # calls, latency, time per tier
        assert page.locator("svg.chart path, svg.chart polyline, svg.chart rect").count() > 0
        assert page.locator("td.component").count() >= 1  # its top components
        sites = text("table.sites tbody td:first-child")
        assert "hq" in sites, sites
        assert "branch-east" in sites, sites
        assert page.locator('a[href^="/trace/"]').count() >= 1  # its recent traces

    def trace() -> None:
        waterfall = page.locator("svg.waterfall")
        assert waterfall.locator("rect.span").count() >= 2
        assert waterfall.locator("rect.segment").count() >= 2  # the browser and network above
        assert "crm-web" in (waterfall.text_content() or "")

    def experiences() -> None:
        groups = text("table.vitals tbody")
        assert CONSOLE_BT[1] in groups, groups
        assert "hq" in groups, groups
        assert "branch-east" in groups, groups
        assert page.locator('a[href^="/experiences/"]').count() >= 1

    def one_experience() -> None:
        assert page.locator("h1").inner_text() == CONSOLE_BT[1]
        assert page.get_by_text("The user waited").count() == 1
        assert page.locator("svg.waterfall rect.span").count() >= 1

    def services() -> None:
        nodes = text("svg.map text.node")
        for service in ("crm-web", "erp-api", "erp-worker"):
            assert service in nodes, nodes
        assert page.locator("main table tbody tr").count() >= 3

    def service_levels() -> None:
        shown = text("main table tbody")
        slos = demo.api("/api/v1/slos")["slos"]
        assert slos, "the demo ships SLOs"
        assert all(slo["name"] in shown for slo in slos), shown

    def alert_list() -> None:
        # The page lists what the alert API listed (alerts depend on the faults so
        # far, and may change while we look: the page is read again after the API).
        alerts = [a for a in demo.api("/api/v1/alerts", since="24h")["alerts"] if a["state"] != "pending"]
        page.reload()
        if alerts:
            for alert in alerts:
                assert page.locator(f"section.alert#alert-{alert['id']} h2").count() == 1, alert["title"]
        elif page.locator("section.alert").count() == 0:
            assert "No alerts." in text("main p.empty")

    bt = httpx.QueryParams({"service": CONSOLE_BT[0], "bt": CONSOLE_BT[1]})
    checks: dict[str, tuple[str, Callable[[], None]]] = {
        "/": ("overview", overview),
        "/bt": ("transaction", transaction),
        "/trace/{trace_id}": ("trace", trace),
        "/experiences": ("experiences", experiences),
        "/experiences/{experience_id}": ("experience", one_experience),
        "/services": ("services", services),
        "/slos": ("slos", service_levels),
        "/alerts": ("alerts", alert_list),
    }
    ids = {"trace_id": experience["trace_id"], "experience_id": experience["id"]}
    for endpoint in console:
        name, check = checks[endpoint.path]
        url = demo.url + endpoint.url(ids) + (f"?{bt}" if endpoint.path == "/bt" else "")
        response = page.goto(url)
        assert response is not None
        assert response.status == 200, (url, response.status, page.locator("body").inner_text()[:300])
        check()
        screenshot(page, CONSOLE_ARTIFACTS / f"demo-{name}.png")
    assert page.page_errors == []
    assert [p for p in problems if "favicon" not in p] == []
    assert {row["bt"] for row in transactions} >= set(CRM) | set(ERP)


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # ended, not yet reaped by init
    except psutil.NoSuchProcess:
        return True


def _command(process: psutil.Process) -> str:
    """Its command line; "" for a child that has just ended (a zombie has none)."""
    try:
        return " ".join(process.cmdline())
    except psutil.NoSuchProcess:  # ZombieProcess included
        return ""


def test_ctrl_c_stops_everything(demo: DemoProcess) -> None:
    tree = demo.tree()
    services = {_command(p) for p in tree}
    assert any("tierscope.demo.apps.erp" in c for c in services)
    assert any("gunicorn" in c for c in services)
    postgres = int((demo.data_dir / "postgres" / "postmaster.pid").read_text().split()[0])
    assert demo.interrupt() == 0, demo.log()
    # Children end with their parent or just after it (multiprocessing's resource tracker).
    _, left = psutil.wait_procs(tree, timeout=15)
    left = [p for p in left if not _gone(p.pid)]
    assert not left, [_command(p) for p in left]
    assert _gone(postgres)
    assert not (demo.data_dir / "demo" / "estate.json").exists()
    assert "tierscope stopped." in demo.log()
