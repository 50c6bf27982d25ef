"""What real users experienced over a window, as the console shows it: the RUM
rollups (``rum_rollups``, summed per page or transaction and site in SQL) over
the rows processing/query.py ``plan`` picks (minutes up to 6 hours, then hours
and days), plus the finished experiences the rollups do not hold yet — a page
load waits up to ``rum_rollup_wait`` for its final Web Vitals — so the last
minutes show at once. Both are read in one snapshot: an experience the joiner
rolls up meanwhile counts once.

Reading raw experiences instead took over 300 ms a page for an hour of a busy
estate (docs/benchmarks.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from tierscope.processing import experiences_api, histogram, query, rum_rollup
from tierscope.store import rum as rum_store
from tierscope.store import rum_rollups

MAX_GROUPS = 200  # (page, site) rows on the experiences page, the busiest first
_NETWORK = rum_rollup.RUM_TIERS.index("network")
_BROWSER = rum_rollup.RUM_TIERS.index("browser")


async def current_rows(
    conn: AsyncConnection,
    tenant_id: int,
    start: datetime,
    end: datetime,
    apdex_t_ms: float,
    service: str | None = None,
    bt: str | None = None,
) -> tuple[query.Plan, list[dict[str, Any]]]:
    """Rows in the shape of stored rollup rows (several may share a key) over
    ``[start, end)`` rounded out to whole buckets (the plan says to what),
    optionally of one service's business transaction."""
    covered = query.plan(start, end)
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        rows = await rum_rollups.window_groups(
            conn, tenant_id, [(s.resolution, s.start, s.end) for s in covered.segments], service, bt
        )
        fresh = await rum_store.not_rolled_up(conn, tenant_id, covered.start, covered.end, service, bt)
    merged: dict[tuple[str, str, str], rum_rollup.RumFigures] = {}
    for (_, service_, name, site, _), figures in rum_rollup.roll_up(fresh, apdex_t_ms).items():
        merged.setdefault((service_, name, site), rum_rollup.RumFigures()).add(figures)
    rows += [
        {
            "service": service_,
            "name": name,
            "site": site,
            "count": f.count,
            "errors": f.errors,
            "duration_sum_ms": f.duration_sum_ms,
            "apdex_satisfied": f.apdex_satisfied,
            "apdex_tolerating": f.apdex_tolerating,
            "latency": histogram.encode(f.latency),
            "tier_sum_us": f.tier_sum_us,
            "tier_errors": f.tier_errors,
            "vital_count": f.vital_count,
            "vital_good": f.vital_good,
            "vital_poor": f.vital_poor,
            "vitals": histogram.encode(f.vitals),
        }
        for (service_, name, site), f in merged.items()
    ]
    return covered, rows


async def experience_groups(
    conn: AsyncConnection, tenant_id: int, start: datetime, end: datetime, apdex_t_ms: float
) -> tuple[query.Plan, list[dict[str, Any]]]:
    """Figures per (business transaction or page, site): the rows of
    ``/api/v1/experiences/summary``'s ``groups``, merged by its own code."""
    covered, rows = await current_rows(conn, tenant_id, start, end, apdex_t_ms)
    return covered, experiences_api.summarize(rows)[:MAX_GROUPS]


async def transaction_sites(
    conn: AsyncConnection,
    tenant_id: int,
    service: str,
    bt: str,
    start: datetime,
    end: datetime,
    apdex_t_ms: float,
) -> dict[str, dict[str, Any]]:
    """Per site ('' unknown), what one business transaction's users experienced:
    actions, the p95 of what they waited, and the mean network and browser time
    per action."""
    _, rows = await current_rows(conn, tenant_id, start, end, apdex_t_ms, service, bt)
    groups: dict[str, int] = {}
    figures: list[rum_rollup.RumFigures] = []
    owners = []
    for row in rows:
        group = groups.setdefault(row["site"], len(groups))
        if group == len(figures):
            figures.append(rum_rollup.RumFigures())
        figures[group].add(rum_rollup.stored(row, histograms=False))
        owners.append(group)
    latency = histogram.Merged(owners, (bytes(row["latency"]) for row in rows))
    out = {}
    for site, group in groups.items():
        f = figures[group]
        if not f.count:
            continue
        (p95,) = latency.quantiles(group, (0.95,))
        out[site] = {
            "actions": f.count,
            "failed": f.errors,
            "waited_p95_ms": None if p95 is None else p95 / 1000,
            "network_ms": f.tier_sum_us[_NETWORK] / 1000 / f.count,
            "browser_ms": f.tier_sum_us[_BROWSER] / 1000 / f.count,
        }
    return out
