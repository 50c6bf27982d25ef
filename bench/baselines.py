"""Baseline benchmark: how fast are bands learnt and the current minute judged?

    .venv/bin/python bench/baselines.py        # or: make bench

``--bts`` business transactions (default 1,000) with ``--days`` (default 30) of
per-minute history of one metric (a p95 latency: office-hours pattern, 10 %
noise, an outage afternoon per transaction), in the business week of
Europe/Berlin with German holidays and two month-end days. Timed, each the
best of ``--rounds``:

- **full recompute**: learning every band from the whole history (slots,
  calendar, medians and MADs); target under 2 s;
- **scoring**: judging the current minute of every transaction against its
  band; target under 50 ms;
- **incremental update**: one new minute, and one new hour, appended and the
  touched slots refitted;
- **the evaluator's fit**: what the alert evaluator learns in production, every
  transaction's 12 baseline metrics from the hour rollups of six weeks; also
  under 2 s.

Machines differ, so the run also times a reference on the same data: one
``numpy.sort`` of the whole history along time, the cost of a single
order-statistics pass. The full recompute is reported as a ratio to it.

The last line printed is one JSON object with the figures; the exit code is 0
when both targets are met.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import numpy as np
from rich.console import Console
from rich.table import Table

from tierscope.alerting.transaction_baselines import BASELINE_METRICS
from tierscope.slo.baselines import Baseline, BaselineConfig
from tierscope.slo.calendar import BusinessCalendar

console = Console(stderr=True, highlight=False)
MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
FULL_TARGET_S, SCORE_TARGET_MS = 2.0, 50.0


def history(bts: int, days: int, seed: int, per_hour: int = 60) -> np.ndarray:
    """bts x steps of a latency-like metric, float32 (``per_hour`` steps an hour)."""
    steps = np.arange(days * 24 * per_hour)
    weekday, hour = (steps // (24 * per_hour)) % 7, (steps // per_hour) % 24
    office = ((weekday < 5) & (hour >= 8) & (hour < 18)).astype(np.float32)
    rng = np.random.default_rng(seed)
    levels = rng.uniform(100, 2000, bts).astype(np.float32)
    values = levels[:, None] * (1 + 0.6 * office[None, :])
    values *= 1 + 0.1 * rng.standard_normal(values.shape, dtype=np.float32)
    outage = rng.integers(0, len(steps) - 4 * per_hour, bts)
    for row, first in enumerate(outage):
        values[row, first : first + 4 * per_hour] *= 8
    return values


def best(rounds: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bts", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    with console.status("generating history"):
        values = history(args.bts, args.days, args.seed)
    start = datetime(2026, 10, 5, tzinfo=UTC) - timedelta(hours=2)  # Monday 00:00 in Berlin (summer time)
    calendar = BusinessCalendar(time_zone="Europe/Berlin", country="DE", month_end_days=2)
    config = BaselineConfig()  # 6 weeks: the 30 days are learnt from whole
    with console.status("timing"):
        reference = best(args.rounds, lambda: np.sort(values, axis=1))
        full = best(args.rounds, lambda: Baseline(values, start, MINUTE, calendar, config))
        model = Baseline(values, start, MINUTE, calendar, config)
        now = model.end
        current = values[:, -1] * 1.01
        scores = [best(1, lambda: model.score(current, now)) for _ in range(200)]
        score_s = float(np.median(scores))
        judged = model.score(current, now)
        extra = history(args.bts, 1, args.seed + 1)
        update_minute = best(1, lambda: model.update(extra[:, :1]))
        update_hour = best(1, lambda: model.update(extra[:, 1:61]))
        # What the alert evaluator really fits (alerting/signals.py): every
        # transaction's baseline metrics (p95, errors, work, each tier) from the
        # hour rollups of the configured weeks.
        hourly = history(args.bts * len(BASELINE_METRICS), config.weeks * 7, args.seed + 2, per_hour=1)
        hour_start = start - timedelta(days=config.weeks * 7 - args.days)
        production = best(args.rounds, lambda: Baseline(hourly, hour_start, HOUR, calendar, config))
    figures = {
        "bts": args.bts,
        "days": args.days,
        "minutes_per_bt": int(values.shape[1]),
        "full_recompute_s": round(full, 3),
        "reference_sort_s": round(reference, 3),
        "full_to_sort_ratio": round(full / reference, 2),
        "score_current_minute_ms": round(score_s * 1000, 3),
        "update_one_minute_s": round(update_minute, 3),
        "update_one_hour_s": round(update_hour, 3),
        "evaluator_shape": f"{args.bts} BTs x {len(BASELINE_METRICS)} metrics x {hourly.shape[1]} hours",
        "evaluator_full_fit_s": round(production, 3),
        "judged": int(args.bts - judged.excused.sum()),
        "flagged": int((judged.severity > 0).sum()),
        "full_target_met": full < FULL_TARGET_S and production < FULL_TARGET_S,
        "score_target_met": score_s * 1000 < SCORE_TARGET_MS,
    }
    table = Table("figure", "value", title="tierscope baseline benchmark")
    for name, value in figures.items():
        table.add_row(name, str(value))
    console.print(table)
    sys.stderr.flush()
    print(json.dumps(figures), flush=True)
    return 0 if figures["full_target_met"] and figures["score_target_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
