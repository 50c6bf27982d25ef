"""The store goes away under load and comes back (RELIABILITY.md T-02, short).

While PostgreSQL is down the collector answers 503 with Retry-After within
2 seconds and never acknowledges a span it could not store; when PostgreSQL is
back, ingest resumes without restarting the collector, and the ledger shows
every acknowledged span stored exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tierscope.store.embedded import EmbeddedPostgres
from tierscope.testing.collector import CollectorProcess
from tierscope.testing.ledger import LedgerLoad

DOWN_FOR = 8.0


@pytest.fixture
def own_postgres(tmp_path: Path) -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL of this test's own: it is crashed on purpose."""
    server = EmbeddedPostgres(tmp_path / "store")
    server.start()
    yield server
    server.stop(force=True)


def test_store_crash_under_load_loses_no_acknowledged_span(
    own_postgres: EmbeddedPostgres, tmp_path: Path
) -> None:
    collector = CollectorProcess(
        tmp_path / "collector", database_url=own_postgres.dsn, env={"TIERSCOPE_WORKERS": "2"}
    ).start()
    try:
        load = LedgerLoad(collector.url, collector.credentials()["ingest_key"], clients=3).start()
        time.sleep(3)
        crashed_at = time.monotonic()
        own_postgres.stop("immediate")  # no clean shutdown: like a power cut
        ready_while_down = httpx.get(f"{collector.url}/readyz", timeout=5)
        time.sleep(DOWN_FOR)
        own_postgres.restart_after_crash()
        restarted_at = time.monotonic()
        time.sleep(5)
        ledger = load.stop()
        healthy = httpx.get(f"{collector.url}/healthz").status_code
    finally:
        collector.stop()

    assert ready_while_down.status_code == 503
    assert ready_while_down.headers["retry-after"]
    assert healthy == 200
    statuses = ledger.statuses()
    assert set(statuses) <= {200, 503}, f"only 200 and 503 are acceptable answers: {statuses}"

    # Requests sent well after the crash and answered before the restart: all 503.
    during = [e for e in ledger.entries if crashed_at + 2 <= e.sent and e.done < restarted_at]
    assert during, "load kept running while the store was down"
    assert all(e.status == 503 for e in during), "no 200 while the store is down"
    assert all(e.retry_after and int(e.retry_after) >= 1 for e in during)
    first_refusal = min(e.done for e in ledger.entries if e.status == 503 and e.sent >= crashed_at)
    assert first_refusal - crashed_at <= 2.0, "503 within 2 s of the store going away"
    assert max(e.done - e.sent for e in ledger.entries) < 10, "no request hangs"

    resumed = [e for e in ledger.entries if e.sent > restarted_at + 1]
    assert resumed, "load continued after the restart"
    assert all(e.status == 200 for e in resumed), "ingest resumes without restarting the collector"

    audit = ledger.audit(own_postgres.dsn)
    assert audit.acknowledged > 0
    assert audit.lost == 0
    assert audit.duplicates == 0
    assert audit.phantoms == 0
