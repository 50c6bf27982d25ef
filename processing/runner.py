"""Running the processor as a process: under ``tierscope up`` (a child process
it starts and stops), or on its own with ``tierscope process``."""

from __future__ import annotations

import asyncio
import logging
import signal

from tierscope.config import Settings, load_settings
from tierscope.processing.metrics import ProcessorMetrics
from tierscope.processing.prefetch import WindowPrefetcher
from tierscope.processing.processor import Processor
from tierscope.store import Database
from tierscope.store.processing import PROCESSOR_APPLICATION


async def process(settings: Settings, dsn: str, stop: asyncio.Event | None = None) -> None:
    """Process traces until ``stop`` is set (or SIGTERM/SIGINT)."""
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
    try:
        await Processor(database, settings, ProcessorMetrics(), prefetcher).run(stop)
    finally:
        prefetcher.close()
        await database.close()


def main() -> None:
    """Entry point of the processor process ``tierscope up`` starts (settings from
    the environment it set)."""
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not settings.database_url:
        raise SystemExit("the processor needs TIERSCOPE_DATABASE_URL (tierscope up sets it)")
    asyncio.run(process(settings, settings.database_url))
