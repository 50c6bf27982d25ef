"""Grafana dashboards as code: valid models, committed JSON in step with the
code, every panel's SQL run on a real processed store with the right figures,
and push through Grafana's API contract (idempotent)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import io
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pypdf
import pypdfium2
import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner
from grafana_foundation_sdk.cog.encoder import JSONEncoder as GrafanaJSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.cog.runtime import UnknownDataquery, panelcfg_config
from grafana_foundation_sdk.models.common import StackingMode
from grafana_foundation_sdk.models.dashboard import Dashboard as GrafanaDashboard
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    RowPanel,
    ThresholdsMode,
    VariableHide,
    VariableRefresh,
    VariableSort,
    VariableType,
)
from grafana_foundation_sdk.models.prometheus import Dataquery as PrometheusQuery
from prometheus_client.parser import text_string_to_metric_families

from tierscope.cli.main import main
from tierscope.dashboards import provision, render
from tierscope.dashboards.boards import all_dashboards
from tierscope.dashboards.console.common import may
from tierscope.dashboards.console.rum_figures import experience_groups
from tierscope.dashboards.grafana import GRID_WIDTH, POSTGRES, PROMETHEUS
from tierscope.dashboards.report import Period, Report, gather, parse_period
from tierscope.dashboards.schedule import last_complete
from tierscope.store.tenants import KeyInfo
from tierscope.testing import otlp
from tierscope.testing.collector import CollectorProcess
from tierscope.testing.grafana import GrafanaStandIn, expand

from . import seed
from .test_console_speed import server_ms
from .test_processing import MS, post, query, summaries, two_service_trace, wait_for

TOKEN = "glsa_test_token"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "report"  # git-ignored
BOARDS = (
    "tierscope-services-1",
    "tierscope-transaction-1",
    "tierscope-experience-1",
    "tierscope-slos-1",
    "tierscope-alerts-1",
    "tierscope-platform",
)


def sql_targets() -> list:
    """(dashboard, panel, SQL) of every PostgreSQL query."""
    return [
        pytest.param(board.title, panel.title, target.query, id=f"{board.title} / {panel.title}")
        for board in all_dashboards(1)
        for panel in board.panels()
        if panel.datasource is POSTGRES
        for target in panel.targets
    ]


@pytest.mark.parametrize("board", all_dashboards(7), ids=lambda b: b.uid)
def test_every_dashboard_is_a_valid_grafana_model(board) -> None:
    model = board.to_json()
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: set[tuple[int, int]] = set()
    for panel in model["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0
        assert grid["x"] + grid["w"] <= GRID_WIDTH
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] in (POSTGRES["uid"], PROMETHEUS["uid"])
            query = target.get("rawSql") or target.get("expr")
            assert query
            defined = {v["name"] for v in model["templating"]["list"]}
            used = set(re.findall(r"\$\{?([a-z]+)", query)) - {"_"}
            assert used <= defined, f"{panel['title']} uses undefined variables {used - defined}"
    variables = {v["name"]: v for v in model["templating"]["list"]}
    if any(p.datasource is POSTGRES for p in board.panels()):  # SQL panels read one tenant's rows
        assert variables["tenant"]["type"] == "constant"
        assert variables["tenant"]["query"] == "7"
    json.dumps(model)  # plain JSON


def lost_on_the_way(ours: Any, again: Any, path: str = "") -> list[str]:
    """What of ``ours`` did not come back from a round trip through a model: keys it
    does not know are dropped, values it reads otherwise change."""
    if isinstance(ours, dict):
        if not isinstance(again, dict):
            return [f"{path}: became {again!r}"]
        return [
            problem
            for key, value in ours.items()
            for problem in (
                lost_on_the_way(value, again[key], f"{path}.{key}") if key in again else [f"{path}.{key}"]
            )
        ]
    if isinstance(ours, list):
        if not isinstance(again, list) or len(again) != len(ours):
            return [f"{path}: became {again!r}"]
        return [
            p
            for index, pair in enumerate(zip(ours, again, strict=True))
            for p in lost_on_the_way(*pair, f"{path}[{index}]")
        ]
    return [] if ours == again else [f"{path}: {ours!r} became {again!r}"]


def grafana_round_trip(model: dict[str, Any]) -> dict[str, Any]:
    register_default_plugins()  # the SDK's panel and query types, so panels decode as Grafana's
    return json.loads(json.dumps(GrafanaDashboard.from_json(model), cls=GrafanaJSONEncoder))


@pytest.mark.parametrize("path", sorted(provision.GENERATED.glob("*.json")), ids=lambda path: path.stem)
def test_every_committed_dashboard_is_grafanas_own_dashboard_model(path: Path) -> None:
    """Loaded into grafana-foundation-sdk's Dashboard (Grafana's schema, generated
    from its CUE definitions) and written out again, nothing is lost or changed;
    enumerated fields hold values Grafana's schema allows."""
    ours = json.loads(path.read_text())
    assert lost_on_the_way(ours, grafana_round_trip(ours)) == []
    register_default_plugins()
    model = GrafanaDashboard.from_json(ours)
    assert (model.uid, model.schema_version) == (path.stem, 39)  # Grafana 10.4's, as the SDK's
    DashboardCursorSync(ours["graphTooltip"])
    for variable in ours["templating"]["list"]:
        VariableType(variable["type"])
        VariableHide(variable["hide"])
        if variable["type"] == "query":
            VariableRefresh(variable["refresh"])
            VariableSort(variable["sort"])
    for panel, loaded in zip(ours["panels"], model.panels, strict=True):
        if panel["type"] == "row":
            assert isinstance(loaded, RowPanel)
            continue
        assert panelcfg_config(panel["type"]) is not None, f"{panel['type']} is no panel type of Grafana's"
        defaults = panel["fieldConfig"]["defaults"]
        if "thresholds" in defaults:
            ThresholdsMode(defaults["thresholds"]["mode"])
        if "custom" in defaults:
            StackingMode(defaults["custom"]["stacking"]["mode"])
        for target in loaded.targets or []:
            # The SDK models Prometheus queries; the PostgreSQL datasource's it keeps as they are.
            expected = PrometheusQuery if panel["datasource"] == PROMETHEUS else UnknownDataquery
            assert isinstance(target, expected), (panel["title"], type(target))


