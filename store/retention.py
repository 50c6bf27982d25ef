"""A tenant's own retention, and purging its telemetry on request.

The collector drops whole day partitions past ``TIERSCOPE_RETENTION_*`` for
everyone at once. A tenant may ask to keep its spans for less (a contract or a
privacy rule says so), and an admin may purge everything older than a moment
now. Both delete only that tenant's rows, always with ``tenant_id`` in the
condition, so one tenant's request never touches another's data.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from psycopg import AsyncConnection, sql

from tierscope.store.errors import NotFound, wrap_errors

# Telemetry tables and the column that says how old a row is. Configuration
# (naming rules, SLOs, alert rules, silences) is not telemetry and stays.
TELEMETRY: dict[str, str] = {
    "spans": "start_time",
    "trace_summaries": "start_time",
    "bt_rollups": "bucket",
    "component_rollups": "bucket",
    "edge_rollups": "bucket",
    "rum_experiences": "start_time",
    "rum_errors": "time",
}
# What a tenant's span retention covers: the raw traces, not the rollups
# (those have their own, longer retention per resolution).
_TRACE_TABLES = ("spans", "trace_summaries")


@wrap_errors
async def get(conn: AsyncConnection, tenant_id: int) -> timedelta | None:
    cur = await conn.execute("SELECT retention_spans FROM tenants WHERE id = %s", (tenant_id,))
    row = await cur.fetchone()
    if row is None:
        raise NotFound(f"no tenant with id {tenant_id}")
    return row[0]


@wrap_errors
async def set_spans(conn: AsyncConnection, tenant_id: int, keep: timedelta | None) -> None:
    """Keep the tenant's spans for ``keep`` (None: the collector's retention)."""
    await conn.execute("UPDATE tenants SET retention_spans = %s WHERE id = %s", (keep, tenant_id))


@wrap_errors
async def purge(conn: AsyncConnection, tenant_id: int, before: datetime) -> dict[str, int]:
    """Delete the tenant's telemetry older than ``before``, in one transaction.

    Returns the rows deleted per table.
    """
    deleted: dict[str, int] = {}
    async with conn.transaction():
        for table, column in TELEMETRY.items():
            cur = await conn.execute(
                sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND {} < %s").format(
                    sql.Identifier(table), sql.Identifier(column)
                ),
                (tenant_id, before),
            )
            deleted[table] = max(cur.rowcount, 0)
    return deleted


@wrap_errors
async def apply_tenant_retention(conn: AsyncConnection, now: datetime) -> int:
    """Delete spans and traces of tenants with a shorter retention; rows deleted.

    Run by the collector's periodic maintenance, after the partition drops.
    """
    cur = await conn.execute("SELECT id, retention_spans FROM tenants WHERE retention_spans IS NOT NULL")
    deleted = 0
    for tenant_id, keep in await cur.fetchall():
        for table in _TRACE_TABLES:
            result = await conn.execute(
                sql.SQL("DELETE FROM {} WHERE tenant_id = %s AND start_time < %s").format(
                    sql.Identifier(table)
                ),
                (tenant_id, now - keep),
            )
            deleted += max(result.rowcount, 0)
    return deleted
