"""Attribution of user-experienced bad events by tier and site: exact numbers.

Rows are (hour, site) pairs of real-user rollups; times are per user action.
Four ordinary hours at three sites set what is normal (browser 200 ms, network
50 ms, app 100 ms, db 300 ms); then one hour where something went wrong.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from tierscope.processing.rum_rollup import ERROR_OWNERS, RUM_TIERS
from tierscope.slo import experienced
from tierscope.store.slo import Buckets

START = datetime(2026, 11, 2, 8, tzinfo=UTC)
SITES = ("head-office", "branch-b", "branch-c")
NORMAL = {"browser": 200, "network": 50, "app": 100, "db": 300}


def rows(incident: dict[str, dict[str, Any]], calls: int = 100) -> tuple[experienced.SiteRows, np.ndarray]:
    """Four normal hours at every site, then the incident hour: per site its
    per-action times (over normal), its bad actions and its failed ones per owner."""
    keys, times, bad, errors = [], [], [], []
    for hour in range(5):
        for site in SITES:
            change = incident.get(site, {}) if hour == 4 else {}
            keys.append((START + timedelta(hours=hour), site))
            times.append([calls * 1000 * change.get(t, NORMAL.get(t, 0)) for t in RUM_TIERS])
            bad.append(change.get("bad", 0))
            errors.append([change.get("failed", {}).get(owner, 0) for owner in ERROR_OWNERS])
    size = len(keys)
    site_rows = experienced.SiteRows(
        starts=[start for start, _ in keys],
        calls=np.full(size, float(calls)),
        errors=np.asarray([sum(e) for e in errors], dtype=float),
        satisfied=np.zeros(size),
        tolerating=np.zeros(size),
        tier_us=np.asarray(times, dtype=float),
        latency=[b""] * size,
        sites=[site for _, site in keys],
        tier_errors=np.asarray(errors, dtype=float),
        user_actions=np.ones(size, dtype=bool),
    )
    return site_rows, np.asarray(bad, dtype=float)


LATENCY: dict[str, tuple[dict[str, dict[str, Any]], dict[str, Any]]] = {
    "A slow database owns everyone's slow actions, a slow WAN only its branch's": (
        {
            "head-office": {"db": 1500, "bad": 62},
            "branch-b": {"network": 650, "bad": 30},
            "branch-c": {"browser": 900, "bad": 8},
        },
        {
            "attribution": {"db": 0.62, "network": 0.3, "browser": 0.08},
            "attribution_by_site": {"head-office": 0.62, "branch-b": 0.3, "branch-c": 0.08},
            "attribution_by_tier_and_site": [
                {"tier": "db", "site": "head-office", "share": 0.62},
                {"tier": "network", "site": "branch-b", "share": 0.3},
                {"tier": "browser", "site": "branch-c", "share": 0.08},
            ],
            "attribution_summary": "62 % of the bad events was db time, 30 % the network to branch-b, "
            "8 % browser time at branch-c",
        },
    ),
    "Two tiers slower than normal at one site share its slow actions by their excess": (
        {"branch-b": {"network": 350, "db": 1200, "bad": 40}},  # +300 ms and +900 ms
        {
            "attribution": {"db": 0.75, "network": 0.25},
            "attribution_by_site": {"branch-b": 1.0},
            "attribution_by_tier_and_site": [
                {"tier": "db", "site": "branch-b", "share": 0.75},
                {"tier": "network", "site": "branch-b", "share": 0.25},
            ],
            "attribution_summary": "75 % of the bad events was db time, 25 % the network to branch-b",
        },
    ),
    "A database slow at two sites is one owner in the summary, two rows by site": (
        {"head-office": {"db": 900, "bad": 30}, "branch-c": {"db": 900, "bad": 10}},
        {
            "attribution": {"db": 1.0},
            "attribution_by_site": {"head-office": 0.75, "branch-c": 0.25},
            "attribution_by_tier_and_site": [
                {"tier": "db", "site": "head-office", "share": 0.75},
                {"tier": "db", "site": "branch-c", "share": 0.25},
            ],
            "attribution_summary": "100 % of the bad events was db time",
        },
    ),
}


@pytest.mark.parametrize("case", LATENCY, ids=list(LATENCY))
def test_latency_attribution_by_tier_and_site(case: str) -> None:
    incident, expected = LATENCY[case]
    site_rows, bad = rows(incident)
    found = experienced.attribute(site_rows, bad, np.ones(len(bad), dtype=bool), "latency")
    assert found == expected
    for view in ("attribution", "attribution_by_site"):
        assert math.fsum(found[view].values()) == pytest.approx(1, abs=1e-12)
    assert math.fsum(pair["share"] for pair in found["attribution_by_tier_and_site"]) == pytest.approx(1)


def test_failed_actions_go_to_the_tier_that_failed_and_network_failures_to_their_site() -> None:
    site_rows, _ = rows(
        {
            "head-office": {"failed": {"db": 5, "unattributed": 2}},
            "branch-b": {"failed": {"network": 3}},
        }
    )
    found = experienced.attribute(
        site_rows, site_rows.errors, np.ones(len(site_rows), dtype=bool), "availability"
    )
    assert found["attribution"] == {"db": 0.5, "network": 0.3, "unattributed": 0.2}
    assert found["attribution_by_site"] == {"head-office": 0.7, "branch-b": 0.3}
    assert found["attribution_by_tier_and_site"] == [
        {"tier": "db", "site": "head-office", "share": 0.5},
        {"tier": "network", "site": "branch-b", "share": 0.3},
        {"tier": "unattributed", "site": "head-office", "share": 0.2},
    ]
    # 3 of the 1,500 user actions failed on the network.
    assert experienced.tier_availability(site_rows, np.ones(len(site_rows), dtype=bool)) == {
        "network": round(1 - 3 / 1500, 6)
    }


def test_server_requests_of_transactions_without_experiences_count_without_a_site() -> None:
    site_rows, _ = rows({"branch-b": {"failed": {"network": 6}}})
    requests = Buckets(
        starts=[START + timedelta(hours=4)],
        calls=np.asarray([400.0]),
        errors=np.asarray([4.0]),
        satisfied=np.zeros(1),
        tolerating=np.zeros(1),
        tier_us=np.zeros((1, 9)),
        latency=[b""],
    )
    component_errors = np.zeros((1, 9))
    component_errors[0, 5] = 4  # db
    both = site_rows + experienced.SiteRows.of_requests(requests, component_errors)
    found = experienced.attribute(both, both.errors, np.ones(len(both), dtype=bool), "availability")
    assert found["attribution"] == {"network": 0.6, "db": 0.4}
    assert found["attribution_by_site"] == {"branch-b": 0.6, "unattributed": 0.4}
    # The network's own availability counts the user actions only (1,500), not the requests.
    assert experienced.tier_availability(both, np.ones(len(both), dtype=bool)) == {
        "network": round(1 - 6 / 1500, 6)
    }


def test_no_bad_events_attribute_nothing() -> None:
    site_rows, bad = rows({})
    found = experienced.attribute(site_rows, bad, np.ones(len(bad), dtype=bool), "latency")
    assert found == {
        "attribution": {},
        "attribution_by_site": {},
        "attribution_by_tier_and_site": [],
        "attribution_summary": None,
    }
