"""SLOs as users feel them, end to end: four weeks of real-user rollups (and
server rollups) in a real store, SLOs applied with the real command, and the
numbers read back from a real collector over HTTP.

Post invoice has real-user experiences at two sites: 600 user actions an hour
at the head office and 120 at branch B, each 800 ms. In the last hour 60 head
office actions took 3 s (the database went from 300 ms to 600 ms per action)
and all 120 branch B actions took 3 s (the network from 50 ms to 2,200 ms);
2 head office actions failed in the database and 3 branch B actions on the
network. The server saw 1,000 requests an hour, none failed. Create order has
no experiences: its SLIs count requests.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import httpx
import psycopg
import pytest

from tierscope.processing import histogram
from tierscope.processing.rum_rollup import ERROR_OWNERS, RUM_TIERS, VITALS
from tierscope.testing.collector import CollectorProcess, tierscope_command

HOUR, MINUTE = timedelta(hours=1), timedelta(minutes=1)
SERVICE, INVOICE, ORDER = "erp-web", "ERP / Post invoice", "ERP / Create order"
AT = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(days=1)
DAYS = 28
ACTIONS = {"head-office": 600, "branch-b": 120}
USER_ACTIONS = DAYS * 24 * sum(ACTIONS.values())  # 483,840

SLOS = f"""\
apiVersion: tierscope/v1
kind: BusinessService
metadata: {{name: order-to-cash}}
spec:
  criticality: critical
  transactions:
    - {{service: {SERVICE}, bt: {INVOICE}}}
    - {{service: {SERVICE}, bt: {ORDER}}}