def test_a_key_grafanas_model_does_not_know_is_caught() -> None:
    board = json.loads((provision.GENERATED / "tierscope-platform.json").read_text())
    board["panels"][1]["gridpos"] = board["panels"][1].pop("gridPos")  # misspelled
    board["panels"][1]["targets"][0]["legend"] = board["panels"][1]["targets"][0].pop("legendFormat")
    assert lost_on_the_way(board, grafana_round_trip(board)) == [
        ".panels[1].targets[0].legend",
        ".panels[1].gridpos",
    ]
    with pytest.raises(ValueError, match="constnt"):
        VariableType("constnt")


def test_the_committed_json_is_what_the_code_generates(tmp_path: Path) -> None:
    fresh = {path.name: path.read_text() for path in provision.write_generated(tmp_path)}
    committed = {path.name: path.read_text() for path in provision.GENERATED.glob("*.json")}
    assert fresh == committed, "dashboards/generated/ is stale: run `make dashboards` and commit"


@pytest.fixture(scope="module")
def processed(
    collector_factory: Callable[..., CollectorProcess], tmp_path_factory: pytest.TempPathFactory
) -> CollectorProcess:
    """A store with 40 processed traces of crm-web POST /leads (1000 ms: 200 ms INSERT,
    a 500 ms call to erp-api whose own 400 ms hold a 200 ms SELECT), the browser
    experiences that made them, two SLOs, two alerts and weeks of hour rollups
    (see seed.py). The page loads stay out of the RUM rollups for the whole module
    (they wait for their final Web Vitals, here an hour): what the console shows
    of the last minutes is tested on a store that holds both."""
    collector = collector_factory(**seed.SETTINGS, TIERSCOPE_RUM_ROLLUP_WAIT="1h")
    seed.everything(collector, tmp_path_factory.mktemp("seed"))
    return collector


def run_panel(dsn: str, sql: str, hours: float, bt: str = "POST /leads") -> list[tuple]:
    end = datetime.now(UTC) + timedelta(minutes=1)
    query = expand(
        sql, end - timedelta(hours=hours), end, "1m", {"tenant": "1", "service": "crm-web", "bt": bt}
    )
    with psycopg.connect(dsn) as conn:
        return conn.execute(query).fetchall()  # type: ignore[arg-type]


@pytest.mark.parametrize("hours", [6, 24 * 30], ids=["six hours of minute rows", "thirty days of hour rows"])
@pytest.mark.parametrize(("board", "panel", "sql"), sql_targets())
def test_every_panel_query_runs_on_a_processed_store(
    processed: CollectorProcess, board: str, panel: str, sql: str, hours: float
) -> None:
    rows = run_panel(processed.database_url or "", sql, hours)
    assert rows, f"{board} / {panel} returned nothing over {hours} h of processed traces"


PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool"}
PROMQL_KEYWORDS |= {"and", "or", "unless", "inf", "nan"}


def promql_metrics(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: the identifiers left once strings,
    label matchers, ranges and grouping clauses are gone, that call nothing."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    return {
        found[0]
        for found in re.finditer(r"(?<![\w.])[A-Za-z_:][\w:]*", text)
        if not text[found.end() :].lstrip().startswith("(") and found[0].lower() not in PROMQL_KEYWORDS
    }


