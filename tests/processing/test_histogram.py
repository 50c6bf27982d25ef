"""Merged histograms answer quantiles within 2 % of numpy's exact ones."""

from __future__ import annotations

import numpy as np
import pytest

from tierscope.processing import histogram
from tierscope.processing.query import LATENCY_QUANTILES, latency_quantiles

RNG = np.random.default_rng(20261124)
DISTRIBUTIONS = {
    "uniform latencies between 1 ms and 2 s": RNG.uniform(1_000, 2_000_000, 50_000),
    "log-normal latencies around 60 ms": RNG.lognormal(11, 1.2, 50_000),
    "heavy-tailed (Pareto) latencies": (RNG.pareto(1.2, 50_000) + 1) * 5_000,
    "a few values repeated many times": np.repeat([800.0, 12_000.0, 250_000.0], [30_000, 15_000, 5_000]),
}


@pytest.mark.parametrize("name", list(DISTRIBUTIONS))
def test_quantiles_of_many_merged_histograms_are_within_two_percent(name: str) -> None:
    data = DISTRIBUTIONS[name]
    # As rollups are: many small histograms (minutes, collectors), encoded, merged.
    encoded = []
    for part in np.array_split(data, 37):
        counts: histogram.Counts = {}
        for value in part:
            histogram.add(counts, float(value))
        encoded.append(histogram.encode(counts))
    merged = histogram.Merged([0] * len(encoded), encoded)
    assert merged.count(0) == len(data)
    for q, estimate in zip((0.5, 0.95, 0.99), merged.quantiles(0, (0.5, 0.95, 0.99)), strict=True):
        exact = float(np.quantile(data, q))
        assert estimate is not None
        assert abs(estimate - exact) / exact <= 0.02, (q, estimate, exact)


def test_groups_and_dimensions_stay_apart() -> None:
    a: histogram.Counts = {}
    b: histogram.Counts = {}
    for _ in range(100):
        histogram.add(a, 1_000)
        histogram.add(a, 50_000, dimension=3)
        histogram.add(b, 9_000)
    merged = histogram.Merged([0, 1, 0], [histogram.encode(a), histogram.encode(b), histogram.encode(a)])
    assert merged.count(0) == 200
    assert merged.count(0, dimension=3) == 200
    assert merged.count(1) == 100
    assert merged.count(1, dimension=3) == 0
    (median,) = merged.quantiles(0, (0.5,), dimension=3)
    assert median == pytest.approx(50_000, rel=0.01)
    assert merged.quantiles(2, (0.5,)) == [None]


def test_encoding_round_trips_and_extremes_are_clamped() -> None:
    counts: histogram.Counts = {}
    for value in (0, 0.5, 1, 2, 10**15, 3_600_000_000):
        histogram.add(counts, value)
    assert histogram.decode(histogram.encode(counts)) == counts
    assert max(counts) <= histogram.MAX_BUCKET
    assert histogram.encode({}) == histogram.encode(histogram.decode(histogram.encode({})))


def test_histograms_concatenated_by_sql_merge_like_separate_ones() -> None:
    """string_agg(latency, '') returns a group's histograms back to back."""
    parts = []
    for median in (1_000, 5_000, 80_000):
        counts: histogram.Counts = {}
        for value in RNG.lognormal(np.log(median), 0.3, 500):
            histogram.add(counts, float(value))
        parts.append(histogram.encode(counts))
    separate = histogram.Merged([0, 0, 0], parts)
    joined = histogram.Merged([0], [b"".join(parts)])
    assert joined.count(0) == separate.count(0) == 1500
    assert joined.quantiles(0, (0.1, 0.5, 0.99)) == separate.quantiles(0, (0.1, 0.5, 0.99))
    with pytest.raises(ValueError, match="not a tierscope histogram"):
        histogram.Merged([0], [b"garbage!"])


_ONE = histogram.encode({10: 3, 20: 4})  # header and two buckets: 24 bytes
_TWO = histogram.encode({30: 1})


