"""Attribution of bad events to tiers: who owns the missed objective, shares summing to 100 %."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tierscope.slo import attribution

OWNERS = ("web", "app", "db", "network")


def ms(*values: float) -> list[float]:
    return [v * 1000 for v in values]


def test_a_database_slowdown_owns_the_slow_requests() -> None:
    # Four normal hours (app 200 ms, db 300 ms per request), then an hour in which
    # the database takes 1.5 s and 60 of 100 requests miss the threshold.
    calls = np.array([100, 100, 100, 100, 100.0])
    per_request = np.array([ms(10, 200, 300, 50)] * 4 + [ms(10, 200, 1500, 50)])
    bad = np.array([0, 0, 0, 0, 60.0])
    owned = attribution.latency_owners(bad, calls, per_request * calls[:, None])
    assert owned.tolist() == [0, 0, 60, 0]
    assert attribution.shares(OWNERS, owned) == {"db": 1.0}


def test_two_tiers_slower_than_normal_share_by_their_excess() -> None:
    # db +900 ms and network +300 ms over normal: 3/4 and 1/4 of the 40 slow requests.
    calls = np.array([100, 100, 100.0])
    per_request = np.array([ms(10, 200, 300, 50), ms(10, 200, 300, 50), ms(10, 200, 1200, 350)])
    owned = attribution.latency_owners(np.array([0, 0, 40.0]), calls, per_request * calls[:, None])
    assert owned.tolist() == pytest.approx([0, 0, 30, 10])
    assert attribution.shares(OWNERS, owned) == {"db": 0.75, "network": 0.25}


def test_without_an_excess_slow_requests_are_shared_by_time() -> None:
    calls = np.array([10.0])
    per_request = np.array([ms(0, 500, 1500, 0)])
    owned = attribution.latency_owners(np.array([4.0]), calls, per_request * calls[:, None])
    assert attribution.shares(OWNERS, owned) == {"db": 0.75, "app": 0.25}


def test_a_few_milliseconds_over_the_median_do_not_take_a_rows_slow_requests() -> None:
    # Two sites' rows (web, app, db, network): every request is slow; in Lyon one
    # trace of twenty lacked a part, so its means are 10 ms lower and Hamburg's app
    # and db sit 5 ms over the median of the two. Hamburg's slow requests are
    # still shared by the time spent, not handed to that jitter.
    calls = np.array([20, 20.0])
    per_request = np.array([ms(10, 500, 400, 210), ms(2250, 490, 390, 230)])
    owned = attribution.latency_owners_per_row(np.array([20, 20.0]), calls, per_request * calls[:, None])
    hamburg = owned[0] / 20
    assert hamburg.tolist() == pytest.approx([10 / 1120, 500 / 1120, 400 / 1120, 210 / 1120], abs=0.02)
    # Lyon's browser time, 1.1 s over the median, owns Lyon's slow requests.
    assert owned[1][0] / 20 == pytest.approx(1, abs=0.02)


def test_an_excess_counts_in_full_from_a_tenth_of_the_rows_time() -> None:
    calls = np.array([10, 10, 10.0])
    normal = ms(0, 450, 450, 100)
    per_request = np.array([normal, normal, ms(0, 450, 570, 100)])  # db +120 ms of 1120
    owned = attribution.latency_owners_per_row(np.array([0, 0, 5.0]), calls, per_request * calls[:, None])
    assert owned[2].tolist() == pytest.approx([0, 0, 5, 0])
    half = np.array([normal, normal, ms(0, 450, 505.5, 100)])  # +55.5 ms of 1055.5: about half
    owned = attribution.latency_owners_per_row(np.array([0, 0, 10.0]), calls, half * calls[:, None])
    assert 5 < owned[2][2] < 8  # db: half its excess share, half its time share


def test_errors_go_to_the_tiers_whose_components_failed_and_the_rest_is_unattributed() -> None:
    errors = np.array([10, 6, 4.0])
    component_errors = np.array([[0, 0, 5, 0], [0, 3, 0, 3], [0, 0, 0, 0.0]])
    owned, unattributed = attribution.error_owners(errors, component_errors)
    assert owned.tolist() == [0, 3, 10, 3]
    assert unattributed == 4
    assert attribution.shares(OWNERS, owned, unattributed) == {
        "db": 0.5,
        "app": 0.15,
        "network": 0.15,
        "unattributed": 0.2,
    }


def test_no_bad_events_means_nothing_to_attribute() -> None:
    assert attribution.shares(OWNERS, np.zeros(4)) == {}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=4, max_size=4), st.floats(0, 1e6))
def test_shares_always_sum_to_exactly_one(owned: list[float], unattributed: float) -> None:
    result = attribution.shares(OWNERS, np.array(owned), unattributed)
    if sum(owned) + unattributed <= 0:
        assert result == {}
        return
    units = [round(share * 10_000) for share in result.values()]
    assert sum(units) == 10_000  # exact in the four digits reported
    assert math.fsum(result.values()) == pytest.approx(1, abs=1e-12)
    assert all(share > 0 for share in result.values())


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 48), st.integers(0, 2**31))
def test_latency_attribution_hands_out_every_bad_event(buckets: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    calls = rng.integers(0, 500, buckets).astype(float)
    bad = np.floor(calls * rng.random(buckets))
    tier_us = rng.gamma(2, 1e5, (buckets, 4)) * calls[:, None]
    owned = attribution.latency_owners(bad, calls, tier_us)
    assert owned.sum() == pytest.approx(bad[calls > 0].sum())
