"""Fixtures: a real PostgreSQL for the whole session, a fresh database per test.

The session starts one embedded PostgreSQL (the same code path as
``tierscope up``), migrates a template database once, and hands each test or
module its own copy (``CREATE DATABASE ... TEMPLATE``), dropped afterwards.
Collector fixtures run the real ``tierscope up`` as a child process on 127.0.0.1.
Tests that prove a row of the reliability plan record their figures through
``figures`` or ``tierscope.testing.figures.tally`` (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tierscope.store import migrations
from tierscope.store.embedded import EmbeddedPostgres
from tierscope.testing import figures as _figures
from tierscope.testing.collector import CollectorProcess

TEMPLATE = "tierscope_template"
_figures_written = [False]
_numbers = itertools.count()


def pytest_configure(config: pytest.Config) -> None:
    # A shell without job control starts background commands (`make test &`, nohup)
    # with SIGINT ignored, and an ignored signal stays ignored through fork and exec:
    # every app and server the tests start would then shrug off Ctrl-C. The tests
    # that press Ctrl-C need what a terminal gives: SIGINT handled.
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"  # psycopg's async API runs on asyncio


@pytest.fixture(scope="session")
def postgres() -> Iterator[EmbeddedPostgres]:
    # Not under pytest's basetemp: another pytest session starting meanwhile
    # resets that tree to mode 0700, and the server runs as another user.
    directory = Path(tempfile.mkdtemp(prefix="tierscope-test-postgres-"))
    server = EmbeddedPostgres(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def _dsn_for(postgres: EmbeddedPostgres, database: str) -> str:
    return postgres.dsn.rsplit("/", 1)[0] + "/" + database


async def _migrate(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await migrations.migrate(conn)


@pytest.fixture(scope="session")
def template_database(postgres: EmbeddedPostgres) -> str:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
    asyncio.run(_migrate(_dsn_for(postgres, TEMPLATE)))
    return TEMPLATE


@pytest.fixture(scope="session")
def database_factory(postgres: EmbeddedPostgres, template_database: str) -> Iterator[Callable[..., str]]:
    """Make a fresh, migrated database; returns its DSN. ``empty=True`` skips the
    migrations (for tests of the migrations themselves)."""
    made: list[str] = []

    def make(*, empty: bool = False) -> str:
        name = f"test_{os.getpid()}_{next(_numbers)}"
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            query = "CREATE DATABASE {}" if empty else "CREATE DATABASE {} TEMPLATE {}"
            conn.execute(sql.SQL(query).format(sql.Identifier(name), sql.Identifier(template_database)))
        made.append(name)
        return _dsn_for(postgres, name)

    yield make
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        for name in made:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def database_url(database_factory: Callable[..., str]) -> str:
    return database_factory()


@pytest.fixture(scope="module")
def collector_factory(
    database_factory: Callable[..., str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., CollectorProcess]]:
    """Start a ``tierscope up`` with a database of its own and extra ``TIERSCOPE_*``
    settings; every collector started is stopped at the end of the module (each
    holds a dozen store connections: kept for the whole session they would
    exhaust the store's max_connections)."""
    started: list[CollectorProcess] = []

    def start(**settings: str) -> CollectorProcess:
        env = {"TIERSCOPE_WORKERS": "1", **settings}
        process = CollectorProcess(
            tmp_path_factory.mktemp("collector"), database_url=database_factory(), env=env
        )
        started.append(process)
        return process.start()

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="module")
def collector(collector_factory: Callable[..., CollectorProcess]) -> CollectorProcess:
    """A running ``tierscope up`` with its own database, shared by a test module."""
    return collector_factory()


@pytest.fixture
def tmp_data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def figures() -> Callable[[str], _figures.Figures]:
    """``figures("T-02").record(sent=..., lost=0)``: one row of docs/reliability.md."""
    return _figures.Figures


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Which file a tally's counts come from: the row names the files that prove it.
    _figures.current_file[0] = item.path.relative_to(item.config.rootpath).as_posix()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Rows gathered over many tests are written once, and only when every test passed.
    if exitstatus == 0 and not _figures_written[0]:
        _figures_written[0] = True
        _figures.write_tallies(echo=session.config.getoption("capture") == "no")
