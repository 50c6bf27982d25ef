"""Judging a transaction's response time against its recent minutes, on the
functions the evaluator calls (``alerting/signals.py``) with minute rows as the
store gives them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from tierscope.alerting.rules import Rule
from tierscope.alerting.signals import judge_transactions, recent_reference, summarise
from tierscope.alerting.transaction_baselines import BaselineModel
from tierscope.collector.tiers import TIERS
from tierscope.processing import histogram

KEY = ("erp-api", "ERP / Import customers")
START = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
RULE = Rule(
    name="baseline-latency", kind="baseline", metric="p95_ms", window=timedelta(minutes=2), min_requests=10
)
BANDS = (2.0, 3.0, 4.0)  # info, warning, critical


def minute_row(at: datetime, latencies_ms: list[float]) -> tuple:
    counts: histogram.Counts = {}
    for ms in latencies_ms:
        histogram.add(counts, ms * 1000)
    tier_us = [0] * len(TIERS)
    tier_us[TIERS.index("db")] = round(sum(latencies_ms) * 1000)
    return (*KEY, at, len(latencies_ms), 0, histogram.encode(counts), tier_us)


def judged(window_ms: list[float]) -> list[str]:
    """Severities raised for a judged window of two minutes holding ``window_ms``,
    after twenty reference minutes of six requests of 90 to 110 ms each."""
    reference_rows = [
        minute_row(START + timedelta(minutes=m), [90, 95, 100, 100, 105, 110]) for m in range(20)
    ]
    judged_from = START + timedelta(minutes=20)
    half = len(window_ms) // 2
    window_rows = [
        minute_row(judged_from, window_ms[:half]),
        minute_row(judged_from + timedelta(minutes=1), window_ms[half:]),
    ]
    recent = summarise(window_rows, judged_from, judged_from + RULE.window)
    reference = recent_reference(reference_rows, {KEY: judged_from}, {"p95_ms": RULE.excess_floor()})
    model = BaselineModel([], None, judged_from)
    signals = judge_transactions([RULE], {RULE.window: recent}, model, BANDS, reference)
    return [signal.severity for signal in signals]


def test_one_slow_request_among_a_dozen_is_no_incident() -> None:
    # Twelve requests: the p95 falls between the two slowest, so one import that
    # met a checkpoint would by itself make the p95 460 ms, four bands out.
    assert judged([100.0] * 11 + [900.0]) == []


def test_two_slow_requests_among_a_dozen_page() -> None:
    assert judged([100.0] * 10 + [900.0, 900.0]) == ["critical"]


def test_a_window_of_one_request_has_no_p95_to_judge() -> None:
    one = summarise([minute_row(START, [900.0])], START, START + timedelta(minutes=1))
    assert one.p95_ms[0] == pytest.approx(900, rel=0.02)
    assert np.isnan(one.p95_held_ms[0])  # min_requests 1 does not let one request page


def test_the_held_p95_is_the_p95_once_there_are_enough_requests() -> None:
    rows = [minute_row(START, [float(ms) for ms in range(1, 101)])]
    recent = summarise(rows, START, START + timedelta(minutes=1))
    assert recent.p95_held_ms[0] == pytest.approx(recent.p95_ms[0])
    assert recent.p95_ms[0] == pytest.approx(95.05, rel=0.02)
    few = summarise([minute_row(START, [100.0] * 11 + [900.0])], START, START + timedelta(minutes=1))
    assert few.p95_ms[0] == pytest.approx(460, rel=0.02)  # one request's doing
    assert few.p95_held_ms[0] == pytest.approx(100, rel=0.02)  # what two requests reached
