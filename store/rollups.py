"""Rollup rows: read the stored ones for some keys, write merged ones back.

Merging (adding counts, merging histograms) is processing's business
(processing/writer.py); the store only knows the rows. Only the elected
processor writes rollups, inside its window transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from tierscope.store.errors import wrap_errors

RESOLUTIONS = {"minute": 60, "hour": 3600, "day": 86400}  # bucket width in seconds, every rollup table
# Business transactions also get week rows (Monday to Monday, UTC): SLA windows
# and a month of the transaction list then read about ten rows per transaction
# instead of 31 days. A week row always equals the sum of its day rows: where
# one is missing (a new week, or a store from before weeks), it is built from them.
WEEK = 7 * 86400
WEEK_ORIGIN = 4 * 86400  # 1970-01-05, the first Monday of the epoch
BT_RESOLUTIONS = {**RESOLUTIONS, "week": WEEK}

BT_COLUMNS = (
    "tenant_id",
    "resolution",
    "bucket",
    "service",
    "bt",
    "calls",
    "errors",
    "duration_sum_us",
    "duration_max_us",
    "apdex_satisfied",
    "apdex_tolerating",
    "latency",
    "tier_sum_us",
    "tier_latency",
)
EDGE_COLUMNS = (
    "tenant_id",
    "resolution",
    "bucket",
    "source",
    "target",
    "target_kind",
    "calls",
    "errors",
    "duration_sum_us",
    "latency",
)
COMPONENT_COLUMNS = (
    "tenant_id",
    "resolution",
    "bucket",
    "service",
    "bt",
    "tier",
    "component",
    "calls",
    "errors",
    "self_us",
    "duration_us",
)

BtRowKey = tuple[int, str, str, datetime]  # tenant, service, bt, bucket
ComponentGroupKey = tuple[int, datetime, str, str, str]  # tenant, bucket, service, bt, tier
EdgeRowKey = tuple[int, str, str, str, datetime]  # tenant, source, target, kind, bucket


@wrap_errors
async def bt_rows(conn: AsyncConnection, resolution: str, keys: Sequence[BtRowKey]) -> list[dict[str, Any]]:
    """Stored rows of ``bt_rollups`` for these keys."""
    if not keys:
        return []
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT r.* FROM unnest(%(tenants)s::int4[], %(services)s::text[], %(bts)s::text[],
                                      %(buckets)s::timestamptz[]) AS k(tenant_id, service, bt, bucket)
               JOIN bt_rollups r ON r.tenant_id = k.tenant_id AND r.resolution = %(resolution)s
                AND r.service = k.service AND r.bt = k.bt AND r.bucket = k.bucket""",
            {
                "tenants": [k[0] for k in keys],
                "services": [k[1] for k in keys],
                "bts": [k[2] for k in keys],
                "buckets": [k[3] for k in keys],
                "resolution": resolution,
            },
        )
        return await cur.fetchall()


