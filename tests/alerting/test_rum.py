"""Real users' network and browser time, with a fake clock (promtool-style):
RUM rollups and experiences in, alerts out at exact minutes, naming the site
for the network and the page for the browser, with impact counted from real
users (else traces, else requests)."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from tierscope.alerting.evaluator import Evaluator
from tierscope.alerting.impact import assess
from tierscope.processing import histogram
from tierscope.processing.rum_rollup import ERROR_OWNERS, RUM_TIERS, VITALS
from tierscope.store import Database

from .conftest import START, Estate, _ensure_days
from .test_evaluator import DEMO_RULES, SETTINGS, configure, minute, open_alerts

pytestmark = pytest.mark.anyio

SITES = {"hq": 5.0, "branch-east": 90.0, "branch-west": 80.0}  # usual network ms per experience
PAGES = {  # (service, BT) -> (its page, usual browser ms)
    ("crm-web", "CRM / Opportunity pipeline"): ("/pipeline", 150.0),
    ("crm-web", "CRM / Lead list"): ("/leads", 100.0),
    ("erp-web", "ERP / Order desk"): ("/orders", 120.0),
}
PER_MINUTE = 12  # experiences per page, site and minute
RULES = """
defaults: false
rules:
  - {name: users-network, kind: baseline, metric: network_ms, window: 2m, for: 0s,
     keep_firing_for: 2m, min_requests: 10, bands: {warning: 3, critical: 4}}
  - {name: users-browser, kind: baseline, metric: browser_ms, window: 2m, for: 0s,
     keep_firing_for: 2m, min_requests: 10, bands: {warning: 3, critical: 4}}
