"""The trace processor: settled traces in, summaries and rollups out.

**Which spans, when.** Spans are taken in the order they arrived, one window of
arrival time ``[watermark, horizon)`` per cycle. The horizon is
``settle_delay`` ago, and never later than the start of the oldest ingest
transaction still open (so no span can still appear behind it). A trace is
processed in the window that holds its last span: if one of its spans arrived
after the horizon it is still receiving, and waits for a later window (up to
:data:`MAX_WAIT`, after which it is processed anyway).

**Shards.** Processing runs in ``processing_shards`` processes, each owning
every Nth half second of arrival time (:class:`~tierscope.store.processing.Shard`)
and the traces whose last span arrived in it, each with a watermark of its own.
They compute in parallel and take turns to write
(:func:`~tierscope.store.processing.take_write_turn`), so rollup rows merged by
two shards lose nothing.

**Exactly once.** Summaries, rollups, the business-transaction registry and the
new watermark are written in one transaction: a processor killed at any moment
leaves all of a window or none of it. One processor works per shard at a time
(a PostgreSQL advisory lock held by its session elects it), so any number of
collectors, each running processors, give the same totals as one. A trace is
summarized once (a unique key): read again after shards were re-divided, it is
skipped, not counted twice.

**Late spans.** A span that arrives after its trace was processed is counted
(``late_spans``) and leaves the rollups alone: they never change after the fact.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt
import psycopg

from tierscope.config import Settings
from tierscope.processing import columnar
from tierscope.processing.assemble import entry_attributes, error_origin, failed, user_fields
from tierscope.processing.columnar import TraceOutcome, Window, unique_rows
from tierscope.processing.metrics import ProcessorMetrics
from tierscope.processing.naming import OTHER, EntrySpan, Rules
from tierscope.processing.prefetch import WindowPrefetcher
from tierscope.processing.sqlnorm import Normalizer
from tierscope.processing.writer import build_missing_weeks, write_rollup
from tierscope.store import Database, StoreError, span_columns
from tierscope.store import processing as store
from tierscope.store.processing import Shard, SpanRow, SummaryRow, utc
from tierscope.store.span_columns import SpanColumns
from tierscope.store.span_ranges import SpanRanges

_logger = logging.getLogger(__name__)

LEADER_LOCK = 0x74737072  # with the shard index: one processor per shard of a store
MAX_WAIT = timedelta(minutes=5)  # a trace still receiving spans after this is processed anyway
TRACE_EXTENT = timedelta(hours=1)  # how far apart in start time the spans of one trace may be
MAX_TRACE_SPANS = 20_000
# Spans one cycle aims to take: a processor that is behind takes many cycles of
# this size (bounded memory, a stop request answered within a cycle), not one
# huge window.
TARGET_CYCLE_SPANS = 60_000


@dataclass
class CycleReport:
    since: datetime | None = None
    until: datetime | None = None
    spans: int = 0
    traces: int = 0
    deferred: int = 0
    late_spans: int = 0
    excluded: int = 0
    overflow: int = 0
    behind: bool = False  # more windows are ready right now
    lag_seconds: float = 0.0
    names: dict[tuple[int, bytes], str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase, for tuning

    def lap(self, phase: str, since: float) -> float:
        now = time.perf_counter()
        self.timings[phase] = self.timings.get(phase, 0.0) + now - since
        return now


class Processor:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        metrics: ProcessorMetrics | None = None,
        prefetcher: WindowPrefetcher | None = None,
        shard: Shard = store.WHOLE,
    ) -> None:
        self.database = database
        self.shard = shard
        self.prefetcher = prefetcher
        self.settings = settings
        self.metrics = metrics
        self._rules: dict[int, tuple[datetime | None, Rules]] = {}
        self._known: dict[tuple[int, str], set[str]] | None = None
        self._normalize = Normalizer()
        self._hosts: dict[tuple[int, int], str] = {}  # (tenant, resource) -> host or instance
        self._window = settings.processing_window  # adapted to the arrival rate each cycle
        self._span_ranges = SpanRanges()

    # -- one cycle --------------------------------------------------------------

    async def cycle(self) -> CycleReport:
        """Process the next window, if one is ready; everything or nothing is committed."""
        started = time.perf_counter()
        # A window holds hundreds of thousands of short-lived tuples; automatic
        # collections while they are alive cost a third of the time, and free
        # nothing (they hold no cycles). Collect once the window is done.
        gc.disable()
        try:
            report = await self._cycle()
        except BaseException:
            self._known = None  # the in-memory registry may hold names that were rolled back
            raise
        finally:
            gc.enable()
        if self.metrics is not None:
            self.metrics.observe(report, time.perf_counter() - started)
        return report

    async def _cycle(self) -> CycleReport:
        report = CycleReport()
        clock = time.perf_counter()
        async with self.database.connection() as conn:
            clock = report.lap("connect", clock)
            # Windows are read through the arrival index: keep its new ranges
            # summarized, or every window reads the whole unsummarized tail.
            await self._span_ranges.catch_up(conn)
            clock = report.lap("summarize", clock)
            # Before the window's snapshot: every ingest transaction that began
            # before the horizon has ended by then, so its spans are visible.
            horizon = await store.ingest_horizon(conn, self.settings.settle_delay)
            await self._refresh(conn)
            clock = report.lap("horizon", clock)
            # READ COMMITTED: after waiting for its write turn, a shard must see
            # what the shard before it committed.
            async with conn.transaction():
                progress = await store.lock_progress(conn, self.shard)
                clock = report.lap("lock", clock)
                report.lag_seconds = max(0.0, (horizon - progress.watermark).total_seconds())
                since = self.shard.window_start(progress.watermark)
                prefetched = await self.prefetcher.take(since) if self.prefetcher else None
                if prefetched:
                    until, rows = prefetched
                else:
                    until, rows = self.shard.window_end(since, horizon, self._window), None
                clock = report.lap("prefetched" if prefetched else "lock", clock)
                if until <= since:
                    return report
                following_start = self.shard.window_start(until)
                following = self.shard.window_end(following_start, horizon, self._window)
                report.since, report.until, report.behind = since, until, following > following_start
                if self.prefetcher and report.behind:
                    self.prefetcher.start(following_start, following)  # read while this one is computed
                arrived = await self._process(conn, since, until, report, rows)
                if not arrived and self.shard.count > 1:
                    # Arrival time is dealt out in half seconds: an idle store
                    # would take a cycle for each. Skip what has no spans at all.
                    until = await store.next_arrival(
                        conn, until, min(horizon, until + self.settings.processing_window)
                    )
                progress.watermark = until
                progress.traces += report.traces
                progress.spans += report.spans
                progress.late_spans += report.late_spans
                progress.excluded_traces += report.excluded
                await store.save_progress(conn, self.shard, progress)
                clock = report.lap("progress", clock)
            clock = report.lap("commit", clock)
        report.lap("release", clock)
        self._adapt(arrived, until - since)
        return report

    def _adapt(self, arrived: int, covered: timedelta) -> None:
        """Size the next window to hold about TARGET_CYCLE_SPANS spans."""
        ceiling = self.settings.processing_window
        if arrived > TARGET_CYCLE_SPANS:
            self._window = max(timedelta(milliseconds=100), covered * (TARGET_CYCLE_SPANS / arrived))
        elif arrived < TARGET_CYCLE_SPANS / 2:
            self._window = min(ceiling, max(self._window, covered) * 2)

    async def _process(
        self,
        conn: psycopg.AsyncConnection,
        since: datetime,
        until: datetime,
        report: CycleReport,
        prefetched: SpanColumns | None = None,
    ) -> int:
        """Process the traces whose last span arrived in ``[since, until)``; returns
        how many spans arrived in it."""
        clock = time.perf_counter()
        arrived = (
            prefetched if prefetched is not None else await span_columns.window_columns(conn, since, until)
        )
        clock = report.lap("fetch", clock)
        if not len(arrived):
            return 0
        await self._learn_hosts(conn, arrived)
        earliest = utc(int(arrived.start.min())) - TRACE_EXTENT
        latest = utc(int(arrived.start.max())) + TRACE_EXTENT
        first_traces = _Traces(arrived)
        clock = report.lap("group", clock)
        siblings = await span_columns.sibling_columns(
            conn, first_traces.keys(), since, until, earliest, latest
        )
        spans = arrived.concat(siblings)
        traces = _Traces(spans) if len(siblings) else first_traces
        clock = report.lap("siblings", clock)

        until_us = int(until.timestamp() * 1e6)
        since_us = int(since.timestamp() * 1e6)
        patience_us = int(MAX_WAIT.total_seconds() * 1e6)
        last_received = np.maximum.reduceat(spans.received[traces.order], traces.starts)
        first_received = np.minimum.reduceat(spans.received[traces.order], traces.starts)
        # Still receiving: its last window will take it (unless it waited too long).
        deferred = (last_received >= until_us) & (first_received > until_us - patience_us)
        report.deferred += int(deferred.sum())
        seen_before = np.flatnonzero(~deferred & (first_received < since_us))
        ready = ~deferred
        if len(seen_before):
            keys = traces.keys(seen_before)
            done = await store.already_summarized(conn, keys, earliest, latest)
            if done:
                late = seen_before[[key in done for key in keys]]
                ready[late] = False
                in_window = (spans.received >= since_us) & (spans.received < until_us)
                report.late_spans += int(np.isin(traces.of_span, late)[in_window].sum())
        clock = report.lap("settled", clock)
        chosen, sizes = traces.spans_of(ready, spans.span)
        window = Window.of_columns(spans.take(chosen), sizes, self._component)
        clock = report.lap("columns", clock)
        named: list[tuple[int, str, float]] = []  # (trace, bt, apdex T) of the traces not excluded
        details = []
        for trace in range(window.trace_count):
            entry = window.span(int(window.entry[trace]))
            attrs = entry_attributes(entry)
            naming = self._rules_for(entry.tenant_id).name(
                EntrySpan(entry.service, entry.name or "", entry.kind, attrs)
            )
            if naming.bt is None:
                report.excluded += 1
                continue
            error = failed(entry, attrs)
            origin = error_origin(window.trace_spans(trace), entry) if error else (None, None)
            named.append((trace, naming.bt, naming.apdex_t_ms))
            details.append((entry, error, origin, user_fields(attrs), window.span_count(trace)))
        clock = report.lap("naming", clock)
        await store.take_write_turn(conn)
        clock = report.lap("turn", clock)
        names, overflow = await self._bound_names(
            conn, [(details[i][0], bt) for i, (_, bt, _) in enumerate(named)]
        )
        rows = [
            SummaryRow(
                entry.tenant_id,
                entry.trace_id,
                entry.start_us,
                entry.duration_us,
                entry.service,
                name,
                error,
                origin[0],
                origin[1],
                # An array literal: COPY parses it faster than psycopg dumps a list.
                "{" + ",".join(map(str, window.tier_us[trace].tolist())) + "}",
                span_count,
                *user,
            )
            for (trace, _, _), name, (entry, error, origin, user, span_count) in zip(
                named, names, details, strict=True
            )
        ]
        clock = report.lap("registry", clock)
        inserted = await store.insert_summaries(conn, rows)
        clock = report.lap("summaries", clock)
        outcomes = [TraceOutcome("", 0.0, False, False)] * window.trace_count
        for (trace, _, apdex), name, (entry, error, _, _, span_count) in zip(
            named, names, details, strict=True
        ):
            if (entry.tenant_id, entry.trace_id) in inserted:
                outcomes[trace] = TraceOutcome(name, apdex, error, True)
                report.traces += 1
                report.spans += span_count
        rollup = columnar.rollup(window, outcomes)
        clock = report.lap("rollup", clock)
        # The top components are chosen where the rows are merged: per stored
        # bucket, across every cycle and shard that writes to it.
        await write_rollup(conn, rollup, self.settings.top_components)
        report.lap("write", clock)
        report.overflow = sum(overflow.values())
        return len(arrived)

    # -- helpers ------------------------------------------------------------------

    def _component(self, span: SpanRow) -> str | None:
        """The component a span's time is reported under in "top components"."""
        if span.tier in ("db", "cache"):
            text = span.component or span.name
            return self._normalize(text) if text else None
        if span.tier in ("app", "web", "platform") and span.kind in (2, 5):
            return self._hosts.get((span.tenant_id, span.resource_id), span.service)
        return span.component or span.peer

    async def _learn_hosts(self, conn: psycopg.AsyncConnection, spans: SpanColumns) -> None:
        """Which host or instance each new resource is (for app-tier components)."""
        pairs, _ = unique_rows(np.stack([spans.tenant, spans.resource], axis=1))
        missing = set(map(tuple, pairs.tolist())) - self._hosts.keys()
        if not missing:
            return
        if len(self._hosts) > 100_000:
            self._hosts.clear()
        self._hosts.update(await store.resource_hosts(conn, list(missing)))

    def _rules_for(self, tenant_id: int) -> Rules:
        cached = self._rules.get(tenant_id)
        return cached[1] if cached else Rules.default()

    async def _refresh(self, conn: psycopg.AsyncConnection) -> None:
        """Reload naming rules that changed, and the registry after a failure."""
        versions = await store.rules_versions(conn)
        for tenant_id, updated in versions.items():
            cached = self._rules.get(tenant_id)
            if cached is None or cached[0] != updated:
                document = await store.load_rules(conn, tenant_id)
                self._rules[tenant_id] = (
                    updated,
                    Rules.from_document(document) if document else Rules.default(),
                )
        for tenant_id in set(self._rules) - set(versions):
            del self._rules[tenant_id]
        if self._known is None:
            self._known = await store.known_transactions(conn)

    async def _bound_names(
        self, conn: psycopg.AsyncConnection, entries: list[tuple[SpanRow, str]]
    ) -> tuple[list[str], dict[tuple[int, str], int]]:
        """Keep at most ``max_per_service`` names per service; the rest become ``_other``."""
        assert self._known is not None
        names: list[str] = []
        new: list[tuple[int, str, str]] = []
        overflow: dict[tuple[int, str], int] = defaultdict(int)
        refreshed: set[tuple[int, str]] = set()
        for entry, bt in entries:
            service = (entry.tenant_id, entry.service)
            known = self._known.setdefault(service, set())
            if bt not in known and service not in refreshed:
                # Other shards may have named some since: count what is stored
                # (this shard holds the write turn, so it stays so until commit).
                known |= await store.transactions_of(conn, *service)
                refreshed.add(service)
            if bt not in known:
                limit = self._rules_for(entry.tenant_id).max_per_service
                if len(known - {OTHER}) < limit:
                    known.add(bt)
                    new.append((entry.tenant_id, entry.service, bt))
                else:
                    overflow[entry.tenant_id, entry.service] += 1
                    bt = OTHER
            names.append(bt)
        await store.register_transactions(conn, new, overflow)
        for tenant, service in overflow:
            self._known[tenant, service].add(OTHER)
        return names, overflow

    async def backfill_weeks(self) -> int:
        """Week rows for the weeks stored before there were any (see
        :func:`~tierscope.processing.writer.build_missing_weeks`)."""
        async with self.database.connection() as conn, conn.transaction():
            await store.take_write_turn(conn)
            built = await build_missing_weeks(conn)
        if built:
            _logger.info("built %d week rollups of business transactions from their day rollups", built)
        return built

    # -- running ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Be the processor whenever no other is; until ``stop`` is set."""
        interval = self.settings.processing_interval.total_seconds()
        while not stop.is_set():
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.database.dsn, autocommit=True, application_name=store.PROCESSOR_APPLICATION
                ) as leader:
                    cur = await leader.execute(
                        "SELECT pg_try_advisory_lock(%s, %s)", (LEADER_LOCK, self.shard.index)
                    )
                    row = await cur.fetchone()
                    if row and row[0]:
                        _logger.info("this process now processes traces of shard %s", self.shard)
                        await self._lead(leader, stop, interval)
            except (psycopg.Error, StoreError, OSError) as exc:
                _logger.warning("trace processing paused: %s", exc)
                self._known = None
            await _sleep(stop, interval)

    async def _lead(self, leader: psycopg.AsyncConnection, stop: asyncio.Event, interval: float) -> None:
        if self.shard.index == 0:  # once per store start, not once per shard
            await self.backfill_weeks()
        while not stop.is_set():
            report = await self.cycle()
            if report.spans or report.late_spans:
                _logger.debug("cycle phases (s): %s", {k: round(v, 3) for k, v in report.timings.items()})
                _logger.debug(
                    "processed %d traces (%d spans) received %s .. %s; lag %.1fs, behind %s, at %.3f",
                    report.traces,
                    report.spans,
                    report.since,
                    report.until,
                    report.lag_seconds,
                    report.behind,
                    time.time(),
                )
            if not report.behind:
                await _sleep(stop, interval)
            await leader.execute("SELECT 1")  # still holding the lock (raises if the session is gone)


