"""Rollups as regular series of metrics: what baselines and forecasts learn from.

A metric is one of ``p95_ms``, ``error_rate``, ``throughput`` (requests per
minute) and ``tier_ms.<tier>`` (mean time per request in a tier). A step with
no requests has throughput 0 and no value (NaN) for the others: an idle hour
says nothing about latency.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram
from tierscope.store.slo import Buckets

BASIC = ("p95_ms", "error_rate", "throughput")
METRICS = (*BASIC, *(f"tier_ms.{tier}" for tier in TIERS))
UPWARDS_ONLY = frozenset(m for m in METRICS if m != "throughput")  # lower is never an incident
Metrics = dict[str, npt.NDArray[np.float64]]


def regular(
    buckets: Buckets, start: datetime, steps: int, step: timedelta
) -> dict[str, npt.NDArray[np.float64]]:
    """Every metric at each of ``steps`` steps of ``step`` from ``start``."""
    rows = [int((moment - start) / step) for moment in buckets.starts]
    inside = [i for i, row in enumerate(rows) if 0 <= row < steps]
    where = np.asarray([rows[i] for i in inside], dtype=np.int64)
    calls, errors = np.zeros(steps), np.zeros(steps)
    tier_us = np.zeros((steps, len(TIERS)))
    # Summed, not assigned: several buckets may fall in one step (minutes read as an hour).
    np.add.at(calls, where, buckets.calls[inside])
    np.add.at(errors, where, buckets.errors[inside])
    np.add.at(tier_us, where, buckets.tier_us[inside])
    merged = histogram.Merged(where.tolist(), (buckets.latency[i] for i in inside))
    p95 = np.full(steps, np.nan)
    for row in np.unique(where[calls[where] > 0]):
        value = merged.quantiles(int(row), (0.95,))[0]
        p95[row] = np.nan if value is None else value / 1000
    busy = calls > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        result = {
            "p95_ms": p95,
            "error_rate": np.where(busy, errors / calls, np.nan),
            "throughput": calls / (step / timedelta(minutes=1)),
        }
        for index, tier in enumerate(TIERS):
            result[f"tier_ms.{tier}"] = np.where(busy, tier_us[:, index] / calls / 1000, np.nan)
    return result


def present(values: Metrics) -> list[str]:
    """The metrics worth a baseline: the basic three, and the tiers the transaction spends time in."""
    return [m for m in METRICS if m in BASIC or np.nan_to_num(values[m]).any()]