def exposed_names(text: str) -> set[str]:
    """Every series name a scrape offers: those with samples, and those a declared
    family will have (a counter with labels shows its HELP and TYPE before any sample)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {sample.name for sample in family.samples}
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    return names


def test_promql_metric_names_parse_as_prometheus_reads_them() -> None:
    assert promql_metrics(
        'histogram_quantile(0.99, sum by (le) (rate(a_seconds_bucket{route="/x"}[5m])))'
    ) == {"a_seconds_bucket"}
    assert promql_metrics("sum(rate(a_total[5m])) / ignoring(x) b_total offset 1h and on(y) c") == {
        "a_total",
        "b_total",
        "c",
    }


def test_every_prometheus_panel_reads_metrics_the_collector_exposes(processed: CollectorProcess) -> None:
    # A refused request and a rejected span: with several workers prometheus_client
    # shows a labelled counter only once it has a sample (no HELP or TYPE before).
    key = processed.credentials()["ingest_key"]
    refused = otlp.post(processed.url, key, b"not protobuf")
    assert refused.status_code == 400, refused.text
    backwards = otlp.span("GET /backwards", duration_ms=-5)  # ends before it starts: rejected alone
    partial = otlp.post(processed.url, key, otlp.request([backwards], service="crm-web").SerializeToString())
    assert partial.status_code == 200, partial.text
    scrape = httpx.get(f"{processed.url}/metrics")
    assert scrape.status_code == 200
    exposed = exposed_names(scrape.text)
    checked = 0
    for board in all_dashboards(1):
        for panel in board.panels():
            if panel.datasource is not PROMETHEUS:
                continue
            for target in panel.targets:
                used = promql_metrics(target.query)
                assert used, f"{panel.title}: no metric in {target.query}"
                assert used <= exposed, f"{board.title} / {panel.title} reads {used - exposed}"
                checked += 1
    assert checked == 8  # the platform board's queries


def test_every_template_variable_query_runs_on_a_processed_store(processed: CollectorProcess) -> None:
    """The drop-downs: the tenant's services, then the chosen service's transactions."""
    dsn = processed.database_url or ""
    known = query(dsn, "SELECT service, name FROM business_transactions WHERE tenant_id = 1")

    def offered(sql: str, **chosen: str) -> list[str]:
        now = datetime.now(UTC)
        with psycopg.connect(dsn) as conn:
            expanded = expand(sql, now - timedelta(hours=6), now, "1m", {"tenant": "1", **chosen})
            return [row[0] for row in conn.execute(expanded).fetchall()]  # type: ignore[arg-type]

    variables = {
        (board.uid, v.name): v.query for board in all_dashboards(1) for v in board.variables if v.query
    }
    assert {name for _, name in variables} == {"service", "bt"}
    for (uid, name), sql in variables.items():
        if name == "service":
            services = offered(sql)
            assert services == sorted({service for service, _ in known}), uid
            assert "crm-web" in services  # erp-api is called, never entered: it names no BT
        else:
            for service in ("crm-web", "erp-api"):
                names = offered(sql, service=service)
                assert names == sorted(bt for s, bt in known if s == service), (uid, service)
            assert "POST /leads" in offered(sql, service="crm-web")
            assert offered(sql, service="erp-api") == []


def test_panel_figures_match_the_traces(processed: CollectorProcess) -> None:
    dsn = processed.database_url or ""
    by_title = {
        (b.uid.rsplit("-", 1)[0], p.title): p.targets[0].query for b in all_dashboards(1) for p in b.panels()
    }
    for hours in (6, 24 * 30):
        table = run_panel(dsn, by_title["tierscope-services", "Transactions"], hours)
        assert len(table) == 1
        name, calls, errors, mean_ms, p95_ms, apdex = table[0]
        assert (name, calls, float(errors)) == ("POST /leads", 40, 0.0)
        assert float(mean_ms) == pytest.approx(1000)
        assert float(p95_ms) == pytest.approx(1000, rel=0.02)  # from the histograms: within 2 %
        assert float(apdex) == pytest.approx(0.5)  # 1000 ms against T = 500 ms: tolerating
        tiers = run_panel(dsn, by_title["tierscope-services", "Time per tier (mean per call)"], hours)
        totals: dict[object, dict[str, float]] = {}
        for step, tier, value in tiers:
            totals.setdefault(step, {})[tier] = float(value)
        # Each step's stack is the mean duration of the calls in it; here every trace is alike.
        for stack in totals.values():
            assert sum(stack.values()) == pytest.approx(1000, rel=0.01)
    components = run_panel(dsn, by_title["tierscope-transaction", "Top components by self time"], 6)
    # Self time per call: crm-web's own 300 ms first, then each statement's 200 ms.
    tier, _, calls, _, _, per_call = components[0]
    assert (tier, calls, float(per_call)) == ("app", 40, pytest.approx(300))
    statements = [float(row[5]) for row in components if row[0] == "db"]
    assert statements == [pytest.approx(200), pytest.approx(200)]  # INSERT and SELECT: one trace, one BT


def panel(uid: str, title: str) -> str:
    found = [
        p.targets[0].query for b in all_dashboards(1) if b.uid == uid for p in b.panels() if p.title == title
    ]
    assert len(found) == 1, (uid, title)
    return found[0]


def test_user_experience_slo_and_alert_panels_show_the_seeded_figures(processed: CollectorProcess) -> None:
    dsn = processed.database_url or ""
    vitals = run_panel(dsn, panel("tierscope-experience-1", "Web Vitals by page and site"), 6)
    by_page = {(row[0], row[1]): row for row in vitals}
    # Every tenth page load is named with markup; the others are /leads/new, half from each site.
    assert by_page["/leads/new", "Hamburg"][2] == 16
    assert by_page["/leads/new", "Lyon"][2] == 20
    assert float(by_page["/leads/new", "Hamburg"][3]) == pytest.approx(1200)  # LCP p75
    assert float(by_page["/leads/new", "Lyon"][3]) == pytest.approx(3600)  # Lyon waits three times longer
    assert float(by_page["/leads/new", "Lyon"][4]) == pytest.approx(240)  # INP p75
    assert float(by_page["/leads/new", "Lyon"][-1]) == 0.0  # no good LCP in Lyon
    assert (f"/leads/{seed.IMG}", "Hamburg") in by_page  # stored and shown as it came: text
    split = run_panel(dsn, panel("tierscope-experience-1", "Where users' time goes (mean per experience)"), 6)
    assert {"browser", "network", "app", "db"} <= {tier for _, tier, _ in split}
    sites = run_panel(dsn, panel("tierscope-experience-1", "What users waited p75 by site"), 6)
    assert {site for _, site, _ in sites} == set(seed.SITES)

    budgets = {
        row[0]: row
        for row in run_panel(dsn, panel("tierscope-slos-1", "Error budget over each SLO's window"), 6)
    }
    # Every call took 1000 ms: none meets 800 ms, all succeeded.
    assert float(budgets["leads-fast"][4]) == 0.0
    assert float(budgets["leads-fast"][5]) == pytest.approx(-9900)  # a hundred budgets of 1 % spent
    assert float(budgets["leads-available"][4]) == 100.0
    assert float(budgets["leads-available"][5]) == 100.0
    assert budgets["leads-fast"][6] == 40
    for hours in (6, 24 * 30):
        compliance = run_panel(dsn, panel("tierscope-slos-1", "Compliance"), hours)
        # The business service's SLO too: its last step holds only POST /leads' calls (the
        # failures of POST /orders are before this month, seed.order_history).
        assert {name: float(value) for _, name, value in compliance} == {
            "leads-fast": 0.0,
            "leads-available": 100.0,
            "order-to-cash-available": 100.0,
        }
        burn = run_panel(dsn, panel("tierscope-slos-1", "Burn rate"), hours)
        assert {name: float(value) for _, name, value in burn} == {
            "leads-fast": pytest.approx(100.0),
            "leads-available": 0.0,
            "order-to-cash-available": 0.0,
        }
    owned = run_panel(dsn, panel("tierscope-slos-1", "Bad events by tier"), 6)
    fast = {tier: float(bad) for name, tier, bad, _ in owned if name == "leads-fast"}
    assert sum(fast.values()) == pytest.approx(40)
    assert fast["db"] == pytest.approx(16)  # 400 of each 1000 ms were SQL

    listed = run_panel(dsn, panel("tierscope-alerts-1", "Alerts"), 6)
    assert [(row[1], row[5], row[10], row[11]) for row in listed] == [
        ("firing", "db", 12, 120.0),
        ("resolved", "network", 5, 30.0),
    ]
    assert float(listed[1][9]) == pytest.approx(60, abs=0.2)  # resolved after an hour
    assert run_panel(dsn, panel("tierscope-alerts-1", "Open alerts"), 6) == [(1,)]
    tiers = {
        row[0]: row[1] for row in run_panel(dsn, panel("tierscope-alerts-1", "Alerts by suspected tier"), 6)
    }
    assert tiers == {"db": 1, "network": 1}
    assert run_panel(dsn, panel("tierscope-alerts-1", "Alerts by suspected tier"), 1) == [
        ("db", 1, 12, 120.0, pytest.approx(20, abs=0.5))
    ]  # the network alert ended before the last hour


def test_push_creates_everything_once_and_is_idempotent(processed: CollectorProcess) -> None:
    with GrafanaStandIn(TOKEN) as grafana:
        env = {"TIERSCOPE_DATABASE_URL": processed.database_url or ""}
        args = ["dashboards", "push", "--grafana-url", grafana.url, "--token", TOKEN]
        first = CliRunner().invoke(main, [*args, "--prometheus-url", "http://127.0.0.1:9090"], env=env)
        assert first.exit_code == 0, first.output
        assert "created folder tierscope" in first.output
        assert set(grafana.folders) == {"tierscope"}
        assert set(grafana.datasources) == {POSTGRES["uid"], PROMETHEUS["uid"]}
        postgres = grafana.datasources[POSTGRES["uid"]]
        assert postgres["type"] == "grafana-postgresql-datasource"
        assert postgres["jsonData"]["database"]
        assert {uid: d["folderUid"] for uid, d in grafana.dashboards.items()} == dict.fromkeys(
            BOARDS, "tierscope"
        )
        before = {uid: d["dashboard"]["panels"] for uid, d in grafana.dashboards.items()}
        again = CliRunner().invoke(main, [*args, "--prometheus-url", "http://127.0.0.1:9090"], env=env)
        assert again.exit_code == 0, again.output
        assert "created" not in again.output
        assert len(grafana.folders) == 1
        assert len(grafana.datasources) == 2
        assert len(grafana.dashboards) == len(BOARDS)
        assert {uid: d["dashboard"]["panels"] for uid, d in grafana.dashboards.items()} == before
        assert {d["version"] for d in grafana.dashboards.values()} == {2}
        refused = CliRunner().invoke(
            main, ["dashboards", "push", "--grafana-url", grafana.url, "--token", "x"], env=env
        )
        assert refused.exit_code != 0
        assert "check --token" in refused.output


def test_export_writes_grafana_file_provisioning(processed: CollectorProcess, tmp_path: Path) -> None:
    env = {"TIERSCOPE_DATABASE_URL": processed.database_url or ""}
    result = CliRunner().invoke(main, ["dashboards", "export", str(tmp_path)], env=env)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "dashboards").iterdir()) == sorted(f"{b}.json" for b in BOARDS)
    sources = tmp_path / "provisioning" / "datasources" / "tierscope.yaml"
    assert sources.stat().st_mode & 0o077 == 0, "the datasource file holds a password"
    assert "tierscope PostgreSQL" in sources.read_text()
    assert (
        str(tmp_path / "dashboards")
        in (tmp_path / "provisioning" / "dashboards" / "tierscope.yaml").read_text()
    )


def test_the_sla_report_as_pdf_and_html(processed: CollectorProcess, tmp_path: Path) -> None:
    env = {"TIERSCOPE_DATABASE_URL": processed.database_url or ""}
    # A transaction named by hostile telemetry: it must stay text in the report.
    before = summaries(processed.database_url or "")
    evil = two_service_trace(time.time_ns() - 120_000 * MS, route="/<script>alert(1)</script>")
    post(processed, evil["crm-web"], "crm-web")
    wait_for(lambda: summaries(processed.database_url or "") == before + 1)
    time.sleep(1.0)
    period = datetime.now(UTC).strftime("%Y-%m")

    result = CliRunner().invoke(
        main, ["report", "--period", period, "--out", str(tmp_path / "r.pdf")], env=env
    )
    assert result.exit_code == 0, result.output
    assert "2 of 3 objectives met" in result.output
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(tmp_path / "r.pdf").pages)
    text = " ".join(text.split())
    for expected in (
        f"SLA report {period}",
        "Summary",
        "Service levels",
        "Business transactions",
        "2 of 3 service level objectives were met",
        "Create lead under 800 ms (crm-web / POST /leads) was missed: 0.0 % against a target of 99.00 %",
        "100.00 %",  # availability achieved
        "exhausted (100.0× spent)",  # every call slower than 800 ms: a hundred budgets of 1 %
        "POST /leads",
        "Incidents",
        "2 incidents affected 17 users for",  # 12 and 5 (seed.alerts)
        "estimated cost 150.00",
        "The largest: POST /leads is slow: the database (SELECT score FROM credit) left its baseline "
        "(12 users, 2",  # twenty-odd minutes
        "Slowest pages and sites",
        "Users waited longest on POST /leads: 3.36 s or less for three in four actions.",  # Lyon's
        "Users at Lyon waited longest (3.36 s at p75",
        "Hamburg",
        "Forecasts and capacity",
        "erp-api / POST /invoices: load 5.",  # 337.5 calls an hour on average
        "Capacity: erp-api / POST /invoices grows +1.",  # 1 % a day
    ):
        assert expected in text, expected
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for number, each in enumerate(pypdfium2.PdfDocument(tmp_path / "r.pdf"), start=1):
        page = each.render(scale=1).to_pil().convert("L")
        dark = sum(page.histogram()[:200])  # pixels darker than light grey
        assert dark > 0.01 * page.width * page.height, f"page {number} renders (nearly) blank"
        page.save(ARTIFACTS / f"report-page-{number}.png")

    result = CliRunner().invoke(
        main, ["report", "--period", period, "--out", str(tmp_path / "r.html")], env=env
    )
    assert result.exit_code == 0, result.output
    html = (tmp_path / "r.html").read_text()
    assert html.count("<svg") == 4  # compliance trend, time per tier, sites, capacity
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>" not in html

    bad = CliRunner().invoke(
        main, ["report", "--period", "2026-13", "--out", str(tmp_path / "x.pdf")], env=env
    )
    assert bad.exit_code != 0
    assert "use a month like 2026-10" in bad.output


def gathered(collector: CollectorProcess, period: Period, service: str | None = None) -> Report:
    async def read() -> Report:
        async with await psycopg.AsyncConnection.connect(collector.database_url or "", autocommit=True) as c:
            return await gather(c, 1, "default", period, service)

    return asyncio.run(read())


def test_the_sla_report_trends_each_objective_and_names_the_business_service_and_the_tier(
    processed: CollectorProcess,
) -> None:
    """The compliance of earlier periods, a business service's SLO as its own row,
    and which tier owned the bad events — in the figures and in the HTML."""
    now = datetime.now(UTC)
    report = gathered(processed, parse_period(now.strftime("%Y-%m")))
    assert len(report.periods) == 6
    assert report.periods[-1] == now.strftime("%Y-%m")
    by_name = {c.name: c for c in report.compliance}
    assert set(by_name) == {"Create lead under 800 ms", "leads-available", "Order to cash available"}

    business = by_name["Order to cash available"]
    assert (business.subject, business.criticality, business.objective) == (
        seed.BUSINESS_SERVICE,
        "critical",
        "availability",
    )
    # Earlier periods: the 28-day window ending with each month holds only that month's
    # POST /orders days, k of each 100 calls failed k months ago (seed.order_history).
    days = [
        row[0]
        for row in query(
            processed.database_url or "",
            "SELECT bucket FROM bt_rollups WHERE service = 'erp-api' AND bt = 'POST /orders'",
        )
    ]
    trend = dict(business.trend)
    assert list(trend) == report.periods
    for label in report.periods[:-1]:
        period = parse_period(label)
        held = [d for d in days if period.end - timedelta(days=28) <= d < period.end]
        expected = 1 - seed.months_ago(period.start, now) / 100 if held else None
        assert trend[label] == (pytest.approx(expected) if held else None), label
    assert trend[report.periods[-2]] == pytest.approx(0.99)  # always within the history kept
    assert trend[report.periods[-3]] == pytest.approx(0.98)
    assert trend[report.periods[0]] is None  # five months ago: older than the hour rollups kept
    # The transactions' own SLOs have nothing before this month.
    fast = by_name["Create lead under 800 ms"]
    assert [sli for _, sli in fast.trend] == [None] * 5 + [0.0]
    # Which tier owned the bad events, in proportion to each tier's share of what users
    # waited (every action was slower than 800 ms): in Hamburg 1120 ms, in Lyon 3360 ms;
    # of each, 1000 ms on the servers (crm-web 300 + erp-api 200 app, 2 × 200 SQL, 100 between
    # the services), 110 ms network, the rest the browser (seed.experiences).
    waited = 1120 + 3360
    assert fast.attribution == {
        "browser": pytest.approx((10 + 2250) / waited, abs=1e-4),
        "app": pytest.approx(2 * 500 / waited, abs=1e-4),
        "db": pytest.approx(2 * 400 / waited, abs=1e-4),
        "network": pytest.approx(2 * 110 / waited, abs=1e-4),
        "external": pytest.approx(2 * 100 / waited, abs=1e-4),
    }

    html = render.html(report)
    assert (
        f"<tr><td>Order to cash available</td><td>{seed.BUSINESS_SERVICE}</td><td>critical</td>"
        "<td>availability</td>" in html
    )
    row = html[html.index("<tr><td>Create lead under 800 ms</td>") :].split("</tr>")[0]
    assert row.endswith("<td>browser 50 %, app 22 %, db 18 %, network 5 %, external 4 %</td>"), row


def report_cli(collector: CollectorProcess, *args: str) -> str:
    env = {"TIERSCOPE_DATABASE_URL": collector.database_url or ""}
    result = CliRunner().invoke(
        main, ["report", "--period", datetime.now(UTC).strftime("%Y-%m"), *args], env=env
    )
    assert result.exit_code == 0, result.output
    return result.output


def section(html: str, heading: str) -> list[list[str]]:
    """The rows (cell texts) of the tables under one ``<h2>`` of the report's HTML."""
    part = html.split(f"<h2>{heading}</h2>")[1].split("<h2>")[0]
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", part, re.S)
        if "<td" in row
    ]


