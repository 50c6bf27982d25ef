"""``tierscope up``: start the store if needed, migrate, and serve the collector.

With no ``TIERSCOPE_DATABASE_URL`` an embedded PostgreSQL is started under the
data directory, and stopped again when the collector stops. On the first start
the tenant ``default`` is created and its credentials are written to
``<data-dir>/credentials.json`` (mode 0600).

Ctrl-C or SIGTERM: the collector stops accepting connections, lets in-flight
requests finish (up to ``TIERSCOPE_SHUTDOWN_TIMEOUT``), closes its pool, then
stops the embedded database. Nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import psycopg
import uvicorn
from rich.console import Console
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from tierscope.collector.connections import HeadDeadlineProtocol
from tierscope.collector.metrics import MULTIPROCESS_DIR
from tierscope.config import Settings
from tierscope.config.settings import ENV_PREFIX
from tierscope.store import Conflict, migrations, redact
from tierscope.store import tenants as tenant_store
from tierscope.store.embedded import EmbeddedPostgres

_logger = logging.getLogger(__name__)

DEFAULT_TENANT = "default"


class _Stop(SystemExit):
    """Raised by our SIGTERM handler, so clean-up code runs."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(0)


@contextlib.contextmanager
def store_dsn(settings: Settings, console: Console | None = None) -> Iterator[str]:
    """A DSN for the configured store; starts (and afterwards stops) the embedded
    PostgreSQL when no ``TIERSCOPE_DATABASE_URL`` is set. If the embedded one is
    already running (``tierscope up`` in another terminal), it is used and left running.
    """
    if settings.database_url:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    try:
        if console is not None:
            with console.status(f"starting the embedded PostgreSQL in {embedded.pgdata} ..."):
                dsn = embedded.start()
        else:
            dsn = embedded.start()
        yield dsn
    finally:
        embedded.stop()


async def migrate(dsn: str, console: Console | None = None) -> list[migrations.Migration]:
    def announce(migration: migrations.Migration) -> None:
        if console is not None:
            console.print(f"  applying migration {migration.version:04d} {migration.name}")

    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        return await migrations.migrate(conn, on_apply=announce)


def write_credentials(path: Path, credentials: tenant_store.Credentials) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(credentials.as_dict(), handle, indent=2)
        handle.write("\n")
    path.chmod(0o600)


async def ensure_default_tenant(dsn: str, data_dir: Path) -> tuple[Path, bool]:
    """Create tenant ``default`` on first start. Returns (credentials path, created now)."""
    path = data_dir / "credentials.json"
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        try:
            credentials = await tenant_store.create_tenant(conn, DEFAULT_TENANT)
        except Conflict:
            return path, False
    write_credentials(path, credentials)
    return path, True


Companion = Callable[[str, Path], contextlib.AbstractContextManager[object]]


def serve(settings: Settings, console: Console, companion: Companion | None = None) -> None:
    """Run the collector in the foreground until Ctrl-C or SIGTERM.

    ``companion(dsn, credentials path)``, when given, is entered once the store
    is ready and left after the collector has stopped and before the store
    stops: ``tierscope demo`` runs its estate that way, in the same process tree.
    """
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        with store_dsn(settings, console) as dsn:
            store = "embedded PostgreSQL" if not settings.database_url else redact(dsn)
            applied = asyncio.run(migrate(dsn, console))
            if applied:
                console.print(f"  store schema is at version {applied[-1].version:04d}")
            credentials, created = asyncio.run(ensure_default_tenant(dsn, settings.data_dir))
            _announce(console, settings, store, credentials, created)
            _worker_environment(settings, dsn)
            beside = companion(dsn, credentials) if companion is not None else contextlib.nullcontext()
            # The companion stops last: the processors are not restarted while it stops.
            background = ProcessorProcesses(
                enabled=settings.processing, shards=settings.processing_shards, alerting=settings.alerting
            )
            with beside, background:
                _serve_workers(settings)
            console.print("tierscope stopped.")
    except KeyboardInterrupt:
        console.print("tierscope stopped.")
    finally:
        signal.signal(signal.SIGTERM, previous)