class _Traces:
    """The spans of a window grouped by trace: ``order`` lists the spans trace by
    trace (each trace's in their original order), ``starts`` where each trace
    begins in it."""

    def __init__(self, spans: SpanColumns) -> None:
        ids = spans.trace.view(">u8").reshape(-1, 2)
        high, low = ids[:, 0], ids[:, 1]
        self.order = np.lexsort((low, high, spans.tenant))  # stable: original order within a trace
        tenant, high, low = spans.tenant[self.order], high[self.order], low[self.order]
        new = np.ones(len(self.order), dtype=bool)
        new[1:] = (tenant[1:] != tenant[:-1]) | (high[1:] != high[:-1]) | (low[1:] != low[:-1])
        self.starts = np.flatnonzero(new)
        self.trace_of_ordered = np.cumsum(new) - 1
        self.of_span = np.empty(len(self.order), dtype=np.int64)
        self.of_span[self.order] = self.trace_of_ordered
        self._spans = spans

    def keys(self, traces: npt.NDArray[np.int64] | None = None) -> list[tuple[int, bytes]]:
        """(tenant, trace id) of these traces (of all, by default)."""
        first = self.order[self.starts if traces is None else self.starts[traces]]
        trace_ids = self._spans.trace[first]
        return [
            (tenant, trace_ids[i].tobytes()) for i, tenant in enumerate(self._spans.tenant[first].tolist())
        ]

    def spans_of(
        self, chosen: npt.NDArray[np.bool_], span_ids: npt.NDArray[np.uint64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The spans of the chosen traces, trace by trace — each span id once (the
        first copy) and at most MAX_TRACE_SPANS per trace — and each trace's count."""
        keep = chosen[self.trace_of_ordered]
        spans, trace = self.order[keep], self.trace_of_ordered[keep]
        position = np.arange(len(spans))
        by_id = np.lexsort((position, span_ids[spans], trace))
        repeated = np.zeros(len(spans), dtype=bool)
        same = (trace[by_id][1:] == trace[by_id][:-1]) & (
            span_ids[spans][by_id][1:] == span_ids[spans][by_id][:-1]
        )
        repeated[by_id[1:][same]] = True
        spans, trace = spans[~repeated], trace[~repeated]
        new = np.ones(len(trace), dtype=bool)
        new[1:] = trace[1:] != trace[:-1]
        first = np.flatnonzero(new)
        rank = np.arange(len(trace)) - first[np.cumsum(new) - 1]
        within = rank < MAX_TRACE_SPANS
        spans, new = spans[within], new[within]
        sizes = np.diff(np.append(np.flatnonzero(new), len(spans))).astype(np.int64)
        return spans, sizes


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