"""


def _extra(
    faults: list[tuple[str, str | None, tuple[str, str] | None, float, int, int]],
    tier: str,
    site: str,
    key: tuple[str, str],
    n: int,
) -> float:
    """Milliseconds a fault adds to ``tier`` at minute ``n`` (site and page None: all)."""
    return sum(
        ms
        for t, s, k, ms, first, last in faults
        if t == tier and s in (None, site) and k in (None, key) and first <= n < last
    )


def write_rum(
    estate: Estate,
    first: int,
    count: int,
    faults: list[tuple[str, str | None, tuple[str, str] | None, float, int, int]] = (),  # type: ignore[assignment]
) -> None:
    """Minute rollups, and one experience per page, site and minute (by user u-<site>-<page>)."""
    rollups, experiences = [], []
    for n in range(first, first + count):
        bucket = minute(n)
        wobble = 1 + 0.03 * ((n % 5) - 2)
        for site, network in SITES.items():
            for key, (page, browser) in PAGES.items():
                tiers = [0.0] * len(RUM_TIERS)
                tiers[RUM_TIERS.index("network")] = network * wobble + _extra(faults, "network", site, key, n)
                tiers[RUM_TIERS.index("browser")] = browser * wobble + _extra(faults, "browser", site, key, n)
                tiers[RUM_TIERS.index("app")] = 40.0
                total = sum(tiers)
                latency: histogram.Counts = {}
                histogram.add(latency, total * 1000, weight=PER_MINUTE)
                rollups.append(
                    (
                        estate.tenant_id, "minute", bucket, key[0], key[1], site, PER_MINUTE, 0,
                        total * PER_MINUTE, PER_MINUTE, 0, histogram.encode(latency),
                        [round(ms * 1000 * PER_MINUTE) for ms in tiers], [0] * len(ERROR_OWNERS),
                        [0] * len(VITALS), [0] * len(VITALS), [0] * len(VITALS), histogram.encode({}),
                    )
                )  # fmt: skip
                user = f"u-{site}-{list(PAGES).index(key)}"  # one user per page and site
                experiences.append(
                    (
                        estate.tenant_id, os.urandom(16).hex(), "page_load", bucket + timedelta(seconds=5),
                        page, site, f"s-{user}", user, json.dumps({}), "joined", key[0], key[1], total,
                        json.dumps(dict(zip(RUM_TIERS, tiers, strict=True))), "ok", bucket, True,
                    )
                )  # fmt: skip
    with psycopg.connect(estate.dsn) as conn, conn.cursor() as cur:
        columns = (
            "tenant_id, resolution, bucket, service, name, site, count, errors, duration_sum_ms, "
            "apdex_satisfied, apdex_tolerating, latency, tier_sum_us, tier_errors, vital_count, "
            "vital_good, vital_poor, vitals"
        )
        with cur.copy(f"COPY rum_rollups ({columns}) FROM STDIN") as copy:
            for row in rollups:
                copy.write_row(row)
        cur.executemany(
            "INSERT INTO rum_experiences (tenant_id, id, kind, start_time, page, site, session_id, "
            "user_hash, timing, state, service, bt, duration_ms, tier_ms, outcome, finished_at, rolled_up) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            experiences,
        )


async def run(estate: Estate, minutes: range) -> dict[int, list[dict[str, Any]]]:
    """Evaluate each minute; the alerts (any state) after each."""
    seen = {}
    async with Database(estate.dsn) as database:
        evaluator = Evaluator(database, SETTINGS)
        for n in minutes:
            report = await evaluator.cycle(minute(n))
            assert report.failed == []
            seen[n] = open_alerts(estate)
    return seen


async def test_a_slow_branch_link_is_one_network_alert_naming_the_site_with_its_users(estate: Estate) -> None:
    configure(estate, RULES)
    write_rum(estate, -40, 50, faults=[("network", "branch-east", None, 500.0, 5, 100)])
    seen = await run(estate, range(1, 9))
    assert all(not seen[n] for n in range(1, 6)), seen  # minute 5 is first judged at 6
    (alert,) = seen[6]  # one incident, not one per transaction
    assert alert["state"] == "firing"
    assert alert["started_at"] == minute(6)
    assert alert["severity"] == "critical"
    assert (alert["tier"], alert["component"]) == ("network", "branch-east")
    assert alert["group_key"] == "cause:network:branch-east"
    assert alert["confidence"] > 0.9
    assert sorted(map(tuple, alert["bts"])) == sorted(PAGES)
    network = alert["evidence"]["tiers"]["network"]
    assert network["baseline"] == pytest.approx(90, rel=0.05)
    assert network["now"] == pytest.approx((90 + 590) / 2, rel=0.05)  # minutes 4 and 5
    assert "users at branch-east: network time" in alert["title"]
    assert "network time in branch-east" in alert["title"]
    (final,) = seen[8]
    impact = final["impact"]
    assert impact["users_from"] == "rum"
    assert impact["sites"] == ["branch-east"]
    assert impact["users"] == 3  # one per page at branch-east; hq's and branch-west's were not slowed
    assert impact["sessions"] == 3


@pytest.mark.parametrize(
    ("second", "pages_at"),
    [
        (25, 6),  # 35 s of the fault in minute 5: that minute alone pages (a 2-minute window: 7)
        (45, 7),  # 15 s of it: too little to page; the first whole minute does
    ],
)
async def test_with_the_demos_rules_a_slow_link_pages_after_its_first_minute_whenever_it_starts(
    estate: Estate, second: int, pages_at: int
) -> None:
    """The demo's real-user rules (demo/alerting.yaml) judge a minute at a time:
    a link 500 ms slower from ``second`` s into minute 5 pages at the
    evaluation after minute 5 or 6, so within two minutes of its start at any
    second plus the alert delay, not a minute later when the fault's share of a
    2-minute mean stays under the floor."""
    configure(estate, DEMO_RULES)
    share = (60 - second) / 60  # the fault's part of minute 5's experiences
    faults = [
        ("network", "branch-east", None, 500.0 * share, 5, 6),
        ("network", "branch-east", None, 500.0, 6, 100),
    ]
    write_rum(estate, -40, 50, faults=faults)
    seen = await run(estate, range(1, 9))
    firing = [n for n in seen if any(a["state"] == "firing" for a in seen[n])]
    assert firing[:1] == [pages_at], {n: [a["title"] for a in seen[n]] for n in seen}
    (alert,) = seen[pages_at]
    assert (alert["tier"], alert["component"]) == ("network", "branch-east")
    assert alert["severity"] in ("warning", "critical")
    assert pages_at * 60 - (5 * 60 + second) < 120  # the evaluation's minute, from the fault's start


async def test_a_heavy_script_is_one_browser_alert_naming_the_page(estate: Estate) -> None:
    configure(estate, RULES)
    pipeline = ("crm-web", "CRM / Opportunity pipeline")
    write_rum(estate, -40, 50, faults=[("browser", None, pipeline, 1000.0, 5, 100)])
    seen = await run(estate, range(4, 8))
    assert not seen[4]
    assert not seen[5]
    (alert,) = seen[6]
    assert alert["state"] == "firing"
    assert (alert["tier"], alert["component"]) == ("browser", "crm-web /pipeline")
    assert [tuple(b) for b in alert["bts"]] == [pipeline]
    assert alert["evidence"]["component"]["now"] == pytest.approx((150 + 1150) / 2, rel=0.05)
    assert alert["evidence"]["tiers"]["browser"]["share"] > 0.9
    (final,) = seen[7]
    assert final["impact"]["users_from"] == "rum"
    assert final["impact"]["sites"] == sorted(SITES)
    assert final["impact"]["users"] == 3  # its user at each of three sites


async def test_a_slowdown_every_site_shares_is_no_sites_network(estate: Estate) -> None:
    # A busy server keeps every user waiting before it serves them: the browser
    # counts that as network time, at every site alike.
    configure(estate, RULES)
    write_rum(estate, -40, 50, faults=[("network", None, None, 300.0, 5, 100)])
    seen = await run(estate, range(1, 10))
    assert all(not alerts for alerts in seen.values()), seen


async def test_real_users_traffic_without_a_fault_gives_no_alert(estate: Estate) -> None:
    configure(estate, RULES)
    write_rum(estate, -40, 70)
    seen = await run(estate, range(1, 30))
    assert all(not alerts for alerts in seen.values()), seen


async def test_a_learnt_band_judges_a_site_once_its_history_exists(estate: Estate) -> None:
    # Four days of hour rollups teach the hour-of-day band (no recent minutes needed).
    configure(estate, RULES)
    hours: list[tuple[Any, ...]] = []
    for h in range(4 * 24):
        bucket = START - timedelta(hours=1) - timedelta(days=4) + timedelta(hours=h)
        for site, network in SITES.items():
            tiers = [0] * len(RUM_TIERS)
            wobble = (1 + 0.02 * ((h % 5) - 2)) * 1000 * 600
            tiers[RUM_TIERS.index("network")] = round(network * wobble)
            tiers[RUM_TIERS.index("browser")] = round(PAGES[("crm-web", "CRM / Lead list")][1] * wobble)
            hours.append((estate.tenant_id, "hour", bucket, "crm-web", "CRM / Lead list", site, 600, tiers))
    with psycopg.connect(estate.dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO rum_rollups (tenant_id, resolution, bucket, service, name, site, count, errors, "
            "duration_sum_ms, apdex_satisfied, apdex_tolerating, latency, tier_sum_us, tier_errors, "
            "vital_count, vital_good, vital_poor, vitals) VALUES (%s, %s, %s, %s, %s, %s, %s, 0, 0, 0, 0, "
            "'', %s, '{}', '{}', '{}', '{}', '')",
            hours,
        )
    write_rum(estate, 1, 8, faults=[("network", "branch-west", None, 400.0, 4, 100)])
    seen = await run(estate, range(3, 7))
    assert not seen[3]
    assert not seen[4]
    (alert,) = seen[5]
    assert (alert["tier"], alert["component"]) == ("network", "branch-west")
    (signal,) = alert["evidence"]["signals"]
    assert signal["baseline_from"] == "baseline"
    assert signal["expected"] == pytest.approx(80, rel=0.05)


# -- impact: real users first, else traces, else requests --------------------------


async def _impact(estate: Estate, bts: list[tuple[str, str]], threshold_us: float) -> dict[str, Any]:
    async with Database(estate.dsn) as database, database.connection() as conn:
        found = await assess(
            conn, estate.tenant_id, bts, minute(0), minute(10), threshold_us, "critical", [], {}, 1.0
        )
    return found.as_dict()


async def _traces(estate: Estate, key: tuple[str, str], users: list[str | None]) -> None:
    """Traces of 900 ms at minute 2, one per user (None: a trace without a user)."""
    await _ensure_days(estate.dsn, {minute(2).date()})
    with psycopg.connect(estate.dsn) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO trace_summaries (tenant_id, trace_id, start_time, duration_us, service, bt, error, "
            "tier_us, span_count, user_hash, session_id) VALUES (%s, %s, %s, 900000, %s, %s, false, %s, 1, "
            "%s, %s)",
            [
                (estate.tenant_id, os.urandom(16), minute(2), *key, [0] * 9, user, user and f"s-{user}")
                for user in users
            ],
        )


async def test_impact_counts_real_users_then_traces_then_requests(estate: Estate) -> None:
    lead_list, other = ("crm-web", "CRM / Lead list"), ("crm-web", "CRM / Settings")
    anonymous = ("api", "GET /x")
    write_rum(estate, 0, 3)  # real users of the lead list: 40 ms on the server's side, at three sites
    await _traces(estate, lead_list, ["t1", "t2"])
    await _traces(estate, other, ["t1", "t2", "t3", "t4"])
    await _traces(estate, anonymous, [None, None, None])
    # Experiences exist: they count, not the traces (whose users are others: t1, t2).
    slowed = await _impact(estate, [lead_list], 30_000)
    assert (slowed["users_from"], slowed["users"], slowed["sites"]) == ("rum", 3, sorted(SITES))
    assert slowed["sessions"] == 3
    # Their browser and network time is not the server's: at 100 ms nobody was slowed.
    spared = await _impact(estate, [lead_list], 100_000)
    assert (spared["users_from"], spared["users"], spared["sites"]) == ("rum", 0, [])
    # No experience of a transaction: its traces' users.
    traced = await _impact(estate, [other], 100_000)
    assert (traced["users_from"], traced["users"], traced["sessions"], traced["sites"]) == ("users", 4, 4, [])
    # Traces without users: the affected requests stand in.
    requests = await _impact(estate, [anonymous], 100_000)
    assert (requests["users_from"], requests["users"], requests["requests"]) == ("requests", 3, 3)
