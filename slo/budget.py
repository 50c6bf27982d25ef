"""Error budgets and burn rates: the arithmetic, kept apart from any I/O.

Budgets are counted in events (requests), the way the SRE workbook's
"request-based" SLOs count them: with a target of 99.9 %, one request in a
thousand may be bad, so a window with ``total`` requests has a budget of
``(1 - target) * total`` bad ones.

A **burn rate** is how fast the budget goes: the bad share of a window divided
by the allowed share. At burn rate 1 the budget lasts exactly the SLO window;
at 14.4 a 30-day budget is gone in 50 hours, and one hour at that speed spends
2 % of it. The windows tierscope reports are data, not code (:data:`BURN_WINDOWS`),
as the alerting issue pairs them into fast and slow multi-window alerts.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tierscope.config import parse_duration

BURN_WINDOWS: dict[str, timedelta] = {
    name: parse_duration(name) for name in ("5m", "30m", "1h", "6h", "1d", "3d")
}


@dataclass(frozen=True)
class Events:
    """Requests (or user actions) of a window: how many, and how many were bad."""

    total: float
    bad: float

    def __add__(self, other: Events) -> Events:
        return Events(self.total + other.total, self.bad + other.bad)

    @property
    def sli(self) -> float | None:
        """The good share; None without traffic (no traffic is neither good nor bad)."""
        return None if self.total <= 0 else 1 - self.bad / self.total


def allowed_bad(total: float, target: float) -> float:
    """The error budget of ``total`` events, in events."""
    return (1 - target) * total


def budget_remaining(events: Events, target: float) -> float | None:
    """The share of the budget left: 1 untouched, 0 spent, below 0 overspent."""
    if events.total <= 0:
        return None
    return 1 - events.bad / allowed_bad(events.total, target)


def burn_rate(events: Events, target: float) -> float | None:
    """The bad share over the allowed share (1 = the budget lasts the window exactly)."""
    if events.total <= 0:
        return None
    return (events.bad / events.total) / (1 - target)


def budget_spent_at(rate: float, window: timedelta, slo_window: timedelta) -> float:
    """The share of an SLO window's budget that ``window`` at burn ``rate`` spends."""
    return rate * (window / slo_window)


def burn_rate_spending(share: float, window: timedelta, slo_window: timedelta) -> float:
    """The burn rate at which ``window`` spends ``share`` of the SLO window's budget
    (the SRE workbook's alert thresholds: 2 % in 1 h of 30 days is 14.4)."""
    return share * (slo_window / window)


def allowed_downtime(target: float, period: timedelta) -> timedelta:
    """How long everything may fail in ``period`` (for time-based readers of a target)."""
    return (1 - target) * period


def window_start(kind: str, duration: str, time_zone: str, now: datetime) -> datetime:
    """Where the SLO window containing ``now`` starts.

    ``rolling``: ``duration`` before now. ``month``/``week``: local midnight of
    the month's first day or of Monday, in ``time_zone`` (daylight-saving
    changes included), returned in UTC.
    """
    if kind == "rolling":
        return now - parse_duration(duration)
    local = now.astimezone(zoneinfo.ZoneInfo(time_zone))
    day = local.date().replace(day=1) if kind == "month" else local.date() - timedelta(days=local.weekday())
    midnight = datetime(day.year, day.month, day.day, tzinfo=zoneinfo.ZoneInfo(time_zone))
    return midnight.astimezone(UTC)


def window_length(kind: str, duration: str, time_zone: str, now: datetime) -> timedelta:
    """The whole length of the window containing ``now`` (a calendar month varies)."""
    if kind == "rolling":
        return parse_duration(duration)
    zone = zoneinfo.ZoneInfo(time_zone)
    start = window_start(kind, duration, time_zone, now).astimezone(zone)
    if kind == "week":
        following = (start + timedelta(days=7)).date()
    else:
        following = (start.replace(day=28) + timedelta(days=4)).replace(day=1).date()
    end = datetime(following.year, following.month, following.day, tzinfo=zone)
    return end.astimezone(UTC) - start.astimezone(UTC)


def local_days(start: datetime, end: datetime, time_zone: str) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut at local midnights of ``time_zone`` (UTC instants)."""
    zone = zoneinfo.ZoneInfo(time_zone)
    days: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < end:
        following = cursor.astimezone(zone).date() + timedelta(days=1)
        boundary = datetime(following.year, following.month, following.day, tzinfo=zone).astimezone(UTC)
        days.append((cursor, min(boundary, end)))
        cursor = days[-1][1]
    return days