@pytest.mark.parametrize(
    "blobs",
    [
        pytest.param([b"garbage!"], id="not a histogram at all"),
        pytest.param([_ONE[:-8]], id="a histogram cut short"),
        pytest.param([_ONE[:-3]], id="a blob of a length no histogram has"),
        pytest.param([_ONE[:16], _ONE[16:] + _TWO], id="a histogram running into the next group's blob"),
        pytest.param([_ONE[:3] + b"\x09" + _ONE[4:]], id="an unknown version"),
        pytest.param([_ONE + b"\x00" * 8], id="trailing words after the last histogram"),
    ],
)
def test_damaged_histograms_are_refused_not_misread(blobs: list[bytes]) -> None:
    with pytest.raises(ValueError, match="not a tierscope histogram"):
        histogram.Merged(range(len(blobs)), blobs)


def test_empty_blobs_and_empty_histograms_merge_to_nothing() -> None:
    merged = histogram.Merged([0, 1, 1], [b"", histogram.encode({}), _TWO])
    assert merged.count(0) == 0
    assert merged.count(1) == 1


def test_a_tier_quantile_counts_the_calls_that_spent_nothing_there_as_zeros() -> None:
    # 1,000 calls of one transaction; 300 of them spent no time in the database.
    db = np.concatenate([np.zeros(300), RNG.lognormal(10, 1.0, 700)])
    app = RNG.uniform(5_000, 90_000, 1_000)
    encoded = []
    for db_part, app_part in zip(np.array_split(db, 9), np.array_split(app, 9), strict=True):
        counts: histogram.Counts = {}
        for value in db_part[db_part > 0]:  # as rollups store them: no zeros
            histogram.add(counts, float(value), dimension=5)
        for value in app_part:
            histogram.add(counts, float(value), dimension=3)
        encoded.append(histogram.encode(counts))
    merged = histogram.Merged([0] * len(encoded), encoded)
    for dimension, data in ((5, db), (3, app)):
        zeros = len(data) - merged.count(0, dimension)
        for q in (0.2, 0.5, 0.95):
            (estimate,) = merged.quantiles(0, (q,), dimension=dimension, zeros=zeros)
            exact = float(np.quantile(data, q))
            assert estimate is not None
            assert abs(estimate - exact) <= 0.02 * exact, (dimension, q, estimate, exact)
    # the 30th percentile and below fall among the zeros
    assert merged.quantiles(0, (0.25,), dimension=5, zeros=300) == [0.0]


def test_the_vectorised_quantile_and_counts_agree_with_the_per_group_ones() -> None:
    encoded, owners = [], []
    for group in range(40):
        counts: histogram.Counts = {}
        for value in RNG.lognormal(9 + group % 5, 1.0, 50):
            histogram.add(counts, float(value), dimension=group % 3)
        encoded.append(histogram.encode(counts))
        owners.append(group)
    merged = histogram.Merged(owners, encoded)
    for dimension in range(3):
        each = merged.quantile_of_each(0.95, dimension)
        below = merged.at_most(20_000, dimension)
        for group in range(40):
            (one,) = merged.quantiles(group, (0.95,), dimension)
            if group % 3 == dimension:
                assert one == pytest.approx(each[group])
                assert merged.count(group, dimension) == 50
            else:
                assert one is None
                assert np.isnan(each[group])
                assert below[group] == 0


def test_the_transaction_list_quantiles_computed_at_once_equal_the_per_group_ones() -> None:
    """GET /api/v1/transactions computes p50/p95/p99 of all groups in one pass."""
    encoded = []
    for group in range(30):
        counts: histogram.Counts = {}
        for value in RNG.pareto(1.5 + group % 4, 1 + group * 7) * 1_000 + 1:
            histogram.add(counts, float(value))
        encoded.append(histogram.encode(counts))
    merged = histogram.Merged([*range(30), 30], [*encoded, b""])  # group 30 is empty
    at_once = latency_quantiles(merged)
    for group in range(31):
        assert at_once[group] == merged.quantiles(group, LATENCY_QUANTILES)


def test_the_kth_largest_of_each_group_is_its_order_statistic() -> None:
    groups = [RNG.lognormal(10, 1.5, size) for size in (1, 2, 12, 300)]
    encoded = []
    for data in groups:
        counts: histogram.Counts = {}
        for value in data:
            histogram.add(counts, float(value))
        encoded.append(histogram.encode(counts))
    merged = histogram.Merged(range(len(groups)), encoded)
    for k in (1, 2, 5):
        each = merged.largest_of_each(k)
        for group, data in enumerate(groups):
            if len(data) < k:
                assert np.isnan(each[group])
            else:
                exact = float(np.sort(data)[-k])
                assert each[group] == pytest.approx(exact, rel=0.02), (group, k)
