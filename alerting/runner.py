"""The alert evaluator as a process: the child ``tierscope up`` starts and
supervises beside the trace processors (``collector/server.py``)."""

from __future__ import annotations

import asyncio
import logging
import signal

from tierscope.alerting import service
from tierscope.config import Settings, load_settings
from tierscope.processing.runner import _orphan_safe
from tierscope.store import Database

APPLICATION = "tierscope-alerting-pool"  # the lock connection is "tierscope-alerting"


async def evaluate(settings: Settings, dsn: str, stop: asyncio.Event) -> None:
    """Lead, evaluate and deliver until ``stop`` is set (or SIGTERM/SIGINT)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    database = Database(
        dsn,
        pool_size=2,
        acquire_timeout=settings.db_acquire_timeout,
        # A baseline fit reads weeks of hour rollups: longer than an API query may take.
        statement_timeout=max(settings.db_statement_timeout, settings.alert_interval * 4),
        application_name=APPLICATION,
    )
    await database.open()
    try:
        await service.run(database, settings, dsn, stop)
    finally:
        await database.close()


def main() -> None:
    """Entry point of the evaluator process (settings from the environment
    ``tierscope up`` set)."""
    settings = load_settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    if not settings.database_url:
        raise SystemExit("the alert evaluator needs TIERSCOPE_DATABASE_URL (tierscope up sets it)")
    stop = asyncio.Event()
    asyncio.run(_orphan_safe(evaluate(settings, settings.database_url, stop), stop))
