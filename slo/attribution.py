"""Who owns the bad events: attribution of a missed objective to tiers (and, later, sites).

Rollups do not keep each request, so bad events are attributed bucket by bucket
(an hour of a business transaction, or a minute) from what the bucket does keep:

**Latency** (and Apdex): in a bucket with ``b`` slow requests, each tier's mean
time per request is compared with that tier's *normal* time — the median over
the window's buckets, which an incident lasting less than half the window does
not move. The ``b`` events are shared among the tiers in proportion to their
excess over normal: if the database went from 300 ms to 1.5 s while the rest
stayed put, the database owns the bucket's slow requests. A bucket where no
tier exceeds its normal time (slow requests spread evenly, as at a constant
load) is shared in proportion to each tier's time instead. An excess counts in
full once it is a tenth of the bucket's time (``MATERIAL_EXCESS``); a smaller
one only in proportion: 5 ms over the median of a 1.1 s request is jitter (or
one trace of forty missing a part), not the owner of the bucket's slow requests.

**Availability**: a bucket's errors are shared in proportion to the errors its
components recorded in each tier (a failed SQL statement is ``db``, a failed
outbound call ``external``). Errors with no failing component are
``unattributed``.

Every function returns bad events per owner; :func:`shares` turns them into
shares that sum to exactly 1. With real-user experiences the rows are (bucket,
site) pairs and the owners include ``browser`` and ``network``: the matrix of
:func:`latency_owners_per_row` summed by site says who owns what where — "30 %
the network to branch B" (slo/experienced.py).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

UNATTRIBUTED = "unattributed"
# The excess over normal that makes a row's slow requests its own: a tenth of
# the row's time per request (less is shared with the time spent, in proportion).
MATERIAL_EXCESS = 0.1
Array = npt.NDArray[np.float64]


def latency_owners(bad: Array, calls: Array, owner_us: Array) -> Array:
    """Slow events per owner (columns of ``owner_us``, time summed per bucket)."""
    owned: Array = latency_owners_per_row(bad, calls, owner_us).sum(axis=0)
    return owned


def latency_owners_per_row(bad: Array, calls: Array, owner_us: Array) -> Array:
    """Slow events per row (bucket, or bucket and site) and owner: the matrix that
    :func:`latency_owners` sums (per-site attribution sums it by site instead)."""
    bad, calls, owner_us = np.asarray(bad, float), np.asarray(calls, float), np.asarray(owner_us, float)
    with_calls = calls > 0
    mean = np.zeros_like(owner_us)
    mean[with_calls] = owner_us[with_calls] / calls[with_calls, None]
    normal = np.median(mean[with_calls], axis=0) if with_calls.any() else np.zeros(owner_us.shape[1])
    excess = np.clip(mean - normal, 0, None)
    by_excess, by_time = _normalised(excess), _normalised(mean)
    # How far the excess speaks for the row: fully from MATERIAL_EXCESS of its
    # time on, not at all without one. A few ms above the median are jitter: they
    # must not take every slow request of the row from the time that was spent.
    material = np.clip(
        np.divide(
            excess.sum(axis=1),
            MATERIAL_EXCESS * mean.sum(axis=1),
            out=np.zeros(len(mean)),
            where=mean.sum(axis=1) > 0,
        ),
        0,
        1,
    )[:, None]
    owned: Array = bad[:, None] * (material * by_excess + (1 - material) * by_time)
    return owned


def _normalised(weights: Array) -> Array:
    totals = weights.sum(axis=1, keepdims=True)
    return np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)


def error_owners(errors: Array, owner_errors: Array) -> tuple[Array, float]:
    """Errors per owner, and the errors no owner recorded (unattributed)."""
    errors, owner_errors = np.asarray(errors, float), np.asarray(owner_errors, float)
    totals = owner_errors.sum(axis=1, keepdims=True)
    weights = np.divide(owner_errors, totals, out=np.zeros_like(owner_errors), where=totals > 0)
    owned: Array = (errors[:, None] * weights).sum(axis=0)
    unattributed = float(errors[totals[:, 0] <= 0].sum())
    return owned, unattributed


def shares(
    owners: Sequence[str], owned: Array, unattributed: float = 0.0, digits: int = 4
) -> dict[str, float]:
    """Owners' shares of the bad events, largest first, rounded so that they sum to 1.

    Rounding each share alone can make them sum to 0.9999; the largest
    remainder method hands the missing units to the shares rounded down most.
    """
    ranked = ranked_shares([*owners, UNATTRIBUTED], [*(float(v) for v in owned), unattributed], digits)
    return dict(ranked)


def ranked_shares(
    owners: Sequence[Hashable], owned: Sequence[float], digits: int = 4
) -> list[tuple[Any, float]]:
    """(owner, share) pairs, largest first, without zero shares, summing to exactly 1
    (largest remainders); owners may be any keys, e.g. (tier, site) pairs."""
    values = [float(v) for v in owned]
    total = sum(values)
    if total <= 0:
        return []
    unit = 10**digits
    exact = [v / total * unit for v in values]
    floors = [int(np.floor(x)) for x in exact]
    missing = unit - sum(floors)
    for index in sorted(range(len(exact)), key=lambda i: floors[i] - exact[i])[:missing]:
        floors[index] += 1
    ranked = sorted(((n, f) for n, f in zip(owners, floors, strict=True) if f > 0), key=lambda x: -x[1])
    return [(name, units / unit) for name, units in ranked]
