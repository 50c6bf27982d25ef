"""A load generator that keeps a ledger: every span it sends is accounted for.

Each request carries batches from :class:`~tierscope.testing.batches.BatchTemplate`
whose spans all share a 4-byte id prefix unique to that request, so the ledger
records one line per request (prefix, status, times) and the store can be
checked with one query: every acknowledged prefix must be stored exactly
``spans_per_body`` times (nothing lost, nothing duplicated), and nothing else
may be stored (no phantoms).
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field

import psycopg

from tierscope.testing.batches import BatchTemplate


@dataclass(frozen=True)
class Entry:
    number: int  # the request's id prefix
    sent: float  # monotonic
    done: float
    status: int  # 0: no response (connection refused, reset, timeout)
    retry_after: str | None


@dataclass
class Ledger:
    spans_per_body: int
    entries: list[Entry] = field(default_factory=list)

    def acknowledged(self) -> list[int]:
        return [entry.number for entry in self.entries if entry.status == 200]

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for entry in self.entries:
            counts[entry.status] = counts.get(entry.status, 0) + 1
        return counts

    def audit(self, dsn: str) -> Audit:
        """Compare the ledger with what the store holds."""
        acked = self.acknowledged()
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                """SELECT get_byte(trace_id, 0)::bigint << 24 | get_byte(trace_id, 1) << 16
                          | get_byte(trace_id, 2) << 8 | get_byte(trace_id, 3) AS number,
                          count(*) AS spans, count(DISTINCT (trace_id, span_id)) AS distinct_spans
                   FROM spans GROUP BY 1"""
            ).fetchall()
        stored = {int(number): (int(spans), int(distinct)) for number, spans, distinct in rows}
        sent = {entry.number for entry in self.entries}
        lost = sum(self.spans_per_body - stored.get(number, (0, 0))[1] for number in acked)
        duplicates = sum(spans - distinct for spans, distinct in stored.values())
        phantoms = sum(spans for number, (spans, _) in stored.items() if number not in sent)
        return Audit(
            acknowledged=len(acked) * self.spans_per_body,
            stored=sum(distinct for _, distinct in stored.values()),
            lost=lost,
            duplicates=duplicates,
            phantoms=phantoms,
        )


@dataclass(frozen=True)
class Audit:
    acknowledged: int
    stored: int
    lost: int
    duplicates: int
    phantoms: int


class LedgerLoad:
    """Post unique batches from ``clients`` threads until :meth:`stop`."""

    def __init__(
        self,
        url: str,
        key: str,
        *,
        spans_per_body: int = 64,
        clients: int = 2,
        pause: float = 0.0,
        timeout: float = 10.0,
    ) -> None:
        self.url = url
        self.key = key
        self.template = BatchTemplate.build(spans=spans_per_body, variants=4)
        self.ledger = Ledger(spans_per_body)
        self._clients = clients
        self._pause = pause
        self._timeout = timeout
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> LedgerLoad:
        for _ in range(self._clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> Ledger:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        return self.ledger

    def _run(self) -> None:
        host, port = self.url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=self._timeout)
        headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {self.key}"}
        while not self._stop.is_set():
            number, body = self.template.next_body()
            sent = time.monotonic()
            status, retry_after = 0, None
            try:
                conn.request("POST", "/v1/traces", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status, retry_after = response.status, response.getheader("Retry-After")
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=self._timeout)
            with self._lock:
                self.ledger.entries.append(Entry(number, sent, time.monotonic(), status, retry_after))
            if status != 200:
                time.sleep(0.1)  # a real client backs off
            elif self._pause:
                time.sleep(self._pause)
        conn.close()
