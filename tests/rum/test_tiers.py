"""How an experience's time is split into tiers, rate limits, and the figures
per (business transaction or page, site): exact numbers."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tierscope.collector.ratelimit import RateLimiter
from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram
from tierscope.processing.experiences import split_tiers
from tierscope.processing.experiences_api import summarize
from tierscope.processing.rum_rollup import roll_up


def tier_us(**ms: float) -> list[int]:
    return [int(ms.get(tier, 0) * 1000) for tier in TIERS]


PAGE = {"requestStart": 20.0, "responseStart": 320.0, "responseEnd": 400.0, "end": 1000.0}

SPLITS: dict[str, tuple[dict[str, float], float, Any, dict[str, float]]] = {
    "A page load with its trace: browser after the response, network around the server, server tiers": (
        PAGE,
        1000.0,
        (250_000, tier_us(app=50, db=200)),
        {"browser": 600.0, "network": 150.0, "app": 50.0, "db": 200.0},
    ),
    "Self times that add up to more than the entry (parallel calls) are scaled to the entry": (
        PAGE,
        1000.0,
        (200_000, tier_us(app=100, db=200, external=100)),
        {"browser": 600.0, "network": 200.0, "app": 50.0, "db": 100.0, "external": 50.0},
    ),
    "A server slower than the browser waited (clock of another host) counts what the browser waited": (
        PAGE,
        1000.0,
        (900_000, tier_us(app=900)),
        {"browser": 600.0, "network": 20.0, "app": 380.0},
    ),
    "Without a trace the wait for the first byte is the server": (
        PAGE,
        1000.0,
        None,
        {"browser": 600.0, "network": 100.0, "server": 300.0},
    ),
    "A request ends with its response: no browser time": (
        {"requestStart": 1.0, "responseStart": 81.0, "responseEnd": 91.0, "end": 91.0},
        91.0,
        (60_000, tier_us(app=10, db=50)),
        {"browser": 0.0, "network": 31.0, "app": 10.0, "db": 50.0},
    ),
    "A request without Resource Timing details is all network when untraced": (
        {"responseEnd": 50.0, "end": 50.0},
        50.0,
        None,
        {"browser": 0.0, "network": 50.0, "server": 0.0},
    ),
}


@pytest.mark.parametrize("case", SPLITS, ids=list(SPLITS))
def test_split_tiers(case: str) -> None:
    timing, duration, trace, expected = SPLITS[case]
    tiers = split_tiers(timing, duration, trace)
    assert tiers == pytest.approx(expected)
    assert sum(tiers.values()) == pytest.approx(duration)


def test_a_rate_limit_allows_its_burst_then_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=10, burst=20, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(20)] == [0.0] * 20
    assert limiter.take("a") == pytest.approx(0.1)
    assert limiter.take("b") == 0.0  # another key has its own bucket
    now[0] += 0.5
    assert [limiter.take("a") == 0.0 for _ in range(6)] == [True] * 5 + [False]


def test_a_full_table_forgets_the_longest_idle_bucket() -> None:
    limiter = RateLimiter(rate=1, burst=1, clock=lambda: 0.0, size=2)
    limiter.take("a")
    limiter.take("b")
    limiter.take("c")  # "a" is forgotten and comes back full
    assert limiter.take("a") == 0.0
    assert limiter.take("c") > 0


def experience(duration: float, outcome: str = "ok", **vitals: float) -> dict[str, Any]:
    return {
        "tenant_id": 1,
        "start_time": datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
        "page": "ERP / Post invoice",
        "site": "branch-b",
        "duration_ms": duration,
        "outcome": outcome,
        "vitals": vitals,
        "tier_ms": {"browser": duration / 2, "network": duration / 4, "db": duration / 4},
    }


def test_figures_per_transaction_and_site() -> None:
    rows = [
        experience(400, lcp=1000, cls=0.05, inp=100),
        experience(800, lcp=2000, cls=0.2, inp=300),
        experience(2000, lcp=3000, cls=0.3, inp=600),
        experience(3000, lcp=5000, inp=150),
        experience(500, outcome="error"),
        {**experience(100, lcp=100), "site": "head-office"},
    ]
    stored = [
        {"service": service, "name": name, "site": site, **vars(figures)}
        | {"latency": histogram.encode(figures.latency), "vitals": histogram.encode(figures.vitals)}
        for (_, service, name, site, _), figures in roll_up(rows, apdex_t_ms=1000).items()
    ]
    groups = summarize(stored)
    branch = next(g for g in groups if g["site"] == "branch-b")
    assert branch["count"] == 5
    assert branch["errors"] == 1
    # satisfied: 400, 800; tolerating (up to 4 s): 2000, 3000; the failed one counts as frustrated.
    assert branch["apdex"] == pytest.approx((2 + 2 / 2) / 5)
    lcp = branch["vitals"]["lcp"]
    assert lcp["p75"] == pytest.approx(3500.0, rel=histogram.ALPHA)  # read from the histogram
    assert (lcp["count"], lcp["good"], lcp["needs_improvement"], lcp["poor"]) == (4, 0.5, 0.25, 0.25)
    assert branch["vitals"]["cls"]["good"] == pytest.approx(1 / 3, abs=1e-4)
    assert branch["vitals"]["inp"]["poor"] == 0.25
    assert branch["tier_ms"] == {"browser": 670.0, "network": 335.0, "db": 335.0}
    assert [g["site"] for g in groups] == ["branch-b", "head-office"]
