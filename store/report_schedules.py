"""Scheduled SLA reports: what ``tierscope report-schedule`` stores, and the
claim that makes one collector (of many) send each report once."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tierscope.store.errors import wrap_errors

CLAIM_TIMEOUT = timedelta(minutes=15)  # a sender that died holding a claim: try again after this


@wrap_errors
async def save(conn: AsyncConnection, tenant_id: int, schedule: dict[str, Any]) -> None:
    """Create or replace a schedule (a replaced one keeps the last period it sent)."""
    await conn.execute(
        """INSERT INTO report_schedules (tenant_id, name, every, recipients, service, smtp)
           VALUES (%(tenant)s, %(name)s, %(every)s, %(recipients)s, %(service)s, %(smtp)s)
           ON CONFLICT (tenant_id, name) DO UPDATE
           SET every = EXCLUDED.every, recipients = EXCLUDED.recipients, service = EXCLUDED.service,
               smtp = EXCLUDED.smtp, updated_at = now()""",
        {**schedule, "tenant": tenant_id, "smtp": Jsonb(schedule["smtp"])},
    )


@wrap_errors
async def remove(conn: AsyncConnection, tenant_id: int, name: str) -> bool:
    cur = await conn.execute(
        "DELETE FROM report_schedules WHERE tenant_id = %s AND name = %s RETURNING name", (tenant_id, name)
    )
    return await cur.fetchone() is not None


@wrap_errors
async def list_for(conn: AsyncConnection, tenant_id: int) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT name, every, recipients, service, smtp, last_period, last_error, updated_at
               FROM report_schedules WHERE tenant_id = %s ORDER BY name""",
            (tenant_id,),
        )
        return await cur.fetchall()


@wrap_errors
async def all_schedules(conn: AsyncConnection) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT s.tenant_id, t.name AS tenant, s.name, s.every, s.recipients, s.service, s.smtp,
                      s.last_period
               FROM report_schedules s JOIN tenants t ON t.id = s.tenant_id ORDER BY s.tenant_id, s.name"""
        )
        return await cur.fetchall()


@wrap_errors
async def claim(conn: AsyncConnection, tenant_id: int, name: str, period: str, now: datetime) -> bool:
    """Take the right to send ``period`` of a schedule: false when it was sent or
    another sender holds a fresh claim."""
    cur = await conn.execute(
        """UPDATE report_schedules SET sending_since = %(now)s
           WHERE tenant_id = %(tenant)s AND name = %(name)s
             AND last_period IS DISTINCT FROM %(period)s
             AND (sending_since IS NULL OR sending_since < %(stale)s)
           RETURNING name""",
        {"tenant": tenant_id, "name": name, "period": period, "now": now, "stale": now - CLAIM_TIMEOUT},
    )
    return await cur.fetchone() is not None


@wrap_errors
async def sent(conn: AsyncConnection, tenant_id: int, name: str, period: str) -> None:
    await conn.execute(
        """UPDATE report_schedules SET last_period = %s, sending_since = NULL, last_error = NULL
           WHERE tenant_id = %s AND name = %s""",
        (period, tenant_id, name),
    )


@wrap_errors
async def failed(conn: AsyncConnection, tenant_id: int, name: str, error: str) -> None:
    await conn.execute(
        """UPDATE report_schedules SET sending_since = NULL, last_error = %s
           WHERE tenant_id = %s AND name = %s""",
        (error[:1000], tenant_id, name),
    )
