"""The business calendar: which days are not ordinary weeks, and local time of day.

A baseline learns "Monday 9 am" from past Mondays at 9 am. Some days would teach
it the wrong thing: a public holiday is quiet, the last business days of a month
are busy with closing, a planned migration weekend (a blackout day) is neither.
Those days are kept out of the ordinary hour-of-week profile, and when they come
round they are not judged against it (see :mod:`tierscope.slo.baselines`).

Public holidays come from the ``holidays`` package by country (and optionally
subdivision); month-end is the last ``month_end_days`` business days (Monday to
Friday, not holidays) of each month. Everything is in the calendar's local
time zone: 9 am on a month-end Monday is 9 am where the users are.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import cached_property

import holidays
import numpy as np
import numpy.typing as npt

ORDINARY, MONTH_END, HOLIDAY, BLACKOUT = 0, 1, 2, 3
KIND_NAMES = {ORDINARY: "ordinary", MONTH_END: "month_end", HOLIDAY: "holiday", BLACKOUT: "blackout"}
HOURS_PER_WEEK = 168


@dataclass(frozen=True)
class BusinessCalendar:
    time_zone: str = "UTC"
    country: str | None = None  # ISO 3166 code known to the holidays package, e.g. "DE"
    subdivision: str | None = None  # e.g. "BY" for Bavaria
    month_end_days: int = 2  # the last N business days of a month; 0: no month-end treatment
    blackout: frozenset[date] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        zoneinfo.ZoneInfo(self.time_zone)  # fail here, not in the middle of a computation
        if self.country is not None:
            holidays.country_holidays(self.country, subdiv=self.subdivision)
        if not 0 <= self.month_end_days <= 10:
            raise ValueError("month_end_days must be from 0 to 10")

    @cached_property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    def _holidays(self, years: Iterable[int]) -> set[date]:
        if self.country is None:
            return set()
        return set(holidays.country_holidays(self.country, subdiv=self.subdivision, years=list(years)))

    def kinds(self, days: Iterable[date]) -> dict[date, int]:
        """The kind of each day (blackout beats holiday beats month-end)."""
        days = sorted(set(days))
        if not days:
            return {}
        years = range(days[0].year, days[-1].year + 1)
        public = self._holidays(years)
        month_end = self._month_ends(days[0], days[-1], public)
        result = {}
        for day in days:
            if day in self.blackout:
                result[day] = BLACKOUT
            elif day in public:
                result[day] = HOLIDAY
            elif day in month_end:
                result[day] = MONTH_END
            else:
                result[day] = ORDINARY
        return result

    def _month_ends(self, first: date, last: date, public: set[date]) -> set[date]:
        if self.month_end_days == 0:
            return set()
        found: set[date] = set()
        month = date(first.year, first.month, 1)
        while month <= last:
            following = (month.replace(day=28) + timedelta(days=4)).replace(day=1)
            day, taken = following - timedelta(days=1), 0
            while taken < self.month_end_days and day >= month:
                if day.weekday() < 5 and day not in public:
                    found.add(day)
                    taken += 1
                day -= timedelta(days=1)
            month = following
        return found


@dataclass(frozen=True)
class Timeline:
    """Local facts of each step of a regular series: hour of the week, hour of the
    day, week number, and the kind of day it falls on."""

    hour_of_week: npt.NDArray[np.int16]  # 0 = Monday 00:00-01:00 local time
    hour_of_day: npt.NDArray[np.int16]
    week: npt.NDArray[np.int32]  # local weeks since the epoch's first Monday
    kind: npt.NDArray[np.int8]
    day: npt.NDArray[np.int32]  # local days since 1970-01-01


def timeline(start: datetime, steps: int, step: timedelta, calendar: BusinessCalendar) -> Timeline:
    """The :class:`Timeline` of ``steps`` steps of ``step`` from ``start`` (UTC).

    The local offset is looked up once per hour (daylight-saving changes fall
    on whole hours), so a month of minutes costs 720 look-ups, not 43,200.
    """
    step_s = int(step.total_seconds())
    base = int(start.astimezone(UTC).timestamp())
    seconds = base + np.arange(steps, dtype=np.int64) * step_s
    first_hour, last_hour = base // 3600, (base + max(steps - 1, 0) * step_s) // 3600
    hours = np.arange(first_hour, last_hour + 1, dtype=np.int64)
    offsets = np.asarray(
        [
            datetime.fromtimestamp(int(h) * 3600, UTC).astimezone(calendar.zone).utcoffset().total_seconds()  # type: ignore[union-attr]
            for h in hours
        ],
        dtype=np.int64,
    )
    local = seconds + offsets[seconds // 3600 - first_hour]
    day = local // 86400
    weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; Monday = 0
    hour_of_day = (local % 86400) // 3600
    unique_days = np.unique(day)
    kinds_by_day = calendar.kinds(date(1970, 1, 1) + timedelta(days=int(d)) for d in unique_days)
    day_kinds = np.asarray(
        [kinds_by_day[date(1970, 1, 1) + timedelta(days=int(d))] for d in unique_days], dtype=np.int8
    )
    return Timeline(
        hour_of_week=(weekday * 24 + hour_of_day).astype(np.int16),
        hour_of_day=hour_of_day.astype(np.int16),
        week=((day + 3) // 7).astype(np.int32),
        kind=day_kinds[np.searchsorted(unique_days, day)],
        day=day.astype(np.int32),
    )