---
apiVersion: tierscope/v1
kind: SLO
metadata: {{name: invoice-latency}}
spec: {{service: {SERVICE}, bt: {INVOICE}, objective: latency, threshold: 2s, target: 95%}}
---
apiVersion: tierscope/v1
kind: SLO
metadata: {{name: invoice-availability}}
spec: {{service: {SERVICE}, bt: {INVOICE}, objective: availability, target: 99.9%}}
---
apiVersion: tierscope/v1
kind: SLO
metadata: {{name: order-latency}}
spec: {{service: {SERVICE}, bt: {ORDER}, objective: latency, threshold: 2s, target: 95%}}
---
apiVersion: tierscope/v1
kind: SLO
metadata: {{name: order-to-cash-availability}}
spec: {{businessService: order-to-cash, objective: availability, target: 99.9%}}
"""

RUM_COLUMNS = (
    "tenant_id, resolution, bucket, service, name, site, count, errors, duration_sum_ms, apdex_satisfied, "
    "apdex_tolerating, latency, tier_sum_us, tier_errors, vital_count, vital_good, vital_poor, vitals"
)


def rum_row(
    tenant: int,
    resolution: str,
    bucket: datetime,
    site: str,
    count: int,
    slow: int = 0,
    per_action_ms: dict[str, float] | None = None,
    failed: dict[str, int] | None = None,
) -> tuple[Any, ...]:
    times = {"browser": 250.0, "network": 50.0, "app": 200.0, "db": 300.0} | (per_action_ms or {})
    counts: histogram.Counts = {}
    if count - slow:
        histogram.add(counts, 800_000, weight=count - slow)
    if slow:
        histogram.add(counts, 3_000_000, weight=slow)
    failed = failed or {}
    return (
        tenant,
        resolution,
        bucket,
        SERVICE,
        INVOICE,
        site,
        count,
        sum(failed.values()),
        800.0 * (count - slow) + 3000.0 * slow,
        count - slow,
        slow,
        histogram.encode(counts),
        [round(count * times.get(tier, 0) * 1000) for tier in RUM_TIERS],
        [failed.get(owner, 0) for owner in ERROR_OWNERS],
        [0] * len(VITALS),
        [0] * len(VITALS),
        [0] * len(VITALS),
        histogram.encode({}),
    )


def incident(tenant: int, resolution: str, bucket: datetime, share: int = 1) -> list[tuple[Any, ...]]:
    """The last hour's figures at both sites (``share``: 1 for the hour, 60 per minute)."""
    return [
        rum_row(tenant, resolution, bucket, "head-office", 600 // share, 60 // share, {"db": 600.0}),
        rum_row(tenant, resolution, bucket, "branch-b", 120 // share, 120 // share, {"network": 2200.0}),
    ]


def write_rum_rows(dsn: str, rows: Iterable[tuple[Any, ...]]) -> None:
    with (
        psycopg.connect(dsn) as conn,
        conn.cursor() as cur,
        cur.copy(f"COPY rum_rollups ({RUM_COLUMNS}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)


def seed(dsn: str, rollups: ModuleType) -> None:
    tenant = rollups.tenant_id(dsn)
    start = AT - DAYS * 24 * HOUR
    server = []
    rum: list[tuple[Any, ...]] = []
    for hour in range(DAYS * 24):
        bucket = start + hour * HOUR
        server.append(
            {
                "tenant_id": tenant,
                "resolution": "hour",
                "bucket": bucket,
                "service": SERVICE,
                "bt": INVOICE,
                "calls": 1000,
            }
        )
        server.append(
            {
                "tenant_id": tenant,
                "resolution": "hour",
                "bucket": bucket,
                "service": SERVICE,
                "bt": ORDER,
                "calls": 500,
            }
        )
        if bucket < AT - HOUR:
            rum.extend(rum_row(tenant, "hour", bucket, site, count) for site, count in ACTIONS.items())
    last = AT - HOUR
    rum.extend(incident(tenant, "hour", last))
    # Minutes of the last six hours (burn rates up to 6 h read them): ordinary
    # minutes, then the incident spread evenly over the last hour.
    for minute in range(6 * 60):
        bucket = AT - 6 * HOUR + minute * MINUTE
        if bucket < last:
            rum.extend(
                rum_row(tenant, "minute", bucket, site, count // 60) for site, count in ACTIONS.items()
            )
        else:
            rum.extend(incident(tenant, "minute", bucket, share=60))
    # The failures: in the hour rows, and in one minute of the last hour.
    failed = [
        rum_row(
            tenant, resolution, last if resolution == "hour" else last + 30 * MINUTE, site, 0, failed=owners
        )
        for resolution in ("hour", "minute")
        for site, owners in (("head-office", {"db": 2}), ("branch-b", {"network": 3}))
    ]
    merged: dict[tuple[Any, ...], list[Any]] = {}
    for row in [*rum, *failed]:
        key = row[:6]
        if key in merged:  # add the failures to the row of their bucket and site
            stored = merged[key]
            stored[7] += row[7]
            stored[13] = [a + b for a, b in zip(stored[13], row[13], strict=True)]
        else:
            merged[key] = list(row)
    write_rum_rows(dsn, [tuple(row) for row in merged.values()])
    rollups.write_bt_rows(dsn, server)


@pytest.fixture(scope="module")
def estate(
    collector_factory: Callable[..., CollectorProcess],
    tmp_path_factory: pytest.TempPathFactory,
    rollups: ModuleType,
) -> dict[str, dict]:
    collector = collector_factory(TIERSCOPE_PROCESSING="false")
    files = tmp_path_factory.mktemp("slos")
    (files / "erp.yaml").write_text(SLOS)
    env = {**os.environ, "TIERSCOPE_DATABASE_URL": collector.database_url or ""}
    applied = subprocess.run(
        [*tierscope_command(), "slo", "apply", str(files)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert applied.returncode == 0, applied.stderr
    assert collector.database_url
    seed(collector.database_url, rollups)
    return collector


@pytest.fixture(scope="module")
def slos(estate: CollectorProcess) -> dict[str, dict]:
    response = httpx.get(
        f"{estate.url}/api/v1/slos",
        params={"at": AT.isoformat()},
        headers={"Authorization": f"Bearer {estate.credentials()['api_token']}"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return {slo["id"]: slo for slo in response.json()["slos"]}


def test_a_latency_slo_counts_user_actions_when_the_transaction_has_experiences(
    slos: dict[str, dict],
) -> None:
    slo = slos["invoice-latency"]
    assert slo["sli_source"] == "rum"
    assert slo["events"] == {"total": USER_ACTIONS, "bad": 180}
    assert slo["sli"] == round(1 - 180 / USER_ACTIONS, 6)
    assert slo["error_budget_remaining"] == round(1 - 180 / (0.05 * USER_ACTIONS), 4)
    assert slo["burn_rates"]["1h"] == 5.0  # 180 of 720 actions: 25 % against 5 %
    assert slo["burn_rates"]["6h"] == round(180 / (6 * 720) / 0.05, 4)
    # The server saw nothing slow; users did: 120 at branch B on the network, 60 at the head office in the db.
    assert slo["attribution"] == {"network": 0.6667, "db": 0.3333}
    assert slo["attribution_by_site"] == {"branch-b": 0.6667, "head-office": 0.3333}
    spent = 180 / (0.05 * USER_ACTIONS)
    assert slo["attribution_by_tier_and_site"] == [
        {"tier": "network", "site": "branch-b", "share": 0.6667, "budget": round(0.6667 * spent, 4)},
        {"tier": "db", "site": "head-office", "share": 0.3333, "budget": round(0.3333 * spent, 4)},
    ]
    assert slo["attribution_summary"] == "67 % of the bad events was the network to branch-b, 33 % db time"
    assert sum(slo["attribution"].values()) == pytest.approx(1, abs=1e-12)


def test_an_availability_slo_shows_what_users_got_beside_the_server_and_each_tier(
    slos: dict[str, dict],
) -> None:
    slo = slos["invoice-availability"]
    assert slo["sli_source"] == "rum"
    assert slo["events"] == {"total": USER_ACTIONS, "bad": 5}
    assert slo["burn_rates"]["1h"] == round(5 / 720 / 0.001, 4)
    assert slo["attribution"] == {"network": 0.6, "db": 0.4}
    assert slo["attribution_by_site"] == {"branch-b": 0.6, "head-office": 0.4}
    availability = slo["availability"]
    assert availability["end_to_end"] == round(1 - 5 / USER_ACTIONS, 6)
    assert availability["server_end_to_end"] == 1.0  # the network failures never reached the server
    assert availability["tiers"] == {"network": round(1 - 3 / USER_ACTIONS, 6)}


def test_a_transaction_without_experiences_counts_requests(slos: dict[str, dict]) -> None:
    slo = slos["order-latency"]
    assert slo["sli_source"] == "server"
    assert slo["events"] == {"total": DAYS * 24 * 500, "bad": 0}


def test_a_business_service_partly_seen_by_users_counts_actions_and_requests(slos: dict[str, dict]) -> None:
    slo = slos["order-to-cash-availability"]
    assert slo["sli_source"] == "mixed"
    assert slo["sli_sources"] == [
        {"service": SERVICE, "bt": INVOICE, "sli_source": "rum"},
        {"service": SERVICE, "bt": ORDER, "sli_source": "server"},
    ]
    assert slo["events"] == {"total": USER_ACTIONS + DAYS * 24 * 500, "bad": 5}
    assert slo["attribution"] == {"network": 0.6, "db": 0.4}


def test_the_status_command_says_what_it_counts_and_who_owns_the_bad_events(estate: CollectorProcess) -> None:
    env = {**os.environ, "TIERSCOPE_DATABASE_URL": estate.database_url or "", "COLUMNS": "300"}
    shown = subprocess.run(
        [*tierscope_command(), "slo", "status"], env=env, capture_output=True, text=True, check=False
    )
    assert shown.returncode == 0, shown.stderr
    invoice = next(line for line in shown.stdout.splitlines() if "invoice-latency" in line)
    assert "user actions" in invoice
    assert "the network to branch-b" in invoice
    order = next(line for line in shown.stdout.splitlines() if "order-latency" in line)
    assert "requests" in order
