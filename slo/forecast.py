"""Forecasts: where a metric is heading once its weekly pattern is set aside.

A series of hourly values (p95 latency, throughput) is fitted as

    value = level + slope × t + pattern[hour of the week] + noise

by least squares over ordinary days (holidays, month-end and blackout days
left out, as for baselines), with the pattern's 168 offsets summing to zero so
that ``level`` is the weekly average. Hours more than four robust standard
deviations off the first fit (outages) are dropped and the fit repeated.

The **error band** is the 95 % interval of the trend line. Hourly residuals are
correlated (a slow hour is followed by slow hours), which makes plain least
squares far too sure of itself; the variance is therefore inflated by the
AR(1) factor ``(1 + ρ) / (1 − ρ)``, ``ρ`` being the residuals' lag-one
autocorrelation.

**Time to cross**: when the trend (and the busiest hour of the week, trend plus
its pattern offset) reaches a threshold such as a latency objective — the
central estimate, and the earliest and latest times the band allows (``None``
when it does not cross within the horizon).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from tierscope.slo.calendar import HOURS_PER_WEEK, ORDINARY, Timeline

Z95 = 1.96
OUTLIER_SIGMAS = 4.0
MIN_HOURS = 7 * 24  # a trend needs a week, or the pattern and the trend cannot be told apart


@dataclass(frozen=True)
class Trend:
    level: float  # the weekly average at the end of the history
    slope_per_day: float
    slope_low: float  # 95 % interval of the slope
    slope_high: float
    pattern: npt.NDArray[np.float64]  # offset of each hour of the week (sums to zero)
    residual_sigma: float
    inflation: float  # the AR(1) variance factor applied to the band
    hours: int  # values the fit used
    _covariance: npt.NDArray[np.float64]  # of (level, slope) at the end of history, in days

    def at(self, days: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The trend ``days`` after the end of history: (central, low, high)."""
        days = np.asarray(days, dtype=np.float64)
        central = self.level + self.slope_per_day * days
        variance = (
            self._covariance[0, 0] + 2 * days * self._covariance[0, 1] + days**2 * self._covariance[1, 1]
        )
        half = Z95 * np.sqrt(np.maximum(variance, 0))
        return central, central - half, central + half

    def crossing(self, threshold: float, horizon_days: float, offset: float = 0.0) -> dict[str, float | None]:
        """When trend + ``offset`` reaches ``threshold``, in days: central, earliest, latest."""
        grid = np.linspace(0, horizon_days, int(horizon_days * 24) + 1)
        central, low, high = self.at(grid)
        if self.slope_per_day < 0:  # falling: the first time it goes below
            central, low, high = -central, -high, -low
            threshold, offset = -threshold, -offset

        def first(curve: np.ndarray) -> float | None:
            above = np.flatnonzero(curve + offset >= threshold)
            return None if len(above) == 0 else round(float(grid[above[0]]), 2)

        return {"days": first(central), "earliest_days": first(high), "latest_days": first(low)}


def fit_trend(values: npt.ArrayLike, line: Timeline) -> Trend | None:
    """The trend of hourly ``values`` over ``line`` (None with less than a week of them)."""
    values = np.asarray(values, dtype=np.float64)
    days = (np.arange(len(values)) - (len(values) - 1)) / 24.0  # 0 at the last hour
    keep = np.isfinite(values) & (line.kind == ORDINARY)
    if keep.sum() < MIN_HOURS:
        return None
    slots = line.hour_of_week.astype(np.int64)
    # Sum-to-zero coding: slot k < 167 gets +1 in column k, slot 167 gets -1 in all of them.
    design = np.zeros((len(values), 2 + HOURS_PER_WEEK - 1))
    design[:, 0], design[:, 1] = 1.0, days
    last = slots == HOURS_PER_WEEK - 1
    design[np.flatnonzero(~last), 2 + slots[~last]] = 1.0
    design[last, 2:] = -1.0
    coefficients, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
    for _ in range(8):
        # Drop outages and refit. A wild hour drags its slot's offset, and with it
        # the residuals of that slot's good hours: only the worst hour of each slot
        # goes per round, the others are judged again after the refit.
        residuals = values - design @ coefficients
        centre = np.median(residuals[keep])
        spread = 1.4826 * np.median(np.abs(residuals[keep] - centre))
        distance = np.where(keep, np.abs(residuals - centre), 0.0)
        flagged = np.flatnonzero(distance > OUTLIER_SIGMAS * max(spread, 1e-12))
        if len(flagged) == 0 or keep.sum() - len(flagged) < MIN_HOURS:
            break
        worst = flagged[np.argsort(-distance[flagged], kind="stable")]
        _, first = np.unique(slots[worst], return_index=True)
        keep[worst[first]] = False
        coefficients, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
    used = design[keep]
    residuals = values[keep] - used @ coefficients
    dof = max(len(residuals) - used.shape[1], 1)
    sigma2 = float(residuals @ residuals) / dof
    # Lag-one autocorrelation over consecutive kept hours.
    positions = np.flatnonzero(keep)
    adjacent = np.diff(positions) == 1
    pairs = residuals[:-1][adjacent], residuals[1:][adjacent]
    rho = float(np.corrcoef(*pairs)[0, 1]) if adjacent.sum() > 2 and np.std(pairs[0]) > 0 else 0.0
    rho = min(max(rho, 0.0), 0.95)
    inflation = (1 + rho) / (1 - rho)
    covariance = np.linalg.pinv(used.T @ used)[:2, :2] * sigma2 * inflation
    pattern = np.append(coefficients[2:], -coefficients[2:].sum())
    slope_half = Z95 * np.sqrt(covariance[1, 1])
    return Trend(
        level=float(coefficients[0]),
        slope_per_day=float(coefficients[1]),
        slope_low=float(coefficients[1] - slope_half),
        slope_high=float(coefficients[1] + slope_half),
        pattern=pattern,
        residual_sigma=float(np.sqrt(sigma2)),
        inflation=inflation,
        hours=int(keep.sum()),
        _covariance=covariance,
    )
