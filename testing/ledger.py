"""A load generator that keeps a ledger: every span it sends is accounted for.

Each request carries batches from :class:`~tierscope.testing.batches.BatchTemplate`
whose spans all share a 4-byte id prefix unique to that request, so the ledger
records one line per request (prefix, status, times) and the store can be
checked with one query: every acknowledged prefix must be stored exactly
``spans_per_body`` times (nothing lost, nothing duplicated), and nothing else
may be stored (no phantoms).

RELIABILITY.md's ledger method, with its names: **acknowledged** = spans in
200 responses minus those the response reported rejected; **lost** =
acknowledged but not stored; **phantom** = stored but never sent;
**duplicates** = rows minus distinct spans. With ``resend=True`` a client sends
a refused or unanswered body again (the same ids) until it gets a 200, as an
OpenTelemetry SDK retries: the store must still hold each span once.
:meth:`Ledger.save` writes the ledger to SQLite for a look afterwards.

Closed loop or open loop: by default each client waits for its answer and
backs off after a refusal, as a real exporter does, so a refusing collector
also *receives* less than the rate asked for. With ``open_loop=True``
requests leave at fixed times on one schedule shared by all clients, whatever
the answers (no back-off, no resend): the offered load stays at the rate,
which is what an overload test must show; :meth:`Ledger.offered_rate` says
what was really offered (a schedule the clients cannot keep up with shows as
a lower rate).
"""

from __future__ import annotations

import contextlib
import http.client
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psycopg
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tierscope.testing.batches import BatchTemplate


@dataclass(frozen=True)
class Entry:
    number: int  # the request's id prefix
    sent: float  # monotonic
    done: float
    status: int  # 0: no response (connection refused, reset, timeout)
    retry_after: str | None
    rejected: int = 0  # partial_success.rejected_spans of a 200


@dataclass
class Ledger:
    spans_per_body: int
    entries: list[Entry] = field(default_factory=list)

    def acknowledged(self) -> list[int]:
        """Request numbers answered 200 (once each, however often they were sent)."""
        return sorted({entry.number for entry in self.entries if entry.status == 200})

    def sent_spans(self) -> int:
        return len({entry.number for entry in self.entries}) * self.spans_per_body

    def offered_rate(self) -> float:
        """Spans per second sent (every attempt counted), from the first
        request's departure to the last one's."""
        if len(self.entries) < 2:
            return 0.0
        times = [entry.sent for entry in self.entries]
        # n departures span n - 1 intervals.
        return (len(times) - 1) * self.spans_per_body / (max(times) - min(times))

    def save(self, path: Path) -> None:
        """The ledger as an SQLite table ``requests``, one row per attempt."""
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS requests (number INTEGER, sent REAL, done REAL, "
                "status INTEGER, retry_after TEXT, rejected INTEGER)"
            )
            db.executemany(
                "INSERT INTO requests VALUES (:number, :sent, :done, :status, :retry_after, :rejected)",
                [asdict(entry) for entry in self.entries],
            )

    def statuses(self) -> dict[int, int]:
        counts: dict[int, int] = {}
        for entry in self.entries:
            counts[entry.status] = counts.get(entry.status, 0) + 1
        return counts

    def audit(self, dsn: str) -> Audit:
        """Compare the ledger with what the store holds."""
        acked = self.acknowledged()
        rejected = {entry.number: entry.rejected for entry in self.entries if entry.status == 200}
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                # The 4-byte prefix as a big-endian number. Each shift is in
                # parentheses: PostgreSQL gives << and | the same precedence
                # (left to right), which garbles every number >= 65,536.
                """SELECT (get_byte(trace_id, 0)::bigint << 24) + (get_byte(trace_id, 1)::bigint << 16)
                          + (get_byte(trace_id, 2)::bigint << 8) + get_byte(trace_id, 3) AS number,
                          count(*) AS spans, count(DISTINCT (trace_id, span_id)) AS distinct_spans
                   FROM spans GROUP BY 1"""
            ).fetchall()
        stored = {int(number): (int(spans), int(distinct)) for number, spans, distinct in rows}
        sent = {entry.number for entry in self.entries}
        lost = sum(
            max(0, self.spans_per_body - rejected[number] - stored.get(number, (0, 0))[1]) for number in acked
        )
        duplicates = sum(spans - distinct for spans, distinct in stored.values())
        phantoms = sum(spans for number, (spans, _) in stored.items() if number not in sent)
        return Audit(
            sent=len(sent) * self.spans_per_body,
            acknowledged=len(acked) * self.spans_per_body - sum(rejected.values()),
            stored=sum(distinct for number, (_, distinct) in stored.items() if number in sent),
            lost=lost,
            duplicates=duplicates,
            phantoms=phantoms,
        )


@dataclass(frozen=True)
class Audit:
    sent: int
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
        rate: float | None = None,
        resend: bool = False,
        template: BatchTemplate | None = None,
        open_loop: bool = False,
    ) -> None:
        """``rate``: spans per second across all clients (None: as fast as
        answered, less ``pause`` after each request). ``resend``: send a body
        again until a 200, like an SDK; otherwise move on to a fresh one.
        ``open_loop`` (needs ``rate``): requests leave on a fixed schedule
        whatever the answers; ``clients`` bounds how many can be outstanding
        at once, so give enough for rate × answer time."""
        if open_loop and (not rate or resend):
            raise ValueError("an open-loop load needs a rate, and sends every body once")
        self.url = url
        self.key = key
        self.template = template or BatchTemplate.build(spans=spans_per_body, variants=4)
        self.ledger = Ledger(self.template.spans_per_body)
        self._clients = clients
        self._pause = pause
        self._timeout = timeout
        self._interval = clients * self.template.spans_per_body / rate if rate else 0.0
        self._resend = resend
        self._open_loop = open_loop
        self._tick = self.template.spans_per_body / rate if rate else 0.0
        self._tickets = 0
        self._epoch = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    def start(self) -> LedgerLoad:
        self._epoch = time.monotonic()
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
        due = time.monotonic()
        pending: tuple[int, bytes] | None = None
        while not self._stop.is_set():
            if self._open_loop:
                # The next departure on the shared schedule; a client that is
                # late (all were busy) sends at once, and the lag shows in
                # the offered rate.
                with self._lock:
                    ticket = self._tickets
                    self._tickets += 1
                wait = self._epoch + ticket * self._tick - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
            elif self._interval:
                due += self._interval
                wait = due - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
            number, body = pending or self.template.next_body()
            sent = time.monotonic()
            status, retry_after, rejected = 0, None, 0
            try:
                conn.request("POST", "/v1/traces", body=body, headers=headers)
                response = conn.getresponse()
                content = response.read()
                status, retry_after = response.status, response.getheader("Retry-After")
                if status == 200 and content:
                    parsed = ExportTraceServiceResponse.FromString(content)
                    rejected = parsed.partial_success.rejected_spans
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=self._timeout)
            with self._lock:
                self.ledger.entries.append(
                    Entry(number, sent, time.monotonic(), status, retry_after, rejected)
                )
            pending = (number, body) if self._resend and status != 200 else None
            if self._open_loop:
                continue
            if status != 200:
                # A real client backs off: Retry-After when given (capped, so a
                # short test keeps moving), else a short pause.
                backoff = min(float(retry_after), 2.0) if retry_after and retry_after.isdigit() else 0.1
                self._stop.wait(backoff)
                due = time.monotonic()
            elif self._pause:
                time.sleep(self._pause)
        conn.close()
