"""A hung store cannot hold a caller: bounded borrows are cut off at their deadline.

The fault proxy black-holes the connection (bytes accepted, never answered),
which neither the server's statement timeout nor TCP can notice. A bounded
borrow must fail with StoreUnavailable shortly after the statement timeout
plus the margin, readiness must answer False, and the pool must work again as
soon as the store answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from tierscope.store import Database, StoreUnavailable
from tierscope.store.embedded import EmbeddedPostgres
from tierscope.testing.faultproxy import FaultProxy

pytestmark = pytest.mark.anyio


async def query_while_it_hangs(database: Database, proxy: FaultProxy) -> None:
    async with database.connection(bounded=True) as conn:
        proxy.set_mode("blackhole")
        await conn.execute("SELECT 1")


async def test_a_black_holed_query_fails_at_its_deadline_and_the_pool_recovers(
    postgres: EmbeddedPostgres, database_factory: Callable[..., str]
) -> None:
    direct = database_factory()
    port = direct.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    with FaultProxy(("127.0.0.1", int(port))) as proxy:
        dsn = direct.replace(f":{port}/", f":{proxy.port}/")
        database = Database(dsn, pool_size=2, statement_timeout=timedelta(seconds=1))
        async with database:
            assert await database.ping()
            started = time.monotonic()
            with pytest.raises(StoreUnavailable):
                await query_while_it_hangs(database, proxy)
            took = time.monotonic() - started
            assert 1.5 < took < 5, f"cut off at statement timeout + 1 s, not {took:.1f} s"

            started = time.monotonic()
            assert not await database.ping()
            assert time.monotonic() - started < 5, "readiness answers while the store hangs"

            proxy.set_mode("pass")
            deadline = time.monotonic() + 15
            while not await database.ping():
                assert time.monotonic() < deadline, "the pool works again once the store answers"
                await asyncio.sleep(0.2)
