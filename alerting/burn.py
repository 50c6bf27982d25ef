"""Multi-window, multi-burn-rate SLO alerts (the SRE workbook, chapter 5).

Each alert of an SLO is a pair of windows: it holds when the burn rate over
the long window *and* over the short one are both above a factor. The long
window makes it significant (enough budget spent), the short one makes it
reset soon after the problem ends. The factors are derived, not typed in: the
share of a 30-day budget a window may spend (2 % in one hour) gives the burn
rate (14.4), through ``slo/budget.py``.

The windows are data (:data:`WINDOWS`). A minimum-traffic guard keeps one
failed request at night from paging: the long window needs ``min_requests``
requests and the short one a few bad ones before a pair may hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from tierscope.slo import budget

SLO_PERIOD = timedelta(days=30)  # the workbook's reference period for the shares below


@dataclass(frozen=True)
class WindowPair:
    severity: str
    long: timedelta
    short: timedelta
    budget_share: float  # of the SLO period's budget spent over the long window

    @property
    def factor(self) -> float:
        return budget.burn_rate_spending(self.budget_share, self.long, SLO_PERIOD)


# SRE workbook, table 5-8: page on 2 % in 1 h or 5 % in 6 h; ticket on 10 % in 3 days.
# The 1-day pair (10 % in 1 d) is the workbook's ticket variant at burn 3.
WINDOWS = (
    WindowPair("critical", timedelta(hours=1), timedelta(minutes=5), 0.02),
    WindowPair("critical", timedelta(hours=6), timedelta(minutes=30), 0.05),
    WindowPair("warning", timedelta(days=1), timedelta(hours=2), 0.10),
    WindowPair("warning", timedelta(days=3), timedelta(hours=6), 0.10),
)
MIN_BAD_SHORT = 2  # bad events the short window needs: one alone is an accident


@dataclass(frozen=True)
class BurnResult:
    severity: str | None  # the most severe pair that holds, None if none
    pair: WindowPair | None
    long_rate: float | None
    short_rate: float | None


def judge(events_by_window: dict[timedelta, budget.Events], target: float, min_requests: int) -> BurnResult:
    """The most severe window pair that holds, given each window's events (the
    pairs are listed most severe first, so the first that holds wins)."""
    best = BurnResult(None, None, None, None)
    for pair in WINDOWS:
        long_events, short_events = events_by_window[pair.long], events_by_window[pair.short]
        if long_events.total < min_requests or short_events.bad < MIN_BAD_SHORT:
            continue
        long_rate = budget.burn_rate(long_events, target)
        short_rate = budget.burn_rate(short_events, target)
        if long_rate is None or short_rate is None:
            continue
        if long_rate >= pair.factor and short_rate >= pair.factor and best.severity is None:
            best = BurnResult(pair.severity, pair, long_rate, short_rate)
    return best


def windows_needed() -> list[timedelta]:
    return sorted({w for pair in WINDOWS for w in (pair.long, pair.short)})
