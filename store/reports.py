"""What reports read beyond rollups and SLOs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from tierscope.store.errors import wrap_errors


@wrap_errors
async def sites(
    conn: AsyncConnection, tenant_id: int, start: datetime, end: datetime, service: str | None = None
) -> list[dict[str, Any]]:
    """Requests per site (where the entry span named one), slowest mean first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT site, count(*) AS requests, avg(duration_us) / 1000.0 AS mean_ms,
                      avg(error::int) AS error_rate, count(DISTINCT user_hash) AS users
               FROM trace_summaries
               WHERE tenant_id = %(tenant)s AND start_time >= %(start)s AND start_time < %(end)s
                 AND site IS NOT NULL AND (%(service)s::text IS NULL OR service = %(service)s)
               GROUP BY site ORDER BY mean_ms DESC LIMIT 20""",
            {"tenant": tenant_id, "start": start, "end": end, "service": service},
        )
        return await cur.fetchall()


@wrap_errors
async def experience_for_trace(
    conn: AsyncConnection, tenant_id: int, trace_id: bytes
) -> dict[str, Any] | None:
    """The browser experience joined with a trace (the console draws it above the spans)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT id, kind, page, bt, site, browser, duration_ms, timing, tier_ms, outcome
               FROM rum_experiences
               WHERE tenant_id = %s AND trace_id = %s AND state = 'joined'
               ORDER BY start_time LIMIT 1""",
            (tenant_id, trace_id),
        )
        return await cur.fetchone()
