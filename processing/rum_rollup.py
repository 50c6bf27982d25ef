"""Adding real-user experiences up: per (business transaction or page, site) and minute.

Every figure is a count, a sum or a mergeable histogram (processing/histogram.py),
so minutes, hours and days combine exactly; the only approximate figures are the
quantiles read from the histograms (within their ~1 % bound). Web Vitals ratings
are counted exactly at write time against the thresholds below, so a share read
from a rollup is the share of the raw values, edges included.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram
from tierscope.store import rollups
from tierscope.store import rum_rollups as rum_store
from tierscope.store.processing import utc

# Web Vitals thresholds (good up to the first, poor above the second), as web.dev defines them.
THRESHOLDS: dict[str, tuple[float, float]] = {
    "lcp": (2500.0, 4000.0),
    "inp": (200.0, 500.0),
    "cls": (0.1, 0.25),
    "fcp": (1800.0, 3000.0),
    "ttfb": (800.0, 1800.0),
}
VITALS = tuple(THRESHOLDS)
# The histogram counts microseconds: millisecond vitals are scaled by 1000, the
# unitless CLS by a million (so 0.1 is "100000 µs", at the same 1 % resolution).
_VITAL_SCALE = {vital: 1_000_000.0 if vital == "cls" else 1000.0 for vital in VITALS}
SERVER = "server"  # untraced experiences: the wait for the first byte, not split further
RUM_TIERS = (*TIERS, SERVER)
UNATTRIBUTED = "unattributed"
ERROR_OWNERS = (*RUM_TIERS, UNATTRIBUTED)
MINUTE_US = 60_000_000
OTHER = "_other"  # the page or site that new names beyond the budget are counted under
MAX_PAGES = 1000  # untraced page names per tenant in the rollups
MAX_SITES = 200  # sites per tenant in the rollups

RumKey = tuple[int, str, str, str, int]  # tenant, service ('' untraced), name, site ('' unknown), minute µs


@dataclass
class RumFigures:
    count: int = 0
    errors: int = 0
    duration_sum_ms: float = 0.0
    apdex_satisfied: int = 0
    apdex_tolerating: int = 0
    latency: histogram.Counts = field(default_factory=dict)
    tier_sum_us: list[int] = field(default_factory=lambda: [0] * len(RUM_TIERS))
    tier_errors: list[int] = field(default_factory=lambda: [0] * len(ERROR_OWNERS))
    vital_count: list[int] = field(default_factory=lambda: [0] * len(VITALS))
    vital_good: list[int] = field(default_factory=lambda: [0] * len(VITALS))
    vital_poor: list[int] = field(default_factory=lambda: [0] * len(VITALS))
    vitals: histogram.Counts = field(default_factory=dict)

    def add(self, other: RumFigures) -> None:
        self.count += other.count
        self.errors += other.errors
        self.duration_sum_ms += other.duration_sum_ms
        self.apdex_satisfied += other.apdex_satisfied
        self.apdex_tolerating += other.apdex_tolerating
        histogram.merge_into(self.latency, other.latency)
        histogram.merge_into(self.vitals, other.vitals)
        for mine, theirs in (
            (self.tier_sum_us, other.tier_sum_us),
            (self.tier_errors, other.tier_errors),
            (self.vital_count, other.vital_count),
            (self.vital_good, other.vital_good),
            (self.vital_poor, other.vital_poor),
        ):
            for index, value in enumerate(theirs):
                mine[index] += value

    def count_experience(self, experience: Mapping[str, Any], apdex_t_ms: float) -> None:
        """Count one finished experience (a row of ``rum_experiences``)."""
        duration = float(experience["duration_ms"])
        failed = experience["outcome"] == "error"
        self.count += 1
        self.duration_sum_ms += duration
        if failed:
            self.errors += 1
            owner = experience.get("error_tier")
            self.tier_errors[ERROR_OWNERS.index(owner if owner in ERROR_OWNERS else UNATTRIBUTED)] += 1
        elif duration <= apdex_t_ms:
            self.apdex_satisfied += 1
        elif duration <= 4 * apdex_t_ms:
            self.apdex_tolerating += 1
        histogram.add(self.latency, duration * 1000)
        for tier, ms in (experience.get("tier_ms") or {}).items():
            if tier in RUM_TIERS and ms:
                self.tier_sum_us[RUM_TIERS.index(tier)] += round(float(ms) * 1000)
        measured = experience.get("vitals") or {}
        for index, vital in enumerate(VITALS):
            value = measured.get(vital)
            if value is None:
                continue
            value = float(value)
            good, poor = THRESHOLDS[vital]
            self.vital_count[index] += 1
            self.vital_good[index] += value <= good
            self.vital_poor[index] += value > poor
            histogram.add(self.vitals, value * _VITAL_SCALE[vital], dimension=index)


def minute_of(start: datetime) -> int:
    micros = int(start.timestamp() * 1_000_000)
    return micros - micros % MINUTE_US


def key_of(tenant_id: int, experience: Mapping[str, Any]) -> RumKey:
    """Where an experience is counted: its trace's (service, BT), else its page; its site."""
    service = experience.get("service") or ""
    name = experience.get("bt") or experience["page"]
    return (tenant_id, service, name, experience.get("site") or "", minute_of(experience["start_time"]))


