"""``/api/v1/traces``: read traces back, for the console, dashboards and scripts.

Every request needs an API token (``Authorization: Bearer tsa_...``); what it
sees is its own tenant's data only. Another tenant's trace is "not found",
exactly like a trace that does not exist, so ids cannot be probed.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from tierscope.collector.api.deps import api_tenant, iso, time_window
from tierscope.collector.otlp import attributes
from tierscope.store import Database
from tierscope.store import traces as trace_store
from tierscope.store.tenants import KeyInfo

router = APIRouter(prefix="/api/v1", tags=["traces"])

_TRACE_ID = re.compile(r"^[0-9a-fA-F]{32}$")
_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}
_STATUS = {0: "unset", 1: "ok", 2: "error"}
MAX_WINDOW = timedelta(days=31)
MAX_SPANS = 10_000  # per trace answer; "truncated" says when a trace has more


def span_json(span: trace_store.StoredSpan) -> dict[str, Any]:
    message = Span.FromString(span.span_pb)
    start_ns = message.start_time_unix_nano
    return {
        "trace_id": span.trace_id.hex(),
        "span_id": span.span_id.hex(),
        "parent_span_id": span.parent_span_id.hex() if span.parent_span_id else None,
        "service": span.service,
        "name": span.name,
        "kind": _KINDS.get(span.kind, "unspecified"),
        "tier": span.tier,
        "component": span.component,
        "peer": span.peer,
        "start": iso(span.start_time),
        "start_unix_nano": start_ns,
        "duration_ms": (message.end_time_unix_nano - start_ns) / 1e6,
        "status": _STATUS.get(span.status_code, "unset"),
        "status_message": message.status.message or None,
        "attributes": attributes(message.attributes),
        "events": [
            {
                "name": event.name,
                "time_unix_nano": event.time_unix_nano,
                "attributes": attributes(event.attributes),
            }
            for event in message.events
        ],
        "links": [
            {
                "trace_id": link.trace_id.hex(),
                "span_id": link.span_id.hex(),
                "attributes": attributes(link.attributes),
            }
            for link in message.links
        ],
        "scope": span.scope,
        "resource": span.resource or {},
    }


@router.get("/traces/{trace_id}", summary="One trace with all its spans")
async def get_trace(
    request: Request,
    trace_id: Annotated[str, Path(description="32 hexadecimal characters")],
    caller: Annotated[KeyInfo, Depends(api_tenant)],
) -> dict[str, Any]:
    if not _TRACE_ID.match(trace_id):
        raise HTTPException(400, "trace_id must be 32 hexadecimal characters")
    database: Database = request.app.state.database
    async with database.connection() as conn:
        spans = await trace_store.trace_spans(
            conn, caller.tenant_id, bytes.fromhex(trace_id), limit=MAX_SPANS + 1
        )
    if not spans:
        raise HTTPException(404, f"trace {trace_id.lower()} not found")
    return {
        "trace_id": trace_id.lower(),
        "spans": [span_json(span) for span in spans[:MAX_SPANS]],
        "truncated": len(spans) > MAX_SPANS,
    }


@router.get("/traces", summary="Recent traces, newest first")
async def list_traces(
    request: Request,
    caller: Annotated[KeyInfo, Depends(api_tenant)],
    service: Annotated[
        str | None, Query(max_length=256, description="only traces touching this service")
    ] = None,
    since: Annotated[
        str | None, Query(max_length=64, description="start of the window (default 1h ago)")
    ] = None,
    until: Annotated[str | None, Query(max_length=64, description="end of the window (default now)")] = None,
    min_duration_ms: Annotated[float, Query(ge=0, le=86_400_000)] = 0.0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict[str, Any]:
    start, end = time_window(since, until, timedelta(hours=1), MAX_WINDOW)
    database: Database = request.app.state.database
    async with database.connection() as conn:
        rows = await trace_store.recent_traces(
            conn,
            caller.tenant_id,
            since=start,
            until=end,
            service=service,
            min_duration_ms=min_duration_ms,
            limit=limit,
        )
    return {
        "since": iso(start),
        "until": iso(end),
        "traces": [
            {
                "trace_id": bytes(row["trace_id"]).hex(),
                "root_service": row["root_service"],
                "root_name": row["root_name"],
                "start": iso(row["start_time"]),
                "duration_ms": float(row["duration_ms"]),
                "span_count": row["span_count"],
                "error_count": row["error_count"],
                "services": row["services"],
            }
            for row in rows
        ],
    }
