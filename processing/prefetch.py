"""Reading the next window while the current one is processed.

Under ingest load, a processing cycle spends much of its time waiting for
PostgreSQL to read its window of spans. Spans that arrived before the horizon
are committed and never change, so the next window can be read early — on a
connection of its own, in a thread — while this one is being computed; the
next cycle then starts with its spans in hand. Anything that depends on the
cycle's own snapshot (other spans of its traces, which traces were already
processed) is still read inside the cycle's transaction.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime

import psycopg

from tierscope.store import StoreError
from tierscope.store.processing import PROCESSOR_APPLICATION
from tierscope.store.span_columns import SpanColumns, window_columns_blocking

_logger = logging.getLogger(__name__)


class WindowPrefetcher:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._connection: psycopg.Connection | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tierscope-prefetch")
        self._pending: tuple[datetime, datetime, Future[SpanColumns]] | None = None

    def start(self, since: datetime, until: datetime) -> None:
        """Begin reading the spans received in ``[since, until)``."""
        self.discard()
        self._pending = (since, until, self._executor.submit(self._read, since, until))

    async def take(self, since: datetime) -> tuple[datetime, SpanColumns] | None:
        """The prefetched window if it starts at ``since``: (its end, its spans)."""
        if self._pending is None:
            return None
        start, until, future = self._pending
        self._pending = None
        try:
            rows = await asyncio.wrap_future(future)
        except (StoreError, psycopg.Error) as exc:
            _logger.debug("prefetch failed (%s); reading the window in the cycle", exc)
            return None
        return (until, rows) if start == since else None

    def discard(self) -> None:
        if self._pending is not None:
            self._pending[2].cancel()
            self._pending = None

    def close(self) -> None:
        self.discard()
        self._executor.shutdown(wait=True, cancel_futures=True)
        if self._connection is not None:
            self._connection.close()

    def _read(self, since: datetime, until: datetime) -> SpanColumns:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(
                self._dsn, autocommit=True, application_name=PROCESSOR_APPLICATION
            )
        try:
            return window_columns_blocking(self._connection, since, until)
        except StoreError:
            self._connection.close()  # a fresh one next time
            raise
