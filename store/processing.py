"""What trace processing reads and writes, apart from rollups.

Processing walks the spans in the order they arrived (``received_at``), one
window at a time. Every write of a window — summaries, rollups, the new
watermark — is committed in one transaction, so a processor killed at any
moment leaves either all of a window or none of it, and its successor starts
from the last committed watermark.
"""

from __future__ import annotations

import json
import sys
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import numpy as np
from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation

from tierscope.store.errors import StoreUnavailable, wrap_errors

# Collector connections are named so (store.database.APPLICATION_NAME); the
# processor names its own differently so it never waits for itself.
COLLECTOR_APPLICATION = "tierscope"
PROCESSOR_APPLICATION = "tierscope-processor"
WRITE_TURN_LOCK = 0x7473777274726E  # advisory lock: one shard writes rollups at a time


class SpanRow(NamedTuple):
    """A span as processing reads it."""

    tenant_id: int
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes | None
    start_us: int
    duration_us: int
    service: str
    name: str | None  # only for possible entries and spans without a component
    kind: int
    tier: str
    component: str | None
    peer: str | None
    status_code: int
    resource_id: int
    received_us: int
    span_pb: bytes | None  # only for spans that may be a trace's entry (server, consumer, root)


class SummaryRow(NamedTuple):
    """A row of ``trace_summaries``."""

    tenant_id: int
    trace_id: bytes
    start_us: int  # microseconds since the epoch
    duration_us: int
    service: str
    bt: str
    error: bool
    error_tier: str | None
    error_component: str | None
    tier_us: str  # a PostgreSQL array literal, e.g. "{0,0,0,1200,0,800,0,0,0}"
    span_count: int
    user_hash: str | None
    session_id: str | None
    site: str | None


@dataclass
class Progress:
    watermark: datetime
    traces: int
    spans: int
    late_spans: int
    excluded_traces: int


SLOT = timedelta(milliseconds=500)  # arrival time is dealt to shards in slots this long
_SLOT_US = SLOT // timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(microseconds=1)


