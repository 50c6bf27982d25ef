"""``/api/v1/slos``, ``/api/v1/baselines``, ``/api/v1/forecasts``: service levels,
what is normal, and where the trend goes.

Every route needs an API token and sees its own tenant only. ``at`` evaluates
as of another instant than now (reports, reproducible checks); it takes the
same forms as the other time parameters.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from tierscope.collector.api.deps import api_tenant, iso, parse_time
from tierscope.slo import status
from tierscope.store import Database
from tierscope.store.tenants import KeyInfo

router = APIRouter(prefix="/api/v1", tags=["slo"])

Caller = Annotated[KeyInfo, Depends(api_tenant)]
At = Annotated[str | None, Query(max_length=64, description="evaluate as of this time (default now)")]


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def _now(at: str | None) -> datetime:
    now = datetime.now(UTC)
    try:
        return parse_time(at, now, now)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


@router.get("/slos", summary="Every SLO with its SLI, error budget, burn rates and attribution")
async def slos(request: Request, caller: Caller, at: At = None) -> dict[str, Any]:
    now = _now(at)
    async with _database(request).connection() as conn:
        found = await status.objectives(conn, caller.tenant_id)
        listed = [await status.evaluate(conn, caller.tenant_id, slo, now) for slo in found]
    return {"at": iso(now), "slos": listed}


@router.get("/slos/{slo_id}", summary="One SLO, with its day-by-day history over the window")
async def slo(
    request: Request,
    caller: Caller,
    slo_id: Annotated[str, Path(max_length=63, description="the SLO's metadata.name")],
    at: At = None,
) -> dict[str, Any]:
    now = _now(at)
    async with _database(request).connection() as conn:
        found = {o.name: o for o in await status.objectives(conn, caller.tenant_id)}
        if slo_id not in found:
            raise HTTPException(404, f"no SLO named {slo_id!r}")
        return await status.evaluate(conn, caller.tenant_id, found[slo_id], now, history=True)