class NameBudget:
    """Bounds the rollup keys a page can make up.

    Page names (of untraced experiences) and sites come from beacons, which
    anyone holding the public RUM key can send: past ``pages`` names or
    ``sites`` sites per tenant, new ones are counted as ``_other``. (Business
    transactions are bounded by trace processing already.) ``known`` holds the
    names each tenant's rollups have; the joiner loads it from the store.
    """

    def __init__(self, pages: int = MAX_PAGES, sites: int = MAX_SITES) -> None:
        self.pages, self.sites = pages, sites
        self.known: dict[int, tuple[set[str], set[str]]] = {}

    def bound(self, key: RumKey) -> RumKey:
        tenant, service, name, site, minute = key
        names, sites = self.known.setdefault(tenant, (set(), set()))
        if not service and name not in names:
            if len(names) < self.pages:
                names.add(name)
            else:
                name = OTHER
        if site and site not in sites:
            if len(sites) < self.sites:
                sites.add(site)
            else:
                site = OTHER
        return tenant, service, name, site, minute


def roll_up(
    experiences: list[Mapping[str, Any]], apdex_t_ms: float, budget: NameBudget | None = None
) -> dict[RumKey, RumFigures]:
    """Figures per (tenant, service, name, site, minute) of finished experiences."""
    figures: dict[RumKey, RumFigures] = {}
    for experience in experiences:
        key = key_of(int(experience["tenant_id"]), experience)
        if budget is not None:
            key = budget.bound(key)
        figures.setdefault(key, RumFigures()).count_experience(experience, apdex_t_ms)
    return figures


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def describe(
    figures: RumFigures, latency: histogram.Merged, vitals: histogram.Merged, group: int
) -> dict[str, Any]:
    """One (BT or page, site) as ``/api/v1/experiences/summary`` returns it.

    ``latency`` and ``vitals`` hold the merged duration and Web Vitals
    histograms, the group's under ``group``.
    """
    count = figures.count
    (p75,) = latency.quantiles(group, (0.75,))
    return {
        "count": count,
        "errors": figures.errors,
        "apdex": _share(2 * figures.apdex_satisfied + figures.apdex_tolerating, 2 * count),
        "p75_ms": None if p75 is None else round(p75 / 1000, 3),
        "mean_ms": round(figures.duration_sum_ms / count, 3) if count else None,
        "tier_ms": {
            tier: round(total / 1000 / count, 3)
            for tier, total in zip(RUM_TIERS, figures.tier_sum_us, strict=True)
            if total and count
        },
        "errors_by_tier": {
            owner: errors for owner, errors in zip(ERROR_OWNERS, figures.tier_errors, strict=True) if errors
        },
        "vitals": _vitals(figures, vitals, group),
    }


