"""Merged histograms answer quantiles within 2 % of numpy's exact ones."""

from __future__ import annotations

import numpy as np
import pytest

from tierscope.processing import histogram

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
