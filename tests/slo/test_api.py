"""SLOs end to end: files applied with the real command, four weeks of rollups in a
real store, and the numbers read back from a real collector over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from tierscope.testing.collector import CollectorProcess, tierscope_command

HOUR, MINUTE, SECOND = timedelta(hours=1), timedelta(minutes=1), timedelta(seconds=1)
SERVICE, INVOICE, ORDER = "erp-web", "ERP / Post invoice", "ERP / Create order"
# Evaluated as of a whole hour yesterday, so that the answer does not drift while the test runs.
AT = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
SLOW_HOUR = AT - timedelta(hours=50)  # inside the 3-day burn window, outside the 1-day one
# A calendar month in Berlin, evaluated as of 31 March 2026 12:00 UTC: March began at
# 23:00 UTC on 28 February (midnight CET), and 29 March, when clocks went forward, had 23 hours.
CLOSE = "ERP / Month-end close"
MONTH_AT = datetime(2026, 3, 31, 12, tzinfo=UTC)
MARCH_BERLIN = datetime(2026, 2, 28, 23, tzinfo=UTC)

SLOS = f"""\
apiVersion: tierscope/v1
kind: BusinessService
metadata: {{name: order-to-cash, displayName: Order to cash}}
spec:
  criticality: critical
  transactions:
    - {{service: {SERVICE}, bt: {INVOICE}}}
    - {{service: {SERVICE}, bt: {ORDER}}}
---
apiVersion: tierscope/v1
kind: SLO
metadata: {{name: post-invoice-availability}}
spec: {{service: {SERVICE}, bt: {INVOICE}, objective: availability, target: 99.9%}}
---
apiVersion: tierscope/v1
kind: SLO
metadata: {{name: post-invoice-latency, displayName: Post invoice under 2 s}}
spec:
  service: {SERVICE}
  bt: {INVOICE}
  objective: latency
  threshold: 2s
  target: 95%
---
apiVersion: tierscope/v1
kind: SLO
metadata: {{name: order-to-cash-apdex}}
spec: {{businessService: order-to-cash, objective: apdex, target: 0.95, timeWindow: {{duration: 28d}}}}
---
apiVersion: tierscope/v1
kind: SLO
metadata: {{name: month-end-close-availability}}
spec:
  service: {SERVICE}
  bt: {CLOSE}
  objective: availability
  target: 99%
  timeWindow: {{duration: 1M, isRolling: false, calendar: {{timeZone: Europe/Berlin}}}}
