"""T-04: a slow PostgreSQL (+200 ms on every round trip).

The fault proxy delays every chunk by 100 ms each way while more clients send
than the store can now take: a request holds one of the pool's connections
(2 workers × 6) for three round trips, about 0.6 s, so 36 clients keep about
two dozen requests waiting for one, past the pool's 1 s acquire timeout.
Refusals (503 with Retry-After) rise instead of requests queueing without
bound; memory stays bounded; nothing acknowledged is lost; once the store is
fast again, everything is accepted again.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from tests.reliability.conftest import QUIET, Figures, ProxiedStore, rss_bytes, seconds
from tierscope.testing.batches import BatchTemplate
from tierscope.testing.collector import CollectorProcess
from tierscope.testing.ledger import Ledger, LedgerLoad

SLOW_FOR = seconds(8, 60)
SLOW_CLIENTS = 36  # three per connection of the pool


def test_a_slow_store_raises_refusals_not_memory_and_loses_nothing(
    proxied_store: ProxiedStore, tmp_path: Path, figures: Callable[[str], Figures]
) -> None:
    budget = 32 * 2**20
    env = {**QUIET, "TIERSCOPE_MAX_INFLIGHT_BYTES": str(budget), "TIERSCOPE_MAX_BODY_SIZE": "8MiB"}
    collector = CollectorProcess(tmp_path / "collector", database_url=proxied_store.proxied_dsn, env=env)
    collector.start()
    template = BatchTemplate.build(spans=512, variants=4)
    key = collector.credentials()["ingest_key"]
    try:
        normal = LedgerLoad(collector.url, key, clients=12, template=template).start()
        time.sleep(seconds(4, 20))
        before = normal.stop()
        idle_rss = rss_bytes(collector)
        proxied_store.proxy.set_mode("latency", delay=0.1)
        slow = LedgerLoad(collector.url, key, clients=SLOW_CLIENTS, template=template).start()
        peak = 0
        started = time.monotonic()
        while time.monotonic() - started < SLOW_FOR:
            peak = max(peak, rss_bytes(collector))
            time.sleep(0.3)
        during = slow.stop()
        proxied_store.proxy.set_mode("pass")
        healed_at = time.monotonic()
        after = LedgerLoad(collector.url, key, clients=3, template=template).start()
        time.sleep(seconds(3, 20))
        recovered = after.stop()
    finally:
        collector.stop()

    def refused_share(ledger: Ledger) -> float:
        return sum(e.status == 503 for e in ledger.entries) / max(1, len(ledger.entries))

    assert set(during.statuses()) <= {200, 503}, during.statuses()
    assert refused_share(during) > refused_share(before), "refusals rise when the store slows"
    assert all(e.retry_after for e in during.entries if e.status == 503)
    assert max(e.done - e.sent for e in during.entries) < 10, "no request waits past the client deadline"
    bound = idle_rss + 3 * budget
    assert peak < bound, f"RSS {peak >> 20} MiB over the bound {bound >> 20} MiB"
    first_ok = min(e.done for e in recovered.entries if e.status == 200)
    assert all(e.status == 200 for e in recovered.entries if e.sent > first_ok + 1), "fast again"

    audits = [ledger.audit(proxied_store.direct_dsn) for ledger in (before, during, recovered)]
    assert all(audit.lost == 0 and audit.duplicates == 0 for audit in audits)
    slow_audit = audits[1]
    assert slow_audit.acknowledged > 0, "a slow store still takes data"
    figures("T-04").record(
        fault=f"fault proxy adds 100 ms each way (+200 ms per round trip) for {SLOW_FOR:.0f} s, "
        f"{SLOW_CLIENTS} clients",
        held="503 share rises, RSS under idle + 3 × in-flight budget, answers < 10 s, 0 acknowledged lost",
        sent=slow_audit.sent,
        acknowledged=slow_audit.acknowledged,
        stored=slow_audit.stored,
        lost=slow_audit.lost,
        duplicates=slow_audit.duplicates,
        rss_mib=round(peak / 2**20),
        rss_bound_mib=round(bound / 2**20),
        refused_share=f"{refused_share(before):.0%} before, {refused_share(during):.0%} while slow",
        median_answer_s=round(statistics.median(e.done - e.sent for e in during.entries), 2),
        recovery_s=round(first_ok - healed_at, 1),
    )