def test_the_report_format_flag_wins_over_the_suffix_and_service_keeps_to_that_service(
    processed: CollectorProcess, tmp_path: Path
) -> None:
    period = datetime.now(UTC).strftime("%Y-%m")
    report_cli(processed, "--format", "pdf", "--out", str(tmp_path / "x.bin"))
    assert (tmp_path / "x.bin").read_bytes().startswith(b"%PDF-")
    text = " ".join(page.extract_text() for page in pypdf.PdfReader(tmp_path / "x.bin").pages)
    assert f"SLA report {period}" in " ".join(text.split())
    report_cli(processed, "--format", "html", "--out", str(tmp_path / "y.pdf"))
    assert (tmp_path / "y.pdf").read_text().startswith("<!doctype html>")

    # The whole tenant: page loads and in-page actions, from both sites.
    everything = (tmp_path / "y.pdf").read_text()
    assert {row[0] for row in section(everything, "Slowest pages and sites") if len(row) == 6} >= {
        "POST /leads",
        "/leads/new",
    }
    # One service: its SLOs (of its transactions, or of a business service holding one),
    # and of what users did, only the actions joined with its traces — no page load.
    output = report_cli(processed, "--service", "crm-web", "--format", "html", "--out", str(tmp_path / "c"))
    assert "2 of 3 objectives met" in output  # the latency one is missed
    crm = (tmp_path / "c").read_text()
    assert "Tenant default, service crm-web" in crm
    assert {row[0] for row in section(crm, "Service levels")} == {
        "Create lead under 800 ms",
        "leads-available",
        "Order to cash available",
    }
    pages, sites = [], []
    for row in section(crm, "Slowest pages and sites"):
        (pages if row[0] not in seed.SITES else sites).append(row)
    assert [(row[0], row[1]) for row in pages] == [("POST /leads", "40")]
    assert [(row[0], row[1], row[3]) for row in sites] == [
        ("Lyon", "20", "3.36 s"),
        ("Hamburg", "20", "1.12 s"),
    ]
    assert {row[0] for row in section(crm, "Business transactions")} == {"crm-web"}

    report_cli(processed, "--service", "erp-api", "--out", str(tmp_path / "e.html"))
    erp = (tmp_path / "e.html").read_text()
    # erp-api serves no transaction of the leads SLOs; it is in the business service.
    assert [row[0] for row in section(erp, "Service levels")] == ["Order to cash available"]
    assert section(erp, "Slowest pages and sites") == []
    assert "No real-user actions were served by erp-api in this period" in erp


