"""What reports (and the console) read beyond rollups and SLOs: sites, incidents,
the slowest pages, experiences by site, the experience a trace served."""

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
async def transaction_sites(
    conn: AsyncConnection, tenant_id: int, service: str, bt: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """One business transaction's processed traces of ``[start, end)`` per site
    ('' when the entry span named none): requests, server p95, failures, users."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT coalesce(site, '') AS site, count(*) AS requests,
                      percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_us) / 1000.0 AS p95_ms,
                      avg(error::int) AS error_rate, count(DISTINCT user_hash) AS users
               FROM trace_summaries
               WHERE tenant_id = %(tenant)s AND service = %(service)s AND bt = %(bt)s
                 AND start_time >= %(start)s AND start_time < %(end)s
               GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 50""",
            {"tenant": tenant_id, "service": service, "bt": bt, "start": start, "end": end},
        )
        return await cur.fetchall()


@wrap_errors
async def transaction_traces(
    conn: AsyncConnection,
    tenant_id: int,
    service: str,
    bt: str,
    start: datetime,
    end: datetime,
    limit: int = 15,
) -> list[dict[str, Any]]:
    """One business transaction's latest processed traces in ``[start, end)``, newest first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT trace_id, start_time, duration_us, span_count, error, error_tier, error_component, site
               FROM trace_summaries
               WHERE tenant_id = %(tenant)s AND service = %(service)s AND bt = %(bt)s
                 AND start_time >= %(start)s AND start_time < %(end)s
               ORDER BY start_time DESC LIMIT %(limit)s""",
            {"tenant": tenant_id, "service": service, "bt": bt, "start": start, "end": end, "limit": limit},
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


@wrap_errors
async def incidents(
    conn: AsyncConnection, tenant_id: int, start: datetime, end: datetime, service: str | None = None
) -> list[dict[str, Any]]:
    """Alerts that fired during ``[start, end)`` (pending ones that never fired are
    not incidents), with their impact as the evaluator assessed it; by priority."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT id, title, severity, state, service, bts, tier, component, started_at, resolved_at,
                      impact, priority
               FROM alerts
               WHERE tenant_id = %(tenant)s AND started_at IS NOT NULL AND started_at < %(end)s
                 AND (resolved_at IS NULL OR resolved_at >= %(start)s)
                 AND (%(service)s::text IS NULL OR service = %(service)s
                      OR EXISTS (SELECT 1 FROM jsonb_array_elements(bts) b WHERE b ->> 0 = %(service)s))
               ORDER BY priority DESC, started_at LIMIT 50""",
            {"tenant": tenant_id, "start": start, "end": end, "service": service},
        )
        return await cur.fetchall()


@wrap_errors
async def slowest_pages(
    conn: AsyncConnection,
    tenant_id: int,
    start: datetime,
    end: datetime,
    service: str | None = None,
    limit: int = 10,
) -> list[dict[str, Any]]:
    """Pages and in-page actions by what users waited (75th percentile), from the
    browser experiences of ``[start, end)``; with ``service``, only the actions
    joined with a trace of one of its business transactions (page loads and
    untraced actions belong to no service)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT coalesce(bt, page) AS page, count(*) AS actions, count(DISTINCT user_hash) AS users,
                      percentile_cont(0.75) WITHIN GROUP (ORDER BY duration_ms) AS p75_ms,
                      avg((outcome = 'error')::int) AS failed,
                      percentile_cont(0.75) WITHIN GROUP (ORDER BY (vitals ->> 'lcp')::float8)
                        FILTER (WHERE vitals ? 'lcp') AS lcp_p75_ms
               FROM rum_experiences
               WHERE tenant_id = %(tenant)s AND start_time >= %(start)s AND start_time < %(end)s
                 AND state <> 'pending' AND (%(service)s::text IS NULL OR service = %(service)s)
               GROUP BY 1 ORDER BY p75_ms DESC LIMIT %(limit)s""",
            {"tenant": tenant_id, "start": start, "end": end, "service": service, "limit": limit},
        )
        return await cur.fetchall()


@wrap_errors
async def experience_sites(
    conn: AsyncConnection,
    tenant_id: int,
    start: datetime,
    end: datetime,
    service: str | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """Sites by what their users waited (75th percentile), with the mean network and
    browser time — a slow branch office shows as network time. ``service`` keeps
    the actions joined with its traces, as in :func:`slowest_pages`."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT site, count(*) AS actions, count(DISTINCT user_hash) AS users,
                      percentile_cont(0.75) WITHIN GROUP (ORDER BY duration_ms) AS p75_ms,
                      avg((tier_ms ->> 'network')::float8) AS network_ms,
                      avg((tier_ms ->> 'browser')::float8) AS browser_ms,
                      avg((outcome = 'error')::int) AS failed
               FROM rum_experiences
               WHERE tenant_id = %(tenant)s AND start_time >= %(start)s AND start_time < %(end)s
                 AND state <> 'pending' AND site IS NOT NULL
                 AND (%(service)s::text IS NULL OR service = %(service)s)
               GROUP BY 1 ORDER BY p75_ms DESC LIMIT %(limit)s""",
            {"tenant": tenant_id, "start": start, "end": end, "service": service, "limit": limit},
        )
        return await cur.fetchall()


@wrap_errors
async def busiest_transactions(
    conn: AsyncConnection, tenant_id: int, start: datetime, end: datetime, service: str | None, limit: int
) -> list[tuple[str, str]]:
    """The transactions with the most requests in the hour rollups of ``[start, end)``."""
    cur = await conn.execute(
        """SELECT service, bt FROM bt_rollups
           WHERE tenant_id = %(tenant)s AND resolution = 'hour' AND bucket >= %(start)s AND bucket < %(end)s
             AND (%(service)s::text IS NULL OR service = %(service)s)
           GROUP BY 1, 2 ORDER BY sum(calls) DESC, 1, 2 LIMIT %(limit)s""",
        {"tenant": tenant_id, "start": start, "end": end, "service": service, "limit": limit},
    )
    return [(row[0], row[1]) for row in await cur.fetchall()]
