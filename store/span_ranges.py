"""Keeping the BRIN indexes of spans summarized while spans pour in.

Processing reads each window of arrival time through the BRIN index on
``spans.received_at``, and trace search reads time ranges through the one on
``start_time``. A block range a BRIN index has not summarized matches every
query, so every query reads such a range whole. PostgreSQL's
``autosummarize`` is meant to summarize ranges as they fill, but it queues the
requests in a fixed list of 256 work items per database that autovacuum
drains once per nap (a minute by default). At thousands of spans a second
ranges fill far faster than that: the server logs "request for BRIN range
summarization ... was not recorded" for each one it drops, and the
unsummarized tail grows until the next VACUUM of the partition, which on an
insert-only table comes after a fifth of it again has been written. Found by
the two-hour soak (T-23): after 30 minutes (21 million spans) a one-second
window (8,000 spans) read 200,000 heap pages and 2.5 million rows, and each
processor's window read took 0.4-1.4 s of a busy PostgreSQL backend.

Worse, each request runs in an autovacuum worker that takes the partition's
SHARE UPDATE EXCLUSIVE lock, which cancels a VACUUM of that partition in
progress: in the soak, VACUUM of the day's partition was cancelled every
few minutes and never finished. Span partitions are therefore created with
autosummarize off (migration 0013, store/partitions.py).

So the processor summarizes the new ranges itself, before it reads a window:
one ``brin_summarize_range`` per range filled since its last call (a range
already summarized costs a lookup). A range summarized while still filling is
kept up to date by PostgreSQL on every insert, so nothing is ever missed; the
cost is reading each new page once more, a fraction of what reading its spans
for processing costs.

``brin_summarize_range`` takes the table's SHARE UPDATE EXCLUSIVE lock, which
VACUUM also takes. The processor waits for it at most :data:`LOCK_WAIT` and
otherwise tries again next cycle: never long enough for PostgreSQL to cancel
an autovacuum on its behalf, and never holding up processing. Shards take
turns through an advisory lock: one that finds another summarizing goes on
to read (the other is doing its work).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import psycopg
from psycopg import AsyncConnection

_logger = logging.getLogger(__name__)

LOCK_WAIT = "100ms"
_LOCK_KEY = 0x7473726E67  # advisory: one processor summarizing at a time

# Every BRIN index of spans' partitions (or of a TimescaleDB hypertable's
# chunks, which inherit from it; or of spans itself, where it is a plain
# table), with its table's size in blocks and its pages per range (128 when
# not set).
_INDEXES = """
SELECT i.indexrelid::bigint, i.indexrelid::regclass::text,
       pg_relation_size(i.indrelid) / current_setting('block_size')::bigint,
       COALESCE((SELECT option_value::bigint FROM pg_options_to_table(c.reloptions)
                 WHERE option_name = 'pages_per_range'), 128)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid AND c.relkind = 'i'
JOIN pg_am am ON am.oid = c.relam AND am.amname = 'brin'
WHERE i.indrelid = to_regclass('spans')
   OR i.indrelid IN (SELECT inhrelid FROM pg_inherits WHERE inhparent = to_regclass('spans'))
"""

_SUMMARIZE_RANGES = """
SELECT COALESCE(sum(brin_summarize_range(%(index)s::oid::regclass, b)), 0)
FROM generate_series(%(first)s::bigint, %(last)s::bigint, %(step)s::bigint) AS b
"""
_SUMMARIZE_ALL = "SELECT brin_summarize_new_values(%(index)s::oid::regclass)"


@dataclass
class SpanRanges:
    """What one processor has summarized so far: per index, the blocks its table
    had then. Ranges before that are summarized (by us, or by VACUUM)."""

    summarized_up_to: dict[int, int] = field(default_factory=dict)
    disabled: bool = False
    ranges: int = 0  # ranges summarized by this processor (a figure for tests and logs)

    async def catch_up(self, conn: AsyncConnection) -> int:
        """Summarize every range filled since the last call; returns how many
        ranges were summarized now (0 when the lock was busy)."""
        if self.disabled:
            return 0
        done = 0
        try:
            async with conn.transaction():
                # One processor at a time (shards run in parallel): the others
                # go on to read rather than queue for the same table lock.
                cur = await conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (_LOCK_KEY,))
                row = await cur.fetchone()
                if not row or not row[0]:
                    return 0
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'")
                cur = await conn.execute(_INDEXES)
                for oid, name, blocks, step in await cur.fetchall():
                    known = self.summarized_up_to.get(oid)
                    if known is not None and blocks <= known:
                        continue
                    done += await self._summarize(conn, oid, name, known, blocks, step)
        except psycopg.errors.InsufficientPrivilege as exc:
            # Only the table's owner may summarize. Reading works without it,
            # only slower: say so once.
            _logger.warning("cannot keep the BRIN indexes of spans summarized (%s); windows read more", exc)
            self.disabled = True
        self.ranges += done
        return done

    async def _summarize(
        self, conn: AsyncConnection, oid: int, name: str, known: int | None, blocks: int, step: int
    ) -> int:
        try:
            async with conn.transaction():  # a savepoint: a busy table skips this index only
                if known is None:
                    # First look at this index (a new partition, or a processor
                    # just started): any range may be unsummarized.
                    cur = await conn.execute(_SUMMARIZE_ALL, {"index": oid})
                else:
                    # From the range that was still filling last time to the end.
                    first = known // step * step
                    cur = await conn.execute(
                        _SUMMARIZE_RANGES, {"index": oid, "first": first, "last": blocks - 1, "step": step}
                    )
                row = await cur.fetchone()
        except psycopg.errors.LockNotAvailable:
            _logger.debug("%s is being vacuumed or summarized by another processor; next cycle", name)
            return 0
        except psycopg.errors.UndefinedTable:  # a partition dropped by retention meanwhile
            self.summarized_up_to.pop(oid, None)
            return 0
        except psycopg.errors.InsufficientPrivilege:
            raise
        except psycopg.DatabaseError as exc:
            if isinstance(exc, psycopg.OperationalError):
                raise  # the store is gone: the cycle fails, as it would on its next query
            # Whatever else an index answers, processing goes on without its
            # help (reads are slower, never wrong): say so once, leave it be.
            _logger.warning("cannot summarize %s (%s); leaving it to VACUUM", name, exc)
            self.summarized_up_to[oid] = 2**62
            return 0
        self.summarized_up_to[oid] = blocks
        return int(row[0]) if row else 0
