"""The connection pool: how the server side talks to PostgreSQL.

One :class:`Database` per process, opened in the collector's lifespan (or for a
CLI command) and closed with it. Connections are autocommit; code that needs a
transaction says so with ``conn.transaction()``. Limits live here, not in
callers: a bounded pool, a short wait for a free connection and a statement
timeout, so a hung or saturated store turns into :class:`StoreUnavailable`
within seconds instead of piling up requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta

import psycopg
import psycopg_pool
from psycopg import AsyncConnection

from tierscope.store.errors import StoreUnavailable, translate

_logger = logging.getLogger(__name__)

APPLICATION_NAME = "tierscope"
RECONNECT_TIMEOUT = 4.0
# A health check of an idle pooled connection is one empty query: on a store
# that answers at all it takes milliseconds, so longer means a hung store.
CHECK_TIMEOUT = 1.0
# A bounded borrow may last this much longer than one statement may run.
DEADLINE_MARGIN = 1.0


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
        self.deadline = statement_timeout.total_seconds() + DEADLINE_MARGIN
        self.acquire_timeout = acquire_timeout.total_seconds()
        self.pool_size = pool_size
        options = (
            f"-c statement_timeout={int(statement_timeout.total_seconds() * 1000)} "
            # A 200 promises the data is on disk, whatever the server's default.
            "-c synchronous_commit=on "
            # A client that vanished mid-transaction must not hold locks for long.
            "-c idle_in_transaction_session_timeout=30000 "
            # Buckets are UTC and come back as dictionary keys: in a zone with
            # clock changes, the repeated hour's times would not find theirs.
            "-c TimeZone=UTC"
        )
        self._pool = psycopg_pool.AsyncConnectionPool(
            dsn,
            min_size=pool_size,
            max_size=pool_size,
            timeout=acquire_timeout.total_seconds(),
            # Connections broken while the store was away are found and replaced
            # here instead of failing a request.
            check=_check_within_deadline,
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
    async def connection(self, *, bounded: bool = False) -> AsyncIterator[AsyncConnection]:
        """Borrow a connection; driver errors come out as store errors.

        ``bounded``: for a request a client waits on. If the borrow lasts longer
        than :attr:`deadline` (the statement timeout plus a margin) the
        connection's socket is shut down, so the work fails with
        :class:`StoreUnavailable` instead of hanging. The statement timeout
        alone cannot do that: it runs on the server, and a hung server or a
        black-holed network never answers with it.
        """
        try:
            async with self._pool.connection() as conn:
                if not bounded:
                    yield conn
                    return
                with _severed_after(conn, self.deadline):
                    yield conn
        except (psycopg.Error, psycopg_pool.PoolTimeout, psycopg_pool.TooManyRequests) as exc:
            raise translate(exc) from exc

    async def ping(self) -> bool:
        """True when the store answers a trivial query now."""
        try:
            async with self.connection(bounded=True) as conn:
                await conn.execute("SELECT 1")
        except Exception:  # readiness must answer, never raise
            return False
        return True


def _sever(conn: AsyncConnection) -> None:
    """Shut the connection's socket down under libpq's feet.

    Whatever is waiting on it then fails at once with an OperationalError and
    the pool discards the connection. Cancelling the waiting task instead would
    not do: psycopg answers a cancellation by sending the server a cancel
    request and waiting for the query to end, which a hung server never does.
    """
    with contextlib.suppress(Exception):
        duplicate = socket.socket(fileno=os.dup(conn.pgconn.socket))
        with duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)
    _logger.warning("a store connection passed its deadline and was cut off")


@contextlib.contextmanager
def _severed_after(conn: AsyncConnection, seconds: float) -> Iterator[None]:
    timer = asyncio.get_running_loop().call_later(seconds, _sever, conn)
    try:
        yield
    finally:
        timer.cancel()


async def _check_within_deadline(conn: AsyncConnection) -> None:
    """The pool's check of an idle connection, bounded: a check that hangs on a
    hung store would otherwise hold the request that asked for a connection."""
    with _severed_after(conn, CHECK_TIMEOUT):
        await psycopg_pool.AsyncConnectionPool.check_connection(conn)
