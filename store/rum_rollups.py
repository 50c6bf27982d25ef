"""Rollups of real-user experiences: the rows, and the reads built on them.

``rum_rollups`` holds, per tenant, resolution (minute, hour, day), bucket,
service ('' when untraced), name (the business transaction, or the page when
untraced) and site ('' when unknown): how many experiences, how many failed,
their Apdex counts, a histogram of their durations, their time and errors per
tier, and their Web Vitals (exact good/poor counts, and histograms for p75).
The column meanings are in the migration (``0010_rum_rollups.sql``); the SQL
is in ``sql/rum_rollups.sql``, where dashboards find ready queries too.

Merging is processing's business (processing/rum_rollup.py); the store only
knows the rows. Writers take :func:`take_write_turn` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from importlib import resources
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from tierscope.store.errors import wrap_errors
from tierscope.store.queries import parse

RUM_QUERIES = parse(resources.files("tierscope.store").joinpath("sql/rum_rollups.sql").read_text())
WRITE_TURN_LOCK = 0x7473_7275_6D72_6F6C  # advisory lock: one experience joiner merges rollups at a time

RowKey = tuple[int, str, str, str, datetime]  # tenant, service, name, site, bucket


@wrap_errors
async def take_write_turn(conn: AsyncConnection) -> None:
    """Until this transaction ends, no other joiner merges into the rollups (each
    collector may run a joiner: rows read and written back must not race)."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_TURN_LOCK,))


@wrap_errors
async def rollup_rows(conn: AsyncConnection, resolution: str, keys: Sequence[RowKey]) -> list[dict[str, Any]]:
    """The stored rows of these keys."""
    if not keys:
        return []
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            RUM_QUERIES["rollup_rows"],
            {
                "tenants": [k[0] for k in keys],
                "services": [k[1] for k in keys],
                "names": [k[2] for k in keys],
                "sites": [k[3] for k in keys],
                "buckets": [k[4] for k in keys],
                "resolution": resolution,
            },
        )
        return await cur.fetchall()


@wrap_errors
async def write_rollup_rows(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Rows in the column order of ``write_rollup`` (sql/rum_rollups.sql)."""
    if rows:
        async with conn.cursor() as cur:
            await cur.executemany(RUM_QUERIES["write_rollup"], rows)


@wrap_errors
async def window_rows(
    conn: AsyncConnection,
    tenant_id: int,
    resolution: str,
    start: datetime,
    end: datetime,
    name: str | None = None,
    site: str | None = None,
) -> list[dict[str, Any]]:
    """A tenant's rows with buckets in ``[start, end)``; ``site`` '' is "no site"."""
    async with conn.cursor(row_factory=dict_row, binary=True) as cur:
        await cur.execute(
            RUM_QUERIES["window_rows"],
            {
                "tenant_id": tenant_id,
                "resolution": resolution,
                "start": start,
                "end": end,
                "name": name,
                "site": site,
            },
        )
        return await cur.fetchall()


@wrap_errors
async def window_groups(
    conn: AsyncConnection,
    tenant_id: int,
    segments: Sequence[tuple[str, datetime, datetime]],
    service: str | None = None,
    name: str | None = None,
) -> list[dict[str, Any]]:
    """Per (service, name, site), the sums of a tenant's rows over the segments
    ((resolution, start, end), buckets in ``[start, end)``), in the shape of a
    stored row: array columns summed element by element, histograms
    concatenated (one encoding after another). ``service`` and ``name``: only
    that service's, that business transaction's (or page's) rows."""
    async with conn.cursor(row_factory=dict_row, binary=True) as cur:
        await cur.execute(
            RUM_QUERIES["window_groups"],
            {
                "tenant_id": tenant_id,
                "service": service,
                "name": name,
                "resolutions": [s[0] for s in segments],
                "starts": [s[1] for s in segments],
                "ends": [s[2] for s in segments],
            },
        )
        rows = await cur.fetchall()
    for row in rows:
        for column in _ARRAY_COLUMNS:
            row[column] = [sum(values) for values in zip(*row[column], strict=True)]
    return rows


_ARRAY_COLUMNS = ("tier_sum_us", "tier_errors", "vital_count", "vital_good", "vital_poor")


@wrap_errors
async def transaction_rows(
    conn: AsyncConnection,
    tenant_id: int,
    transactions: Sequence[tuple[str, str]],
    resolution: str,
    start: datetime,
    end: datetime,
) -> list[dict[str, Any]]:
    """Rows of these (service, business transaction) pairs with buckets in ``[start, end)``."""
    async with conn.cursor(row_factory=dict_row, binary=True) as cur:
        await cur.execute(
            RUM_QUERIES["transaction_rows"],
            {
                "tenant_id": tenant_id,
                "services": [service for service, _ in transactions],
                "bts": [bt for _, bt in transactions],
                "resolution": resolution,
                "start": start,
                "end": end,
            },
        )
        return await cur.fetchall()


@wrap_errors
async def known_names(conn: AsyncConnection, tenant_id: int) -> tuple[set[str], set[str]]:
    """The page names (of untraced experiences) and sites a tenant's rollups hold."""
    cur = await conn.execute(RUM_QUERIES["known_names"], {"tenant_id": tenant_id})
    row = await cur.fetchone()
    pages, sites = (row[0], row[1]) if row else (None, None)
    return set(pages or ()), set(sites or ())


@wrap_errors
async def counts_per_minute(
    conn: AsyncConnection,
    tenant_id: int,
    start: datetime,
    end: datetime,
    name: str | None = None,
    site: str | None = None,
) -> list[tuple[datetime, int, int, float | None]]:
    """(minute, experiences, errors, Apdex) of a window, for charts."""
    cur = await conn.execute(
        RUM_QUERIES["counts_per_minute"],
        {"tenant_id": tenant_id, "start": start, "end": end, "name": name, "site": site},
    )
    return [
        (row[0], row[1], row[2], None if row[3] is None else float(row[3])) for row in await cur.fetchall()
    ]


@wrap_errors
async def tier_ms_by_site(
    conn: AsyncConnection,
    tenant_id: int,
    tiers: Sequence[str],
    resolution: str,
    start: datetime,
    end: datetime,
    name: str | None = None,
) -> dict[str, dict[str, float]]:
    """{site ('' when unknown): {tier: mean ms per experience}} over a window;
    ``tiers`` names the stored columns (processing.rum_rollup.RUM_TIERS)."""
    cur = await conn.execute(
        RUM_QUERIES["tier_ms_by_site"],
        {
            "tenant_id": tenant_id,
            "tiers": list(tiers),
            "resolution": resolution,
            "start": start,
            "end": end,
            "name": name,
        },
    )
    out: dict[str, dict[str, float]] = {}
    for site, tier, mean_ms in await cur.fetchall():
        if mean_ms:
            out.setdefault(site, {})[tier] = float(mean_ms)
    return out
