"""The connection pool: how the server side talks to PostgreSQL.

One :class:`Database` per process, opened in the collector's lifespan (or for a
CLI command) and closed with it. Connections are autocommit; code that needs a
transaction says so with ``conn.transaction()``. Limits live here, not in
callers: a bounded pool, a short wait for a free connection and a statement
timeout, so a hung or saturated store turns into :class:`StoreUnavailable`
within seconds instead of piling up requests.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import psycopg
import psycopg_pool
from psycopg import AsyncConnection

from tierscope.store.errors import StoreUnavailable, translate

_logger = logging.getLogger(__name__)

APPLICATION_NAME = "tierscope"
RECONNECT_TIMEOUT = 4.0


def redact(dsn: str) -> str:
    """The DSN with its password hidden, for messages and logs."""
    dsn = re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", dsn)
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", dsn)


class Database:
    """A bounded async pool of autocommit connections to one store."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 6,
        acquire_timeout: timedelta = timedelta(seconds=1),
        statement_timeout: timedelta = timedelta(seconds=5),
        application_name: str = APPLICATION_NAME,
    ) -> None:
        self.dsn = dsn
        options = (
            f"-c statement_timeout={int(statement_timeout.total_seconds() * 1000)} "
            # A 200 promises the data is on disk, whatever the server's default.
            "-c synchronous_commit=on "
            # A client that vanished mid-transaction must not hold locks for long.
            "-c idle_in_transaction_session_timeout=30000"
        )
        self._pool = psycopg_pool.AsyncConnectionPool(
            dsn,
            min_size=pool_size,
            max_size=pool_size,
            timeout=acquire_timeout.total_seconds(),
            # Connections broken while the store was away are found and replaced
            # here instead of failing a request.
            check=psycopg_pool.AsyncConnectionPool.check_connection,
            # psycopg_pool retries a lost connection with growing back-off; giving up
            # after a few seconds makes the next request start a fresh (immediate)
            # attempt, so ingest resumes within seconds of the store coming back.
            reconnect_timeout=RECONNECT_TIMEOUT,
            kwargs={
                "autocommit": True,
                "application_name": application_name,
                "options": options,
                "connect_timeout": 5,
            },
            open=False,
            name=application_name,
        )

    async def open(self, timeout: float = 30.0) -> None:
        """Open the pool, waiting until the store answers.

        Raises:
            StoreUnavailable: the store did not answer within ``timeout``.
        """
        try:
            await self._pool.open(wait=True, timeout=timeout)
        except psycopg_pool.PoolTimeout as exc:
            await self._pool.close()
            raise StoreUnavailable(
                f"cannot connect to the store at {redact(self.dsn)} within {timeout:.0f}s"
            ) from exc

    async def close(self) -> None:
        await self._pool.close()

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """Borrow a connection; driver errors come out as store errors."""
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.TooManyRequests) as exc:
            raise translate(exc) from exc

    async def ping(self) -> bool:
        """True when the store answers a trivial query now."""
        try:
            async with self.connection() as conn:
                await conn.execute("SELECT 1")
        except Exception:  # readiness must answer, never raise
            return False
        return True
