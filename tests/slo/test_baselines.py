"""Baselines recover a known hour-of-week pattern through noise and outages, and
know holidays, month-end and blackout days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from tierscope.slo.baselines import HOUR_OF_DAY, HOUR_OF_WEEK, LEARNING, Baseline, BaselineConfig, fit, score
from tierscope.slo.calendar import BLACKOUT, HOLIDAY, MONTH_END, ORDINARY, BusinessCalendar, timeline

MINUTE, HOUR = timedelta(minutes=1), timedelta(hours=1)
MONDAY = datetime(2026, 9, 7, tzinfo=UTC)  # a Monday with no month-end or holiday nearby
UTC_CALENDAR = BusinessCalendar(month_end_days=0)


def pattern(series: int) -> np.ndarray:
    """A known level per series and hour of the week: busy office hours on weekdays,
    a lunch dip, quiet nights and weekends; each series its own scale."""
    hours = np.arange(168)
    weekday, hour = hours // 24, hours % 24
    office = ((weekday < 5) & (hour >= 8) & (hour < 18)).astype(float)
    lunch = ((weekday < 5) & (hour == 12)).astype(float)
    shape = 100 + 400 * office - 150 * lunch + 30 * np.sin(hours / 7)
    scales = 1 + np.arange(series) / series
    return scales[:, None] * shape[None, :]


def synthetic(series: int, weeks: int, step: timedelta, seed: int, noise: float = 0.05) -> np.ndarray:
    """Values following :func:`pattern` with multiplicative Gaussian noise."""
    per_hour = int(HOUR / step)
    steps = weeks * 168 * per_hour
    truth = np.repeat(np.tile(pattern(series), weeks), per_hour, axis=1)
    rng = np.random.default_rng(seed)
    return (truth * (1 + noise * rng.standard_normal((series, steps)))).astype(np.float32)


def test_a_known_hour_of_week_pattern_is_recovered_through_noise_and_outages() -> None:
    series, weeks = 40, 4
    values = synthetic(series, weeks, MINUTE, seed=1)
    # Outages: a whole Tuesday at ten times the level in week 2, and four hours of
    # Thursday morning at zero (a dead service) in week 3, in every series.
    tuesday = slice((7 + 1) * 1440, (7 + 2) * 1440)
    thursday = slice((14 + 3) * 1440 + 8 * 60, (14 + 3) * 1440 + 12 * 60)
    values[:, tuesday] *= 10
    values[:, thursday] = 0
    line = timeline(MONDAY, values.shape[1], MINUTE, UTC_CALENDAR)
    bands = fit(values, line, BaselineConfig(weeks=weeks, relative_floor=0.01))
    truth = pattern(series)
    hit = np.zeros(168, dtype=bool)
    hit[24:48] = hit[3 * 24 + 8 : 3 * 24 + 12] = True  # the slots with an outage in one week of four
    assert (bands.basis == HOUR_OF_WEEK).all()
    # 240 values per slot at 5 % noise: the median is within 2 % of the true level...
    error = np.abs(bands.median / truth - 1)
    assert error[:, ~hit].max() < 0.02
    # ...and where a quarter of the values are an outage, within 5 % (it moves to the
    # 67th percentile of the rest), where the mean is off by more than 100 %.
    assert error[:, hit].max() < 0.05
    by_slot = values.reshape(series, weeks, 168, 60).transpose(0, 2, 1, 3).reshape(series, 168, -1)
    assert (np.abs(by_slot.mean(axis=2) / truth - 1)[:, hit] > 1).any()
    # The spread is the noise (MAD scaled to a standard deviation: its own sampling
    # error at 240 values is about 7.5 %, so within 30 % over 6,720 slots), and an
    # outage widens it less than 2x, where it makes the standard deviation 8x as wide.
    ratio = bands.spread / (0.05 * truth)
    assert np.abs(ratio[:, ~hit] - 1).max() < 0.3
    assert ratio[:, hit].max() < 2
    assert (by_slot.std(axis=2) / (0.05 * truth))[:, hit].min() > 8


def test_scores_count_the_band_widths_exceeded_in_the_bad_direction() -> None:
    values = synthetic(3, 4, HOUR, seed=2, noise=0.0)
    line = timeline(MONDAY, values.shape[1], HOUR, UTC_CALENDAR)
    bands = fit(values, line, BaselineConfig(weeks=4, widths=(2, 3, 4)))
    at = MONDAY + timedelta(weeks=4, hours=10)  # Monday 10:00: slot 10
    expected = pattern(3)[:, 10]
    spread = bands.spread[:, 10]  # the 5 % floor of a noiseless series
    now = np.asarray(
        [expected[0] + 2.5 * spread[0], expected[1] + 4.5 * spread[1], expected[2] - 9 * spread[2]]
    )
    up = score(bands, now, timeline(at, 1, HOUR, UTC_CALENDAR))
    assert up.severity.tolist() == [1, 3, 0]  # faster than usual is no incident for latency
    assert up.z == pytest.approx([2.5, 4.5, -9], abs=1e-3)
    both = score(bands, now, timeline(at, 1, HOUR, UTC_CALENDAR), both_ways=True)
    assert both.severity.tolist() == [1, 3, 3]  # a throughput drop is
    assert not both.excused.any()


def thanksgiving_history(calendar: BusinessCalendar, weeks: int) -> tuple[Baseline, datetime]:
    """Weeks of hourly throughput ending the Monday after Thanksgiving 2026 (Thursday
    26 November), on which traffic was a tenth of normal."""
    start = datetime(2026, 11, 30, tzinfo=UTC) - timedelta(weeks=weeks)
    values = synthetic(5, weeks, HOUR, seed=3, noise=0.02)
    offset = int((datetime(2026, 11, 26, tzinfo=UTC) - start) / HOUR)
    values[:, offset : offset + 24] *= 0.1
    return Baseline(values, start, HOUR, calendar, BaselineConfig(weeks=weeks)), start


def test_a_holiday_is_not_learnt_as_a_normal_week() -> None:
    with_holidays = BusinessCalendar(country="US", month_end_days=0)
    learnt, _ = thanksgiving_history(with_holidays, weeks=2)
    naive, _ = thanksgiving_history(UTC_CALENDAR, weeks=2)
    thursday_10 = 3 * 24 + 10
    truth = pattern(5)[:, thursday_10]
    # Two weeks of history, one Thursday a holiday: with the calendar, Thursday 10:00
    # has one ordinary week and falls back to the hour-of-day band at the normal
    # level; without it, the holiday drags the median halfway down.
    assert (learnt.bands.basis[:, thursday_10] == HOUR_OF_DAY).all()
    assert (naive.bands.basis[:, thursday_10] == HOUR_OF_WEEK).all()
    assert np.abs(naive.bands.median[:, thursday_10] / truth - 0.55).max() < 0.02
    assert np.abs(learnt.bands.median[:, thursday_10] / truth - 1).max() < 0.3  # weekday 10:00 levels


def test_a_holiday_is_not_alerted_as_an_anomaly() -> None:
    learnt, _ = thanksgiving_history(BusinessCalendar(country="US", month_end_days=0), weeks=4)
    naive, _ = thanksgiving_history(UTC_CALENDAR, weeks=4)
    quiet = 0.1 * pattern(5)[:, 3 * 24 + 10]
    next_thanksgiving = datetime(2027, 11, 25, 10, tzinfo=UTC)
    judged = learnt.score(quiet, next_thanksgiving, both_ways=True)
    assert judged.excused.all()
    assert judged.severity.tolist() == [0] * 5
    assert (naive.score(quiet, next_thanksgiving, both_ways=True).severity == 3).all()
    ordinary_thursday = datetime(2027, 11, 18, 10, tzinfo=UTC)
    assert (learnt.score(quiet, ordinary_thursday, both_ways=True).severity == 3).all()


def test_month_end_is_learnt_as_its_own_profile_and_not_as_an_ordinary_day() -> None:
    weeks = 8
    start = datetime(2026, 9, 7, tzinfo=UTC)  # covers the ends of September and October
    calendar = BusinessCalendar(month_end_days=2)
    values = synthetic(4, weeks, HOUR, seed=4, noise=0.02)
    line = timeline(start, values.shape[1], HOUR, calendar)
    closing = line.kind == MONTH_END
    assert sorted({int(d) for d in line.day[closing]}) == [
        (date(2026, 9, 29) - date(1970, 1, 1)).days,
        (date(2026, 9, 30) - date(1970, 1, 1)).days,
        (date(2026, 10, 29) - date(1970, 1, 1)).days,
        (date(2026, 10, 30) - date(1970, 1, 1)).days,  # the 31st is a Saturday
    ]
    values[:, closing] *= 3  # month-end close triples the traffic
    model = Baseline(values, start, HOUR, calendar, BaselineConfig(weeks=weeks))
    truth = pattern(4)
    assert np.abs(model.bands.median / truth - 1).max() < 0.04  # ordinary hours: 6-8 values at 2 % noise
    month_end_10 = model.bands.month_end_median[:, 10]
    assert np.abs(month_end_10 / (3 * truth[:, 1 * 24 + 10]) - 1).max() < 0.25  # pooled Tue-Fri at 10:00
    busy = 3 * truth[:, 3 * 24 + 10]
    # Thursday 26 November 2026 is ordinary, Monday 30 November is month-end.
    assert (model.score(busy, datetime(2026, 11, 26, 10, tzinfo=UTC), both_ways=True).severity == 3).all()
    closing_day = model.score(3 * truth[:, 10], datetime(2026, 11, 30, 10, tzinfo=UTC), both_ways=True)
    assert closing_day.severity.tolist() == [0] * 4
    assert not closing_day.excused.any()


def test_blackout_days_are_skipped_and_excused() -> None:
    calendar = BusinessCalendar(month_end_days=0, blackout=frozenset({date(2026, 9, 15)}))
    line = timeline(MONDAY, 21 * 24, HOUR, calendar)
    assert set(line.kind[line.day == (date(2026, 9, 15) - date(1970, 1, 1)).days].tolist()) == {BLACKOUT}
    values = synthetic(2, 3, HOUR, seed=5, noise=0.01)
    values[:, line.kind == BLACKOUT] = 1e6  # a migration weekend's nonsense
    model = Baseline(values, MONDAY, HOUR, calendar, BaselineConfig(weeks=3))
    assert np.abs(model.bands.median / pattern(2) - 1).max() < 0.02
    assert model.score(np.asarray([1e6, 1e6]), datetime(2026, 9, 15, 10, tzinfo=UTC)).excused.all()


def test_the_first_days_are_learning_then_hour_of_day_then_hour_of_week() -> None:
    config = BaselineConfig(weeks=4, min_weeks=2, min_days=3)
    for days, basis in ((2, LEARNING), (4, HOUR_OF_DAY), (15, HOUR_OF_WEEK)):
        values = synthetic(1, 3, HOUR, seed=6)[:, : days * 24]
        bands = fit(values, timeline(MONDAY, values.shape[1], HOUR, UTC_CALENDAR), config)
        monday_9 = 9
        assert bands.basis[0, monday_9] == basis, days
    learning = fit(values[:, :48], timeline(MONDAY, 48, HOUR, UTC_CALENDAR), config)
    judged = score(learning, np.asarray([1e9]), timeline(MONDAY + timedelta(days=2), 1, HOUR, UTC_CALENDAR))
    assert judged.excused.all()
    assert judged.severity.tolist() == [0]


def test_incremental_updates_give_the_bands_of_a_full_recompute() -> None:
    calendar = BusinessCalendar(country="DE", time_zone="Europe/Berlin", month_end_days=2)
    values = synthetic(6, 4, 10 * MINUTE, seed=7, noise=0.1)
    values[:, 100:130] = np.nan  # a gap, e.g. no traffic
    step = 10 * MINUTE
    start = datetime(2026, 9, 21, tzinfo=UTC)
    config = BaselineConfig(weeks=3)
    model = Baseline(values[:, :3000], start, step, calendar, config)
    for first in range(3000, values.shape[1], 37):  # uneven batches, across hours and days
        model.update(values[:, first : first + 37])
    full = Baseline(values, start, step, calendar, config)
    assert model.start == full.start
    np.testing.assert_array_equal(model.values, full.values)
    for name in ("median", "spread", "basis", "month_end_median", "month_end_spread"):
        np.testing.assert_array_equal(getattr(model.bands, name), getattr(full.bands, name), err_msg=name)


def test_the_timeline_is_in_local_time_across_a_daylight_saving_change() -> None:
    berlin = BusinessCalendar(time_zone="Europe/Berlin", country="DE", month_end_days=0)
    # Sunday 25 October 2026 01:00 UTC is 03:00 summer time, then 02:00 winter time.
    line = timeline(datetime(2026, 10, 25, 0, tzinfo=UTC), 4, HOUR, berlin)
    assert line.hour_of_day.tolist() == [2, 2, 3, 4]
    assert line.hour_of_week.tolist() == [6 * 24 + 2, 6 * 24 + 2, 6 * 24 + 3, 6 * 24 + 4]
    unity_day = timeline(datetime(2026, 10, 2, 22, tzinfo=UTC), 1, HOUR, berlin)  # local midnight, 3 October
    assert unity_day.kind.tolist() == [HOLIDAY]
    assert timeline(datetime(2026, 10, 2, 21, tzinfo=UTC), 1, HOUR, berlin).kind.tolist() == [ORDINARY]
