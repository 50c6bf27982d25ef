"""``/api/v1/transactions``, ``/api/v1/services``, ``/api/v1/service-map``: what
processing produced, for dashboards, the console and scripts.

Every route needs an API token and sees its own tenant only. Times take the
same forms as the trace API (ISO 8601, unix seconds, ``now``, or ``15m`` ago).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from tierscope.collector.api.deps import api_tenant, iso, time_window
from tierscope.collector.tiers import TIERS
from tierscope.config import parse_duration
from tierscope.processing import histogram
from tierscope.processing.query import (
    DAY,
    HOUR,
    MINUTE,
    Segment,
    Totals,
    ceil,
    fetch,
    figures,
    floor,
    plan,
    transaction_figures,
)
from tierscope.store import Database
from tierscope.store.tenants import KeyInfo

router = APIRouter(prefix="/api/v1", tags=["transactions"])

Caller = Annotated[KeyInfo, Depends(api_tenant)]
Service = Annotated[str | None, Query(max_length=256, description="only this service")]
Since = Annotated[str | None, Query(alias="from", max_length=64, description="start (default 1h ago)")]
Until = Annotated[str | None, Query(alias="to", max_length=64, description="end (default now)")]
DEFAULT_WINDOW = timedelta(hours=1)
MAX_POINTS = 2000

_BT_COLUMNS = (
    "service, bt, calls, errors, duration_sum_us, apdex_satisfied, apdex_tolerating, tier_sum_us, latency, "
    "tier_latency"
)


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


TierP95 = Annotated[
    bool, Query(description="also each tier's p95 (tier_p95_ms); reads about three times the data")
]
Step = Annotated[str | None, Query(max_length=16, description="at least 1m (default: about 120 points)")]

# The transaction list and its series are answered as a JSONResponse of plain
# values (str, int, float, None): FastAPI's generic encoding of a returned dict
# walks every value in Python and cost 11.5 ms for 200 transactions, as much as
# the query itself. The console calls the functions below for the dicts.


def _object(title: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI of a 200 answer that is a JSON object (as a returned dict's is)."""
    schema = {"additionalProperties": True, "title": title, "type": "object"}
    return {200: {"content": {"application/json": {"schema": schema}}}}


@router.get(
    "/transactions",
    summary="Business transactions with their figures over a window",
    name="transactions",
    responses=_object("Response Transactions Api V1 Transactions Get"),
)
async def transactions_answer(
    request: Request,
    caller: Caller,
    service: Service = None,
    since: Since = None,
    until: Until = None,
    tier_p95: TierP95 = False,
) -> JSONResponse:
    return JSONResponse(await transactions(request, caller, service, since, until, tier_p95))


async def transactions(
    request: Request,
    caller: KeyInfo,
    service: str | None = None,
    since: str | None = None,
    until: str | None = None,
    tier_p95: bool = False,
) -> dict[str, Any]:
    start, end = time_window(since, until, DEFAULT_WINDOW)
    window = plan(start, end, weeks=True)
    async with _database(request).connection() as conn:
        listed = await transaction_figures(conn, caller.tenant_id, window.segments, service, tier_p95)
    listed.sort(key=lambda t: (-t["count"], t["service"], t["bt"]))
    return {
        "from": iso(window.start),
        "to": iso(window.end),
        "resolution": window.resolution,
        "transactions": listed,
    }


