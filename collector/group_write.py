"""Concurrent requests' spans written together: one COPY, one commit.

Each COPY statement costs a fixed amount besides its rows: about half a
millisecond of CPU, split between the store and the worker, measured in
docs/benchmarks.md. Each is also its own commit, so its own WAL flush.
Under load a worker holds several requests that are ready to be written at
the same moment. A few writers take whatever has queued while they were busy
and store it in one statement, so those requests share the fixed cost and the
commit. A request that finds a writer free is written at once: grouping adds
no wait when the worker is idle.

What a client is promised does not change:

- a request is answered only after the commit that holds its spans;
- a retried request (spans stored before) or a refused row makes its group
  fall back to writing each request alone, so duplicates are skipped and
  counted, and only the request at fault fails;
- a request that no writer takes within ``wait_timeout`` (every writer stuck
  on a hung store) is answered 503 then, as a request that cannot borrow a
  store connection is.

Requests with resources the worker has not stored yet, and very large ones,
are written alone as before (:func:`~tierscope.store.spans.write_spans`).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tierscope.store import Database, StoreError, StoreUnavailable
from tierscope.store.spans import KnownResources, Resource, SpanRows, WriteResult, write_spans, write_together

WRITERS = 4  # per worker: groups form while these are busy
# A group is one statement, so one backend on one core: larger groups save a
# little more CPU but, with cores to spare, leave them idle (docs/benchmarks.md).
MAX_GROUP_SPANS = 2048


@dataclass
class _Waiting:
    rows: SpanRows
    done: asyncio.Future[WriteResult]
    taken: bool = field(default=False)


class GroupWriter:
    """Writes a worker's requests' spans, grouping the ones that wait together."""

    def __init__(
        self,
        database: Database,
        known: KnownResources,
        *,
        writers: int = WRITERS,
        max_spans: int = MAX_GROUP_SPANS,
        wait_timeout: float | None = None,
        observe_group: Callable[[int, int], None] | None = None,
    ) -> None:
        self.database = database
        self.known = known
        self.max_spans = max_spans
        # as long as a request may wait to borrow a connection
        self.wait_timeout = database.acquire_timeout if wait_timeout is None else wait_timeout
        self._observe = observe_group or (lambda requests, spans: None)
        self._free = min(writers, database.pool_size)  # more would only wait for a connection
        self._queue: deque[_Waiting] = deque()
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(self, rows: SpanRows, resources: list[Resource]) -> WriteResult:
        """Store one request's spans durably; spans already stored are skipped.

        Raises:
            StoreUnavailable: the store is down, hung or out of resources (retry).
            StoreError: the store refused the data.
        """
        if rows.count >= self.max_spans or self.known.unknown(rows.tenant_id, resources):
            async with self.database.connection(bounded=True) as conn:
                result = await write_spans(conn, rows, resources, self.known)
            self._observe(1, rows.count)
            return result
        waiting = _Waiting(rows, asyncio.get_running_loop().create_future())
        self._queue.append(waiting)
        self._start_writer()
        try:
            return await asyncio.wait_for(asyncio.shield(waiting.done), self.wait_timeout)
        except TimeoutError:
            if waiting.taken:  # in a statement now: its outcome comes within the store deadline
                return await waiting.done
            self._queue.remove(waiting)
            raise StoreUnavailable(
                f"no store connection within {self.wait_timeout:g}s: the store is slow or hung"
            ) from None

    async def close(self) -> None:
        """Wait for the groups being written (the worker is stopping)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start_writer(self) -> None:
        if self._free and self._queue:
            self._free -= 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _drain(self) -> None:
        try:
            while self._queue:
                await self._write(self._take())
        finally:
            self._free += 1

    def _take(self) -> list[_Waiting]:
        group = [self._queue.popleft()]
        spans = group[0].rows.count
        while self._queue and spans + self._queue[0].rows.count <= self.max_spans:
            spans += self._queue[0].rows.count
            group.append(self._queue.popleft())
        for waiting in group:
            waiting.taken = True
        return group

    async def _write(self, group: list[_Waiting]) -> None:
        try:
            async with self.database.connection(bounded=True) as conn:
                if len(group) > 1 and await write_together(conn, [w.rows for w in group]):
                    for waiting in group:
                        _settle(waiting, WriteResult(stored=waiting.rows.count, duplicates=0))
                else:
                    for waiting in group:  # alone: skips duplicates, fails only the one at fault
                        try:
                            _settle(waiting, await write_spans(conn, waiting.rows, []))
                        except StoreUnavailable:
                            raise
                        except StoreError as exc:
                            _fail(waiting, exc)
            self._observe(len(group), sum(w.rows.count for w in group))
        except StoreError as exc:  # unavailable: every request of the group gets its 503
            for waiting in group:
                _fail(waiting, exc)
        except BaseException:  # the worker stops (or a bug, which the task's failure logs)
            for waiting in group:
                _fail(waiting, StoreUnavailable("the write was interrupted"))
            raise


def _settle(waiting: _Waiting, result: WriteResult) -> None:
    if not waiting.done.done():
        waiting.done.set_result(result)


def _fail(waiting: _Waiting, error: BaseException) -> None:
    if not waiting.done.done():
        waiting.done.set_exception(error)
        waiting.done.exception()  # marked retrieved: its request may have stopped waiting
