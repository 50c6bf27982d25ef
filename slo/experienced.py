"""SLIs as users feel them: user actions instead of requests, owned by tier and site.

When real-user experiences exist for a business transaction (RUM rollups of
its (service, BT) in the data read), a latency or availability SLO counts that
transaction's *user actions*: an action is slow when the user waited longer
than the threshold, browser and network included, and failed when the user saw
it fail. Transactions of the SLO without experiences keep counting their
server requests, so a business service half covered by RUM still has every
transaction in its SLI (``sli_source`` is then ``mixed``). Apdex objectives
stay on requests: their T comes from the naming rules, per request.

Rows are (bucket, site) pairs, so the matrix of bad events per row and tier
gives every view at once, each summing to 100 %: by tier (the ``attribution``
map, now with ``browser`` and ``network``), by site, and by tier and site —
"62 % was database time, 30 % the network to branch-b". Server requests have
no site (they count as ``unattributed`` by site).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from tierscope.collector.tiers import TIERS
from tierscope.processing.rum_rollup import ERROR_OWNERS, RUM_TIERS, UNATTRIBUTED
from tierscope.slo import attribution
from tierscope.store.slo import Buckets

Array = npt.NDArray[np.float64]
SITELESS = "unattributed"  # the site key of rows with no site, in attribution_by_site


@dataclass
class SiteRows(Buckets):
    """Rollups per (bucket, site): ``tier_us`` has the columns of ``RUM_TIERS``
    and ``tier_errors`` (failed events per owner) those of ``ERROR_OWNERS``."""

    sites: list[str | None]
    tier_errors: Array
    user_actions: npt.NDArray[np.bool_]  # rows of experiences (not server requests)

    @classmethod
    def of_experiences(cls, rows: list[dict[str, Any]]) -> SiteRows:
        """``rum_rollups`` rows (store.rum_rollups.transaction_rows), summed per (bucket, site)."""
        index: dict[tuple[datetime, str], int] = {}
        for row in rows:
            index.setdefault((row["bucket"], row["site"]), len(index))
        size = len(index)
        figures = np.zeros((size, 4))
        tier_us, tier_errors = np.zeros((size, len(RUM_TIERS))), np.zeros((size, len(ERROR_OWNERS)))
        latency = [b""] * size
        for row in rows:
            at = index[row["bucket"], row["site"]]
            figures[at] += (row["count"], row["errors"], row["apdex_satisfied"], row["apdex_tolerating"])
            tier_us[at] += row["tier_sum_us"]
            tier_errors[at] += row["tier_errors"]
            latency[at] += bytes(row["latency"])
        keys = list(index)
        return cls(
            starts=[bucket for bucket, _ in keys],
            calls=figures[:, 0],
            errors=figures[:, 1],
            satisfied=figures[:, 2],
            tolerating=figures[:, 3],
            tier_us=tier_us,
            latency=latency,
            sites=[site or None for _, site in keys],
            tier_errors=tier_errors,
            user_actions=np.ones(size, dtype=bool),
        )

    @classmethod
    def of_requests(cls, buckets: Buckets, tier_errors: Array) -> SiteRows:
        """Server rollups per bucket (no site). ``tier_errors`` (buckets x TIERS):
        the errors the components of each tier recorded; a bucket's failed
        requests are shared in their proportion (unattributed when none failed)."""
        tier_us = np.zeros((len(buckets), len(RUM_TIERS)))
        tier_us[:, : len(TIERS)] = buckets.tier_us
        owners = np.zeros((len(buckets), len(ERROR_OWNERS)))
        totals = tier_errors.sum(axis=1, keepdims=True)
        shares = np.divide(tier_errors, totals, out=np.zeros_like(tier_errors), where=totals > 0)
        owners[:, : len(TIERS)] = buckets.errors[:, None] * shares
        owners[:, -1] = np.where(totals[:, 0] > 0, 0.0, buckets.errors)
        return cls(
            starts=list(buckets.starts),
            calls=buckets.calls,
            errors=buckets.errors,
            satisfied=buckets.satisfied,
            tolerating=buckets.tolerating,
            tier_us=tier_us,
            latency=list(buckets.latency),
            sites=[None] * len(buckets),
            tier_errors=owners,
            user_actions=np.zeros(len(buckets), dtype=bool),
        )

    def __add__(self, other: SiteRows) -> SiteRows:
        return SiteRows(
            starts=self.starts + other.starts,
            calls=np.concatenate([self.calls, other.calls]),
            errors=np.concatenate([self.errors, other.errors]),
            satisfied=np.concatenate([self.satisfied, other.satisfied]),
            tolerating=np.concatenate([self.tolerating, other.tolerating]),
            tier_us=np.concatenate([self.tier_us, other.tier_us]),
            latency=self.latency + other.latency,
            sites=self.sites + other.sites,
            tier_errors=np.concatenate([self.tier_errors, other.tier_errors]),
            user_actions=np.concatenate([self.user_actions, other.user_actions]),
        )


def owned_per_row(rows: SiteRows, bad: Array, objective: str) -> tuple[Array, tuple[str, ...]]:
    """Bad events per row and owner, and the owners (columns)."""
    if objective == "availability":
        totals = rows.tier_errors.sum(axis=1, keepdims=True)
        weights = np.divide(rows.tier_errors, totals, out=np.zeros_like(rows.tier_errors), where=totals > 0)
        owned = bad[:, None] * weights
        owned[:, -1] += np.where(totals[:, 0] > 0, 0.0, bad)  # failed with no owner recorded
        return owned, ERROR_OWNERS
    return attribution.latency_owners_per_row(bad, rows.calls, rows.tier_us), RUM_TIERS


def attribute(rows: SiteRows, bad: Array, in_window: Array, objective: str) -> dict[str, Any]:
    """The bad events of the window's rows by tier, by site, and by tier and site."""
    owned, owners = owned_per_row(rows, bad, objective)
    owned = owned[in_window]
    sites = [site for site, keep in zip(rows.sites, in_window, strict=True) if keep]
    by_tier = attribution.ranked_shares(owners, owned.sum(axis=0).tolist())
    site_names = sorted({site or SITELESS for site in sites})
    per_site = np.zeros(len(site_names))
    pairs: dict[tuple[str, str | None], float] = {}
    for row, site in enumerate(sites):
        per_site[site_names.index(site or SITELESS)] += owned[row].sum()
        for column, owner in enumerate(owners):
            if owned[row, column]:
                pairs[owner, site] = pairs.get((owner, site), 0.0) + float(owned[row, column])
    by_pair = attribution.ranked_shares(list(pairs), list(pairs.values()))
    return {
        "attribution": dict(by_tier),
        "attribution_by_site": dict(attribution.ranked_shares(site_names, per_site.tolist())),
        "attribution_by_tier_and_site": [
            {"tier": tier, "site": site, "share": share} for (tier, site), share in by_pair
        ],
        "attribution_summary": summary(pairs),
    }


