"""T-05 and T-06: the collector dies, or is asked to stop, under load.

T-05: ``kill -9`` of the whole collector (supervisor and workers) at random
moments while clients send and resend like SDKs: every acknowledged span is
stored and the resends leave no duplicate rows. T-06: SIGTERM under load: new
connections are refused, requests in flight commit and get their 200, the
process exits well within 30 s, nothing acknowledged is lost.
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Callable
from pathlib import Path

from tests.reliability.conftest import QUIET, Figures, rss_bytes, seconds
from tierscope.testing.collector import CollectorProcess
from tierscope.testing.ledger import LedgerLoad

KILLS = int(seconds(3, 5))
TWO_WORKERS = {**QUIET, "TIERSCOPE_WORKERS": "2"}


def test_kill_9_at_random_moments_loses_and_duplicates_nothing(
    database_factory: Callable[..., str], tmp_path: Path, figures: Callable[[str], Figures]
) -> None:
    dsn = database_factory()
    collector = CollectorProcess(tmp_path / "collector", database_url=dsn, env=TWO_WORKERS).start()
    rnd = random.Random()
    restarts: list[float] = []
    try:
        load = LedgerLoad(
            collector.url, collector.credentials()["ingest_key"], spans_per_body=512, clients=3, resend=True
        ).start()
        for _ in range(KILLS):
            time.sleep(rnd.uniform(1.0, seconds(3.0, 60.0)))
            collector.crash()
            killed = time.monotonic()
            time.sleep(rnd.uniform(0.0, 1.0))
            collector.start()
            restarts.append(time.monotonic() - killed)
        time.sleep(3)
        ledger = load.stop()
        rss = rss_bytes(collector)
    finally:
        collector.stop()

    statuses = ledger.statuses()
    assert set(statuses) <= {200, 503, 0}, f"no answer other than 200, 503 or none: {statuses}"
    assert statuses.get(0, 0) > 0, "some requests were cut off by the kills"
    attempts: dict[int, int] = {}
    for entry in ledger.entries:
        attempts[entry.number] = attempts.get(entry.number, 0) + 1
    resent = sum(1 for count in attempts.values() if count > 1)
    assert resent > 0, "clients resent what the kills cut off"
    audit = ledger.audit(dsn)
    assert audit.acknowledged > 0
    assert audit.lost == 0
    assert audit.duplicates == 0
    assert audit.phantoms == 0
    figures("T-05").record(
        fault=f"kill -9 of the collector's process group {KILLS} times at random moments, "
        "clients resend unanswered bodies",
        held="0 acknowledged lost, 0 duplicate rows after resends, 0 phantoms",
        sent=audit.sent,
        acknowledged=audit.acknowledged,
        stored=audit.stored,
        lost=audit.lost,
        duplicates=audit.duplicates,
        resent_requests=resent,
        rss_mib=round(rss / 2**20),
        recovery_s=round(max(restarts), 1),  # kill to ready again (the restart itself)
    )


def test_sigterm_under_load_finishes_in_flight_requests_and_exits(
    database_factory: Callable[..., str], tmp_path: Path, figures: Callable[[str], Figures]
) -> None:
    dsn = database_factory()
    collector = CollectorProcess(tmp_path / "collector", database_url=dsn, env=TWO_WORKERS).start()
    try:
        load = LedgerLoad(
            collector.url, collector.credentials()["ingest_key"], spans_per_body=512, clients=4
        ).start()
        time.sleep(seconds(3, 30))
        assert collector.process is not None
        process = collector.process
        asked = time.monotonic()
        process.send_signal(signal.SIGTERM)
        code = process.wait(60)
        took = time.monotonic() - asked
        time.sleep(1)
        ledger = load.stop()
    finally:
        collector.stop()

    assert code == 0
    assert took < 30, "exit within 30 s"
    statuses = ledger.statuses()
    assert set(statuses) <= {200, 0}, f"in flight: 200; after: refused; nothing else: {statuses}"
    after = [e for e in ledger.entries if e.sent > asked + took + 0.1]
    assert after, "clients kept trying after the exit"
    assert all(e.status == 0 for e in after), "new connections are refused once it stopped"
    in_flight = [e for e in ledger.entries if e.sent < asked < e.done]
    audit = ledger.audit(dsn)
    assert audit.lost == 0
    assert audit.duplicates == 0
    assert audit.phantoms == 0
    figures("T-06").record(
        fault="SIGTERM under load (4 clients, 512-span batches)",
        held="exit code 0, in-flight requests answered, new ones refused, 0 acknowledged lost",
        sent=audit.sent,
        acknowledged=audit.acknowledged,
        stored=audit.stored,
        lost=audit.lost,
        duplicates=audit.duplicates,
        exit_s=round(took, 1),
        in_flight_at_sigterm=f"{sum(e.status == 200 for e in in_flight)}/{len(in_flight)} answered 200",
    )
