"""Alerting benchmark: what does one evaluation cycle cost for 1,000 transactions?

    .venv/bin/python bench/alerting.py            # --bts 1000 --days 7 --cycles 10

A store of its own (embedded PostgreSQL in a temporary directory) gets
``--bts`` business transactions with ``--days`` of hour rollups (what baselines
learn from) and the last 70 minutes of minute rollups with five components
each; a slow SQL statement is injected into three transactions ten minutes
before the end. Timed:

- **cycle**: one evaluation of every rule of the tenant (default baseline
  rules on latency and errors for every transaction), localisation of the
  incident, its impact and its state written: the median of ``--cycles``, the
  baselines already fitted (they are refitted once an hour);
- **baseline fit**: fitting every transaction's bands from the hour rollups,
  done once when an evaluator starts leading (and when new transactions
  appear); **hour update**: bringing them up to date with a new hour, done
  once an hour;
- **reference**: reading the judged window's minute rollups alone (one query,
  the least any cycle must do), in the same run; the cycle is reported as a
  ratio to it, since machines differ.

- **faults** (``bench/alerting_demo.py``; ``--no-demo`` skips it): on a real
  ``tierscope demo``, per fault of its catalog, the seconds from the fault's
  start to the firing notification a webhook receiver on 127.0.0.1 got, its
  severity, and whether its tier and component were right (scored against the
  demo's fault table); plus any notification of fault-free traffic. About 13
  minutes.

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from rich.console import Console
from rich.table import Table

from tierscope.alerting.evaluator import Evaluator
from tierscope.alerting.transaction_baselines import fit_baselines, refresh_baselines
from tierscope.collector.tiers import TIERS
from tierscope.config import load_settings
from tierscope.processing import histogram
from tierscope.slo.baselines import BaselineConfig
from tierscope.slo.calendar import BusinessCalendar
from tierscope.store import Database, migrations, partitions, tenants
from tierscope.store import alerting as store
from tierscope.store.embedded import EmbeddedPostgres

console = Console(stderr=True, highlight=False)
NOW = datetime(2026, 11, 23, 11, 0, tzinfo=UTC)
PARTS = {
    ("web", "GET /"): 10.0,
    ("app", "views"): 40.0,
    ("db", "SELECT stock"): 30.0,
    ("db", "UPDATE orders"): 20.0,
    ("external", "payments.example"): 20.0,
}
CALLS = 30


def latency(ms: float, calls: int) -> bytes:
    counts: histogram.Counts = {}
    histogram.add(counts, ms * 1000, weight=calls)
    return histogram.encode(counts)


def seed(dsn: str, tenant_id: int, bts: int, days: int) -> None:
    names = [("shop", f"GET /page/{i}") for i in range(bts)]
    faulty = set(names[:3])
    bt_columns = (
        "tenant_id, resolution, bucket, service, bt, calls, errors, duration_sum_us, duration_max_us, "
        "apdex_satisfied, apdex_tolerating, latency, tier_sum_us, tier_latency"
    )
    component_columns = (
        "tenant_id, resolution, bucket, service, bt, tier, component, calls, errors, self_us, duration_us"
    )
    empty = histogram.encode({})
    normal = sum(PARTS.values())
    blobs = {
        (ms, calls): latency(ms, calls) for ms in (normal, normal + 900) for calls in (CALLS, CALLS * 60)
    }

    def tiers(parts: dict[tuple[str, str], float], calls: int) -> list[int]:
        sums = [0] * len(TIERS)
        for (tier, _), ms in parts.items():
            sums[TIERS.index(tier)] += round(ms * 1000 * calls)
        return sums

    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(f"COPY bt_rollups ({bt_columns}) FROM STDIN") as copy:
            for hour in range(days * 24):
                bucket = NOW - timedelta(hours=2) - timedelta(hours=hour)
                for service, bt in names:
                    calls = CALLS * 60
                    copy.write_row(
                        (
                            tenant_id,
                            "hour",
                            bucket,
                            service,
                            bt,
                            calls,
                            0,
                            0,
                            0,
                            calls,
                            0,
                            blobs[(normal, calls)],
                            tiers(PARTS, calls),
                            empty,
                        )
                    )
            for step in range(70):
                bucket = NOW - timedelta(minutes=70 - step)
                slow = bucket >= NOW - timedelta(minutes=10)
                for key in names:
                    parts = dict(PARTS)
                    if slow and key in faulty:
                        parts[("db", "UPDATE orders")] += 900
                    ms = sum(parts.values())
                    copy.write_row(
                        (
                            tenant_id,
                            "minute",
                            bucket,
                            key[0],
                            key[1],
                            CALLS,
                            0,
                            0,
                            0,
                            CALLS,
                            0,
                            blobs[(ms, CALLS)],
                            tiers(parts, CALLS),
                            empty,
                        )
                    )
        with cur.copy(f"COPY component_rollups ({component_columns}) FROM STDIN") as copy:
            for step in range(70):
                bucket = NOW - timedelta(minutes=70 - step)
                slow = bucket >= NOW - timedelta(minutes=10)
                for key in names:
                    for (tier, component), ms in PARTS.items():
                        extra = 900 if slow and key in faulty and component == "UPDATE orders" else 0
                        us = round((ms + extra) * 1000 * CALLS)
                        copy.write_row(
                            (tenant_id, "minute", bucket, key[0], key[1], tier, component, CALLS, 0, us, us)
                        )


async def measure(dsn: str, args: argparse.Namespace) -> dict[str, object]:
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await migrations.migrate(conn)
        await tenants.create_tenant(conn, "bench")
        await partitions.ensure_days(conn, {NOW.date()}, "trace_summaries")
        cur = await conn.execute("SELECT id FROM tenants WHERE name = 'bench'")
        row = await cur.fetchone()
        assert row is not None
        tenant_id = int(row[0])
    with console.status(f"writing {args.bts} transactions x {args.days} days of rollups"):
        await asyncio.to_thread(seed, dsn, tenant_id, args.bts, args.days)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            await conn.execute("ANALYZE")
    settings = load_settings(alert_delay="0s", baseline_weeks=max(1, min(8, (args.days + 6) // 7)))
    config = BaselineConfig(weeks=settings.baseline_weeks, widths=settings.baseline_bands)
    async with Database(dsn, statement_timeout=timedelta(seconds=60)) as database:
        with console.status("timing"):
            async with database.connection() as conn:
                started = time.perf_counter()
                older = await fit_baselines(
                    conn, tenant_id, NOW - timedelta(hours=1), BusinessCalendar(), config
                )
                fit_s = time.perf_counter() - started
                started = time.perf_counter()
                await refresh_baselines(conn, tenant_id, older, NOW, BusinessCalendar(), config)
                update_s = time.perf_counter() - started
            evaluator = Evaluator(database, settings)
            await evaluator.cycle(NOW)  # fits the baselines it caches
            cycles, reads = [], []
            for _ in range(args.cycles):
                started = time.perf_counter()
                report = await evaluator.cycle(NOW)
                cycles.append(time.perf_counter() - started)
                async with database.connection() as conn:
                    started = time.perf_counter()
                    await store.bt_window(conn, tenant_id, "minute", NOW - timedelta(minutes=5), NOW)
                    reads.append(time.perf_counter() - started)
            async with database.connection() as conn:
                alerts = await store.open_alerts(conn, tenant_id)
    cycle, read = statistics.median(cycles), statistics.median(reads)
    found = [(a["tier"], a["component"], len(a["bts"])) for a in alerts]
    return {
        "bts": args.bts,
        "days": args.days,
        "cycle_ms": round(cycle * 1000, 1),
        "reference_read_ms": round(read * 1000, 1),
        "cycle_to_read_ratio": round(cycle / read, 1) if read else None,
        "baseline_fit_s": round(fit_s, 2),
        "baseline_hour_update_s": round(update_s, 3),
        "signals": report.signals,
        "incidents": found,
        "injected_fault_found": found == [("db", "UPDATE orders", 3)],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bts", type=int, default=1000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    parser.add_argument("--no-demo", action="store_true", help="skip the per-fault run on the demo estate")
    parser.add_argument(
        "--pace",
        choices=["flat", "make-run"],
        default="flat",
        help="the demo's load and alert settings: flat busy load (as the tests), or make run's own",
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="tierscope-bench-"))
    embedded = EmbeddedPostgres(workdir / "store")
    try:
        with console.status("starting the embedded PostgreSQL"):
            dsn = embedded.start()
        figures = asyncio.run(measure(dsn, args))
    finally:
        embedded.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if not args.no_demo:
        sys.path.insert(0, str(Path(__file__).parent))
        from alerting_demo import run as run_demo

        figures.update(run_demo(lambda text: console.print(text), args.pace))
    table = Table("figure", "value", title="tierscope alerting benchmark")
    for name, value in figures.items():
        table.add_row(name, str(value))
    console.print(table)
    sys.stderr.flush()
    print(json.dumps(figures), flush=True)
    return 0 if figures["injected_fault_found"] else 1


if __name__ == "__main__":
    sys.exit(main())
