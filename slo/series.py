"""Rollups as regular series of metrics: what baselines and forecasts learn from.

A metric is one of ``p95_ms``, ``error_rate``, ``throughput`` (requests per
minute) and ``tier_ms.<tier>`` (mean time per request in a tier), and, where
real users were seen, ``tier_ms.network@<site>`` (mean network time per user
action at a site). A step with
no requests has throughput 0 and no value (NaN) for the others: an idle hour
says nothing about latency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt

from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram
from tierscope.processing.rum_rollup import RUM_TIERS
from tierscope.store.slo import Buckets

BASIC = ("p95_ms", "error_rate", "throughput")
METRICS = (*BASIC, *(f"tier_ms.{tier}" for tier in TIERS))
UPWARDS_ONLY = frozenset(m for m in METRICS if m != "throughput")  # lower is never an incident
SITE_NETWORK = "tier_ms.network@"  # + a site: per-site network time, from real-user experiences
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


def network_by_site(
    rows: Sequence[Mapping[str, Any]], start: datetime, steps: int, step: timedelta
) -> dict[str, npt.NDArray[np.float64]]:
    """``tier_ms.network@<site>``: the mean network time per user action at each
    site (real-user rollups, store.rum_rollups.transaction_rows), NaN in steps
    without actions. The WAN to one branch has a normal of its own."""
    network = RUM_TIERS.index("network")
    calls: dict[str, npt.NDArray[np.float64]] = {}
    network_us: dict[str, npt.NDArray[np.float64]] = {}
    for row in rows:
        at = int((row["bucket"] - start) / step)
        if not row["site"] or not 0 <= at < steps:
            continue
        site = row["site"]
        if site not in calls:
            calls[site], network_us[site] = np.zeros(steps), np.zeros(steps)
        calls[site][at] += row["count"]
        network_us[site][at] += row["tier_sum_us"][network]
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            f"{SITE_NETWORK}{site}": np.where(calls[site] > 0, network_us[site] / calls[site] / 1000, np.nan)
            for site in sorted(calls)
        }


def known(metric: str) -> bool:
    return metric in METRICS or (metric.startswith(SITE_NETWORK) and len(metric) > len(SITE_NETWORK))


def upwards_only(metric: str) -> bool:
    """Whether only a rise is an incident (anything but throughput)."""
    return metric in UPWARDS_ONLY or metric.startswith(SITE_NETWORK)


def present(values: Metrics) -> list[str]:
    """The metrics worth a baseline: the basic three, the tiers the transaction
    spends time in, and the network time of each site its users are at."""
    basic = [m for m in METRICS if m in BASIC or np.nan_to_num(values[m]).any()]
    return basic + sorted(m for m in values if m.startswith(SITE_NETWORK))