def _vitals(figures: RumFigures, merged: histogram.Merged, group: int) -> dict[str, Any]:
    """Per Web Vital measured: its p75 (from the histogram) and exact rating shares."""
    out = {}
    for index, vital in enumerate(VITALS):
        measured = figures.vital_count[index]
        if not measured:
            continue
        (p75,) = merged.quantiles(group, (0.75,), dimension=index)
        good, poor = figures.vital_good[index], figures.vital_poor[index]
        out[vital] = {
            "p75": None if p75 is None else round(p75 / _VITAL_SCALE[vital], 4),
            "count": measured,
            "good": _share(good, measured),
            "needs_improvement": _share(measured - good - poor, measured),
            "poor": _share(poor, measured),
        }
    return out


# -- merging into the stored rows ------------------------------------------------


def stored(row: Mapping[str, Any], histograms: bool = True) -> RumFigures:
    """The figures of a stored ``rum_rollups`` row; without ``histograms`` the
    latency and vitals histograms are left empty (decoding and merging them
    row by row is most of the cost for a reader that merges them in one pass,
    as ``histogram.Merged`` does)."""
    if not histograms:
        return RumFigures(
            count=row["count"],
            errors=row["errors"],
            duration_sum_ms=row["duration_sum_ms"],
            apdex_satisfied=row["apdex_satisfied"],
            apdex_tolerating=row["apdex_tolerating"],
            tier_sum_us=list(row["tier_sum_us"]),
            tier_errors=list(row["tier_errors"]),
            vital_count=list(row["vital_count"]),
            vital_good=list(row["vital_good"]),
            vital_poor=list(row["vital_poor"]),
        )
    return RumFigures(
        count=row["count"],
        errors=row["errors"],
        duration_sum_ms=row["duration_sum_ms"],
        apdex_satisfied=row["apdex_satisfied"],
        apdex_tolerating=row["apdex_tolerating"],
        latency=histogram.decode(bytes(row["latency"])),
        tier_sum_us=list(row["tier_sum_us"]),
        tier_errors=list(row["tier_errors"]),
        vital_count=list(row["vital_count"]),
        vital_good=list(row["vital_good"]),
        vital_poor=list(row["vital_poor"]),
        vitals=histogram.decode(bytes(row["vitals"])),
    )


async def write(conn: AsyncConnection, figures: Mapping[RumKey, RumFigures]) -> None:
    """Merge a round's figures into the minute, hour and day rows (the caller holds
    the write turn and commits together with marking the experiences rolled up)."""
    for resolution, seconds in rollups.RESOLUTIONS.items():
        width = seconds * 1_000_000
        merged: dict[rum_store.RowKey, RumFigures] = {}
        for (tenant, service, name, site, minute), part in figures.items():
            key = (tenant, service, name, site, utc(minute - minute % width))
            merged.setdefault(key, RumFigures()).add(part)
        for row in await rum_store.rollup_rows(conn, resolution, list(merged)):
            merged[row["tenant_id"], row["service"], row["name"], row["site"], row["bucket"]].add(stored(row))
        await rum_store.write_rollup_rows(
            conn,
            [
                (
                    tenant,
                    resolution,
                    bucket,
                    service,
                    name,
                    site,
                    f.count,
                    f.errors,
                    f.duration_sum_ms,
                    f.apdex_satisfied,
                    f.apdex_tolerating,
                    histogram.encode(f.latency),
                    f.tier_sum_us,
                    f.tier_errors,
                    f.vital_count,
                    f.vital_good,
                    f.vital_poor,
                    histogram.encode(f.vitals),
                )
                for (tenant, service, name, site, bucket), f in merged.items()
            ],
        )
