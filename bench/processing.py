"""Processing benchmark: does trace processing keep up with ingest, and how fast
do the rollups answer?

    .venv/bin/python bench/processing.py        # or: make bench

Part 1, keeping up. A real ``tierscope up`` (workers and its processor) on an
embedded PostgreSQL takes realistic OTLP batches at ``--rate`` spans/s for
``--duration`` seconds (60,000 offered by default, so that the rate reached
can be held against the target of 50,000). Every second the bench reads the
processor's committed progress and the spans acknowledged so far. Rates are
taken over the steady part, from 20 s on (before it processing has nothing
settled yet and ingest has the machine to itself): the ingest rate with
processing beside it (``ingest_spans_per_s_with_processing``, held against the
target), the processing rate against it (the ratio must stay at or above 1:
processing keeps up), and the processing lag (now minus the processed-arrival
watermark, settle delay included), at most and at the end.
``ingest_spans_per_s`` is the rate over the whole run, first seconds included.
Before and after part 1 the bench times bench/convert.py's conversion for a few
rounds (``host_convert_us_per_span_before`` and ``_after``): the same code, so
a figure above the machine's usual one says the host ran slow, not tierscope.

Part 2, answering. The store is given 30 days of hour and day rollups (and a day
of minute rollups) for ``--bts`` business transactions, then
``GET /api/v1/transactions`` over the last 30 days is timed ``--queries`` times.
The baseline, measured in the same run, is fetching the same rows with plain
SQL; the ratio says what the API adds (merging histograms, JSON).

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psutil
import psycopg
from rich.console import Console
from rich.table import Table

from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram
from tierscope.processing.query import plan
from tierscope.processing.writer import build_missing_weeks
from tierscope.store.embedded import EmbeddedPostgres
from tierscope.testing.batches import BatchTemplate
from tierscope.testing.collector import CollectorProcess

console = Console(stderr=True)

INGEST_TARGET = 50_000  # spans/s that processing must keep up with (issue 3)
STEADY_AFTER_S = 20  # the settle delay (15 s) and the first windows: then ingest and processing both run


def steady_load(
    url: str,
    key: str,
    template: BatchTemplate,
    rate: float,
    seconds: float,
    clients: int,
    acked: list[int],
) -> int:
    """Post batches at ``rate`` spans/s for ``seconds``; returns the failed requests.

    ``acked[0]`` counts the acknowledged spans as they come (a watcher reads it).
    """
    host, port = url.removeprefix("http://").split(":")
    per_client = rate / clients / template.spans_per_body  # requests per second per client
    failed = [0]
    lock = threading.Lock()
    end = time.monotonic() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Content-Type": "application/x-protobuf", "Authorization": f"Bearer {key}"}
        next_at = time.monotonic()
        # Until the deadline, not for a number of requests: a client behind its
        # schedule would otherwise go on alone after the others, and the rate
        # over the run would count that thin tail.
        while time.monotonic() < end:
            time.sleep(max(0.0, next_at - time.monotonic()))
            if time.monotonic() >= end:
                break
            next_at += 1 / per_client
            _, body = template.next_body()
            try:
                conn.request("POST", "/v1/traces", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                ok = False
            with lock:
                if ok:
                    acked[0] += template.spans_per_body
                else:
                    failed[0] += 1
        conn.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return failed[0]


def cpu_by_role(collector: CollectorProcess, postmaster: int | None) -> dict[str, float]:
    """CPU seconds used so far by the processor, the collector workers and PostgreSQL.

    The workers share the collector's listening socket; the processor is the
    spawned process that has none.
    """
    roles = {"processor": 0.0, "collector_workers": 0.0, "postgres": 0.0}
    for process in psutil.Process(collector.pid).children(recursive=True):
        try:
            listening = any(c.status == psutil.CONN_LISTEN for c in process.net_connections("tcp"))
            times = process.cpu_times()
        except psutil.Error:
            continue
        roles["collector_workers" if listening else "processor"] += times.user + times.system
    if postmaster:
        server = psutil.Process(postmaster)
        for process in [server, *server.children()]:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            roles["postgres"] += times.user + times.system
    return roles


def machine_counters() -> dict[str, float]:
    """System-wide counters that tell a slow host from a slow tierscope: idle and
    iowait CPU seconds, and the seconds some task stalled waiting for a CPU or
    for I/O (Linux pressure stall information; absent elsewhere)."""
    times = psutil.cpu_times()
    counters = {
        "idle": times.idle,
        "iowait": getattr(times, "iowait", 0.0),
        "steal": getattr(times, "steal", 0.0),
        "busy": times.user + times.system + sum(getattr(times, f, 0.0) for f in ("nice", "irq", "softirq")),
    }
    for resource in ("cpu", "io"):
        try:
            for line in Path(f"/proc/pressure/{resource}").read_text().splitlines():
                kind, *fields = line.split()
                total = dict(field.split("=") for field in fields)["total"]
                counters[f"{resource}_{kind}"] = int(total) / 1e6
        except (OSError, KeyError, ValueError):
            pass
    return counters


def machine_figures(before: dict[str, float], after: dict[str, float], seconds: float) -> dict[str, float]:
    """What the host did during the ingest phase: idle cores (the machine was not
    CPU-bound if this is well above zero) and the share of time tasks stalled."""
    figures = {
        "machine_idle_cores": round((after["idle"] - before["idle"]) / seconds, 2),
        "machine_iowait_cores": round((after["iowait"] - before["iowait"]) / seconds, 2),
        # all processes, kernel included; with idle and iowait it should sum to the cores
        "machine_busy_cores": round((after["busy"] - before["busy"]) / seconds, 2),
        # CPU the hypervisor gave to other guests, where the host reports it
        "machine_steal_cores": round((after["steal"] - before["steal"]) / seconds, 2),
    }
    for key, name in (
        ("cpu_some", "cpu_stall_pct"),
        ("io_some", "io_stall_pct"),
        ("io_full", "io_full_stall_pct"),
    ):
        if key in before and key in after:
            figures[name] = round(100 * (after[key] - before[key]) / seconds, 1)
    return figures


def host_probe() -> float:
    """The host's speed now: a worker's CPU per span converting the load's batches
    (bench/convert.py, best of a few rounds), in µs, with nothing of ours running.

    These machines change speed within minutes, by up to half, while the cores
    the roles use stay the same, so a low ingest rate may be the host, not
    tierscope. The probe before and after part 1 tells the two apart.
    """
    sys.path.insert(0, str(Path(__file__).parent))
    from convert import measure  # bench/ is not a package: its scripts import each other by path

    return measure(rounds=5, requests=16)["convert"]


def progress(dsn: str, conn: psycopg.Connection | None = None) -> tuple[int, float]:
    """(spans processed, lag in seconds) as committed by the processor.

    The watcher passes a connection it keeps: a new one each second (a backend
    started and a SCRAM exchange) would be load the bench adds to what it measures.
    """
    if conn is None:
        with psycopg.connect(dsn, autocommit=True) as own:
            return progress(dsn, own)
    row = conn.execute(
        "SELECT sum(spans), extract(epoch FROM now() - min(watermark)) FROM processing_progress"
    ).fetchone()
    return (int(row[0]), float(row[1])) if row and row[0] is not None else (0, float("nan"))


def keep_up(dsn: str, workdir: Path, args: argparse.Namespace) -> dict[str, object]:
    collector = CollectorProcess(
        workdir / "collector",
        database_url=dsn,
        env={"TIERSCOPE_WORKERS": str(args.workers), "TIERSCOPE_LOG_LEVEL": args.log_level},
    )
    with console.status("starting tierscope up"):
        collector.start()
    try:
        key = collector.credentials()["ingest_key"]
        args.api_token = collector.credentials()["api_token"]  # the query part uses it
        template = BatchTemplate.build(spans=512)
        samples: list[tuple[float, int, float, int]] = []  # (when, processed, lag, acknowledged)
        acked_so_far = [0]
        stop = threading.Event()

        def watch() -> None:
            conn: psycopg.Connection | None = None
            while not stop.wait(1.0):
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(dsn, autocommit=True)
                    spans, lag = progress(dsn, conn)
                except psycopg.Error:
                    continue
                samples.append((time.monotonic(), spans, lag, acked_so_far[0]))
            if conn is not None:
                conn.close()

        watcher = threading.Thread(target=watch)
        watcher.start()
        console.print(f"ingesting {args.rate:,.0f} spans/s for {args.duration:.0f}s, processing alongside")
        cpu_before = cpu_by_role(collector, args.postmaster)
        bench_before = sum(psutil.Process().cpu_times()[:2])
        machine_before = machine_counters()
        started = time.monotonic()
        failed = steady_load(
            collector.url, key, template, args.rate, args.duration, args.clients, acked_so_far
        )
        acked = acked_so_far[0]
        ingest_seconds = time.monotonic() - started
        machine = machine_figures(machine_before, machine_counters(), ingest_seconds)
        cpu_after = cpu_by_role(collector, args.postmaster)
        cores = {
            f"cores_{role}": round((cpu_after[role] - cpu_before[role]) / ingest_seconds, 2)
            for role in cpu_after
        }
        cores["cores_load_generator"] = round(
            (sum(psutil.Process().cpu_times()[:2]) - bench_before) / ingest_seconds, 2
        )
        # Let processing finish what was sent, to see that it catches up.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and progress(dsn)[0] < acked:
            time.sleep(1)
        stop.set()
        watcher.join()
    finally:
        collector.stop()
    if args.timeline:  # one line a second: seconds since the load began, spans processed, lag, acknowledged
        args.timeline.write_text(
            "".join(f"{t - started:.1f} {spans} {lag:.1f} {ack}\n" for t, spans, lag, ack in samples)
        )
    during = [s for s in samples if s[0] <= started + ingest_seconds]
    # The steady part: from when processing has work (the settle delay passed
    # once) to the end of ingest. Before it, ingest has the machine to itself
    # and runs at the offered rate, so the rate over the whole run says more than
    # what ingest reaches with processing beside it; the target is judged on the
    # steady part, where both run.
    steady = [s for s in during if s[0] >= started + STEADY_AFTER_S]
    seconds = steady[-1][0] - steady[0][0] if len(steady) > 1 else 0.0
    rate = (steady[-1][1] - steady[0][1]) / seconds if seconds else 0.0
    steady_ingest = (steady[-1][3] - steady[0][3]) / seconds if seconds else 0.0
    ingest_rate = acked / ingest_seconds
    final_spans, final_lag = progress(dsn)
    return {
        "ingest_spans_per_s": round(ingest_rate),
        "ingest_spans_per_s_with_processing": round(steady_ingest),
        "processing_spans_per_s": round(rate),
        "processing_to_ingest_ratio": round(rate / steady_ingest, 3) if steady_ingest else None,
        "ingest_target_met": steady_ingest >= INGEST_TARGET,
        "steady_seconds": round(seconds),
        "max_lag_s_during_ingest": round(max((s[2] for s in during), default=float("nan")), 1),
        "processed_all": final_spans >= acked,
        "lag_s_after": round(final_lag, 1),
        "failed_requests": failed,
        **cores,
        # Work done per CPU-second of the three roles, over the same seconds as
        # the cores: the same code gives the same figure on a host of steady speed,
        # so a run with the usual cores but a lower figure ran on a slower host.
        "spans_per_role_core_second": round(
            ingest_rate
            / max(1e-9, sum(cores[f"cores_{r}"] for r in ("processor", "collector_workers", "postgres")))
        ),
        **machine,
    }


def seed_rollups(dsn: str, bts: int, days: int) -> None:
    """30 days of hour, day and week rows and a day of minute rows, with realistic histograms."""
    rnd = random.Random(7)
    latencies, tier_latencies = [], []
    for _ in range(40):
        counts: histogram.Counts = {}
        tiers: histogram.Counts = {}
        median = rnd.uniform(50_000, 900_000)
        for _ in range(300):
            histogram.add(counts, rnd.lognormvariate(0, 0.6) * median)
            for index in (3, 5, 8):
                histogram.add(tiers, rnd.lognormvariate(0, 0.8) * median / 3, dimension=index)
        latencies.append(histogram.encode(counts))
        tier_latencies.append(histogram.encode(tiers))
    now = datetime.now(UTC)
    names = [(f"svc-{i % 10}", f"BT {i:03d}") for i in range(bts)]

    def rows(resolution: str, width: timedelta, count: int):
        end = now - timedelta(seconds=now.timestamp() % width.total_seconds())
        for step in range(count):
            bucket = end - step * width
            for service, bt in names:
                calls = rnd.randint(50, 5000)
                tier_sum = [0] * len(TIERS)
                tier_sum[3], tier_sum[5], tier_sum[8] = calls * 200_000, calls * 300_000, calls * 80_000
                yield (
                    1,
                    resolution,
                    bucket,
                    service,
                    bt,
                    calls,
                    calls // 100,
                    calls * 400_000,
                    3_000_000,
                    calls * 8 // 10,
                    calls // 10,
                    rnd.choice(latencies),
                    tier_sum,
                    rnd.choice(tier_latencies),
                )

    columns = (
        "tenant_id, resolution, bucket, service, bt, calls, errors, duration_sum_us, duration_max_us, "
        "apdex_satisfied, apdex_tolerating, latency, tier_sum_us, tier_latency"
    )
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        for resolution, width, count in (
            ("day", timedelta(days=1), days + 1),
            ("hour", timedelta(hours=1), 24 * days),
            ("minute", timedelta(minutes=1), 24 * 60),
        ):
            with cur.copy(f"COPY bt_rollups ({columns}) FROM STDIN") as copy:
                for row in rows(resolution, width, count):
                    copy.write_row(row)
    asyncio.run(_build_weeks(dsn))  # as the processor does for a store's past weeks
    # A store in steady state is vacuumed; don't time autovacuum catching up on the seed.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE bt_rollups")


async def _build_weeks(dsn: str) -> None:
    async with await psycopg.AsyncConnection.connect(dsn) as conn:
        await build_missing_weeks(conn)
        await conn.commit()


# What the API's query does, alone: the same rows, grouped the same way.
_TIER_SUMS = ", ".join(f"sum(tier_sum_us[{i}])" for i in range(1, len(TIERS) + 1))


def baseline_sql(segments: int) -> str:
    where = " OR ".join(["(resolution = %s AND bucket >= %s AND bucket < %s)"] * segments)
    return (
        "SELECT service, bt, sum(calls), sum(errors), sum(duration_sum_us), sum(apdex_satisfied), "
        f"sum(apdex_tolerating), {_TIER_SUMS}, string_agg(latency, ''::bytea) FROM bt_rollups "
        f"WHERE tenant_id = 1 AND ({where}) GROUP BY service, bt"
    )


def answer(dsn: str, workdir: Path, args: argparse.Namespace) -> dict[str, object]:
    with console.status(f"seeding {args.days} days of rollups for {args.bts} business transactions"):
        seed_rollups(dsn, args.bts, args.days)
    collector = CollectorProcess(
        workdir / "query",
        database_url=dsn,
        env={"TIERSCOPE_WORKERS": "1", "TIERSCOPE_PROCESSING": "false"},
    )
    collector.start()
    try:
        token = args.api_token
        url = f"{collector.url}/api/v1/transactions"
        params = {"from": f"{args.days}d"}
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(headers=headers, timeout=30) as client:
            first = client.get(url, params=params)
            assert first.status_code == 200, first.text
            listed = len(first.json()["transactions"])
            api_times, sql_times = [], []
            window_start = datetime.fromisoformat(first.json()["from"].replace("Z", "+00:00"))
            window_end = datetime.fromisoformat(first.json()["to"].replace("Z", "+00:00"))
            segments = plan(window_start, window_end, weeks=True).segments
            baseline = baseline_sql(len(segments))
            baseline_params = [value for s in segments for value in (s.resolution, s.start, s.end)]
            with psycopg.connect(dsn) as conn:
                for _ in range(args.queries):
                    started = time.perf_counter()
                    assert client.get(url, params=params).status_code == 200
                    api_times.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    conn.cursor(binary=True).execute(baseline, baseline_params).fetchall()
                    sql_times.append(time.perf_counter() - started)
    finally:
        collector.stop()
    api_p95 = statistics.quantiles(api_times, n=20)[18]
    sql_p95 = statistics.quantiles(sql_times, n=20)[18]
    return {
        "transactions_listed": listed,
        "transactions_30d_p95_ms": round(api_p95 * 1000, 1),
        "transactions_30d_p50_ms": round(statistics.median(api_times) * 1000, 1),
        "raw_sql_same_rows_p95_ms": round(sql_p95 * 1000, 1),
        "api_to_raw_sql_ratio": round(api_p95 / sql_p95, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=60_000, help="offered ingest spans/s (default 60,000)")
    parser.add_argument("--duration", type=float, default=120, help="seconds of ingest (default 120)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent senders (default 16)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--bts", type=int, default=200)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--queries", type=int, default=200, help="timed queries of part 2 (default 200)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--timeline", type=Path, help="write processing progress and lag, once a second")
    parser.add_argument("--log-level", default="warning", help="the collector's (debug shows cycle phases)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="tierscope-bench-"))
    embedded = EmbeddedPostgres(workdir / "store")
    try:
        with console.status("starting the embedded PostgreSQL"):
            dsn = embedded.start()
        args.postmaster = embedded.running_pid()
        speed_before = host_probe()
        figures = keep_up(dsn, workdir, args)
        figures["host_convert_us_per_span_before"] = round(speed_before, 2)
        figures["host_convert_us_per_span_after"] = round(host_probe(), 2)
        if args.queries > 0:  # --queries 0 times processing only
            figures.update(answer(dsn, workdir, args))
    finally:
        embedded.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    table = Table("figure", "value", title="tierscope processing benchmark")
    for name, value in figures.items():
        table.add_row(name, str(value))
    console.print(table)
    print(json.dumps(figures))
    ok = (
        figures["ingest_target_met"]
        and figures["processed_all"]
        and (figures["processing_to_ingest_ratio"] or 0) >= 0.95
        and float(figures["max_lag_s_during_ingest"]) < 30
        and float(figures.get("transactions_30d_p95_ms", 0)) < 100  # absent with --queries 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
