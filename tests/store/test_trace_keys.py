"""The processor sends thousands of (tenant, trace) keys to PostgreSQL packed
into two byte strings; what PostgreSQL unpacks must be exactly what was sent."""

from __future__ import annotations

import os

import psycopg
import pytest

from tierscope.store import processing

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "tenants",
    [
        pytest.param([1], id="one key of the first tenant"),
        pytest.param([1, 255, 256, 65_536, 2_147_483_647], id="tenant ids that need every byte"),
        pytest.param(list(range(1, 5_001)), id="five thousand keys in one cycle"),
    ],
)
async def test_packed_keys_unpack_to_the_same_tenant_and_trace(database_url: str, tenants: list[int]) -> None:
    keys = [(tenant, os.urandom(16)) for tenant in tenants]
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            f"SELECT tenant_id, trace_id FROM ({processing._UNPACK_TRACES}) AS c",  # noqa: S608
            processing._packed(keys),
        )
        assert [(tenant, bytes(trace)) for tenant, trace in await cur.fetchall()] == keys
