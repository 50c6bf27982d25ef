"""The alert evaluator runs in a process of its own under ``tierscope up``:
not in the HTTP workers, restarted after ``kill -9``, gone with its parent,
one leader for two collectors of one store, and alerts still arrive."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psutil
import psycopg
import pytest

from tierscope.processing.query import MINUTE, floor
from tierscope.testing.collector import CollectorProcess

from .conftest import BTS, Estate, Fault, Sink

pytestmark = pytest.mark.timeout(300)

SETTINGS = {
    "TIERSCOPE_WORKERS": "2",
    "TIERSCOPE_PROCESSING": "false",
    "TIERSCOPE_ALERT_DELAY": "0s",
    "TIERSCOPE_ALERT_INTERVAL": "1s",
    "TIERSCOPE_ALERT_ALLOWED_NETWORKS": "127.0.0.1/32",
}


# A fault is written into the minute that ended and the one running: the
# evaluator judges the last whole minute, so whichever it is at the next cycle
# (1 s) holds the fault; the allowance is for an evaluator starting on a busy machine.
JUDGED_WITHIN = 120


def _faulty_minutes(estate: Estate, bt: tuple[str, str]) -> None:
    """The fault in ``bt``'s minute that just ended and the current one."""
    previous = floor(datetime.now(UTC), MINUTE) - MINUTE
    estate.faults.append(Fault("db", "UPDATE orders", 900, previous, bts=(bt,)))
    estate.write_minutes(previous, 2, bts=(bt,))


def _rules(sink: Sink) -> str:
    return f"""
defaults: false
rules:
  - {{name: slow-checkout, kind: threshold, service: shop, bt: POST /checkout, above: 500,
      window: 1m, min_requests: 1, for: 0s}}
  - {{name: slow-cart, kind: threshold, service: shop, bt: GET /cart, above: 500,
      window: 1m, min_requests: 1, for: 0s}}
receivers:
  - {{name: ops, webhook: {{url: "{sink.url}"}}}}
routes:
  - {{receiver: ops}}
"""


def _leaders(dsn: str) -> list[tuple[int, int]]:
    """(client port, backend pid) of each connection holding the leader lock."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT a.client_port, a.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = 'tierscope-alerting' "
            "AND a.datname = current_database()"
        ).fetchall()
    return [(int(port), int(pid)) for port, pid in rows]


def _undelivered(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        (count,) = conn.execute("SELECT count(*) FROM notifications WHERE delivered_at IS NULL").fetchone()
    return int(count)


def _tree(collector: CollectorProcess) -> list[psutil.Process]:
    if collector.process is None:
        return []
    root = psutil.Process(collector.pid)
    return [root, *root.children(recursive=True)]


def _owner(collectors: list[CollectorProcess], port: int) -> psutil.Process | None:
    """The process (of the collectors' trees) whose connection uses local ``port``."""
    for collector in collectors:
        for process in _tree(collector):
            try:
                if any(c.laddr and c.laddr.port == port for c in process.net_connections("tcp")):
                    return process
            except psutil.NoSuchProcess:
                continue
    return None


def _evaluators(collector: CollectorProcess) -> list[psutil.Process]:
    """The collector's children that talk to the store but serve no HTTP: its
    evaluator (processing is off here), not its uvicorn workers."""
    found = []
    for child in psutil.Process(collector.pid).children():
        try:
            connections = child.net_connections("tcp")
        except psutil.NoSuchProcess:
            continue
        listening = any(c.status == psutil.CONN_LISTEN for c in connections)
        if not listening and any(c.raddr for c in connections):
            found.append(child)
    return found


def _leader(dsn: str, collectors: list[CollectorProcess], timeout: float = 60) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        leaders = _leaders(dsn)
        if len(leaders) == 1:
            owner = _owner(collectors, leaders[0][0])
            if owner is not None:
                return owner
        time.sleep(0.3)
    raise AssertionError(f"no single evaluator leads: {_leaders(dsn)}")


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def store(database_factory: Callable[..., str]) -> str:
    return database_factory()


@pytest.fixture
def collectors(store: str, tmp_path: Path) -> Iterator[list[CollectorProcess]]:
    started = [CollectorProcess(tmp_path / name, database_url=store, env=SETTINGS) for name in ("a", "b")]
    try:
        for collector in started:
            collector.start()
        yield started
    finally:  # also when one failed to start: the other, or its half-started self, must not linger
        for collector in started:
            if collector.process is not None and collector.process.poll() is None:
                collector.stop()


def test_the_evaluator_is_a_supervised_process_of_its_own_that_keeps_alerting(
    store: str, collectors: list[CollectorProcess], sink: Sink
) -> None:
    first = collectors[0]
    token = first.credentials()["api_token"]
    applied = httpx.put(
        f"{first.url}/api/v1/alerting/config",
        content=_rules(sink),
        headers={"Authorization": f"Bearer {token}", "content-type": "application/yaml"},
        timeout=30,
    )
    assert applied.status_code == 200, applied.text
    with psycopg.connect(store) as conn:
        (tenant_id,) = conn.execute("SELECT id FROM tenants WHERE name = 'default'").fetchone()

    # Two collectors of one store, two evaluator processes: exactly one leads,
    # and it is the evaluator child of a collector, not an HTTP worker.
    leader = _leader(store, collectors)
    owner = next(c for c in collectors if leader.pid in {p.pid for p in _evaluators(c)})
    other = next(c for c in collectors if c is not owner)
    _wait(lambda: len(_evaluators(other)) == 1, 30, "the other collector's evaluator")

    estate = Estate(store, tenant_id)
    _faulty_minutes(estate, BTS[0])
    _wait(lambda: [e for e, _ in sink.events()] == ["firing"], JUDGED_WITHIN, "the first alert")
    # Killed between the send and its commit, the evaluator would rightly send it
    # again (at least once): kill it once the delivery is recorded.
    _wait(lambda: _undelivered(store) == 0, 30, "the delivery to be recorded")

    # kill -9 of the leading evaluator: the lock frees, an evaluator leads again
    # within seconds, and alerts still arrive, the first not paged again.
    leader.kill()
    leader.wait(10)
    assert _leader(store, collectors, timeout=60).pid != leader.pid
    _faulty_minutes(estate, BTS[1])
    _wait(lambda: len(sink.events()) >= 2, JUDGED_WITHIN, "the second alert after the kill")
    time.sleep(3)
    events = sink.events()
    assert [e for e, _ in events] == ["firing", "firing"], [(e, a["title"]) for e, a in events]
    assert "POST /checkout" in events[0][1]["title"]
    assert "GET /cart" in events[1][1]["title"]

    # The other collector dies (SIGKILL, no clean-up): its evaluator stops by itself.
    orphans = _evaluators(other)
    tree = _tree(other)
    other.kill()
    try:
        _, left = psutil.wait_procs(orphans, timeout=30)
        assert not left, [p.pid for p in left]
        # The owner restarted its killed evaluator, which now leads: the lock is
        # taken again, from the owner's tree, by a process that is not the killed one.
        successor = _leader(store, [owner], timeout=60)
        assert successor.pid != leader.pid
        assert successor.pid in {p.pid for p in _evaluators(owner)}
    finally:
        for process in tree[1:]:  # uvicorn workers of a killed collector may linger
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
