"""``/api/v1/experiences``: what real users experienced, one action at a time
and per (business transaction or page, site).

Every route needs an API token and sees its own tenant only; another tenant's
experience is "not found", exactly like one that does not exist.
"""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import timedelta
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request

from tierscope.collector.api.deps import api_tenant, iso, time_window
from tierscope.collector.api.traces import MAX_SPANS, span_json
from tierscope.collector.tiers import TIERS
from tierscope.store import Database
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
_ID = re.compile(r"^[0-9a-f]{32}$")

# Web Vitals thresholds (good up to the first, poor above the second), as web.dev defines them.
THRESHOLDS: dict[str, tuple[float, float]] = {
    "lcp": (2500.0, 4000.0),
    "inp": (200.0, 500.0),
    "cls": (0.1, 0.25),
    "fcp": (1800.0, 3000.0),
    "ttfb": (800.0, 1800.0),
}


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


def _rating(vital: str, values: np.ndarray) -> dict[str, Any]:
    good, poor = THRESHOLDS[vital]
    count = len(values)
    return {
        "p75": round(float(np.percentile(values, 75)), 4),
        "count": count,
        "good": round(float(np.count_nonzero(values <= good)) / count, 4),
        "needs_improvement": round(float(np.count_nonzero((values > good) & (values <= poor))) / count, 4),
        "poor": round(float(np.count_nonzero(values > poor)) / count, 4),
    }


def summarize(rows: list[dict[str, Any]], apdex_t_ms: float) -> list[dict[str, Any]]:
    """Figures per (BT or page, site): count, errors, Apdex, p75 of duration and
    of each Web Vital with its good / needs-improvement / poor shares, and the
    mean time per tier."""
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["name"], row["site"]].append(row)
    out = []
    for (name, site), members in groups.items():
        durations = np.array([m["duration_ms"] for m in members])
        failed = np.array([m["outcome"] == "error" for m in members])
        satisfied = np.count_nonzero((durations <= apdex_t_ms) & ~failed)
        tolerating = np.count_nonzero((durations > apdex_t_ms) & (durations <= 4 * apdex_t_ms) & ~failed)
        tiers: dict[str, float] = defaultdict(float)
        for member in members:
            for tier, ms in (member["tier_ms"] or {}).items():
                tiers[tier] += ms
        vitals = {}
        for vital in THRESHOLDS:
            values = np.array([m["vitals"][vital] for m in members if m["vitals"].get(vital) is not None])
            if len(values):
                vitals[vital] = _rating(vital, values)
        order = {tier: index for index, tier in enumerate((*TIERS, "server"))}
        out.append(
            {
                "bt": name,
                "site": site,
                "count": len(members),
                "errors": int(failed.sum()),
                "apdex": round((satisfied + tolerating / 2) / len(members), 4),
                "p75_ms": round(float(np.percentile(durations, 75)), 3),
                "mean_ms": round(float(durations.mean()), 3),
                "tier_ms": {
                    t: round(v / len(members), 3) for t, v in sorted(tiers.items(), key=lambda i: order[i[0]])
                },
                "vitals": vitals,
            }
        )
    out.sort(key=lambda g: (-g["count"], g["bt"], g["site"] or ""))
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
    async with _database(request).connection() as conn:
        rows = await store.finished_in(conn, caller.tenant_id, start, end, bt, site)
    settings = request.app.state.settings
    apdex_t = settings.rum_apdex_t.total_seconds() * 1000
    return {
        "from": iso(start),
        "to": iso(end),
        "apdex_t_ms": apdex_t,
        "thresholds": {k: {"good": g, "poor": p} for k, (g, p) in THRESHOLDS.items()},
        "groups": summarize(rows, apdex_t),
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