def _step(step: str | None, start: Any, end: Any) -> tuple[timedelta, str]:
    """The step of a series and the resolution that serves it."""
    if step:
        try:
            width = parse_duration(step)
        except ValueError as exc:
            raise HTTPException(400, f"step: {exc}") from None
        if width < MINUTE:
            raise HTTPException(400, "step must be at least 1m")
    else:
        width = max(MINUTE, (end - start) / 120)
    resolution = "day" if width >= DAY else "hour" if width >= HOUR else "minute"
    unit = {"day": DAY, "hour": HOUR, "minute": MINUTE}[resolution]
    width = max(unit, (width // unit) * unit)
    return width, resolution


@router.get(
    "/transactions/series",
    summary="The figures of one business transaction as series",
    name="series",
    responses=_object("Response Series Api V1 Transactions Series Get"),
)
async def series_answer(
    request: Request,
    caller: Caller,
    bt: Annotated[str, Query(max_length=512, description="the business transaction")],
    service: Service = None,
    since: Since = None,
    until: Until = None,
    step: Step = None,
) -> JSONResponse:
    return JSONResponse(await series(request, caller, bt, service, since, until, step))


async def series(
    request: Request,
    caller: KeyInfo,
    bt: str,
    service: str | None = None,
    since: str | None = None,
    until: str | None = None,
    step: str | None = None,
) -> dict[str, Any]:
    start, end = time_window(since, until, DEFAULT_WINDOW)
    width, resolution = _step(step, start, end)
    start, end = floor(start, width), ceil(end, width)
    steps = int((end - start) / width)
    if steps > MAX_POINTS:
        raise HTTPException(400, f"{steps} points asked for; use a larger step (at most {MAX_POINTS} points)")
    async with _database(request).connection() as conn:
        rows = await fetch(
            conn,
            "bt_rollups",
            "bucket, " + _BT_COLUMNS,
            caller.tenant_id,
            [Segment(resolution, start, end)],
            {"service": service, "bt": bt},
        )
    totals = [Totals() for _ in range(steps)]
    groups = []
    for row in rows:
        index = int((row[0] - start) / width)
        totals[index].add_row(row[3], row[4], row[5], row[6], row[7], row[8])
        groups.append(index)
    merged = histogram.Merged(groups, (bytes(row[9]) for row in rows))
    tier_merged = histogram.Merged(groups, (bytes(row[10]) for row in rows))
    return {
        "service": service,
        "bt": bt,
        "from": iso(start),
        "to": iso(end),
        "step_s": int(width.total_seconds()),
        "resolution": resolution,
        "points": [
            {"time": iso(start + i * width), **figures(totals[i], merged, i, tier_merged)}
            for i in range(steps)
        ],
    }


@router.get("/transactions/components", summary="Top components of a business transaction")
async def components(
    request: Request,
    caller: Caller,
    bt: Annotated[str | None, Query(max_length=512, description="only this business transaction")] = None,
    service: Service = None,
    tier: Annotated[str | None, Query(description="only this tier")] = None,
    since: Since = None,
    until: Until = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict[str, Any]:
    if tier is not None and tier not in TIERS:
        raise HTTPException(400, f"tier must be one of {', '.join(TIERS)}")
    start, end = time_window(since, until, DEFAULT_WINDOW)
    window = plan(start, end)
    async with _database(request).connection() as conn:
        rows = await fetch(
            conn,
            "component_rollups",
            "tier, component, calls, errors, self_us, duration_us",
            caller.tenant_id,
            window.segments,
            {"service": service, "bt": bt, "tier": tier},
        )
    summed: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row_tier, component, calls, errors, self_us, duration_us in rows:
        figures_ = summed[row_tier, component]
        figures_[0] += calls
        figures_[1] += errors
        figures_[2] += self_us
        figures_[3] += duration_us
    total_self = sum(f[2] for f in summed.values()) or 1
    ranked = sorted(summed.items(), key=lambda item: -item[1][2])[:limit]
    return {
        "from": iso(window.start),
        "to": iso(window.end),
        "resolution": window.resolution,
        "components": [
            {
                "tier": key[0],
                "component": key[1],
                "calls": f[0],
                "errors": f[1],
                "self_ms": round(f[2] / 1000, 3),
                "mean_self_ms": round(f[2] / f[0] / 1000, 3) if f[0] else None,
                "mean_duration_ms": round(f[3] / f[0] / 1000, 3) if f[0] else None,
                "share_of_self_time": round(f[2] / total_self, 4),
            }
            for key, f in ranked
        ],
    }


@router.get("/services", summary="Services with their traffic over a window", tags=["services"])
async def services(
    request: Request, caller: Caller, since: Since = None, until: Until = None
) -> dict[str, Any]:
    """Every service the tenant has sent spans from; ``count``/``errors`` are the
    business transactions it served as their entry, ``calls_in`` the calls it
    received from other traced services."""
    start, end = time_window(since, until, DEFAULT_WINDOW)
    window = plan(start, end)
    async with _database(request).connection() as conn:
        rows = await fetch(
            conn, "bt_rollups", "service, bt, calls, errors", caller.tenant_id, window.segments
        )
        edges = await fetch(
            conn,
            "edge_rollups",
            "target, calls",
            caller.tenant_id,
            window.segments,
            {"target_kind": "service"},
        )
        cur = await conn.execute(
            "SELECT DISTINCT service FROM resources WHERE tenant_id = %s", (caller.tenant_id,)
        )
        known = {service for (service,) in await cur.fetchall()}
    by_service: dict[str, list[Any]] = {name: [0, 0, set(), 0] for name in known}
    for name, bt, calls, errors in rows:
        entry = by_service.setdefault(name, [0, 0, set(), 0])
        entry[0] += calls
        entry[1] += errors
        entry[2].add(bt)
    for target, calls in edges:
        by_service.setdefault(target, [0, 0, set(), 0])[3] += calls
    return {
        "from": iso(window.start),
        "to": iso(window.end),
        "services": [
            {
                "service": name,
                "count": calls,
                "errors": errors,
                "error_rate": round(errors / calls, 6) if calls else 0.0,
                "transactions": len(bts),
                "calls_in": calls_in,
            }
            for name, (calls, errors, bts, calls_in) in sorted(by_service.items())
        ],
    }


@router.get(
    "/service-map", summary="Who calls whom: services, databases, external systems", tags=["services"]
)
async def service_map(
    request: Request, caller: Caller, since: Since = None, until: Until = None
) -> dict[str, Any]:
    start, end = time_window(since, until, DEFAULT_WINDOW)
    window = plan(start, end)
    async with _database(request).connection() as conn:
        rows = await fetch(
            conn,
            "edge_rollups",
            "source, target, target_kind, calls, errors, duration_sum_us, latency",
            caller.tenant_id,
            window.segments,
        )
    groups: dict[tuple[str, str, str], int] = {}
    sums: list[list[int]] = []
    group_of_row = []
    for source, target, kind, calls, errors, duration, _ in rows:
        key = (source, target, kind)
        if key not in groups:
            groups[key] = len(sums)
            sums.append([0, 0, 0])
        group = groups[key]
        sums[group][0] += calls
        sums[group][1] += errors
        sums[group][2] += duration
        group_of_row.append(group)
    merged = histogram.Merged(group_of_row, (bytes(row[6]) for row in rows))
    nodes: dict[str, str] = {}
    edges = []
    for (source, target, kind), group in groups.items():
        calls, errors, duration = sums[group]
        nodes.setdefault(source, "service")
        nodes[target] = kind if nodes.get(target) != "service" else "service"
        p95 = merged.quantiles(group, (0.95,))[0]
        edges.append(
            {
                "source": source,
                "target": target,
                "target_kind": kind,
                "calls": calls,
                "errors": errors,
                "error_rate": round(errors / calls, 6) if calls else 0.0,
                "mean_ms": round(duration / calls / 1000, 3) if calls else None,
                "p95_ms": None if p95 is None else round(p95 / 1000, 3),
            }
        )
    edges.sort(key=lambda e: -e["calls"])
    return {
        "from": iso(window.start),
        "to": iso(window.end),
        "nodes": [{"id": node, "kind": kind} for node, kind in sorted(nodes.items())],
        "edges": edges,
    }