@dataclass(frozen=True)
class Shard:
    """Which part of the arriving spans one processor owns: with several shards,
    the slots of arrival time (:data:`SLOT` long, counted from the epoch) whose
    number is ``index`` modulo ``count``; alone, all of it.

    A trace is processed where its last span arrived, by the shard owning that
    moment; its other spans are read wherever they are, as at any window's edge.
    Dealing time rather than traces lets each shard read only its own spans:
    when shards split traces by id, each read every span of each window and
    kept its share, so PostgreSQL read every window once per shard (about 2 µs
    of its CPU per span, docs/benchmarks.md).
    """

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count} does not exist")

    def owns(self, moment: datetime) -> bool:
        return _micros(moment) // _SLOT_US % self.count == self.index

    def window_start(self, watermark: datetime) -> datetime:
        """Where this shard's next window begins: the watermark, or the start of
        the shard's next slot when the watermark is in another shard's."""
        if self.count == 1:
            return watermark
        slot = _micros(watermark) // _SLOT_US
        owned = slot + (self.index - slot) % self.count
        return watermark if owned == slot else _EPOCH + owned * SLOT

    def window_end(self, start: datetime, horizon: datetime, longest: timedelta) -> datetime:
        """Where the window from ``start`` (a :meth:`window_start`) ends: alone, at
        the horizon or after ``longest``; with others, at the end of its slot once
        the horizon has passed it (``start`` until then: nothing to do yet)."""
        if self.count == 1:
            return min(horizon, start + longest)
        end = _EPOCH + (_micros(start) // _SLOT_US + 1) * SLOT
        return end if end <= horizon else start

    def __str__(self) -> str:
        return f"{self.index + 1}/{self.count}"


WHOLE = Shard()  # all traces: processing in one shard


def utc(micros: int) -> datetime:
    return datetime.fromtimestamp(micros / 1e6, UTC)


@wrap_errors
async def ingest_horizon(conn: AsyncConnection, settle: timedelta) -> datetime:
    """How far processing may go now: spans received before this are all
    committed and settled. Run it *before* the processing transaction starts, so
    that transaction's snapshot sees every ingest transaction older than this."""
    cur = await conn.execute(
        """SELECT LEAST(now() - %(settle)s,
                        COALESCE((SELECT min(xact_start) FROM pg_stat_activity
                                  WHERE application_name = %(collector)s AND xact_start IS NOT NULL),
                                 now()))""",
        {"settle": settle, "collector": COLLECTOR_APPLICATION},
    )
    row = await cur.fetchone()
    assert row is not None
    return row[0]


@wrap_errors
async def next_arrival(conn: AsyncConnection, since: datetime, until: datetime) -> datetime:
    """When the first span received in ``[since, until)`` arrived; ``until`` if none did."""
    cur = await conn.execute(
        "SELECT min(received_at) FROM spans WHERE received_at >= %s AND received_at < %s", (since, until)
    )
    row = await cur.fetchone()
    return row[0] if row and row[0] is not None else until


@wrap_errors
async def lock_progress(conn: AsyncConnection, shard: Shard) -> Progress:
    """This shard's committed progress, locked for this transaction.

    On the first cycle of a store, or when the number of shards changed, the
    work is divided anew first: every shard starts at the lowest watermark any
    shard had (the oldest span stored, on a new store). Some traces are then
    read again; the ones already summarized are skipped, so none counts twice.
    """
    check = "SELECT shards FROM processing_progress WHERE shard = %s"
    row = await (await conn.execute(check, (shard.index,))).fetchone()
    if row is None or row[0] != shard.count:
        await _divide(conn, shard.count)
    select = """SELECT watermark, traces, spans, late_spans, excluded_traces, shards
                FROM processing_progress WHERE shard = %s FOR UPDATE"""
    row = await (await conn.execute(select, (shard.index,))).fetchone()
    if row is None or row[5] != shard.count:  # divided again meanwhile by a differently configured collector
        raise StoreUnavailable(f"processing shards were re-divided while shard {shard} started; retrying")
    return Progress(*row[:5])


async def _divide(conn: AsyncConnection, shards: int) -> None:
    # The table lock comes before any row lock, so two shards dividing at once
    # wait for each other instead of deadlocking.
    await conn.execute("LOCK TABLE processing_progress IN EXCLUSIVE MODE")
    cur = await conn.execute(
        "SELECT count(*) FILTER (WHERE shards = %s), count(*) FROM processing_progress", (shards,)
    )
    matching, total = await cur.fetchone() or (0, 0)
    if matching == total == shards:
        return  # another shard's processor divided it while this one waited
    await conn.execute(
        """WITH previous AS (DELETE FROM processing_progress RETURNING *),
                totals AS (SELECT min(watermark) AS watermark, sum(traces) AS traces, sum(spans) AS spans,
                                  sum(late_spans) AS late_spans, sum(excluded_traces) AS excluded
                           FROM previous)
           INSERT INTO processing_progress
                  (shard, shards, watermark, traces, spans, late_spans, excluded_traces)
           SELECT s, %(shards)s,
                  COALESCE(t.watermark, (SELECT min(received_at) FROM spans), now()),
                  -- the totals so far stay with shard 0: sums over the rows are the store's
                  CASE WHEN s = 0 THEN COALESCE(t.traces, 0) ELSE 0 END,
                  CASE WHEN s = 0 THEN COALESCE(t.spans, 0) ELSE 0 END,
                  CASE WHEN s = 0 THEN COALESCE(t.late_spans, 0) ELSE 0 END,
                  CASE WHEN s = 0 THEN COALESCE(t.excluded, 0) ELSE 0 END
           FROM generate_series(0, %(shards)s - 1) AS s, totals t""",
        {"shards": shards},
    )


@wrap_errors
async def save_progress(conn: AsyncConnection, shard: Shard, progress: Progress) -> None:
    await conn.execute(
        """UPDATE processing_progress SET watermark = %s, traces = %s, spans = %s, late_spans = %s,
                  excluded_traces = %s, updated_at = now() WHERE shard = %s""",
        (
            progress.watermark,
            progress.traces,
            progress.spans,
            progress.late_spans,
            progress.excluded_traces,
            shard.index,
        ),
    )


@wrap_errors
async def take_write_turn(conn: AsyncConnection) -> None:
    """Wait until no other shard is writing, then write until this transaction
    ends. Shards compute in parallel and merge into the same rollup rows (and the
    same per-service name budget) one at a time, each seeing the last one's
    committed rows: no lost update, no deadlock."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_TURN_LOCK,))


# Thousands of (tenant, trace) keys go to PostgreSQL as two packed byte strings
# and are unpacked there: psycopg dumps a Python list as an array element by
# element, which cost a fifth of a processing cycle. Trace ids are always 16
# bytes (ingest rejects any other length).
UNPACK_TRACES = """SELECT ((((get_byte(%(tenants)s, 4 * k) << 8) | get_byte(%(tenants)s, 4 * k + 1)) << 8
                       | get_byte(%(tenants)s, 4 * k + 2)) << 8 | get_byte(%(tenants)s, 4 * k + 3))
                   AS tenant_id,
                   substring(%(traces)s FROM 16 * k + 1 FOR 16) AS trace_id
            FROM generate_series(0, %(count)s - 1) AS k"""


def packed_traces(traces: Sequence[tuple[int, bytes]]) -> dict[str, object]:
    tenants = array("i", (tenant for tenant, _ in traces))
    if sys.byteorder == "little":
        tenants.byteswap()  # get_byte reads big-endian
    return {"tenants": tenants.tobytes(), "traces": b"".join(t for _, t in traces), "count": len(traces)}


@wrap_errors
async def already_summarized(
    conn: AsyncConnection, traces: Sequence[tuple[int, bytes]], earliest: datetime, latest: datetime
) -> set[tuple[int, bytes]]:
    """Which of these traces were processed before (their new spans are late)."""
    if not traces:
        return set()
    cur = await conn.execute(
        f"""SELECT c.tenant_id, c.trace_id
           FROM ({UNPACK_TRACES}) AS c
           WHERE EXISTS (SELECT 1 FROM trace_summaries t
                         WHERE t.tenant_id = c.tenant_id AND t.trace_id = c.trace_id
                           AND t.start_time >= %(earliest)s AND t.start_time < %(latest)s)""",  # noqa: S608
        {
            **packed_traces(traces),
            "earliest": earliest,
            "latest": latest,
        },
    )
    return {(tenant, bytes(trace)) for tenant, trace in await cur.fetchall()}


_SUMMARY_COLUMNS = (
    "tenant_id, trace_id, start_time, duration_us, service, bt, error, error_tier, error_component, "
    "tier_us, span_count, user_hash, session_id, site"
)
# Summaries travel as COPY text written here in one pass: psycopg's per-field
# adaptation (write_row) cost more than the rest of storing them.
_ARRIVING = """CREATE TEMP TABLE IF NOT EXISTS summaries_arriving (
    tenant_id integer, trace_id bytea, start_time timestamptz, duration_us bigint, service text, bt text,
    error boolean, error_tier text, error_component text, tier_us bigint[], span_count integer,
    user_hash text, session_id text, site text) ON COMMIT DELETE ROWS"""
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str | None) -> str:
    return "\\N" if value is None else value.translate(_COPY_ESCAPES)


def summaries_copy(summaries: Sequence[SummaryRow]) -> str:
    """The rows as COPY text (tab-separated, escaped, ``\\N`` for none)."""
    text = _copy_text
    # The starts as timestamps, in one vectorised conversion instead of a datetime per row.
    micros = np.fromiter((r.start_us for r in summaries), np.int64, len(summaries))
    starts = np.datetime_as_string(micros.astype("datetime64[us]"), unit="us", timezone="UTC").tolist()
    return "".join(
        f"{r.tenant_id}\t\\\\x{r.trace_id.hex()}\t{start}\t{r.duration_us}\t{text(r.service)}\t"
        f"{text(r.bt)}\t{'t' if r.error else 'f'}\t{text(r.error_tier)}\t{text(r.error_component)}\t"
        f"{r.tier_us}\t{r.span_count}\t{text(r.user_hash)}\t{text(r.session_id)}\t{text(r.site)}\n"
        for r, start in zip(summaries, starts, strict=True)
    )


_COPY_SUMMARIES = f"COPY trace_summaries ({_SUMMARY_COLUMNS}) FROM STDIN"


@wrap_errors
async def insert_summaries(conn: AsyncConnection, summaries: Sequence[SummaryRow]) -> set[tuple[int, bytes]]:
    """Store trace summaries (with their BT names); returns the traces actually
    inserted — a trace stored before is skipped, so nothing is counted twice.

    The common case, no trace stored before, is one COPY into the table (in a
    savepoint). A stored trace fails that COPY whole; then the rows go through
    a staging table and ``INSERT ... ON CONFLICT DO NOTHING``. Most cycles take
    the first path: traces already stored were left out by the processor
    (:func:`already_summarized`), so a conflict is rare (two shards meeting
    over one trace, a window read again after shards were re-divided).
    """
    if not summaries:
        return set()
    try:
        async with conn.transaction(), conn.cursor().copy(_COPY_SUMMARIES) as copy:
            await copy.write(summaries_copy(summaries).encode())
    except UniqueViolation:
        pass
    else:
        return {(r.tenant_id, r.trace_id) for r in summaries}
    await conn.execute(_ARRIVING)
    async with conn.cursor().copy("COPY summaries_arriving FROM STDIN") as copy:
        await copy.write(summaries_copy(summaries).encode())
    cur = await conn.execute(
        f"""INSERT INTO trace_summaries ({_SUMMARY_COLUMNS})
            SELECT {_SUMMARY_COLUMNS} FROM summaries_arriving
            ON CONFLICT DO NOTHING RETURNING tenant_id, trace_id"""  # noqa: S608
    )
    return {(tenant, bytes(trace)) for tenant, trace in await cur.fetchall()}


@wrap_errors
async def resource_hosts(
    conn: AsyncConnection, keys: Sequence[tuple[int, int]]
) -> dict[tuple[int, int], str]:
    """The instance (or host, or service) each resource names."""
    cur = await conn.execute(
        """SELECT r.tenant_id, r.resource_id,
                  COALESCE(r.attributes->>'service.instance.id', r.attributes->>'host.name', r.service)
           FROM unnest(%(tenants)s::int4[], %(ids)s::int8[]) AS k(tenant_id, resource_id)
           JOIN resources r ON r.tenant_id = k.tenant_id AND r.resource_id = k.resource_id""",
        {"tenants": [k[0] for k in keys], "ids": [k[1] for k in keys]},
    )
    return {(tenant, rid): str(label)[:256] for tenant, rid, label in await cur.fetchall()}


# -- business-transaction registry and rules -------------------------------------


@wrap_errors
async def known_transactions(conn: AsyncConnection) -> dict[tuple[int, str], set[str]]:
    cur = await conn.execute("SELECT tenant_id, service, name FROM business_transactions")
    known: dict[tuple[int, str], set[str]] = {}
    for tenant, service, name in await cur.fetchall():
        known.setdefault((tenant, service), set()).add(name)
    return known


@wrap_errors
async def transactions_of(conn: AsyncConnection, tenant: int, service: str) -> set[str]:
    cur = await conn.execute(
        "SELECT name FROM business_transactions WHERE tenant_id = %s AND service = %s", (tenant, service)
    )
    return {name for (name,) in await cur.fetchall()}


@wrap_errors
async def register_transactions(
    conn: AsyncConnection, names: Iterable[tuple[int, str, str]], overflow: dict[tuple[int, str], int]
) -> None:
    rows = list(names)
    if rows:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO business_transactions (tenant_id, service, name) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                rows,
            )
    for (tenant, service), count in overflow.items():
        await conn.execute(
            """INSERT INTO business_transactions (tenant_id, service, name, overflow)
               VALUES (%s, %s, '_other', %s)
               ON CONFLICT (tenant_id, service, name)
               DO UPDATE SET overflow = business_transactions.overflow + EXCLUDED.overflow""",
            (tenant, service, count),
        )


@wrap_errors
async def rules_versions(conn: AsyncConnection) -> dict[int, datetime]:
    cur = await conn.execute("SELECT tenant_id, updated_at FROM bt_rules")
    return dict(await cur.fetchall())


@wrap_errors
async def load_rules(conn: AsyncConnection, tenant_id: int) -> dict[str, Any] | None:
    cur = await conn.execute("SELECT document FROM bt_rules WHERE tenant_id = %s", (tenant_id,))
    row = await cur.fetchone()
    return row[0] if row else None


@wrap_errors
async def save_rules(conn: AsyncConnection, tenant_id: int, document: dict[str, Any], source: str) -> None:
    await conn.execute(
        """INSERT INTO bt_rules (tenant_id, document, source) VALUES (%s, %s, %s)
           ON CONFLICT (tenant_id) DO UPDATE
           SET document = EXCLUDED.document, source = EXCLUDED.source, updated_at = now()""",
        (tenant_id, json.dumps(document), source),
    )
