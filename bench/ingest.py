"""Ingest benchmark: acknowledged spans per second, against the store's own ceiling.

    .venv/bin/python bench/ingest.py            # or: make bench

What it does, all on this machine and on 127.0.0.1:

1. starts an embedded PostgreSQL (or uses ``--database-url``) and a real
   ``tierscope up`` against it;
2. posts realistic OTLP/protobuf batches (512 spans, ~10 attributes, server,
   database and HTTP-client spans; every span unique) from concurrent clients
   for ``--duration`` seconds after a warm-up, counting spans acknowledged
   with 200;
3. checks that every acknowledged span is stored, exactly once;
4. measures, in the same run, the raw COPY rate of the same rows (encoded by
   the collector's own code) into the same table by the same number of
   writers: the store's ceiling on this machine;
5. prints a table and, as its last line, one JSON object with the figures.

The figure that matters is the ratio: machines are noisy, and a ratio taken in
one run is comparable across runs where a bare rate is not.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

from tierscope.collector.convert import Limits, convert
from tierscope.collector.otlp import PROTOBUF, decode_traces
from tierscope.collector.span_bytes import span_bytes
from tierscope.store.embedded import EmbeddedPostgres
from tierscope.store.spans import COLUMNS
from tierscope.testing.batches import MARKER, BatchTemplate
from tierscope.testing.collector import CollectorProcess

console = Console(stderr=True)


@dataclass
class LoadResult:
    acked_total: int = 0
    acked_in_window: int = 0
    requests: int = 0
    failures: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)

    def merge(self, other: LoadResult) -> None:
        self.acked_total += other.acked_total
        self.acked_in_window += other.acked_in_window
        self.requests += other.requests
        for status, count in other.failures.items():
            self.failures[status] = self.failures.get(status, 0) + count
        self.latencies.extend(other.latencies)


def post_load(
    url: str, key: str, template: BatchTemplate, clients: int, window_start: float, window_end: float
) -> LoadResult:
    """Post batches from ``clients`` threads until ``window_end`` (monotonic)."""
    host, port = url.removeprefix("http://").split(":")
    result = LoadResult()
    lock = threading.Lock()

    def client() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"}
        while True:
            now = time.monotonic()
            if now >= window_end:
                break
            _, body = template.next_body()
            sent = time.monotonic()
            try:
                conn.request("POST", "/v1/traces", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                status = 0
            done = time.monotonic()
            with lock:
                result.requests += 1
                if status == 200:
                    result.acked_total += template.spans_per_body
                    if window_start <= done <= window_end:
                        result.acked_in_window += template.spans_per_body
                        result.latencies.append(done - sent)
                else:
                    result.failures[status] = result.failures.get(status, 0) + 1
                    time.sleep(0.2)
        conn.close()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return result


# Ids of the raw-COPY rows: a 4-byte prefix range of their own, shared by all rounds.
_COPY_NUMBERS = itertools.count(1 << 31)
_COPY_LOCK = threading.Lock()


def raw_copy_rate(dsn: str, tenant_id: int, template: BatchTemplate, writers: int, seconds: float) -> float:
    """Rows per second COPYing pre-encoded rows of the same batches, one
    transaction per batch, ``writers`` connections at once."""
    limits = Limits()
    encoded = []
    for body in template.bodies:
        request = decode_traces(body, PROTOBUF)
        conversion = convert(request, tenant_id, limits, time.time_ns(), span_bytes(body))
        encoded.append((conversion.rows.copy_data(), conversion.rows.count))
    copy_sql = f"COPY spans ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
    connections = [psycopg.connect(dsn, autocommit=True) for _ in range(writers)]
    rows_done = [0]
    errors: list[BaseException] = []
    deadline = time.monotonic() + seconds

    def writer(conn: psycopg.Connection) -> None:
        try:
            while time.monotonic() < deadline:
                with _COPY_LOCK:
                    number = next(_COPY_NUMBERS)
                data, count = encoded[number % len(encoded)]
                data = data.replace(MARKER, number.to_bytes(4, "big"))
                with conn.transaction(), conn.cursor().copy(copy_sql) as copy:
                    copy.write(data)
                with _COPY_LOCK:
                    rows_done[0] += count
        except BaseException as exc:  # reported below: a failed baseline is no baseline
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=writer, args=(conn,)) for conn in connections]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    for conn in connections:
        conn.close()
    if errors:
        raise RuntimeError(f"the raw COPY baseline failed: {errors[0]!r}") from errors[0]
    return rows_done[0] / elapsed


def stored_spans(dsn: str, tenant: str) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            """SELECT count(*), count(DISTINCT (trace_id, span_id)) FROM spans s
               JOIN tenants t ON t.id = s.tenant_id WHERE t.name = %s""",
            (tenant,),
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])


def baseline_tenant(dsn: str) -> int:
    """A tenant of its own for the raw COPY rows, so the audit counts ingest only."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO tenants (name) VALUES ('copy-baseline') "
            "ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id"
        ).fetchone()
        assert row is not None
        return int(row[0])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--duration", type=float, default=20.0, help="measured seconds of each kind (default 20)"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--keep", action="store_true", help="keep the store and logs (printed path)")
    parser.add_argument("--rounds", type=int, default=4, help="ingest/COPY alternations (default 4)")
    parser.add_argument(
        "--clients", type=int, default=8, help="concurrent clients and COPY writers (default 8)"
    )
    parser.add_argument("--batch", type=int, default=512, help="spans per request")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="collector worker processes (default: one per CPU)",
    )
    parser.add_argument("--database-url", default=None, help="use this store instead of an embedded one")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tierscope-bench-"))
    if args.keep:
        console.print(f"working directory (kept): {workdir}")
    embedded = None
    dsn = args.database_url
    if dsn is None:
        embedded = EmbeddedPostgres(workdir / "store")
        with console.status("starting the embedded PostgreSQL"):
            dsn = embedded.start()
    phase = args.duration / args.rounds
    load = LoadResult()
    copied_rows = 0.0
    collector_cpu = 0.0
    try:
        collector = CollectorProcess(
            workdir / "collector",
            database_url=dsn,
            env={
                "TIERSCOPE_WORKERS": str(args.workers),
                "TIERSCOPE_DB_POOL_SIZE": str(max(2, args.clients)),
                # Ingest alone: bench/processing.py measures processing alongside.
                "TIERSCOPE_PROCESSING": "false",
            },
        )
        with console.status("starting tierscope up"):
            collector.start()
        key = collector.credentials()["ingest_key"]
        template = BatchTemplate.build(spans=args.batch)
        tenant = baseline_tenant(dsn)
        console.print(
            f"{args.rounds} rounds of {phase:.1f}s ingest ({args.batch}-span batches, {args.clients} "
            f"clients, {args.workers} workers) then {phase:.1f}s raw COPY ({args.clients} writers)"
        )
        # Ingest and the raw COPY alternate, so that the machine's drift over the
        # run weighs on both sides of the ratio alike.
        for round_number in range(args.rounds):
            warmup = args.warmup if round_number == 0 else 0.5
            start = time.monotonic()
            window = (start + warmup, start + warmup + phase)
            cpu_at: dict[str, float] = {}

            def sample_cpu(window: tuple[float, float] = window, cpu_at: dict[str, float] = cpu_at) -> None:
                time.sleep(max(0.0, window[0] - time.monotonic()))
                cpu_at["start"] = collector.cpu_seconds()
                time.sleep(max(0.0, window[1] - time.monotonic()))
                cpu_at["end"] = collector.cpu_seconds()

            sampler = threading.Thread(target=sample_cpu)
            sampler.start()
            part = post_load(collector.url, key, template, args.clients, *window)
            sampler.join()
            collector_cpu += cpu_at["end"] - cpu_at["start"]
            load.merge(part)
            with console.status(f"round {round_number + 1}: raw COPY of the same rows"):
                copied_rows += raw_copy_rate(dsn, tenant, template, args.clients, phase) * phase
        exit_code = collector.stop()
        stored, distinct = stored_spans(dsn, "default")
    finally:
        if embedded is not None:
            embedded.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    ceiling = copied_rows / args.duration
    rate = load.acked_in_window / args.duration
    figures = {
        "acknowledged_spans_per_s": round(rate),
        "spans_per_collector_cpu_s": round(load.acked_in_window / collector_cpu) if collector_cpu else None,
        "raw_copy_spans_per_s": round(ceiling),
        "ratio": round(rate / ceiling, 3),
        "acknowledged_total": load.acked_total,
        "stored_total": stored,
        "lost": load.acked_total - distinct if load.acked_total > distinct else 0,
        "duplicates": stored - distinct,
        "failed_requests": load.failures,
        "request_p50_ms": round(percentile(load.latencies, 0.5) * 1000, 1),
        "request_p99_ms": round(percentile(load.latencies, 0.99) * 1000, 1),
        "clients": args.clients,
        "workers": args.workers,
        "batch": args.batch,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "collector_exit_code": exit_code,
    }
    table = Table("figure", "value", title="tierscope ingest benchmark")
    for name, value in figures.items():
        table.add_row(name, str(value))
    console.print(table)
    print(json.dumps(figures))
    ok = figures["lost"] == 0 and figures["duplicates"] == 0 and stored >= load.acked_total
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
