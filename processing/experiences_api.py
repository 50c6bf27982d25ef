"""``/api/v1/experiences``: what real users experienced, one action at a time
and per (business transaction or page, site).

Every route needs an API token and sees its own tenant only; another tenant's
experience is "not found", exactly like one that does not exist.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from tierscope.collector.api.deps import api_tenant, iso, time_window
from tierscope.collector.api.traces import MAX_SPANS, span_json
from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram, rum_rollup
from tierscope.processing.query import HOUR, MINUTE, ceil, floor
from tierscope.processing.rum_rollup import THRESHOLDS, RumFigures
from tierscope.store import Database, rum_rollups
from tierscope.store import rum as store
from tierscope.store import traces as trace_store
from tierscope.store.tenants import KeyInfo

router = APIRouter(prefix="/api/v1", tags=["experiences"])

Caller = Annotated[KeyInfo, Depends(api_tenant)]
Since = Annotated[str | None, Query(alias="from", max_length=64, description="start (default 1h ago)")]
Until = Annotated[str | None, Query(alias="to", max_length=64, description="end (default now)")]
Bt = Annotated[
    str | None, Query(max_length=512, description="only this business transaction (or page, when untraced)")
]
Site = Annotated[str | None, Query(max_length=128, description="only this site")]
DEFAULT_WINDOW = timedelta(hours=1)
MAX_WINDOW = timedelta(days=31)
MINUTE_WINDOW_LIMIT = timedelta(hours=6)  # longer summaries read hour rollups
_ID = re.compile(r"^[0-9a-f]{32}$")


def _database(request: Request) -> Database:
    database: Database = request.app.state.database
    return database


def experience_json(row: dict[str, Any]) -> dict[str, Any]:
    trace = row["trace_id"]
    return {
        "id": row["id"],
        "kind": row["kind"],
        "trace_id": bytes(trace).hex() if trace is not None else None,
        "service": row["service"],
        "bt": row["bt"],
        "page": row["page"],
        "site": row["site"],
        "start": iso(row["start_time"]),
        "duration_ms": round(row["duration_ms"], 3),
        "tier_ms": row["tier_ms"],
        "vitals": row["vitals"],
        "outcome": row["outcome"],
        "state": row["state"],
        "url": row["url"],
        "method": row["method"],
        "status": row["status"],
        "session": row["session_id"],
        "user": row["user_hash"],
        "browser": row["browser"],
        "errors": row["errors"],
    }


@router.get("/experiences", summary="Real-user experiences, newest first")
async def list_experiences(
    request: Request,
    caller: Caller,
    since: Since = None,
    until: Until = None,
    bt: Bt = None,
    site: Site = None,
    page: Annotated[str | None, Query(max_length=256, description="only this page or action")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    start, end = time_window(since, until, DEFAULT_WINDOW, MAX_WINDOW)
    async with _database(request).connection() as conn:
        rows = await store.list_experiences(
            conn, caller.tenant_id, start, end, bt=bt, page=page, site=site, limit=limit
        )
    return {"from": iso(start), "to": iso(end), "experiences": [experience_json(row) for row in rows]}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Figures per (service, BT or page, site) from stored rollup rows: count,
    errors, Apdex, p75 and mean of the duration, the mean time per tier, failed
    experiences per owning tier, and per Web Vital its p75 with its good /
    needs-improvement / poor shares."""
    groups: dict[tuple[str, str, str], int] = {}
    figures: list[RumFigures] = []
    owners: list[int] = []
    for row in rows:
        key = (row["service"], row["name"], row["site"])
        group = groups.setdefault(key, len(groups))
        if group == len(figures):
            figures.append(RumFigures())
        figures[group].add(rum_rollup.stored(row, histograms=False))  # merged below, in one pass
        owners.append(group)
    latency = histogram.Merged(owners, (bytes(row["latency"]) for row in rows))
    vitals = histogram.Merged(owners, (bytes(row["vitals"]) for row in rows))
    out = [
        {"bt": name, "service": service or None, "site": site or None}
        | rum_rollup.describe(figures[group], latency, vitals, group)
        for (service, name, site), group in groups.items()
    ]
    out.sort(key=lambda g: (-g["count"], g["bt"], g["site"] or "", g["service"] or ""))
    return out


@router.get("/experiences/summary", summary="Figures per (business transaction or page, site)")
async def experience_summary(
    request: Request,
    caller: Caller,
    since: Since = None,
    until: Until = None,
    bt: Bt = None,
    site: Site = None,
) -> dict[str, Any]:
    start, end = time_window(since, until, DEFAULT_WINDOW, MAX_WINDOW)
    # Whole buckets: minutes for windows up to a few hours, hours beyond (fewer
    # rows to merge, and minute rows are kept for days only).
    resolution, step = ("minute", MINUTE) if end - start <= MINUTE_WINDOW_LIMIT else ("hour", HOUR)
    first, last = floor(start, step), ceil(end, step)
    async with _database(request).connection() as conn:
        rows = await rum_rollups.window_rows(conn, caller.tenant_id, resolution, first, last, bt, site)
    settings = request.app.state.settings
    return {
        "from": iso(first),
        "to": iso(last),
        "resolution": resolution,
        "apdex_t_ms": settings.rum_apdex_t.total_seconds() * 1000,
        "thresholds": {k: {"good": g, "poor": p} for k, (g, p) in THRESHOLDS.items()},
        "groups": summarize(rows),
    }


@router.get("/experiences/{experience_id}", summary="One experience, its script errors and its joined trace")
async def get_experience(
    request: Request,
    experience_id: Annotated[str, Path(description="32 hexadecimal characters")],
    caller: Caller,
) -> dict[str, Any]:
    if not _ID.match(experience_id):
        raise HTTPException(400, "the experience id is 32 lower-case hexadecimal characters")
    async with _database(request).connection() as conn:
        row = await store.get_experience(conn, caller.tenant_id, experience_id)
        if row is None:
            raise HTTPException(404, f"experience {experience_id} not found")
        spans = []
        if row["trace_id"] is not None:
            spans = await trace_store.trace_spans(
                conn, caller.tenant_id, bytes(row["trace_id"]), limit=MAX_SPANS + 1
            )
    body = experience_json(row)
    body["timing"] = row["timing"]
    body["script_errors"] = [
        {k: (iso(v) if k == "time" else v) for k, v in error.items()} for error in row["error_list"]
    ]
    summary = row.get("trace_summary")
    body["trace"] = None
    if summary is not None or spans:
        body["trace"] = {
            "summary": None
            if summary is None
            else {
                "service": summary["service"],
                "bt": summary["bt"],
                "duration_ms": summary["duration_us"] / 1000,
                "tier_ms": {t: us / 1000 for t, us in zip(TIERS, summary["tier_us"], strict=False) if us},
                "error": summary["error"],
                "error_tier": summary["error_tier"],
                "error_component": summary["error_component"],
                "span_count": summary["span_count"],
            },
            "spans": [span_json(span) for span in spans[:MAX_SPANS]],
            "truncated": len(spans) > MAX_SPANS,
        }
    return body
