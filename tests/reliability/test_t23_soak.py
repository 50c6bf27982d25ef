"""T-23: the soak, "vulture" style — hours of load with a fault every 15 minutes.

Runs only under ``make soak`` (``TIERSCOPE_SOAK=1``): two hours by default
(``TIERSCOPE_SOAK_SECONDS``), a fault every 15 minutes
(``TIERSCOPE_SOAK_FAULT_EVERY``), in turn: the store crashed and restarted
(T-02), black-holed (T-03) and slowed by 200 ms (T-04) for 30 s each, and the
collector killed with SIGKILL (T-05). Load runs at half the rate measured at
the start (0.5R), with clients that resend like SDKs, while a reader fetches
acknowledged traces back by id through the API. What must hold: nothing
acknowledged lost, no acknowledged trace ever missing when read (notFoundByID
= 0), resident memory, file descriptors and store sessions flat, and p99
bounded.

**Disk.** Every acknowledged span stays in the store (nothing is deleted
within the run), and a span takes about 740 bytes there with its indexes:
two hours at 0.5R of a fast machine is over 200 GB. The soak measures the
bytes per span during its probe and lowers the rate, when it must, to what
fills at most ``TIERSCOPE_SOAK_DISK_SHARE`` (default half) of the free disk by
the end; the table says which rate it ran at, and why.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import random
import shutil
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.reliability.conftest import SOAK, Figures, rss_bytes, store_sessions
from tierscope.store.embedded import EmbeddedPostgres
from tierscope.testing import otlp
from tierscope.testing.batches import BatchTemplate
from tierscope.testing.collector import CollectorProcess
from tierscope.testing.faultproxy import FaultProxy
from tierscope.testing.ledger import LedgerLoad

DURATION = float(os.environ.get("TIERSCOPE_SOAK_SECONDS", 2 * 3600))
FAULT_EVERY = float(os.environ.get("TIERSCOPE_SOAK_FAULT_EVERY", 15 * 60))
FAULT_FOR = min(30.0, FAULT_EVERY / 3)
DISK_SHARE = float(os.environ.get("TIERSCOPE_SOAK_DISK_SHARE", 0.5))


def database_bytes(dsn: str) -> int:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    assert row is not None
    return int(row[0])


def open_fds(collector: CollectorProcess) -> int:
    parent = psutil.Process(collector.pid)
    total = 0
    for each in [parent, *parent.children(recursive=True)]:
        try:
            total += each.num_fds()
        except psutil.NoSuchProcess:
            continue
    return total


class Reader(threading.Thread):
    """Fetches an acknowledged trace back every second or so."""

    def __init__(self, collector: CollectorProcess, load: LedgerLoad, template: BatchTemplate) -> None:
        super().__init__(daemon=True)
        self.collector, self.load, self.template = collector, load, template
        self.found = self.not_found = self.unavailable = 0
        self.stop = threading.Event()

    def run(self) -> None:
        rnd = random.Random()
        token = self.collector.credentials()["api_token"]
        while not self.stop.wait(1.0):
            settled = time.monotonic() - 2
            acked = [e.number for e in list(self.load.ledger.entries) if e.status == 200 and e.done < settled]
            if not acked:
                continue
            trace_id = self.template.trace_ids(rnd.choice(acked))[0]
            try:
                status = otlp.get_trace(self.collector.url, token, trace_id).status_code
            except Exception:  # the collector is being killed and restarted
                status = 0
            if status == 200:
                self.found += 1
            elif status == 404:
                self.not_found += 1
            else:
                self.unavailable += 1


@pytest.mark.skipif(not SOAK, reason="T-23 runs for hours: make soak (TIERSCOPE_SOAK=1)")
def test_soak_with_recurring_faults(
    own_postgres: EmbeddedPostgres, tmp_path: Path, figures: Callable[[str], Figures]
) -> None:
    port = int(own_postgres.dsn.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = FaultProxy(("127.0.0.1", port)).start()
    proxied = own_postgres.dsn.replace(f":{port}/", f":{proxy.port}/")
    env = {"TIERSCOPE_WORKERS": "2", "TIERSCOPE_ALERTING": "false", "TIERSCOPE_RETRY_AFTER": "1s"}
    collector = CollectorProcess(tmp_path / "collector", database_url=proxied, env=env).start()
    template = BatchTemplate.build(spans=512, variants=4)
    key = collector.credentials()["ingest_key"]
    samples: list[tuple[int, int, int]] = []
    faults: list[str] = []
    try:
        empty = database_bytes(own_postgres.dsn)
        probe = LedgerLoad(collector.url, key, clients=3, template=template).start()
        time.sleep(20)
        measured = probe.stop()
        probed = sum(512 for e in measured.entries if e.status == 200)
        rate = probed / 20
        time.sleep(3)  # the probe's traces processed: summaries and rollups take room too
        per_span = (database_bytes(own_postgres.dsn) - empty) / max(probed, 1)
        free = shutil.disk_usage(own_postgres.data_dir).free
        disk_rate = DISK_SHARE * free / (per_span * DURATION)
        soak_rate = min(rate / 2, disk_rate)
        load = LedgerLoad(
            collector.url, key, clients=4, rate=soak_rate, resend=True, template=template
        ).start()
        reader = Reader(collector, load, template)
        reader.start()
        started = time.monotonic()
        kinds = itertools.cycle(["T-02", "T-03", "T-04", "T-05"])
        next_fault = started + FAULT_EVERY
        while time.monotonic() - started < DURATION:
            time.sleep(5)
            with contextlib.suppress(Exception):  # between a kill and the restart, or the store down
                samples.append((rss_bytes(collector), open_fds(collector), store_sessions(own_postgres.dsn)))
            if time.monotonic() < next_fault:
                continue
            kind = next(kinds)
            faults.append(kind)
            if kind == "T-02":
                own_postgres.stop("immediate")
                time.sleep(FAULT_FOR)
                own_postgres.restart_after_crash()
            elif kind == "T-03":
                proxy.set_mode("blackhole")
                time.sleep(FAULT_FOR)
                proxy.set_mode("pass")
            elif kind == "T-04":
                proxy.set_mode("latency", delay=0.1)
                time.sleep(FAULT_FOR)
                proxy.set_mode("pass")
            else:
                collector.crash()
                collector.start()
            next_fault += FAULT_EVERY
        time.sleep(10)
        ledger = load.stop()
        reader.stop.set()
        reader.join(15)
    finally:
        collector.stop()
        proxy.stop()

    ledger.entries.extend(measured.entries)  # one template: the probe's requests are accounted too
    audit = ledger.audit(own_postgres.dsn)
    assert audit.lost == 0
    assert audit.duplicates == 0
    assert audit.phantoms == 0
    assert reader.found > 0
    assert reader.not_found == 0, "notFoundByID: an acknowledged trace could not be read back"
    quarter = max(1, len(samples) // 4)
    first, last = samples[:quarter], samples[-quarter:]
    for index, what, slack in ((0, "RSS", 64 * 2**20), (1, "file descriptors", 20), (2, "store sessions", 4)):
        early = statistics.median(sample[index] for sample in first)
        late = statistics.median(sample[index] for sample in last)
        assert late <= early * 1.25 + slack, f"{what} grew from {early} to {late}"
    answered = sorted(e.done - e.sent for e in ledger.entries if e.status == 200)
    p99 = answered[int(len(answered) * 0.99)]
    assert p99 < 10
    if soak_rate < rate / 2:
        why = (
            f" (0.5R = {rate / 2:,.0f} spans/s would need {rate / 2 * DURATION * per_span / 1e9:,.0f} GB "
            f"at {per_span:,.0f} B/span; {free / 1e9:,.0f} GB free, {DISK_SHARE:.0%} of it used)"
        )
    else:
        why = ""
    figures("T-23").record(
        fault=f"{DURATION / 60:.0f} min at {soak_rate / rate:.2f}R ({soak_rate:,.0f} spans/s, R = "
        f"{rate:,.0f}){why}, a fault every {FAULT_EVERY / 60:.1f} min: {', '.join(faults)}",
        held="0 lost, notFoundByID 0, RSS / FDs / sessions flat, p99 bounded",
        sent=audit.sent,
        acknowledged=audit.acknowledged,
        stored=audit.stored,
        lost=audit.lost,
        duplicates=audit.duplicates,
        rss_mib=f"{statistics.median(s[0] for s in first) / 2**20:.0f} → "
        f"{statistics.median(s[0] for s in last) / 2**20:.0f}",
        reads=f"{reader.found} found, {reader.not_found} not found, {reader.unavailable} unavailable",
        p99_s=round(p99, 2),
        bytes_per_span=round(per_span),
    )
