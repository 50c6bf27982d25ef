"""Processing in shards: every trace counted once, whatever the number of
shards and however often it changes while spans are still arriving."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

import pytest

from tierscope.config import Settings
from tierscope.processing.processor import Processor
from tierscope.store import Database
from tierscope.store.processing import Shard
from tierscope.testing.collector import CollectorProcess

from .test_processing import fixed_traces, post, query, summaries

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_changing_the_number_of_shards_midway_counts_every_trace_once(
    collector_factory: Callable[..., CollectorProcess],
) -> None:
    collector = collector_factory(TIERSCOPE_PROCESSING="false")
    dsn = collector.database_url
    assert dsn
    traces = fixed_traces(150)
    for index, trace in enumerate(traces):
        post(collector, trace["crm-web"], "crm-web")
        post(collector, trace["erp-api"], "erp-api")
        if index % 30 == 29:
            await asyncio.sleep(0.3)  # arrivals over a few seconds: many small windows
    await asyncio.sleep(1.2)  # all settled
    settings = Settings(
        settle_delay=timedelta(seconds=1),
        processing_window=timedelta(milliseconds=150),
    )
    database = Database(dsn, pool_size=4, statement_timeout=timedelta(seconds=30))
    await database.open()

    async def run(shards: int, cycles: list[int] | None) -> None:
        """Every shard's processor, concurrently: so many cycles each, or until done."""
        processors = [Processor(database, settings, shard=Shard(i, shards)) for i in range(shards)]

        async def drive(processor: Processor, cycles: int | None) -> None:
            done = 0
            while cycles is None or done < cycles:
                report = await processor.cycle()
                done += 1
                if cycles is None and not report.behind and report.spans == 0:
                    return  # caught up with the clock, nothing left

        await asyncio.gather(*(drive(p, cycles[i] if cycles else None) for i, p in enumerate(processors)))

    try:
        await run(1, cycles=[3])
        partly = summaries(dsn)
        assert 0 < partly < len(traces), "the first shard layout should stop midway"
        # Shards at different watermarks when the layout changes again.
        await run(3, cycles=[1, 4, 7])
        watermarks = query(dsn, "SELECT count(DISTINCT watermark) FROM processing_progress")
        assert watermarks == [(3,)]
        assert query(dsn, "SELECT count(*), min(shards), max(shards) FROM processing_progress") == [(3, 3, 3)]
        await run(2, cycles=None)
    finally:
        await database.close()

    total = len(traces)
    assert summaries(dsn) == total
    assert query(dsn, "SELECT count(DISTINCT trace_id) FROM trace_summaries") == [(total,)]
    for resolution in ("minute", "hour", "day"):
        assert query(dsn, "SELECT sum(calls) FROM bt_rollups WHERE resolution = %s", resolution) == [(total,)]
        assert query(dsn, "SELECT sum(calls) FROM bt_rollups WHERE resolution = 'week'") == [(total,)]
        # Each trace calls erp-api once, answered by its own service: one edge each.
        edges = query(
            dsn,
            "SELECT sum(calls) FROM edge_rollups WHERE resolution = %s AND target = 'erp-api'",
            resolution,
        )
        assert edges == [(total,)]
    assert query(dsn, "SELECT sum(traces) FROM processing_progress") == [(total,)]
