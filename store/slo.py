"""SLO definitions and the rollup reads that SLIs and baselines are computed from.

Every function takes the tenant and reads or writes that tenant's rows only.
The SQL is in ``sql/slo.sql`` (same format as ``sql/queries.sql``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from tierscope.store.errors import wrap_errors
from tierscope.store.queries import parse

SLO_QUERIES = parse(resources.files("tierscope.store").joinpath("sql/slo.sql").read_text())
TIER_COUNT = 9  # collector/tiers.py TIERS; the store does not import the collector


@wrap_errors
async def save(
    conn: AsyncConnection,
    tenant_id: int,
    slos: Sequence[tuple[str, dict[str, Any], str]],
    services: Sequence[tuple[str, str, dict[str, Any], str]],
    calendar: tuple[dict[str, Any], str] | None = None,
    prune: bool = False,
) -> None:
    """Store SLOs ``(name, document, source)``, business services ``(name,
    criticality, document, source)`` and the business calendar ``(document,
    source)`` in one transaction; with ``prune``, the tenant's others (and its
    calendar, when none is given) are removed."""
    async with conn.transaction():
        if calendar is not None:
            await conn.execute(
                SLO_QUERIES["save_calendar"],
                {"tenant_id": tenant_id, "document": Jsonb(calendar[0]), "source": calendar[1]},
            )
        elif prune:
            await conn.execute(SLO_QUERIES["delete_calendar"], {"tenant_id": tenant_id})
        for name, criticality, document, source in services:
            await conn.execute(
                SLO_QUERIES["save_business_service"],
                {
                    "tenant_id": tenant_id,
                    "name": name,
                    "criticality": criticality,
                    "document": Jsonb(document),
                    "source": source,
                },
            )
        for name, document, source in slos:
            await conn.execute(
                SLO_QUERIES["save_slo"],
                {"tenant_id": tenant_id, "name": name, "document": Jsonb(document), "source": source},
            )
        if prune:
            keep_slos = [name for name, *_ in slos]
            keep_services = [name for name, *_ in services]
            await conn.execute(SLO_QUERIES["prune_slos"], {"tenant_id": tenant_id, "keep": keep_slos})
            await conn.execute(
                SLO_QUERIES["prune_business_services"], {"tenant_id": tenant_id, "keep": keep_services}
            )


@wrap_errors
async def list_slos(conn: AsyncConnection, tenant_id: int) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SLO_QUERIES["list_slos"], {"tenant_id": tenant_id})
        return await cur.fetchall()


@wrap_errors
async def get_calendar(conn: AsyncConnection, tenant_id: int) -> dict[str, Any] | None:
    cur = await conn.execute(SLO_QUERIES["get_calendar"], {"tenant_id": tenant_id})
    row = await cur.fetchone()
    return None if row is None else dict(row[0])


@wrap_errors
async def list_business_services(conn: AsyncConnection, tenant_id: int) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(SLO_QUERIES["list_business_services"], {"tenant_id": tenant_id})
        return await cur.fetchall()


@dataclass
class Buckets:
    """Rollups of a set of business transactions, summed per time bucket, as arrays."""

    starts: list[datetime]
    calls: npt.NDArray[np.float64]
    errors: npt.NDArray[np.float64]
    satisfied: npt.NDArray[np.float64]
    tolerating: npt.NDArray[np.float64]
    tier_us: npt.NDArray[np.float64]  # buckets x tiers
    latency: list[bytes]  # each bucket's histograms, concatenated (histogram.Merged reads them)

    def __len__(self) -> int:
        return len(self.starts)


@wrap_errors
async def bt_buckets(
    conn: AsyncConnection,
    tenant_id: int,
    transactions: Sequence[tuple[str, str]],
    resolution: str,
    start: datetime,
    end: datetime,
) -> Buckets:
    """Rollups of ``transactions`` (service, bt) at ``resolution`` in ``[start, end)``."""
    async with conn.cursor(binary=True) as cur:
        await cur.execute(
            SLO_QUERIES["bt_buckets"],
            {
                "tenant_id": tenant_id,
                "services": [service for service, _ in transactions],
                "bts": [bt for _, bt in transactions],
                "resolution": resolution,
                "start": start,
                "end": end,
            },
        )
        rows = await cur.fetchall()
    figures = np.asarray([row[1:5] for row in rows], dtype=np.float64).reshape(len(rows), 4)
    return Buckets(
        starts=[row[0] for row in rows],
        calls=figures[:, 0],
        errors=figures[:, 1],
        satisfied=figures[:, 2],
        tolerating=figures[:, 3],
        tier_us=np.asarray([row[5] for row in rows], dtype=np.float64).reshape(len(rows), TIER_COUNT),
        latency=[bytes(row[6]) for row in rows],
    )


@wrap_errors
async def tier_buckets(
    conn: AsyncConnection,
    tenant_id: int,
    transactions: Sequence[tuple[str, str]],
    resolution: str,
    start: datetime,
    end: datetime,
) -> list[tuple[datetime, str, int, int]]:
    """Calls and errors per bucket and tier of ``transactions``' components."""
    cur = await conn.execute(
        SLO_QUERIES["tier_buckets"],
        {
            "tenant_id": tenant_id,
            "services": [service for service, _ in transactions],
            "bts": [bt for _, bt in transactions],
            "resolution": resolution,
            "start": start,
            "end": end,
        },
    )
    return [(row[0], row[1], row[2], row[3]) for row in await cur.fetchall()]


@wrap_errors
async def bad_by_site(
    conn: AsyncConnection,
    tenant_id: int,
    transactions: Sequence[tuple[str, str]],
    start: datetime,
    end: datetime,
    threshold_us: float,
) -> list[tuple[str | None, int, int, int]]:
    """Per site of ``transactions``' traces: (site, failed, slower than threshold, all)."""
    cur = await conn.execute(
        SLO_QUERIES["bad_by_site"],
        {
            "tenant_id": tenant_id,
            "services": [service for service, _ in transactions],
            "bts": [bt for _, bt in transactions],
            "start": start,
            "end": end,
            "threshold_us": int(threshold_us),
        },
    )
    return [(row[0], row[1], row[2], row[3]) for row in await cur.fetchall()]