def _worker_environment(settings: Settings, dsn: str) -> None:
    """Hand the settings to the worker processes, which read only the environment."""
    os.environ[f"{ENV_PREFIX}DATABASE_URL"] = dsn
    os.environ[f"{ENV_PREFIX}HOST"] = settings.host
    os.environ[f"{ENV_PREFIX}PORT"] = str(settings.port)
    os.environ[f"{ENV_PREFIX}DATA_DIR"] = str(settings.data_dir)
    os.environ[f"{ENV_PREFIX}WORKERS"] = str(settings.workers)
    os.environ[f"{ENV_PREFIX}HEADER_TIMEOUT"] = f"{settings.header_timeout.total_seconds()}s"
    if settings.workers > 1 or settings.processing:
        # Workers and the processor write metric samples here; a scrape of any
        # worker sums them all.
        directory = settings.data_dir / "metrics"
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        os.environ[MULTIPROCESS_DIR] = str(directory)
    else:
        os.environ.pop(MULTIPROCESS_DIR, None)


def _serve_workers(settings: Settings) -> None:
    """Serve with uvicorn's multi-process supervisor, whatever the worker count:
    every worker is a fresh process (which prometheus_client's multiprocess mode
    needs, as it is chosen at import), and one that dies is replaced."""
    config = uvicorn.Config(
        "tierscope.collector.app:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_level=settings.log_level.lower(),
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout.total_seconds()),
        timeout_keep_alive=5,
        server_header=False,
        # uvicorn's protocol, plus a deadline for the request head (slowloris).
        http=HeadDeadlineProtocol,
    )
    try:
        socket = config.bind_socket()
    except SystemExit:
        raise CollectorError(f"cannot listen on {settings.host}:{settings.port}; is it in use?") from None
    supervisor = Multiprocess(config, sockets=[socket])
    supervisor.run()
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        raise CollectorError("the collector workers failed to start; see the messages above")


class CollectorError(Exception):
    """tierscope up could not serve; the message says why."""


class ProcessorProcesses:
    """The background processes of ``tierscope up``: the trace processor, one
    process per shard, and the alert evaluator (``alerting``). Each is restarted
    if it dies and stopped (SIGTERM: each finishes its cycle) when the collector
    stops; each also stops by itself if this process is killed
    (``processing/runner.py``, ``_orphan_safe``).

    Why the evaluator is not a task of the HTTP workers: fitting baselines is
    seconds of CPU per hour, which slowed the query API it shared a worker with.
    """

    def __init__(self, *, enabled: bool, shards: int, alerting: bool = False) -> None:
        self.enabled = enabled
        self.shards = shards
        self.alerting = alerting
        self._context = multiprocessing.get_context("spawn")
        self._processes: dict[str, multiprocessing.process.BaseProcess] = {}
        self._stopping = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="processor-watchdog", daemon=True)

    @property
    def pids(self) -> dict[str, int | None]:
        return {name: process.pid for name, process in self._processes.items()}

    def _spawn(self, name: str) -> None:
        if name == "alerting":
            from tierscope.alerting.runner import main as alerting_main

            process = self._context.Process(target=alerting_main, name="tierscope-alerting")
        else:
            from tierscope.processing.runner import main

            shard = int(name.removeprefix("processor-"))
            process = self._context.Process(target=main, args=(shard,), name=f"tierscope-processor-{shard}")
        process.start()
        self._processes[name] = process

    def _watch(self) -> None:
        while not self._stopping.wait(2.0):
            for name, process in list(self._processes.items()):
                if not process.is_alive() and not self._stopping.is_set():
                    _logger.warning("the %s process exited (%s); starting it again", name, process.exitcode)
                    self._spawn(name)

    def __enter__(self) -> ProcessorProcesses:
        names = [f"processor-{shard}" for shard in range(self.shards)] if self.enabled else []
        names += ["alerting"] if self.alerting else []
        for name in names:
            self._spawn(name)
        if names:
            self._watchdog.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        processes = list(self._processes.values())
        for process in processes:
            if process.is_alive():
                process.terminate()
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()


def _announce(console: Console, settings: Settings, store: str, credentials: Path, created: bool) -> None:
    url = f"http://{settings.host}:{settings.port}"
    console.print(
        f"[bold]tierscope[/] collector on [cyan]{url}[/]  ({settings.workers} worker(s); store: {store})"
    )
    if created:
        console.print(f"  created tenant [bold]{DEFAULT_TENANT}[/]; its keys are in [cyan]{credentials}[/]")
    elif credentials.exists():
        console.print(f"  tenant keys: [cyan]{credentials}[/]")
    else:
        console.print(
            f"  {credentials} is missing: run 'tierscope tenant rotate {DEFAULT_TENANT}' for new keys"
        )
    console.print(
        f"  point an OpenTelemetry SDK at it: OTEL_EXPORTER_OTLP_ENDPOINT={url} "
        "OTEL_EXPORTER_OTLP_HEADERS='Authorization=Bearer <ingest_key>'"
    )
    console.print("  Ctrl-C stops it.")
