"""Fixtures for the agent's tests: real apps under real servers, started the way a
user starts them (``tierscope-agent run -- ...``), exporting to a real collector.

Errors the agent swallows (to keep them from the application) still fail the
test: the autouse fixture registers a hook in this process and points
``TIERSCOPE_AGENT_ERRORS_FILE`` at a file the apps' processes append to.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from tierscope.agent import guard
from tierscope.testing.apps import AppProcess, Outbound
from tierscope.testing.collector import CollectorProcess

APPS = Path(__file__).parent / "apps"


@pytest.fixture(autouse=True)
def swallowed_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BaseException]]:
    """Errors the agent swallowed fail the test; a test that provokes some on purpose
    takes them out of this list and out of the file ``TIERSCOPE_AGENT_ERRORS_FILE``
    names (where app processes, and this one, write them)."""
    errors: list[BaseException] = []
    remove = guard.on_swallowed(errors.append)
    errors_file = tmp_path / "agent-errors.txt"
    monkeypatch.setenv("TIERSCOPE_AGENT_ERRORS_FILE", str(errors_file))
    try:
        yield errors
    finally:
        remove()
    if errors:
        raise errors[0]
    if errors_file.exists() and errors_file.read_text().strip():
        pytest.fail(f"the agent swallowed errors in an app process:\n{errors_file.read_text()[-4000:]}")


@pytest.fixture(scope="module")
def outbound() -> Iterator[Outbound]:
    service = Outbound()
    yield service
    service.close()


@pytest.fixture(scope="module")
def app_database(database_factory: Callable[..., str]) -> str:
    """A database for the test apps, with the job table of the CRM."""
    dsn = database_factory(empty=True)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE agent_jobs (id bigserial PRIMARY KEY, name text NOT NULL, trace jsonb)")
    return dsn


@pytest.fixture
def run_app(tmp_path: Path, app_database: str, outbound: Outbound) -> Iterator[Callable[..., AppProcess]]:
    """Start an app command instrumented, exporting to a collector; stopped after the test."""
    started: list[AppProcess] = []

    def start(
        command: list[str],
        collector: CollectorProcess | None,
        *,
        service: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> AppProcess:
        environment = {
            **os.environ,
            "DATABASE_URL": app_database,
            "OUTBOUND_URL": outbound.url,
            "TIERSCOPE_SERVICE": service,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "PYTHONUNBUFFERED": "1",
            "PYTHONFAULTHANDLER": "1",  # a hung app prints its stacks when stop() aborts it
            # The app's servers (gunicorn, uvicorn) are beside this interpreter.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
        if collector is not None:
            environment["TIERSCOPE_ENDPOINT"] = collector.url
            environment["TIERSCOPE_INGEST_KEY"] = collector.credentials()["ingest_key"]
        environment.update(env or {})
        app = AppProcess(command, environment, tmp_path / f"app-{len(started)}.log", port, cwd=APPS)
        started.append(app)
        return app.start() if wait else app

    yield start
    for app in started:
        app.stop()
