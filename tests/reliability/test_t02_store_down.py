"""The store goes away under load and comes back (RELIABILITY.md T-02, short).

While PostgreSQL is down the collector answers 503 with Retry-After within
2 seconds and never acknowledges a span it could not store; when PostgreSQL is
back, ingest resumes without restarting the collector, and the ledger shows
every acknowledged span stored exactly once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.reliability.conftest import Figures, rss_bytes, seconds
from tierscope.store.embedded import EmbeddedPostgres
from tierscope.testing.collector import CollectorProcess
from tierscope.testing.ledger import LedgerLoad

DOWN_FOR = seconds(8, 30)


def test_store_crash_under_load_loses_no_acknowledged_span(
    own_postgres: EmbeddedPostgres, tmp_path: Path, figures: Callable[[str], Figures]
) -> None:
    collector = CollectorProcess(
        tmp_path / "collector", database_url=own_postgres.dsn, env={"TIERSCOPE_WORKERS": "2"}
    ).start()
    try:
        load = LedgerLoad(collector.url, collector.credentials()["ingest_key"], clients=3).start()
        time.sleep(3)
        stopping_at = time.monotonic()
        own_postgres.stop("immediate")  # no clean shutdown: like a power cut
        # Gone for sure from here: pg_ctl returns once the postmaster has exited
        # (on a loaded machine pg_ctl alone can take a second to start and return).
        crashed_at = time.monotonic()
        ready_while_down = httpx.get(f"{collector.url}/readyz", timeout=5)
        time.sleep(DOWN_FOR)
        own_postgres.restart_after_crash()
        restarted_at = time.monotonic()
        time.sleep(5)
        ledger = load.stop()
        healthy = httpx.get(f"{collector.url}/healthz").status_code
        rss = rss_bytes(collector)
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
    # Every refusal comes within 2 s of the store being gone (or of the request,
    # when it was sent later): the clients back off after a 503, so "the first
    # 503 after the crash" would measure their back-off, not the collector.
    refusals = [
        e for e in ledger.entries if e.status == 503 and e.sent >= stopping_at and e.done < restarted_at
    ]
    assert refusals, "requests were refused while the store was down"
    slowest_refusal = max(e.done - max(e.sent, crashed_at) for e in refusals)
    assert slowest_refusal <= 2.0, "503 within 2 s of the store going away"
    first_refusal = min(e.done for e in refusals)
    assert max(e.done - e.sent for e in ledger.entries) < 10, "no request hangs"

    resumed = [e for e in ledger.entries if e.sent > restarted_at + 1]
    assert resumed, "load continued after the restart"
    assert all(e.status == 200 for e in resumed), "ingest resumes without restarting the collector"

    audit = ledger.audit(own_postgres.dsn)
    assert audit.acknowledged > 0
    assert audit.lost == 0
    assert audit.duplicates == 0
    assert audit.phantoms == 0
    recovered = min(e.done for e in ledger.entries if e.status == 200 and e.sent > restarted_at)
    figures("T-02").record(
        fault=f"pg_ctl stop -m immediate under load, restarted {DOWN_FOR:.0f} s later",
        held="503 + Retry-After within 2 s while down, no 500, resumes without a restart, "
        "0 acknowledged lost",
        sent=audit.sent,
        acknowledged=audit.acknowledged,
        stored=audit.stored,
        lost=audit.lost,
        duplicates=audit.duplicates,
        rss_mib=round(rss / 2**20),
        recovery_s=round(recovered - restarted_at, 1),
        first_503_s=round(max(first_refusal - crashed_at, 0.0), 2),
        slowest_503_s=round(slowest_refusal, 2),
    )
