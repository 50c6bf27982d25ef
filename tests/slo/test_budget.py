"""Error budgets and burn rates, as tables of exact numbers (the SRE workbook's figures)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tierscope.slo import budget
from tierscope.slo.budget import Events

DAY, HOUR, MINUTE = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
EXACT = 1e-12

BUDGETS = {
    "99.9 % of a million requests allows 1,000 bad ones": (1_000_000, 0.999, 1_000),
    "95 % of 20,000 Post invoice requests allows 1,000 slow ones": (20_000, 0.95, 1_000),
    "99.99 % of 3 million requests allows 300 bad ones": (3_000_000, 0.9999, 300),
}


@pytest.mark.parametrize(("total", "target", "allowed"), BUDGETS.values(), ids=BUDGETS.keys())
def test_budgets(total: int, target: float, allowed: int) -> None:
    assert budget.allowed_bad(total, target) == pytest.approx(allowed, rel=EXACT)


REMAINING = {
    "99.9 % over 30 days with 250 of 1,000 allowed errors spent leaves 75 %": (1_000_000, 250, 0.999, 0.75),
    "an untouched budget is whole": (1_000_000, 0, 0.999, 1.0),
    "exactly the allowed errors leave nothing": (1_000_000, 1_000, 0.999, 0.0),
    "twice the allowed errors is overspent by a whole budget": (1_000_000, 2_000, 0.999, -1.0),
    "a 95 % latency objective with 400 of 20,000 slow leaves 60 %": (20_000, 400, 0.95, 0.6),
}


@pytest.mark.parametrize(("total", "bad", "target", "left"), REMAINING.values(), ids=REMAINING.keys())
def test_budget_remaining(total: int, bad: int, target: float, left: float) -> None:
    assert budget.budget_remaining(Events(total, bad), target) == pytest.approx(left, rel=EXACT, abs=EXACT)


BURNS = {
    "1.44 % errors against 99.9 % burn at 14.4x": (100_000, 1_440, 0.999, 14.4),
    "0.6 % errors against 99.9 % burn at 6x": (100_000, 600, 0.999, 6.0),
    "0.1 % errors against 99.9 % burn at exactly 1x": (100_000, 100, 0.999, 1.0),
    "no errors do not burn": (100_000, 0, 0.999, 0.0),
    "10 % slow against 95 % burn at 2x": (1_000, 100, 0.95, 2.0),
}


@pytest.mark.parametrize(("total", "bad", "target", "rate"), BURNS.values(), ids=BURNS.keys())
def test_burn_rates(total: int, bad: int, target: float, rate: float) -> None:
    assert budget.burn_rate(Events(total, bad), target) == pytest.approx(rate, rel=EXACT, abs=EXACT)


SPEEDS = {
    "a 1 h window burning at 14.4x spends 2 % of a 30-day budget": (14.4, HOUR, 30 * DAY, 0.02),
    "a 6 h window burning at 6x spends 5 % of a 30-day budget": (6.0, 6 * HOUR, 30 * DAY, 0.05),
    "a 3 d window burning at 1x spends 10 % of a 30-day budget": (1.0, 3 * DAY, 30 * DAY, 0.10),
    "a 5 m window burning at 14.4x spends 1/6 % of a 30-day budget": (
        14.4,
        timedelta(minutes=5),
        30 * DAY,
        1 / 600,
    ),
    "a 1 h window burning at 13.44x spends 2 % of a 28-day budget": (13.44, HOUR, 28 * DAY, 0.02),
}


@pytest.mark.parametrize(("rate", "window", "slo_window", "share"), SPEEDS.values(), ids=SPEEDS.keys())
def test_budget_spent_by_a_window(
    rate: float, window: timedelta, slo_window: timedelta, share: float
) -> None:
    assert budget.budget_spent_at(rate, window, slo_window) == pytest.approx(share, rel=EXACT)
    assert budget.burn_rate_spending(share, window, slo_window) == pytest.approx(rate, rel=EXACT)


def test_99_9_percent_over_30_days_allows_43_minutes_12_seconds_of_full_outage() -> None:
    assert budget.allowed_downtime(0.999, 30 * DAY) == timedelta(minutes=43, seconds=12)


def test_no_traffic_has_no_sli_budget_or_burn() -> None:
    assert Events(0, 0).sli is None
    assert budget.budget_remaining(Events(0, 0), 0.999) is None
    assert budget.burn_rate(Events(0, 0), 0.999) is None


WINDOWS = {
    "a rolling 28-day window starts 28 days ago": (
        ("rolling", "28d", "UTC"),
        datetime(2026, 3, 31, 12, tzinfo=UTC),
        datetime(2026, 3, 3, 12, tzinfo=UTC),
        timedelta(days=28),
    ),
    "a calendar month in Berlin starts at local midnight of the 1st (23:00 UTC in winter)": (
        ("month", "1M", "Europe/Berlin"),
        datetime(2026, 2, 10, 12, tzinfo=UTC),
        datetime(2026, 1, 31, 23, tzinfo=UTC),
        timedelta(days=28),
    ),
    "March in Berlin is an hour short: the clocks go forward": (
        ("month", "1M", "Europe/Berlin"),
        datetime(2026, 3, 31, 12, tzinfo=UTC),
        datetime(2026, 2, 28, 23, tzinfo=UTC),
        timedelta(days=31) - HOUR,
    ),
    "a calendar week in New York starts on Monday at local midnight": (
        ("week", "1w", "America/New_York"),
        datetime(2026, 11, 26, 3, tzinfo=UTC),  # Wednesday evening in New York
        datetime(2026, 11, 23, 5, tzinfo=UTC),
        timedelta(days=7),
    ),
}


@pytest.mark.parametrize(("window", "now", "start", "length"), WINDOWS.values(), ids=WINDOWS.keys())
def test_windows(window: tuple[str, str, str], now: datetime, start: datetime, length: timedelta) -> None:
    assert budget.window_start(*window, now) == start
    assert budget.window_length(*window, now) == length


def test_history_days_follow_local_midnights() -> None:
    start = datetime(2026, 1, 31, 23, tzinfo=UTC)
    days = budget.local_days(start, datetime(2026, 2, 2, 6, tzinfo=UTC), "Europe/Berlin")
    assert days == [
        (start, datetime(2026, 2, 1, 23, tzinfo=UTC)),
        (datetime(2026, 2, 1, 23, tzinfo=UTC), datetime(2026, 2, 2, 6, tzinfo=UTC)),
    ]