"""


def seed(dsn: str, rollups: ModuleType) -> None:
    """28 days of Post invoice at 7,500 requests an hour (125 a minute for the last 6 h):
    108 errors in the last hour (81 in database calls, 27 in external calls), and one
    hour 50 h ago in which 3,000 requests took 3 s, while the database took 880 ms and
    external calls 220 ms more than normal per request. Create order: 2,500 an hour."""
    tenant = rollups.tenant_id(dsn)
    normal = rollups.tier_us(7500, web=100, app=300, db=400, external=100)
    slow = rollups.tier_us(7500, web=100, app=300, db=1280, external=320)
    rows, components = [], []
    for hour in range(28 * 24):
        bucket = AT - (hour + 1) * HOUR
        last, slowest = hour == 0, bucket == SLOW_HOUR
        rows.append(
            {
                "tenant_id": tenant,
                "resolution": "hour",
                "bucket": bucket,
                "service": SERVICE,
                "bt": INVOICE,
                "calls": 7500,
                "errors": 108 if last else 0,
                "satisfied": 4000 if slowest else 7000,
                "tolerating": 500,
                "latency": rollups.latency((4500, 800), (3000, 3000))
                if slowest
                else rollups.latency((7500, 800)),
                "tier_us": slow if slowest else normal,
            }
        )
        rows.append(
            {
                "tenant_id": tenant,
                "resolution": "hour",
                "bucket": bucket,
                "service": SERVICE,
                "bt": ORDER,
                "calls": 2500,
            }
        )
        for tier, calls, errors in (("web", 7500, 0), ("db", 15000, 81), ("external", 7500, 27)):
            components.append((tenant, "hour", bucket, SERVICE, INVOICE, tier, calls, errors if last else 0))
    for minute in range(6 * 60):
        rows.append(
            {
                "tenant_id": tenant,
                "resolution": "minute",
                "bucket": AT - (minute + 1) * MINUTE,
                "service": SERVICE,
                "bt": INVOICE,
                "calls": 125,
                "errors": 3 if minute < 36 else 0,  # the last hour's 108 errors, in its last 36 minutes
                "latency": rollups.latency((125, 800)),
            }
        )
    rollups.write_bt_rows(dsn, rows + month_end_close(tenant))
    rollups.write_component_rows(dsn, components)
    # The last hour's failed traces by where their users were: 54 in branch A, 27 in
    # branch B, 27 from nowhere known; and some that succeeded.
    sites = ["branch-a"] * 54 + ["branch-b"] * 27 + [None] * 27
    failed = [
        (tenant, AT - HOUR + i * 20 * SECOND, SERVICE, INVOICE, 800_000, True, site)
        for i, site in enumerate(sites)
    ]
    fine = [
        (tenant, AT - HOUR + i * 30 * SECOND, SERVICE, INVOICE, 800_000, False, "branch-b")
        for i in range(100)
    ]
    rollups.write_traces(dsn, failed + fine)


def month_end_close(tenant: int) -> list[dict]:
    """Month-end close, 100 requests every hour from 27 February to MONTH_AT (UTC): 40 errors
    in the last hour of February in Berlin (22:00 UTC), 10 in its first hour of March
    (23:00 UTC, still February in UTC), 5 at 03:00 on the 29th (01:00 UTC)."""
    errors = {
        MARCH_BERLIN - HOUR: 40,
        MARCH_BERLIN: 10,
        datetime(2026, 3, 29, 1, tzinfo=UTC): 5,
    }
    first = datetime(2026, 2, 27, tzinfo=UTC)
    return [
        {
            "tenant_id": tenant,
            "resolution": "hour",
            "bucket": first + hour * HOUR,
            "service": SERVICE,
            "bt": CLOSE,
            "calls": 100,
            "errors": errors.get(first + hour * HOUR, 0),
        }
        for hour in range(int((MONTH_AT - first) / HOUR))
    ]


@pytest.fixture(scope="module")
def estate(
    collector_factory: Callable[..., CollectorProcess], tmp_path_factory: pytest.TempPathFactory
) -> CollectorProcess:
    collector = collector_factory(TIERSCOPE_PROCESSING="false")
    files = tmp_path_factory.mktemp("slos")
    (files / "erp.yaml").write_text(SLOS)
    applied = cli(collector, "slo", "apply", str(files))
    assert applied.returncode == 0, applied.stderr
    assert "applied 4 SLO(s) and 1 business service(s)" in applied.stderr
    return collector


def cli(
    collector: CollectorProcess, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **(env or {}), "TIERSCOPE_DATABASE_URL": collector.database_url or ""}
    return subprocess.run([*tierscope_command(), *args], env=env, capture_output=True, text=True, check=False)


def get(collector: CollectorProcess, path: str, token: str | None = None, **params: object) -> httpx.Response:
    token = token or collector.credentials()["api_token"]
    return httpx.get(
        f"{collector.url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


@pytest.fixture(scope="module")
def slos(estate: CollectorProcess, rollups: ModuleType) -> dict[str, dict]:
    assert estate.database_url
    seed(estate.database_url, rollups)
    response = get(estate, "/api/v1/slos", at=AT.isoformat())
    assert response.status_code == 200, response.text
    return {slo["id"]: slo for slo in response.json()["slos"]}


def test_availability_budget_burn_rates_and_attribution(slos: dict[str, dict]) -> None:
    slo = slos["post-invoice-availability"]
    total = 28 * 24 * 7500
    assert slo["target"] == 0.999
    assert slo["criticality"] == "critical"  # Post invoice belongs to order-to-cash
    assert slo["window"]["from"] == (AT - timedelta(days=28)).isoformat().replace("+00:00", "Z")
    assert slo["events"] == {"total": total, "bad": 108}
    assert slo["sli"] == round(1 - 108 / total, 6)
    assert slo["error_budget_remaining"] == round(1 - 108 / (0.001 * total), 4)
    assert slo["burn_rates"] == {
        "5m": 24.0,  # 15 errors in 625 requests: 2.4 % against 0.1 %
        "30m": 24.0,
        "1h": 14.4,  # 108 in 7,500: 1.44 %
        "6h": 2.4,  # 108 in 45,000
        "1d": 0.6,  # 108 in 180,000
        "3d": 0.2,
    }
    assert slo["attribution"] == {"db": 0.75, "external": 0.25}
    assert slo["attribution_by_site"] == {"branch-a": 0.5, "branch-b": 0.25, "unattributed": 0.25}
    assert sum(slo["attribution"].values()) == pytest.approx(1, abs=1e-12)
    # Each tier is at 99.999 %; what users got is lower than any of them.
    availability = slo["availability"]
    assert availability["tiers"] == {
        "web": 1.0,
        "db": round(1 - 81 / (28 * 24 * 15000), 6),
        "external": round(1 - 27 / total, 6),
    }
    assert availability["end_to_end"] == round(1 - 108 / total, 6)
    assert availability["end_to_end"] < min(availability["tiers"].values())


def test_latency_slo_counts_requests_over_the_threshold_and_blames_the_slower_tiers(
    slos: dict[str, dict],
) -> None:
    slo = slos["post-invoice-latency"]
    total = 28 * 24 * 7500
    assert slo["name"] == "Post invoice under 2 s"
    assert (slo["objective"], slo["threshold_ms"], slo["target"]) == ("latency", 2000, 0.95)
    assert slo["events"] == {"total": total, "bad": 3000}
    assert slo["error_budget_remaining"] == round(1 - 3000 / (0.05 * total), 4)
    assert slo["burn_rates"]["3d"] == round(3000 / (72 * 7500) / 0.05, 4)
    assert slo["burn_rates"]["1d"] == 0
    assert slo["burn_rates"]["1h"] == 0
    # db was 880 ms over its normal 400 ms, external 220 ms over its normal 100 ms.
    assert slo["attribution"] == {"db": 0.8, "external": 0.2}
    assert slo["attribution_by_site"] == {}  # no slow trace names a site
    spent = 3000 / (0.05 * total)
    assert slo["attribution_of_budget"] == {"db": round(0.8 * spent, 4), "external": round(0.2 * spent, 4)}


def test_a_business_service_slo_sums_its_transactions(slos: dict[str, dict]) -> None:
    slo = slos["order-to-cash-apdex"]
    total = 28 * 24 * (7500 + 2500)
    # Bad = frustrated + half the tolerating: 500 tolerating an hour, and 3,000 frustrated in the slow hour.
    bad = 28 * 24 * (500 / 2) + 3000
    assert (slo["business_service"], slo["criticality"], slo["service"], slo["bt"]) == (
        "order-to-cash",
        "critical",
        None,
        None,
    )
    assert slo["events"] == {"total": total, "bad": bad}
    assert slo["sli"] == round(1 - bad / total, 6)
    assert slo["error_budget_remaining"] == round(1 - bad / (0.05 * total), 4)


def test_a_calendar_month_in_berlin_counts_from_local_midnight_of_the_first(
    estate: CollectorProcess, slos: dict[str, dict]
) -> None:
    response = get(estate, "/api/v1/slos", at=MONTH_AT.isoformat())
    assert response.status_code == 200, response.text
    slo = {s["id"]: s for s in response.json()["slos"]}["month-end-close-availability"]
    # 28 February 23:00 UTC to 31 March 12:00 UTC: 1 + 30 x 24 + 12 hours of 100 requests.
    # The 10 errors of Berlin's first hour of March count; the 40 of its last February hour do not.
    assert slo["window"] == {
        "kind": "calendar",
        "duration": "1M",
        "time_zone": "Europe/Berlin",
        "from": "2026-02-28T23:00:00Z",
        "to": "2026-03-31T12:00:00Z",
    }
    assert slo["events"] == {"total": 73_300, "bad": 15}
    assert slo["sli"] == round(1 - 15 / 73_300, 6)
    assert slo["error_budget_remaining"] == round(1 - 15 / 733, 4) == 0.9795  # 733 bad allowed
    assert slo["burn_rates"]["1d"] == 0
    assert slo["burn_rates"]["3d"] == round(5 / 7_200 / 0.01, 4) == 0.0694  # 5 bad in 72 hours
    # Day by day, in Berlin's days: 31 of them, the 29th an hour short, the 31st up to noon UTC.
    one = get(estate, "/api/v1/slos/month-end-close-availability", at=MONTH_AT.isoformat()).json()
    history = one["history"]
    assert len(history) == 31
    assert (history[0]["from"], history[0]["to"]) == ("2026-02-28T23:00:00Z", "2026-03-01T23:00:00Z")
    assert (history[0]["total"], history[0]["bad"]) == (2_400, 10)
    assert (history[28]["from"], history[28]["to"]) == ("2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z")
    assert (history[28]["total"], history[28]["bad"]) == (2_300, 5)
    assert (history[30]["from"], history[30]["total"]) == ("2026-03-30T22:00:00Z", 1_400)
    assert sum(day["total"] for day in history) == 73_300
    assert history[-1]["error_budget_remaining"] == 0.9795


def test_one_slo_with_its_history_day_by_day(estate: CollectorProcess, slos: dict[str, dict]) -> None:
    response = get(estate, "/api/v1/slos/post-invoice-latency", at=AT.isoformat())
    assert response.status_code == 200, response.text
    slo = response.json()
    history = slo["history"]
    assert history[0]["from"] == slo["window"]["from"]
    assert history[-1]["to"] == AT.isoformat().replace("+00:00", "Z")
    assert sum(day["total"] for day in history) == slo["events"]["total"]
    assert [day["bad"] for day in history if day["bad"]] == [3000]
    assert history[-1]["error_budget_remaining"] == slo["error_budget_remaining"]
    assert get(estate, "/api/v1/slos/no-such-slo").status_code == 404


def test_slos_are_scoped_by_tenant(estate: CollectorProcess, slos: dict[str, dict]) -> None:
    created = cli(estate, "tenant", "create", "other", "--json")
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["api_token"]
    assert get(estate, "/api/v1/slos", token=token).json()["slos"] == []
    assert get(estate, "/api/v1/slos/post-invoice-latency", token=token).status_code == 404
    assert get(estate, "/api/v1/slos", token="tsa_" + "x" * 43).status_code in (401, 403)


def test_list_and_status_from_the_command_line(estate: CollectorProcess, slos: dict[str, dict]) -> None:
    listed = cli(estate, "slo", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["business_services"] == [
        {
            "name": "order-to-cash",
            "criticality": "critical",
            "transactions": [f"{SERVICE} / {INVOICE}", f"{SERVICE} / {ORDER}"],
        }
    ]
    assert [s["id"] for s in json.loads(listed.stdout)["slos"]] == [
        "month-end-close-availability",
        "order-to-cash-apdex",
        "post-invoice-availability",
        "post-invoice-latency",
    ]
    status = cli(estate, "slo", "status", "--json")
    assert status.returncode == 0, status.stderr
    now = {slo["id"]: slo for slo in json.loads(status.stdout)["slos"]}
    assert set(now) == set(slos)
    assert set(now["post-invoice-availability"]["burn_rates"]) == {"5m", "30m", "1h", "6h", "1d", "3d"}
    table = cli(estate, "slo", "status", env={"COLUMNS": "200"})
    assert table.returncode == 0, table.stderr
    assert "post-invoice-availability" in table.stdout


def test_a_bad_file_is_refused_with_its_line_and_nothing_is_applied(
    estate: CollectorProcess, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(SLOS.replace("target: 95%", "target: 950%"))
    result = cli(estate, "slo", "apply", str(broken), "--prune")
    assert result.returncode == 1
    assert (
        f"{broken}:23: spec.target: expected a ratio from 0 to 1 (0.999) or a percentage (99.9%); got 9.5"
        in (result.stderr.replace("\n", " "))
    )
    assert "nothing was applied" in result.stderr
    listed = cli(estate, "slo", "list", "--json")
    assert len(json.loads(listed.stdout)["slos"]) == 4
