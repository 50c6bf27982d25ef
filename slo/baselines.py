"""Baselines: what is normal for each series at this hour of the week, with bands.

A series is one (business transaction, metric) — p95 latency, error rate,
throughput or a tier's time — sampled at a regular step (a minute or an hour).
For every hour of the week (168 slots, in the business calendar's time zone)
the baseline is the **median** of that slot's past values and its spread is the
**MAD** scaled to a standard deviation (1.4826 × MAD). Both ignore up to half of
the values being wild, so last Tuesday's outage does not widen Tuesday's band.
A band of width ``w`` is ``median ± w × spread``; the widths are configurable
and become severity tiers in alerting.

Ordinary days only teach the hour-of-week profile. Month-end days are learnt
as a profile of their own (by hour of the day); holidays and blackout days are
not learnt at all, and are not judged (:func:`score` excuses them).

Minimum data: a slot needs values from ``min_weeks`` different weeks to have an
hour-of-week band. Until then (the first days of a new transaction) it borrows
the hour-of-day band pooled over all ordinary days, once there are
``min_days`` of them; before that the series is *learning* and nothing is
judged. The month-end profile needs ``min_month_end_days`` past month-end days;
until then month-end hours are excused.

Everything is vectorised over all series at once: the values of each slot are
gathered into one ``series × slots × values`` block and sorted along the last
axis (numpy's SIMD sort). :class:`Baseline` keeps the history and, when new
steps arrive, recomputes only the slots they (and the steps that fell out of
the history) belong to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import numpy.typing as npt

from tierscope.slo.calendar import (
    BLACKOUT,
    HOLIDAY,
    HOURS_PER_WEEK,
    MONTH_END,
    ORDINARY,
    BusinessCalendar,
    Timeline,
    timeline,
)

Array = npt.NDArray[np.float32]
LEARNING, HOUR_OF_DAY, HOUR_OF_WEEK = 0, 1, 2
BASIS_NAMES = {LEARNING: "learning", HOUR_OF_DAY: "hour_of_day", HOUR_OF_WEEK: "hour_of_week"}
MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution is 0.6745 sigma
UNUSED = -1  # the day kind of a history column not filled yet


@dataclass(frozen=True)
class BaselineConfig:
    weeks: int = 6  # history learnt from
    widths: tuple[float, ...] = (2.0, 3.0, 4.0)  # band half-widths, in robust standard deviations
    min_weeks: int = 2
    min_days: int = 3
    min_month_end_days: int = 2
    min_samples: int = 2  # finite values a slot needs (a series may have gaps)
    relative_floor: float = 0.05  # the spread is at least this share of the median...
    absolute_floor: float = 1e-6  # ...and at least this: a flat series still has a band

    def __post_init__(self) -> None:
        if not 1 <= self.weeks <= 8:
            raise ValueError("weeks must be from 1 to 8")
        if not self.widths or any(w <= 0 for w in self.widths) or list(self.widths) != sorted(self.widths):
            raise ValueError("widths must be positive and increasing, e.g. 2, 3, 4")


@dataclass
class Bands:
    """The learnt profile of every series: ``series x 168`` for ordinary hours and
    ``series x 24`` for month-end hours."""

    median: Array
    spread: Array
    basis: npt.NDArray[np.int8]
    month_end_median: Array
    month_end_spread: Array
    widths: tuple[float, ...] = field(default=(2.0, 3.0, 4.0))

    def band(self, width: float) -> tuple[Array, Array]:
        return self.median - width * self.spread, self.median + width * self.spread


def _grouped_median_mad(
    values: Array, groups: npt.NDArray[np.int64], n_groups: int
) -> tuple[Array, Array, npt.NDArray[np.int64]]:
    """Median, MAD and number of finite values of each series' values in each group
    (``groups[step]`` = group of a step, -1 = not used). Groups are handled in blocks
    of equal size so that each block is one rectangular sort."""
    series = values.shape[0]
    median = np.full((series, n_groups), np.nan, dtype=np.float32)
    mad = np.full((series, n_groups), np.nan, dtype=np.float32)
    count = np.zeros((series, n_groups), dtype=np.int64)
    used = np.flatnonzero(groups >= 0)
    order = used[np.argsort(groups[used], kind="stable")]
    sizes = np.bincount(groups[used], minlength=n_groups)
    offsets = np.concatenate(([0], np.cumsum(sizes)))
    for size in np.unique(sizes[sizes > 0]):
        members = np.flatnonzero(sizes == size)
        columns = order[offsets[members][:, None] + np.arange(size)]  # members x size
        block = np.take(values, columns.ravel(), axis=1).reshape(series, len(members), size)
        block.sort(axis=2)  # in place (NaN last): one allocation per block is the main cost
        # NaN sorts last: when no row ends in NaN there are no gaps (the usual case).
        gaps = np.isnan(block[..., -1]).any()
        finite = np.isfinite(block).sum(axis=2) if gaps else np.full(block.shape[:2], size)
        block_median = _middle(block, finite)
        block -= block_median[..., None]
        np.abs(block, out=block)
        block.sort(axis=2)
        median[:, members] = block_median
        mad[:, members] = _middle(block, finite)
        count[:, members] = finite
    return median, mad, count


def _middle(ordered: Array, finite: npt.NDArray[np.int64]) -> Array:
    """The median of each row of ``ordered`` (sorted, NaN last) given its finite count."""
    low = np.maximum((finite - 1) // 2, 0)[..., None]
    high = np.maximum(finite // 2, 0)[..., None]
    pair = (
        np.take_along_axis(ordered, low, axis=-1)[..., 0] + np.take_along_axis(ordered, high, axis=-1)[..., 0]
    )
    return np.where(finite > 0, pair / 2, np.nan).astype(np.float32)


def _distinct_per_group(groups: npt.NDArray[np.int64], labels: npt.NDArray[np.int64], n: int) -> np.ndarray:
    """How many distinct labels (weeks, days) the steps of each group span."""
    used = groups >= 0
    pairs = np.unique(np.stack([groups[used], labels[used]]), axis=1)
    return np.bincount(pairs[0], minlength=n) if pairs.size else np.zeros(n, dtype=np.int64)


def fit(values: Array, line: Timeline, config: BaselineConfig, slots: np.ndarray | None = None) -> Bands:
    """Learn bands from ``values`` (series x steps, NaN = no value) over ``line``.

    With ``slots`` (hours of the week, all seven days of each hour of the day
    concerned), only those slots' values are used and only their bands are
    right: :class:`Baseline` recomputes part of the profile that way.
    """
    values = np.asarray(values, dtype=np.float32)
    how, hod = line.hour_of_week.astype(np.int64), line.hour_of_day.astype(np.int64)
    ordinary = line.kind == ORDINARY
    if slots is not None:
        ordinary &= np.isin(how, slots)
    month_end = line.kind == MONTH_END
    if slots is not None:
        month_end &= np.isin(hod, np.unique(np.asarray(slots) % 24))
    week_median, week_mad, week_count = _grouped_median_mad(
        values, np.where(ordinary, how, -1), HOURS_PER_WEEK
    )
    weeks = _distinct_per_group(np.where(ordinary, how, -1), line.week.astype(np.int64), HOURS_PER_WEEK)
    by_week = (weeks[None, :] >= config.min_weeks) & (week_count >= config.min_samples)
    slot_hour = np.arange(HOURS_PER_WEEK) % 24
    # The hour-of-day fallback is computed only for the hours that need it
    # (none, once a few weeks of history are there).
    wanting = np.isin(hod, slot_hour[~by_week.all(axis=0)])
    day_median, day_mad, day_count = _grouped_median_mad(values, np.where(ordinary & wanting, hod, -1), 24)
    ordinary_days = len(np.unique(line.day[line.kind == ORDINARY]))
    end_median, end_mad, end_count = _grouped_median_mad(values, np.where(month_end, hod, -1), 24)
    end_days = len(np.unique(line.day[line.kind == MONTH_END]))

    by_day = (ordinary_days >= config.min_days) & (day_count[:, slot_hour] >= config.min_samples)
    median = np.where(by_week, week_median, np.where(by_day, day_median[:, slot_hour], np.nan))
    mad = np.where(by_week, week_mad, np.where(by_day, day_mad[:, slot_hour], np.nan))
    basis = np.where(by_week, HOUR_OF_WEEK, np.where(by_day, HOUR_OF_DAY, LEARNING)).astype(np.int8)
    end_known = (end_days >= config.min_month_end_days) & (end_count >= config.min_samples)
    return Bands(
        median=median.astype(np.float32),
        spread=_spread(median, mad, config),
        basis=basis,
        month_end_median=np.where(end_known, end_median, np.nan).astype(np.float32),
        month_end_spread=_spread(np.where(end_known, end_median, np.nan), end_mad, config),
        widths=config.widths,
    )


def _spread(median: np.ndarray, mad: np.ndarray, config: BaselineConfig) -> Array:
    floor = np.maximum(config.relative_floor * np.abs(median), config.absolute_floor)
    return np.maximum(MAD_TO_SIGMA * mad, floor).astype(np.float32)


@dataclass(frozen=True)
class Scores:
    """The judgement of one step of every series."""

    expected: Array  # the baseline (NaN when excused)
    z: Array  # robust standard deviations away from it
    severity: npt.NDArray[np.int8]  # how many band widths the value is beyond (0 = normal)
    excused: npt.NDArray[np.bool_]  # holiday, blackout, month-end without a profile, or still learning


def score(bands: Bands, values: Array, line: Timeline, both_ways: bool = False) -> Scores:
    """Judge the values of one step (``line`` of length 1) against the bands.

    Latency and errors are judged upwards only (being faster than usual is no
    incident); throughput is judged both ways (``both_ways``).
    """
    values = np.asarray(values, dtype=np.float32)
    kind, how, hod = int(line.kind[0]), int(line.hour_of_week[0]), int(line.hour_of_day[0])
    if kind in (HOLIDAY, BLACKOUT):
        expected = np.full(values.shape, np.nan, dtype=np.float32)
        spread = np.ones(values.shape, dtype=np.float32)
    elif kind == MONTH_END:
        expected, spread = bands.month_end_median[:, hod], bands.month_end_spread[:, hod]
    else:
        expected = np.where(bands.basis[:, how] == LEARNING, np.nan, bands.median[:, how]).astype(np.float32)
        spread = bands.spread[:, how]
    z = (values - expected) / spread
    excused = ~np.isfinite(z)
    distance = np.abs(z) if both_ways else z
    widths = np.asarray(bands.widths, dtype=np.float32)
    severity = (np.where(excused, -np.inf, distance)[:, None] > widths[None, :]).sum(axis=1).astype(np.int8)
    return Scores(expected=expected, z=np.where(excused, np.nan, z), severity=severity, excused=excused)


class Baseline:
    """The history of many series and their bands, kept up to date step by step.

    The history is a ring: once it holds ``weeks`` of steps, each new step
    overwrites the oldest in place (the fit does not care about column order,
    only about each column's place in the calendar), so an update costs the
    refit of the slots it touches and no copy of the history.
    """

    def __init__(
        self,
        values: Array,
        start: datetime,
        step: timedelta,
        calendar: BusinessCalendar,
        config: BaselineConfig | None = None,
    ) -> None:
        self.config = config or BaselineConfig()
        self.calendar = calendar
        self.step = step
        self.capacity = int(timedelta(weeks=self.config.weeks) / step)
        self._reset(np.asarray(values, dtype=np.float32), start)

    def _reset(self, values: Array, start: datetime) -> None:
        """Take ``values`` from ``start`` as the history (its last ``weeks``) and fit it all."""
        skipped = max(0, values.shape[1] - self.capacity)
        kept = values.shape[1] - skipped
        # The ring is allocated whole: columns not filled yet are NaN and belong to
        # no day (kind -1), so the fit skips them and updates never copy.
        self._values = np.full((values.shape[0], self.capacity), np.nan, dtype=np.float32)
        self._values[:, :kept] = values[:, skipped:]
        self._line = Timeline(
            hour_of_week=np.zeros(self.capacity, dtype=np.int16),
            hour_of_day=np.zeros(self.capacity, dtype=np.int16),
            week=np.zeros(self.capacity, dtype=np.int32),
            kind=np.full(self.capacity, UNUSED, dtype=np.int8),
            day=np.zeros(self.capacity, dtype=np.int32),
        )
        self.start = start + skipped * self.step
        self._place(np.arange(kept), timeline(self.start, kept, self.step, self.calendar))
        self._head, self._filled = 0, kept  # the column of the oldest step; how many are filled
        self.bands = fit(self._values, self._line, self.config)

    def _place(self, positions: np.ndarray, line: Timeline) -> None:
        for name in Timeline.__dataclass_fields__:
            getattr(self._line, name)[positions] = getattr(line, name)

    @property
    def end(self) -> datetime:
        return self.start + self._filled * self.step

    @property
    def values(self) -> Array:
        """The history in time order (a copy)."""
        return np.roll(self._values, -self._head, axis=1)[:, : self._filled]

    def update(self, new: Array) -> None:
        """Append the next steps (series x k) and recompute the slots they touch."""
        new = np.asarray(new, dtype=np.float32)
        if new.shape[1] >= self.capacity:  # a whole history at once: start afresh
            self._reset(np.concatenate([self.values, new], axis=1), self.start)
            return
        added = timeline(self.end, new.shape[1], self.step, self.calendar)
        filling = min(self.capacity - self._filled, new.shape[1])
        overwriting = new.shape[1] - filling
        positions = (self._head + self._filled + np.arange(new.shape[1])) % self.capacity
        # Slots losing their oldest values are refitted too.
        dropped = self._line.hour_of_week[positions[filling:]]
        self._values[:, positions] = new
        self._place(positions, added)
        self._filled += filling
        self._head = (self._head + overwriting) % self.capacity
        self.start += overwriting * self.step
        # Hour-of-day fallbacks and month-end hours pool over whole days, so
        # every slot sharing a touched hour of the day is refitted too: 7 slots
        # of 168 for a new hour, 1/24 of the work of a full fit.
        hours = np.unique(np.concatenate([added.hour_of_week, dropped]) % 24)
        refresh = np.isin(np.arange(HOURS_PER_WEEK) % 24, hours)
        partial = fit(self._values, self._line, self.config, slots=np.flatnonzero(refresh))
        self.bands.median[:, refresh] = partial.median[:, refresh]
        self.bands.spread[:, refresh] = partial.spread[:, refresh]
        self.bands.basis[:, refresh] = partial.basis[:, refresh]
        self.bands.month_end_median[:, hours] = partial.month_end_median[:, hours]
        self.bands.month_end_spread[:, hours] = partial.month_end_spread[:, hours]

    def score(self, values: Array, at: datetime, both_ways: bool = False) -> Scores:
        return score(self.bands, values, timeline(at, 1, self.step, self.calendar), both_ways)