def summary(pairs: dict[tuple[str, str | None], float], parts: int = 3) -> str | None:
    """The largest owners in words: server tiers summed over sites (a slow database
    is slow for everyone), browser and network per site (the WAN to one branch)."""
    grouped: dict[tuple[str, str | None], float] = {}
    for (tier, site), bad in pairs.items():
        key = (tier, site if tier in ("browser", "network") else None)
        grouped[key] = grouped.get(key, 0.0) + bad
    ranked = attribution.ranked_shares(list(grouped), list(grouped.values()), digits=2)
    words = []
    for (tier, site), share in ranked[:parts]:
        if tier == UNATTRIBUTED:
            owner = "not attributed to a tier"
        elif tier == "network":
            owner = f"the network to {site}" if site else "network time"
        elif tier == "browser":
            owner = f"browser time at {site}" if site else "browser time"
        else:
            owner = f"{tier} time"
        words.append(f"{round(share * 100):d} % {owner}")
    if not words:
        return None
    first, *rest = words
    head = first.replace(" % ", " % of the bad events was ", 1)
    return ", ".join([head, *rest])


def tier_availability(rows: SiteRows, in_window: Array) -> dict[str, float]:
    """Own success rates the experiences add: the network's (actions that failed on
    the way, over the user actions that went through it)."""
    experienced = rows.user_actions & in_window
    calls = rows.calls[experienced].sum()
    if calls <= 0:
        return {}
    network = rows.tier_errors[experienced, ERROR_OWNERS.index("network")].sum()
    return {"network": round(1 - float(network) / float(calls), 6)}
