"""Fixtures of the fault and overload tests (RELIABILITY.md T-01 to T-08, T-23, T-24).

Short variants run in ``make test``; ``make soak`` sets ``TIERSCOPE_SOAK=1`` and
the same tests run their long variants (faults of 30 s, more kills, the 2-hour
soak). Each test records its figures with the ``figures`` fixture of
tests/conftest.py; ``tierscope.testing.reliability`` turns them into the table
of docs/reliability.md.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tierscope.store.embedded import EmbeddedPostgres
from tierscope.testing.collector import CollectorProcess
from tierscope.testing.faultproxy import FaultProxy
from tierscope.testing.figures import SOAK, Figures

__all__ = ["SOAK", "Figures"]  # the fault tests import them from here

# The collector as the fault tests run it: one worker, no processing and no
# alerting (they would hold store connections of their own and blur what the
# fault does to ingest), a short Retry-After so clients come back quickly.
QUIET = {
    "TIERSCOPE_WORKERS": "1",
    "TIERSCOPE_PROCESSING": "false",
    "TIERSCOPE_ALERTING": "false",
    "TIERSCOPE_RETRY_AFTER": "1s",
}


def seconds(short: float, long: float) -> float:
    """A duration: ``short`` in make test, ``long`` under make soak."""
    return long if SOAK else short


def rss_bytes(process: CollectorProcess) -> int:
    """Resident memory of the collector and its worker processes."""
    return process.rss_bytes()


@dataclass
class ProxiedStore:
    """A fresh database, reachable directly and through a fault proxy."""

    proxy: FaultProxy
    direct_dsn: str
    proxied_dsn: str


@pytest.fixture
def proxied_store(postgres: EmbeddedPostgres, database_factory: Callable[..., str]) -> Iterator[ProxiedStore]:
    direct = database_factory()
    port = postgres.dsn.split("@", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
    with FaultProxy(("127.0.0.1", int(port))) as proxy:
        proxied = direct.replace(f":{port}/", f":{proxy.port}/", 1)
        assert proxied != direct
        yield ProxiedStore(proxy, direct, proxied)


@pytest.fixture
def own_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own: it is crashed on purpose. (Not under
    pytest's basetemp, for the reason given in tests/conftest.py.)"""
    directory = Path(tempfile.mkdtemp(prefix="tierscope-test-own-postgres-"))
    server = EmbeddedPostgres(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop(force=True)
        shutil.rmtree(directory, ignore_errors=True)


def store_sessions(dsn: str) -> int:
    """Sessions the collector holds on the store (pg_stat_activity)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'tierscope' AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])
