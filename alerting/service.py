"""The alerting service: one leader per store.

``tierscope up`` runs :func:`run` in a process of its own
(``alerting/runner.py``), supervised beside the trace processors: restarted
if it dies, stopped if the collector dies. The service holds a dedicated
connection and tries a session-level advisory lock on it: the one service
that gets it evaluates the rules every ``alert_interval`` and delivers the
outbox every second; the others (other collectors of the same store) only
retry the lock. If the leader's process dies, its session ends, the lock is
released and another service takes over within a tick. Alert state lives in
the store, so the new leader carries on where the old one stopped (the
baseline cache is rebuilt, nothing else is lost).

Why not a task of the collector's HTTP workers, as it first was: fitting
baselines takes seconds of CPU once an hour, and a worker busy with it
answered the query API late (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

import psycopg

from tierscope.alerting.delivery import Backoff, deliver_due
from tierscope.alerting.evaluator import Evaluator
from tierscope.alerting.heartbeat import Heartbeats
from tierscope.config import Settings
from tierscope.store import Database

_logger = logging.getLogger(__name__)
LEADER_LOCK = 0x7473616C657274  # "tsalert": one alert evaluator per store
TICK_SECONDS = 1.0


async def _try_lead(dsn: str, conn: psycopg.AsyncConnection | None) -> psycopg.AsyncConnection | None:
    """The lock's connection if this worker leads (keeps leading), else None."""
    try:
        if conn is None or conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                dsn, autocommit=True, application_name="tierscope-alerting", connect_timeout=5
            )
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK,))
        row = await cur.fetchone()
        if row and row[0]:
            return conn
        await conn.close()
    except psycopg.Error as exc:
        _logger.info("alerting: the store is not reachable (%s); trying again", exc)
        if conn is not None:
            await conn.close()
    return None


async def run(database: Database, settings: Settings, dsn: str, stop: asyncio.Event | None = None) -> None:
    """Lead when possible; evaluate and deliver while leading. Runs until
    ``stop`` is set (or cancelled)."""
    stop = stop or asyncio.Event()
    evaluator = Evaluator(database, settings)
    heartbeats = Heartbeats(database, list(settings.alert_allowed_networks), settings.alert_runbook_url)
    backoff = Backoff(settings.alert_retry_initial, settings.alert_retry_max)
    allowed = list(settings.alert_allowed_networks)
    lock: psycopg.AsyncConnection | None = None
    next_evaluation = 0.0
    try:
        while not stop.is_set():
            # Re-asking for a lock already held just stacks it; checking the
            # connection is alive is what matters for a leader.
            lock = await _try_lead(dsn, lock) if lock is None else await _still_leading(lock)
            if lock is not None:
                if time.monotonic() >= next_evaluation:
                    next_evaluation = time.monotonic() + settings.alert_interval.total_seconds()
                    try:
                        report = await evaluator.cycle()
                        # Only tenants judged without failure beat: a failing evaluator goes quiet.
                        await heartbeats.beat(report.evaluated, datetime.now(UTC))
                    except Exception as exc:  # the next cycle tries again; nothing was resolved
                        _logger.warning("alert evaluation failed: %s", exc)
                try:
                    await deliver_due(database, datetime.now(UTC), backoff, allowed)
                except Exception as exc:
                    _logger.warning("notification delivery failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_SECONDS)
    finally:
        if lock is not None:
            await lock.close()


async def _still_leading(conn: psycopg.AsyncConnection) -> psycopg.AsyncConnection | None:
    try:
        await conn.execute("SELECT 1")
    except psycopg.Error:
        await conn.close()
        return None
    return conn
