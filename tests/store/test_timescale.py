"""With TimescaleDB, spans are a hypertable with compression and retention.

TimescaleDB is not installable on the machines this suite usually runs on (no
package in their registries), so the test runs where it can: against the
server in TIERSCOPE_TEST_TIMESCALE_URL (an empty database), or the session's
PostgreSQL when it has the extension.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta

import psycopg
import pytest

from tierscope.store import migrations, partitions

pytestmark = pytest.mark.anyio


async def test_spans_become_a_hypertable_with_retention(database_factory: Callable[..., str]) -> None:
    dsn = os.environ.get("TIERSCOPE_TEST_TIMESCALE_URL") or database_factory(empty=True)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        if not await migrations.timescale_available(conn):
            pytest.skip("TimescaleDB is not installed on this PostgreSQL; set TIERSCOPE_TEST_TIMESCALE_URL")
        await migrations.migrate(conn)
        assert await partitions.is_hypertable(conn)
        report = await partitions.maintain(
            conn,
            retention={"spans": timedelta(days=9), "trace_summaries": timedelta(days=30)},
            accept_from=timedelta(days=3),
        )
        assert report.timescale
        cur = await conn.execute(
            """SELECT config->>'drop_after' FROM timescaledb_information.jobs
               WHERE proc_name = 'policy_retention' AND hypertable_name = 'spans'"""
        )
        assert await cur.fetchone() == ("9 days",)
        cur = await conn.execute(
            "SELECT compression_enabled FROM timescaledb_information.hypertables "
            "WHERE hypertable_name = 'spans'"
        )
        assert await cur.fetchone() == (True,)
