"""Running the processor as a process: under ``tierscope up`` (a child process
it starts and stops), or on its own with ``tierscope process``."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Coroutine
from typing import Any

from tierscope.config import Settings, load_settings
from tierscope.processing.experiences import ExperienceJoiner
from tierscope.processing.metrics import ProcessorMetrics
from tierscope.processing.prefetch import WindowPrefetcher
from tierscope.processing.processor import Processor
from tierscope.store import Database
from tierscope.store.processing import PROCESSOR_APPLICATION, Shard


async def process(settings: Settings, dsn: str, shard: Shard, stop: asyncio.Event | None = None) -> None:
    """Process the shard's traces until ``stop`` is set (or SIGTERM/SIGINT)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    database = Database(
        dsn,
        pool_size=2,
        acquire_timeout=settings.db_acquire_timeout,
        statement_timeout=max(settings.db_statement_timeout, settings.processing_interval * 30),
        application_name=PROCESSOR_APPLICATION,
    )
    await database.open()
    prefetcher = WindowPrefetcher(dsn)
    # The first shard also joins real-user experiences with their traces.
    joiner = ExperienceJoiner(database, settings).run(stop) if shard.index == 0 else asyncio.sleep(0)
    processor = Processor(database, settings, ProcessorMetrics(), prefetcher, shard)
    try:
        await asyncio.gather(processor.run(stop), joiner)
    finally:
        prefetcher.close()
        await database.close()


def main(shard_index: int = 0) -> None:
    """Entry point of a processor process ``tierscope up`` (or ``tierscope
    process``) starts for one shard (settings from the environment it set)."""
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not settings.database_url:
        raise SystemExit("the processor needs TIERSCOPE_DATABASE_URL (tierscope up sets it)")
    shard = Shard(shard_index, settings.processing_shards)
    asyncio.run(_orphan_safe(process(settings, settings.database_url, shard, stop := asyncio.Event()), stop))


async def _orphan_safe(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> None:
    """Run ``work``, setting ``stop`` if the parent process goes away (killed
    with SIGKILL it cannot stop us): no processor outlives its collector."""
    # The parent as multiprocessing recorded it when it spawned us: by the time
    # this runs (imports take seconds on a busy machine) it may already be gone.
    spawner = multiprocessing.parent_process()
    parent = spawner.pid if spawner is not None and spawner.pid else os.getppid()

    async def watch() -> None:
        while not stop.is_set():
            if os.getppid() != parent:
                logging.getLogger(__name__).warning("the parent process is gone; stopping")
                stop.set()
            await asyncio.sleep(1.0)

    watcher = asyncio.create_task(watch())
    try:
        await work
    finally:
        watcher.cancel()