@wrap_errors
async def days_of_weeks(conn: AsyncConnection, keys: Sequence[BtRowKey]) -> list[dict[str, Any]]:
    """The day rows of ``bt_rollups`` within these weeks (keys name a week's
    start), each with its week's start as ``week``."""
    if not keys:
        return []
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT k.bucket AS week, r.*
                 FROM unnest(%(tenants)s::int4[], %(services)s::text[], %(bts)s::text[],
                             %(buckets)s::timestamptz[]) AS k(tenant_id, service, bt, bucket)
               JOIN bt_rollups r ON r.tenant_id = k.tenant_id AND r.resolution = 'day'
                AND r.service = k.service AND r.bt = k.bt
                AND r.bucket >= k.bucket AND r.bucket < k.bucket + interval '168 hours'""",
            {
                "tenants": [k[0] for k in keys],
                "services": [k[1] for k in keys],
                "bts": [k[2] for k in keys],
                "buckets": [k[3] for k in keys],
            },
        )
        return await cur.fetchall()


@wrap_errors
async def weeks_without_rows(conn: AsyncConnection) -> list[BtRowKey]:
    """Weeks that have day rows of a business transaction but no week row."""
    cur = await conn.execute(
        """SELECT DISTINCT d.tenant_id, d.service, d.bt, w.start
             FROM bt_rollups d,
                  LATERAL (SELECT date_bin('7 days', d.bucket, TIMESTAMPTZ '1970-01-05 00:00+00')) AS w(start)
            WHERE d.resolution = 'day'
              AND NOT EXISTS (SELECT 1 FROM bt_rollups r
                               WHERE r.tenant_id = d.tenant_id AND r.resolution = 'week'
                                 AND r.service = d.service AND r.bt = d.bt AND r.bucket = w.start)"""
    )
    return list(await cur.fetchall())


@wrap_errors
async def edge_rows(
    conn: AsyncConnection, resolution: str, keys: Sequence[EdgeRowKey]
) -> list[dict[str, Any]]:
    if not keys:
        return []
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            """SELECT r.* FROM unnest(%(tenants)s::int4[], %(sources)s::text[], %(targets)s::text[],
                                      %(kinds)s::text[], %(buckets)s::timestamptz[])
                               AS k(tenant_id, source, target, target_kind, bucket)
               JOIN edge_rollups r ON r.tenant_id = k.tenant_id AND r.resolution = %(resolution)s
                AND r.source = k.source AND r.target = k.target AND r.target_kind = k.target_kind
                AND r.bucket = k.bucket""",
            {
                "tenants": [k[0] for k in keys],
                "sources": [k[1] for k in keys],
                "targets": [k[2] for k in keys],
                "kinds": [k[3] for k in keys],
                "buckets": [k[4] for k in keys],
                "resolution": resolution,
            },
        )
        return await cur.fetchall()


@wrap_errors
async def component_names(
    conn: AsyncConnection, resolution: str, groups: Sequence[ComponentGroupKey]
) -> list[tuple[int, datetime, str, str, str, str]]:
    """The components stored for these groups (tenant, bucket, service, bt,
    tier), as (*group, component) rows."""
    if not groups:
        return []
    # The buckets first, through the (tenant, resolution, bucket) index: the
    # primary key puts the bucket last, so probing it per group would walk every
    # bucket the group ever had.
    cur = await conn.execute(
        """WITH touched AS MATERIALIZED (
               SELECT tenant_id, bucket, service, bt, tier, component FROM component_rollups
                WHERE tenant_id = ANY(%(tenant_list)s) AND resolution = %(resolution)s
                  AND bucket = ANY(%(bucket_list)s))
           SELECT t.tenant_id, t.bucket, t.service, t.bt, t.tier, t.component
             FROM touched t
             JOIN unnest(%(tenants)s::int4[], %(buckets)s::timestamptz[], %(services)s::text[],
                         %(bts)s::text[], %(tiers)s::text[]) AS k(tenant_id, bucket, service, bt, tier)
               ON t.tenant_id = k.tenant_id AND t.bucket = k.bucket AND t.service = k.service
              AND t.bt = k.bt AND t.tier = k.tier""",
        {
            "tenant_list": sorted({g[0] for g in groups}),
            "bucket_list": sorted({g[1] for g in groups}),
            "resolution": resolution,
            "tenants": [g[0] for g in groups],
            "buckets": [g[1] for g in groups],
            "services": [g[2] for g in groups],
            "bts": [g[3] for g in groups],
            "tiers": [g[4] for g in groups],
        },
    )
    return list(await cur.fetchall())


def _upsert(table: str, columns: tuple[str, ...], key: tuple[str, ...], additive: bool) -> str:
    updates = ", ".join(
        f"{c} = {table}.{c} + EXCLUDED.{c}" if additive else f"{c} = EXCLUDED.{c}"
        for c in columns
        if c not in key
    )
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "  # noqa: S608
        f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}"
    )


_UPSERT_BT = _upsert("bt_rollups", BT_COLUMNS, ("tenant_id", "resolution", "service", "bt", "bucket"), False)
_UPSERT_EDGE = _upsert(
    "edge_rollups",
    EDGE_COLUMNS,
    ("tenant_id", "resolution", "source", "target", "target_kind", "bucket"),
    False,
)
_ADD_COMPONENT = _upsert(
    "component_rollups",
    COMPONENT_COLUMNS,
    ("tenant_id", "resolution", "service", "bt", "tier", "component", "bucket"),
    True,
)


@wrap_errors
async def write_bt_rows(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Write merged rows (in :data:`BT_COLUMNS` order), replacing stored ones."""
    async with conn.cursor() as cur:
        await cur.executemany(_UPSERT_BT, rows)


@wrap_errors
async def write_edge_rows(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    async with conn.cursor() as cur:
        await cur.executemany(_UPSERT_EDGE, rows)


@wrap_errors
async def add_component_rows(conn: AsyncConnection, rows: Sequence[tuple[Any, ...]]) -> None:
    """Add component figures (in :data:`COMPONENT_COLUMNS` order) to stored ones."""
    async with conn.cursor() as cur:
        await cur.executemany(_ADD_COMPONENT, rows)
