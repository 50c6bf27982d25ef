"""Reading traces back: one whole trace, or the recent traces of a tenant.

Every query takes the tenant id of the caller; a trace of another tenant is
simply not found.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from tierscope.store.errors import wrap_errors
from tierscope.store.queries import QUERIES


@dataclass(frozen=True)
class StoredSpan:
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    start_time: datetime
    duration_us: int
    service: str
    name: str
    kind: int
    tier: str
    component: str | None
    peer: str | None
    status_code: int
    scope: str | None
    span_pb: bytes
    resource: dict[str, Any] | None


@wrap_errors
async def trace_spans(
    conn: AsyncConnection, tenant_id: int, trace_id: bytes, limit: int = 10_000
) -> list[StoredSpan]:
    """The spans of a trace (at most ``limit``), oldest first; empty when the tenant
    has no such trace."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            QUERIES["trace_spans"], {"tenant_id": tenant_id, "trace_id": trace_id, "limit": limit}
        )
        rows = await cur.fetchall()
    return [
        StoredSpan(
            **{
                **row,
                "trace_id": bytes(row["trace_id"]),
                "span_id": bytes(row["span_id"]),
                "parent_span_id": bytes(row["parent_span_id"]) if row["parent_span_id"] else None,
                "span_pb": bytes(row["span_pb"]),
            }
        )
        for row in rows
    ]


@wrap_errors
async def recent_traces(
    conn: AsyncConnection,
    tenant_id: int,
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
    min_duration_ms: float = 0.0,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """Traces that started in ``[since, until)``, newest first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            QUERIES["recent_traces"],
            {
                "tenant_id": tenant_id,
                "since": since,
                "until": until,
                "service": service,
                "min_duration_ms": min_duration_ms,
                "limit": limit,
            },
        )
        return await cur.fetchall()