def signed_in(collector: CollectorProcess, token: str) -> httpx.Client:
    client = httpx.Client(base_url=collector.url, timeout=10)
    response = client.post("/login", data={"token": token})
    assert response.status_code == 303, response.text
    cookie = response.headers["set-cookie"].lower()
    assert "httponly" in cookie
    assert "samesite=strict" in cookie
    return client


def test_the_console_signs_in_shows_the_tenants_data_and_keeps_telemetry_inert(
    processed: CollectorProcess,
) -> None:
    before = summaries(processed.database_url or "")
    hostile_id = os.urandom(16)  # the newest trace of crm-web, but not of POST /leads
    hostile = two_service_trace(
        time.time_ns() - 90_000 * MS, hostile_id, route="/<img src=x onerror=alert(1)>"
    )
    post(processed, hostile["crm-web"], "crm-web")
    wait_for(lambda: summaries(processed.database_url or "") == before + 1)
    time.sleep(1.0)

    anonymous = httpx.get(f"{processed.url}/", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/login"
    acting = httpx.post(f"{processed.url}/alerts/1/ack", data={"by": "x"}, follow_redirects=False)
    assert acting.status_code == 303  # no acknowledging without signing in
    assert acting.headers["location"] == "/login"
    form = httpx.get(f"{processed.url}/login")
    assert "script-src" not in form.headers["content-security-policy"]  # nothing may run at all
    assert "default-src 'none'" in form.headers["content-security-policy"]
    refused = httpx.post(f"{processed.url}/login", data={"token": "not-a-token"})
    assert refused.status_code == 401
    assert "refused" in refused.text

    dsn = processed.database_url or ""
    client = signed_in(processed, processed.credentials()["api_token"])
    timings = {}
    for path in (
        "/",
        "/bt?service=crm-web&bt=POST%20/leads",
        "/slos",
        "/services",
        "/experiences",
        "/alerts",
    ):
        page = client.get(path)
        assert page.status_code == 200, page.text
        timings[path] = server_ms(page)
        assert page.headers["content-security-policy"].startswith("default-src 'none'")
        assert "<script" not in page.text.lower()
        assert "<img" not in page.text.lower()
    overview = client.get("/").text
    assert "POST /leads" in overview
    assert "&lt;img src=x onerror=alert(1)&gt;" in overview
    assert 'class="bar"' in overview  # time-per-tier bars
    # Each SLO of the transaction with what it achieved and the error budget it has left, as figures:
    # every call took 1000 ms, so the 800 ms objective spent a hundred budgets; none failed.
    rows = re.findall(r"<tr>(.*?)</tr>", overview.split('<table class="transactions">')[1], re.S)
    (leads,) = [row for row in rows if ">POST /leads</a>" in row]
    achieved, budgets = (
        [re.sub(r"<[^>]+>", "", text) for text in re.findall(r"<span[^>]*>(.*?)</span>", cell)]
        for cell in re.findall(r'<td class="(?:slo|budget)">(.*?)</td>', leads, re.S)
    )
    assert dict(zip(achieved, budgets, strict=True)) == {
        "0.00 % / 99.0 %": "exhausted (100.0× spent)",
        "100.00 % / 99.0 %": "100.00 %",
    }
    (listed,) = [row for row in table(overview, "transactions") if row[1] == "POST /leads"]
    assert listed[7] == "".join(budgets)  # under the Budget left heading
    detail = client.get("/bt", params={"service": "crm-web", "bt": "POST /leads"}).text
    assert detail.count('class="chart"') == 3  # calls, latency, time per tier
    assert "<td>db</td>" in detail
    # Per site: the server's side from the traces (their entry spans name the site),
    # the users' from RUM; Lyon, whose users waited longest, first.
    sites = table(detail, "sites")
    assert [row[0] for row in sites] == ["Lyon", "Hamburg"]
    for site, requests, server_p95, failed, actions, _, network, _ in sites:
        assert (requests, server_p95, failed, actions) == ("20", "1000 ms", "0.0 %", "20"), site
        assert network == "110 ms", site  # the request's wait beyond the server's 1000 ms
    assert float(sites[0][5].removesuffix(" ms")) == pytest.approx(3360, rel=0.01)  # 1120 ms × 3
    assert float(sites[1][5].removesuffix(" ms")) == pytest.approx(1120, rel=0.01)
    assert (sites[0][7], sites[1][7]) == ("2250 ms", "10 ms")  # Lyon's browsers were slow, not its link
    # Recent traces are the transaction's own: the newer trace of another of crm-web's is not among them.
    listed = re.findall(r'href="/trace/([0-9a-f]{32})"', detail)
    assert len(listed) == 15
    assert hostile_id.hex() not in listed
    leads = query(dsn, "SELECT encode(trace_id, 'hex') FROM trace_summaries WHERE bt = 'POST /leads'")
    assert set(listed) <= {row[0] for row in leads}
    services = client.get("/services").text
    assert services.count('class="node"') >= 3  # crm-web, erp-api and their database
    assert "<td>crm-web</td><td>erp-api</td><td>service</td>" in services
    trace_id = hostile_id.hex()
    waterfall = client.get(f"/trace/{trace_id}").text
    stored = httpx.get(
        f"{processed.url}/api/v1/traces/{trace_id}",
        headers={"Authorization": f"Bearer {processed.credentials()['api_token']}"},
    ).json()["spans"]
    assert waterfall.count('class="span') == len(stored) >= 3  # one bar per span, as the API returns them
    assert 'class="segment' not in waterfall  # no browser saw this one
    # An experience, with its tier split, and the trace it served: what the user waited,
    # its network and browser parts above the server's spans.
    experiences = client.get("/experiences").text
    assert "Hamburg" in experiences
    assert "Lyon" in experiences
    assert "&lt;img src=x onerror=alert(1)&gt;" in experiences
    one = re.search(r'href="/experiences/([0-9a-f]{32})"', experiences)
    assert one, "recent experiences link to their page"
    experience = client.get(f"/experiences/{one[1]}").text
    assert "The user waited" in experience
    assert 'class="bar"' in experience
    served = re.search(r'href="/trace/([0-9a-f]{32})"', experience)
    assert served, "a joined experience links its trace"
    waterfall = client.get(f"/trace/{served[1]}").text
    assert "user · POST /leads" in waterfall
    assert waterfall.index("network · request") < waterfall.index("crm-web · POST /leads")
    assert "browser · render and scripts" in waterfall
    assert waterfall.count('class="span') == 5
    # One try each on a shared machine: a loose bound. The 300 ms a page is
    # test_console_speed's, the best of five on a busy hour's store.
    assert max(timings.values()) < 1000, timings

    # Another tenant sees nothing of this one, and cannot open its traces.
    env = {"TIERSCOPE_DATABASE_URL": processed.database_url or ""}
    created = CliRunner().invoke(main, ["tenant", "create", "console-other", "--json"], env=env)
    assert created.exit_code == 0, created.output
    other = signed_in(processed, json.loads(created.output)["api_token"])
    assert "POST /leads" not in other.get("/").text
    assert other.get(f"/trace/{trace_id}").status_code == 404


def table(page: str, css_class: str) -> list[list[str]]:
    """The body rows of a page's ``<table class=...>``, as the text of each cell."""
    found = re.search(rf'<table class="{css_class}">.*?<tbody>(.*?)</tbody>', page, re.S)
    assert found, f"no {css_class} table"
    return [
        [re.sub(r"<[^>]+>", "", cell).strip() for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", found[1], re.S)
    ]


class Inbox:
    """An SMTP server's handler (aiosmtpd) that keeps every message."""

    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[int, Inbox]]:
    inbox = Inbox()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, inbox
    finally:
        controller.stop()


def schedule(collector: CollectorProcess, port: int, *extra: str) -> str:
    return seed.cli(
        collector,
        "report-schedule", "set", "weekly", "--every", "week",
        "--to", "manager@example.test", "--to", "cfo@example.test",
        "--smtp-host", "127.0.0.1", "--smtp-port", str(port), "--from", "tierscope@example.test", *extra,
    )  # fmt: skip


def test_a_scheduled_report_is_mailed_once_with_the_pdf(
    processed: CollectorProcess, smtp: tuple[int, Inbox]
) -> None:
    port, inbox = smtp
    schedule(processed, port)
    label = last_complete("week", datetime.now(UTC)).label
    assert f"sent {label} of weekly (default)" in seed.cli(processed, "report-schedule", "send-due")
    (message,) = inbox.messages
    assert message["Subject"] == f"SLA report {label} — default"
    assert message["To"] == "manager@example.test, cfo@example.test"
    body = message.get_body(("plain",)).get_content()
    assert f"service level objectives were met in {label}" in body
    (attachment,) = list(message.iter_attachments())
    assert attachment.get_filename() == f"tierscope-sla-{label}.pdf"
    pdf = pypdf.PdfReader(io.BytesIO(attachment.get_content()))
    text = " ".join(" ".join(page.extract_text() for page in pdf.pages).split())
    for heading in (f"SLA report {label}", "Service levels", "Incidents", "Forecasts and capacity"):
        assert heading in text, heading
    assert "erp-api / POST /invoices: load" in text  # last week had hours of it: a forecast

    assert "nothing due" in seed.cli(processed, "report-schedule", "send-due")  # once per period
    assert len(inbox.messages) == 1
    listed = seed.cli(processed, "report-schedule", "list")
    assert f"last sent: {label}" in listed

    # A relay that is down: recorded, not lost — the next round tries again.
    seed.cli(processed, "report-schedule", "remove", "weekly")
    schedule(processed, port + 1 if port < 65535 else port - 1)
    assert "nothing due" in seed.cli(processed, "report-schedule", "send-due")
    assert "last error: ConnectionRefusedError" in seed.cli(processed, "report-schedule", "list")
    seed.cli(processed, "report-schedule", "remove", "weekly")

    bad = CliRunner().invoke(
        main,
        ["report-schedule", "set", "x", "--every", "week", "--to", "not-an-address", "--smtp-host", "h",
         "--from", "a@b.test"],
        env={"TIERSCOPE_DATABASE_URL": processed.database_url or ""},
    )  # fmt: skip
    assert bad.exit_code != 0
    assert "is not an e-mail address" in bad.output


def test_tierscope_up_sends_scheduled_reports_by_itself(
    collector_factory: Callable[..., CollectorProcess], smtp: tuple[int, Inbox]
) -> None:
    port, inbox = smtp
    collector = collector_factory(TIERSCOPE_REPORT_SCHEDULE_INTERVAL="1s", TIERSCOPE_ALERTING="false")
    schedule(collector, port)
    wait_for(lambda: len(inbox.messages) == 1, timeout=60, what="the scheduled report")
    time.sleep(3)  # a few more rounds: still one message
    assert len(inbox.messages) == 1
    assert inbox.messages[0]["Subject"].startswith("SLA report 20")
    collector.stop()


def test_the_consoles_experience_figures_are_the_apis_and_count_what_is_not_rolled_up_yet(
    processed: CollectorProcess,
) -> None:
    """The console reads the RUM rollups as ``/api/v1/experiences/summary`` does,
    and counts the finished experiences the rollups do not hold yet too (the
    seeded page loads wait there for their final Web Vitals)."""
    dsn = processed.database_url or ""
    rolled = {
        (row[0], row[1]): row[2]
        for row in query(
            dsn,
            """SELECT coalesce(bt, page), site, count(*) FROM rum_experiences
               WHERE state <> 'pending' GROUP BY 1, 2 HAVING bool_and(rolled_up)""",
        )
    }
    finished = {
        (row[0], row[1]): row[2]
        for row in query(
            dsn,
            """SELECT coalesce(bt, page), site, count(*) FROM rum_experiences
               WHERE state <> 'pending' GROUP BY 1, 2""",
        )
    }
    token = processed.credentials()["api_token"]
    summary = httpx.get(
        f"{processed.url}/api/v1/experiences/summary",
        params={"from": "2h"},
        headers={"Authorization": f"Bearer {token}"},
    ).json()
    start, end = (datetime.fromisoformat(summary[k].replace("Z", "+00:00")) for k in ("from", "to"))

    async def ours() -> list[dict]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            covered, groups = await experience_groups(conn, 1, start, end, summary["apdex_t_ms"])
            assert (covered.start, covered.end) == (start, end)
            return groups

    console = {(g["bt"], g["site"]): g for g in asyncio.run(ours())}
    api = {(g["bt"], g["site"]): g for g in summary["groups"]}
    assert {key: g["count"] for key, g in console.items()} == finished  # every one, once
    assert len(finished) >= 5  # pages and the transaction, per site
    assert rolled, "the requests are rolled up at once"
    assert rolled.keys() < finished.keys(), "the page loads wait for their final Web Vitals"
    for key in rolled:
        assert console[key] == api[key], key  # the same rows, merged by the same code
    assert console["/leads/new", "Lyon"]["count"] == 20
    assert console["/leads/new", "Lyon"]["vitals"]["lcp"]["p75"] == pytest.approx(3600, rel=0.01)


@pytest.mark.parametrize(("role", "allowed"), [("admin", True), ("editor", True), ("viewer", False)])
def test_only_tokens_that_may_act_acknowledge_from_the_console(role: str, allowed: bool) -> None:
    """The console shows the Acknowledge button only to tokens whose role may act."""
    caller = KeyInfo(tenant_id=1, tenant="default", kind="api", revoked=False, expired=False, role=role)
    assert may(caller, "acknowledge") is allowed


def test_a_viewer_token_sees_no_acknowledge_button_and_may_not_post_one(processed: CollectorProcess) -> None:
    """What docs/dashboards.md says of the Alerts page, on the running console."""
    (firing,) = query(processed.database_url or "", "SELECT id FROM alerts WHERE state = 'firing'")
    tokens = {
        role: json.loads(seed.cli(processed, "tenant", "token", "default", "--role", role, "--json"))[
            "api_token"
        ]
        for role in ("viewer", "editor")
    }
    viewer = signed_in(processed, tokens["viewer"])
    alerts = viewer.get("/alerts")
    assert alerts.status_code == 200
    assert "POST /leads is slow" in alerts.text  # the firing alert is shown...
    assert "Acknowledge</button>" not in alerts.text  # ...without the button
    refused = viewer.post(f"/alerts/{firing[0]}/ack", data={"by": "viewer"})
    assert refused.status_code == 403
    editor = signed_in(processed, tokens["editor"])
    assert f'action="/alerts/{firing[0]}/ack"' in editor.get("/alerts").text
    still = query(processed.database_url or "", "SELECT id FROM alerts WHERE state = 'firing'")
    assert still == [firing]  # nothing was acknowledged


def test_a_calendar_month_slo_trends_each_whole_month(processed: CollectorProcess, tmp_path: Path) -> None:
    """At a month's end a calendar window starts again: the trend must show the month
    just completed, not the empty one beginning (another tenant, the same history)."""
    dsn = processed.database_url or ""
    seed.cli(processed, "tenant", "create", "calendar", "--json")
    ((tenant_id,),) = query(dsn, "SELECT id FROM tenants WHERE name = 'calendar'")
    seed.order_history(dsn, tenant_id)
    (tmp_path / "slo.yaml").write_text(
        "apiVersion: tierscope/v1\nkind: SLO\nmetadata: {name: orders-monthly}\n"
        "spec: {service: erp-api, bt: POST /orders, objective: availability, target: 99%,\n"
        "       timeWindow: {duration: 1M, isRolling: false, calendar: {timeZone: UTC}}}\n"
    )
    seed.cli(processed, "slo", "apply", str(tmp_path / "slo.yaml"), "--tenant", "calendar")
    now = datetime.now(UTC)

    async def read() -> Report:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await gather(conn, tenant_id, "calendar", parse_period(now.strftime("%Y-%m")))

    (monthly,) = asyncio.run(read()).compliance
    trend = dict(monthly.trend)
    # k months ago, k of each 100 calls failed (seed.order_history); none this month yet.
    assert trend[parse_period(now.strftime("%Y-%m")).before().label] == pytest.approx(0.99)
    assert trend[parse_period(now.strftime("%Y-%m")).before().before().label] == pytest.approx(0.98)
    assert list(trend.values())[-1] is None
