"""/api/v1/baselines and /api/v1/forecasts over six weeks of rollups in a real store,
through a real collector whose business week is in Berlin."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import ModuleType
from zoneinfo import ZoneInfo

import httpx
import numpy as np
import pytest

from tierscope.slo.calendar import BusinessCalendar, timeline
from tierscope.testing.collector import CollectorProcess, tierscope_command

HOUR, MINUTE = timedelta(hours=1), timedelta(minutes=1)
SERVICE, INVOICE, ORDER = "erp-web", "ERP / Post invoice", "ERP / Create order"
STOCK = "ERP / Check inventory"  # its traffic grows by 24 requests an hour every day
AT = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
WEEKS = 6
START = AT - timedelta(weeks=WEEKS)
BERLIN = BusinessCalendar(time_zone="Europe/Berlin", month_end_days=0)
SLOPE = 20.0  # ms per day: Post invoice p95 is getting slower
SLO = f"""\
apiVersion: tierscope/v1
kind: SLO
metadata: {{name: post-invoice-latency}}
spec: {{service: {SERVICE}, bt: {INVOICE}, objective: latency, threshold: THRESHOLD, target: 95%}}
"""


def office(slots: np.ndarray | int) -> np.ndarray:
    """Monday to Friday, 8:00 to 18:00 local time."""
    slots = np.asarray(slots)
    return ((slots // 24 < 5) & (slots % 24 >= 8) & (slots % 24 < 18)).astype(float)


def expected_p95(slots: np.ndarray) -> np.ndarray:
    return 800 + 400 * office(slots)


def expected_calls(slots: np.ndarray) -> np.ndarray:
    return 600 + 1200 * office(slots)


def growing_calls(slots: np.ndarray) -> np.ndarray:
    """Check inventory's requests an hour: 1,600, 1,200 more in office hours, and one more
    each hour (24 a day), ending at 1,600 (+1,200) in the last hour of the history."""
    hours = len(slots)
    return 1600 + 1200 * office(slots) + (np.arange(hours) - (hours - 1))


@pytest.fixture(scope="module")
def estate(collector_factory: Callable[..., CollectorProcess], rollups: ModuleType) -> CollectorProcess:
    collector = collector_factory(
        TIERSCOPE_PROCESSING="false",
        TIERSCOPE_BUSINESS_TIME_ZONE="Europe/Berlin",
        TIERSCOPE_MONTH_END_DAYS="0",
        TIERSCOPE_BASELINE_WEEKS=str(WEEKS),
    )
    dsn = collector.database_url
    assert dsn
    tenant = rollups.tenant_id(dsn)
    line = timeline(START, WEEKS * 168, HOUR, BERLIN)
    slots = line.hour_of_week.astype(int)
    days_before_at = (np.arange(WEEKS * 168) - (WEEKS * 168 - 1)) / 24
    rows = []
    for index, slot in enumerate(slots):
        bucket = START + index * HOUR
        calls = int(expected_calls(slot))
        order_ms = float(expected_p95(slot))
        invoice_ms = order_ms + SLOPE * days_before_at[index]
        for bt, ms in ((ORDER, order_ms), (INVOICE, invoice_ms)):
            row = {"tenant_id": tenant, "resolution": "hour", "bucket": bucket, "service": SERVICE, "bt": bt}
            rows.append({**row, "calls": calls, "latency": rollups.latency((calls, ms))})
    for index, calls in enumerate(growing_calls(slots)):
        row = {"tenant_id": tenant, "resolution": "hour", "bucket": START + index * HOUR, "service": SERVICE}
        rows.append({**row, "bt": STOCK, "calls": int(calls)})
    # The last hour of Create order, minute by minute: usual traffic, but 5 s responses.
    last_slot = int(timeline(AT - HOUR, 1, HOUR, BERLIN).hour_of_week[0])
    per_minute = int(expected_calls(last_slot) / 60)
    for minute in range(60):
        bucket = AT - (minute + 1) * MINUTE
        row = {"tenant_id": tenant, "resolution": "minute", "bucket": bucket, "service": SERVICE, "bt": ORDER}
        rows.append({**row, "calls": per_minute, "latency": rollups.latency((per_minute, 5000))})
    rollups.write_bt_rows(dsn, rows)
    # Real users of Post invoice at two sites: the WAN to branch B takes 300 ms per
    # action in office hours (busy) and 100 ms otherwise; the head office's LAN 40 ms.
    # In the last hour, branch B's network took 1.5 s.
    felt = []
    for index, slot in enumerate(slots):
        row = {"tenant_id": tenant, "bucket": START + index * HOUR, "service": SERVICE, "bt": INVOICE}
        wan = 100 + 200 * float(office(slot))
        felt.append(
            {**row, "resolution": "hour", "site": "branch-b", "count": 60, "tier_ms": {"network": wan}}
        )
        felt.append(
            {**row, "resolution": "hour", "site": "head-office", "count": 60, "tier_ms": {"network": 40}}
        )
    for minute in range(60):
        row = {"tenant_id": tenant, "bucket": AT - (minute + 1) * MINUTE, "service": SERVICE, "bt": INVOICE}
        felt.append(
            {**row, "resolution": "minute", "site": "branch-b", "count": 1, "tier_ms": {"network": 1500}}
        )
        felt.append(
            {**row, "resolution": "minute", "site": "head-office", "count": 1, "tier_ms": {"network": 40}}
        )
    rollups.write_rum_rows(dsn, felt)
    return collector


def get(collector: CollectorProcess, path: str, **params: object) -> dict:
    response = httpx.get(
        f"{collector.url}{path}",
        params=params,
        headers={"Authorization": f"Bearer {collector.credentials()['api_token']}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_baselines_learn_the_local_business_week_and_judge_the_last_hour(estate: CollectorProcess) -> None:
    answer = get(estate, "/api/v1/baselines", service=SERVICE, bt=ORDER, at=AT.isoformat())
    assert answer["time_zone"] == "Europe/Berlin"
    assert answer["widths"] == [2, 3, 4]
    by_metric = {b["metric"]: b for b in answer["baselines"]}
    assert set(by_metric) == {"p95_ms", "error_rate", "throughput"}
    p95, throughput = by_metric["p95_ms"], by_metric["throughput"]
    slots = np.arange(168)
    medians = np.asarray([s["median"] for s in p95["slots"]])
    assert {s["basis"] for s in p95["slots"]} == {"hour_of_week"}
    assert np.abs(medians / expected_p95(slots) - 1).max() < 0.015  # the histograms' 1 % resolution
    assert np.asarray([s["median"] for s in throughput["slots"]]) == pytest.approx(expected_calls(slots) / 60)
    monday_9 = p95["slots"][9]
    assert (monday_9["day"], monday_9["hour"]) == ("Mon", 9)
    low, high = monday_9["bands"]["3"]
    assert low < 1200 < high
    # The last hour: 5 s instead of the usual, at the usual traffic.
    assert p95["current"]["value"] == pytest.approx(5000, rel=0.01)
    assert (p95["current"]["severity"], p95["current"]["excused"]) == (3, False)
    assert throughput["current"]["severity"] == 0, throughput["current"]
    only = get(estate, "/api/v1/baselines", service=SERVICE, bt=ORDER, metric="throughput", at=AT.isoformat())
    assert [b["metric"] for b in only["baselines"]] == ["throughput"]


def test_network_time_has_a_baseline_per_site_of_real_users(estate: CollectorProcess) -> None:
    answer = get(estate, "/api/v1/baselines", service=SERVICE, bt=INVOICE, at=AT.isoformat())
    by_metric = {b["metric"]: b for b in answer["baselines"]}
    branch, office_lan = by_metric["tier_ms.network@branch-b"], by_metric["tier_ms.network@head-office"]
    slots = np.arange(168)
    medians = np.asarray([s["median"] for s in branch["slots"]])
    assert medians == pytest.approx(100 + 200 * office(slots))  # the branch's own business week
    assert {s["median"] for s in office_lan["slots"]} == {40.0}
    assert branch["judged"] == "upwards"
    assert branch["current"]["value"] == 1500.0
    assert branch["current"]["severity"] == 3
    assert (office_lan["current"]["value"], office_lan["current"]["severity"]) == (40.0, 0)
    one = get(
        estate,
        "/api/v1/baselines",
        service=SERVICE,
        bt=INVOICE,
        metric="tier_ms.network@branch-b",
        at=AT.isoformat(),
    )
    assert [b["metric"] for b in one["baselines"]] == ["tier_ms.network@branch-b"]
    headers = {"Authorization": f"Bearer {estate.credentials()['api_token']}"}
    params = {"service": SERVICE, "bt": INVOICE, "metric": "tier_ms.network@nowhere"}
    assert httpx.get(f"{estate.url}/api/v1/baselines", params=params, headers=headers).status_code == 404


def test_forecast_finds_the_trend_and_when_it_crosses_the_objective(
    estate: CollectorProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The trend (weekly average) at AT is 800 + 400 x 50/168 ms; an objective 9 days
    # of growth above it is crossed in about 9 days.
    level = 800 + 400 * 50 / 168
    threshold_ms = round(level + 9 * SLOPE)
    slo = tmp_path_factory.mktemp("forecast") / "slo.yaml"
    slo.write_text(SLO.replace("THRESHOLD", f"{threshold_ms}ms"))
    cli_apply(estate, slo)
    answer = get(estate, "/api/v1/forecasts", service=SERVICE, bt=INVOICE, horizon="60d", at=AT.isoformat())
    p95 = answer["forecasts"]["p95_ms"]
    assert p95["slope_per_day"] == pytest.approx(SLOPE, rel=0.05)
    assert p95["level"] == pytest.approx(level, rel=0.01)
    assert p95["objective"] == {"slo": "post-invoice-latency", "threshold_ms": threshold_ms}
    assert p95["crossing"]["days"] == pytest.approx(9, abs=1)
    assert p95["summary"].startswith(
        f"at this trend {INVOICE} p95 crosses its {threshold_ms / 1000:g} s objective in about 9 days"
    )
    throughput = answer["forecasts"]["throughput"]
    assert throughput["slope_per_day"] == pytest.approx(0, abs=1e-6)
    assert throughput["busiest_hour_seen"] == pytest.approx(30)
    assert throughput["headroom"] == pytest.approx(0, abs=1e-6)  # flat: the future peak is today's


def test_growing_throughput_leaves_a_negative_capacity_headroom(estate: CollectorProcess) -> None:
    # Per minute: a weekly average of (1600 + 1200 x 50/168) / 60 at the end of the history,
    # growing 0.4 a day; the office hours 20 above the night. In 30 days the busiest hour of
    # the week is (1600 + 1200) / 60 + 12 = 58.67 requests a minute, more than any hour seen.
    answer = get(estate, "/api/v1/forecasts", service=SERVICE, bt=STOCK, horizon="30d", at=AT.isoformat())
    throughput = answer["forecasts"]["throughput"]
    assert throughput["slope_per_day"] == pytest.approx(0.4, abs=1e-4)
    assert throughput["level"] == pytest.approx((1600 + 1200 * 50 / 168) / 60, abs=1e-3)
    assert throughput["busiest_hour_at_horizon"] == pytest.approx(2800 / 60 + 12, abs=1e-3)
    calls = growing_calls(timeline(START, WEEKS * 168, HOUR, BERLIN).hour_of_week.astype(int))
    busiest = calls.max() / 60  # the last office hour before AT
    assert throughput["busiest_hour_seen"] == pytest.approx(busiest, abs=1e-3)
    assert throughput["headroom"] == pytest.approx(busiest / (2800 / 60 + 12) - 1, abs=1e-4)
    assert -0.33 < throughput["headroom"] < -0.2  # a fifth to a third more than ever handled
    # Sooner is less short: at 7 days the peak is 2.8 above today's, not 12.
    soon = get(estate, "/api/v1/forecasts", service=SERVICE, bt=STOCK, horizon="7d", at=AT.isoformat())
    headroom_7d = soon["forecasts"]["throughput"]["headroom"]
    assert headroom_7d == pytest.approx(busiest / (2800 / 60 + 2.8) - 1, abs=1e-4)
    assert throughput["headroom"] < headroom_7d < 0


def test_bad_parameters_are_400(estate: CollectorProcess) -> None:
    headers = {"Authorization": f"Bearer {estate.credentials()['api_token']}"}
    for path, params in (
        ("/api/v1/baselines", {"service": SERVICE, "bt": ORDER, "metric": "p99"}),
        ("/api/v1/forecasts", {"service": SERVICE, "bt": ORDER, "horizon": "1y"}),
        ("/api/v1/forecasts", {"service": SERVICE, "bt": ORDER, "horizon": "365d"}),
        ("/api/v1/slos", {"at": "yesterday-ish"}),
    ):
        assert httpx.get(f"{estate.url}{path}", params=params, headers=headers).status_code == 400, path
    assert (
        httpx.get(f"{estate.url}/api/v1/baselines", params={"service": SERVICE}, headers=headers).status_code
        == 422
    )


def test_a_tenant_calendar_applied_from_a_file_overrides_the_settings(
    estate: CollectorProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    judged_at = (AT - HOUR / 2).astimezone(ZoneInfo("America/New_York")).date()
    files = tmp_path_factory.mktemp("calendar")
    (files / "calendar.yaml").write_text(
        "apiVersion: tierscope/v1\nkind: BusinessCalendar\nmetadata: {name: east}\n"
        f"spec: {{timeZone: America/New_York, country: US, monthEndDays: 0, blackoutDays: [{judged_at}]}}\n"
    )
    assert cli_apply(estate, files).returncode == 0
    answer = get(estate, "/api/v1/baselines", service=SERVICE, bt=ORDER, metric="p95_ms", at=AT.isoformat())
    assert answer["time_zone"] == "America/New_York"
    current = answer["baselines"][0]["current"]
    assert (current["excused"], current["severity"]) == (True, 0)  # a blackout day is not judged
    # Applying a set without a calendar, with --prune, brings the settings' calendar back.
    (files / "calendar.yaml").write_text(SLO.replace("THRESHOLD", "2s"))
    assert cli_apply(estate, files, "--prune").returncode == 0
    again = get(estate, "/api/v1/baselines", service=SERVICE, bt=ORDER, metric="p95_ms", at=AT.isoformat())
    assert again["time_zone"] == "Europe/Berlin"
    assert again["baselines"][0]["current"]["severity"] == 3


def cli_apply(collector: CollectorProcess, path: object, *flags: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TIERSCOPE_DATABASE_URL": collector.database_url or ""}
    result = subprocess.run(
        [*tierscope_command(), "slo", "apply", str(path), *flags],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result
