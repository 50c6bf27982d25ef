"""Every business transaction's baseline bands, learned from its hour rollups.

The baseline rules of :mod:`tierscope.alerting.signals` hold each transaction's
p95, error rate, time per tier and work against what is normal for it at this
hour of the week. The bands are fitted here from the hour rollups of the last
weeks (:class:`tierscope.slo.baselines.Baseline` does the statistics), once,
then brought forward an hour at a time as new hours close.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg import AsyncConnection

from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram
from tierscope.processing.query import HOUR, floor
from tierscope.slo.baselines import Baseline, BaselineConfig
from tierscope.slo.calendar import BusinessCalendar
from tierscope.store import alerting as store

Array = npt.NDArray[np.float64]
# work_ms: all the time spent per request, in every tier, including work done
# for it after the response (a job the request queued): what p95 cannot see.
BASELINE_METRICS = ("p95_ms", "error_rate", *(f"tier_ms.{tier}" for tier in TIERS), "work_ms")
WORK = 2 + len(TIERS)  # the row of work_ms among a transaction's series
CHUNK = 8  # transactions whose hourly histograms are merged at once (bounds memory)


@dataclass
class BaselineModel:
    """Every transaction's hour-of-week bands for :data:`BASELINE_METRICS`."""

    keys: list[tuple[str, str]]
    baseline: Baseline | None
    fitted_for: datetime  # the hour it was fitted at

    def expected(self, at: datetime, key_rows: list[int]) -> dict[str, Array]:
        """Baseline median (``metric``) and robust spread (``metric:spread``) of each
        metric for the given transactions at ``at``; NaN where the baseline is still
        learning or the day is excused (holiday, blackout)."""
        rows = np.asarray(key_rows, dtype=np.int64)
        if self.baseline is None or not len(rows):
            nothing = np.full(len(rows), np.nan)
            return {k: nothing for name in BASELINE_METRICS for k in (name, name + ":spread")}
        total = len(self.keys) * len(BASELINE_METRICS)
        # score() judges values; at 0 and 1 it gives the median and, from the
        # difference of the z's, the spread of every series at that hour of the week.
        at_zero = self.baseline.score(np.zeros(total, dtype=np.float32), at)
        at_one = self.baseline.score(np.ones(total, dtype=np.float32), at)
        out: dict[str, Array] = {}
        for m, name in enumerate(BASELINE_METRICS):
            series = rows * len(BASELINE_METRICS) + m
            out[name] = np.asarray(at_zero.expected[series], dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[name + ":spread"] = 1.0 / (at_one.z[series] - at_zero.z[series]).astype(np.float64)
        return out


def _keys_of(rows: list[tuple[Any, ...]]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((row[0], row[1]) for row in rows))


def _matrix(
    rows: list[tuple[Any, ...]], keys: list[tuple[str, str]], start: datetime, steps: int
) -> np.ndarray:
    """Hour rollups as the baseline's series: (transactions x metrics) x steps, NaN where idle."""
    where = {key: i for i, key in enumerate(keys)}
    n, metrics = len(keys), len(BASELINE_METRICS)
    values = np.full((n * metrics, steps), np.nan, dtype=np.float32)
    if not rows:
        return values
    bt_of_row = np.asarray([where[(r[0], r[1])] for r in rows])
    step_of_row = np.asarray([int((r[2] - start) / HOUR) for r in rows])
    calls = np.asarray([r[3] for r in rows], dtype=np.float64)
    errors = np.asarray([r[4] for r in rows], dtype=np.float64)
    tier_us = np.asarray([r[6] for r in rows], dtype=np.float64).reshape(len(rows), len(TIERS))
    busy = calls > 0
    values[bt_of_row[busy] * metrics + 1, step_of_row[busy]] = errors[busy] / calls[busy]
    for t in range(len(TIERS)):
        values[bt_of_row[busy] * metrics + 2 + t, step_of_row[busy]] = tier_us[busy, t] / calls[busy] / 1000
    work = tier_us[busy].sum(axis=1) / calls[busy] / 1000
    values[bt_of_row[busy] * metrics + WORK, step_of_row[busy]] = work
    # p95 per transaction and hour, a few transactions at a time (dense histograms are wide).
    for first in range(0, n, CHUNK):
        chosen = np.flatnonzero((bt_of_row >= first) & (bt_of_row < first + CHUNK) & busy)
        if not len(chosen):
            continue
        groups = (bt_of_row[chosen] - first) * steps + step_of_row[chosen]
        merged = histogram.Merged(groups.tolist(), (rows[i][5] for i in chosen))
        p95 = merged.quantile_of_each(0.95)
        values[bt_of_row[chosen] * metrics, step_of_row[chosen]] = p95[groups] / 1000
    return values


async def fit_baselines(
    conn: AsyncConnection, tenant_id: int, now: datetime, calendar: BusinessCalendar, config: BaselineConfig
) -> BaselineModel:
    """Fit bands for every transaction from the hour rollups of the last ``config.weeks``.

    The arithmetic runs in a worker thread: the event loop of the collector
    worker that hosts the evaluator keeps serving requests meanwhile."""
    end = floor(now, HOUR)
    steps = config.weeks * 7 * 24
    start = end - steps * HOUR
    rows = await store.bt_window(conn, tenant_id, "hour", start, end)
    keys = _keys_of(rows)
    if not keys:
        return BaselineModel([], None, end)

    def build() -> Baseline:
        return Baseline(_matrix(rows, keys, start, steps), start, HOUR, calendar, config)

    return BaselineModel(keys, await asyncio.to_thread(build), end)


async def refresh_baselines(
    conn: AsyncConnection,
    tenant_id: int,
    model: BaselineModel | None,
    now: datetime,
    calendar: BusinessCalendar,
    config: BaselineConfig,
) -> BaselineModel:
    """The model brought up to the last whole hour: the new hours appended (the
    slots they touch refitted), or a full fit when transactions appeared, the
    model is missing or more than a day behind."""
    end = floor(now, HOUR)
    if model is not None and model.fitted_for == end:
        return model
    behind = None if model is None else end - model.fitted_for
    if model is None or model.baseline is None or behind is None or not HOUR <= behind <= timedelta(days=1):
        return await fit_baselines(conn, tenant_id, now, calendar, config)
    rows = await store.bt_window(conn, tenant_id, "hour", model.fitted_for, end)
    if any(key not in set(model.keys) for key in _keys_of(rows)):
        return await fit_baselines(conn, tenant_id, now, calendar, config)
    steps = int(behind / HOUR)
    baseline, start = model.baseline, model.fitted_for
    await asyncio.to_thread(lambda: baseline.update(_matrix(rows, model.keys, start, steps)))
    return BaselineModel(model.keys, baseline, end)
