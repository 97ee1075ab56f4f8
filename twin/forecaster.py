"""Glucose forecasters: the :class:`Forecaster` protocol and two baselines.

A forecaster is fed CGM readings one at a time, in time order, as a live loop
would see them, and forecasts glucose at given horizons after its latest
reading. File replay (``sim.forecast.replay``) scores every forecaster the same way,
so the twin's forecasts are compared with these baselines on equal terms:

- :class:`Persistence`: glucose stays at the last reading.
- :class:`LinearExtrapolation`: the least-squares trend of the last 20 minutes
  continues.

Prediction bands
----------------
Every forecaster gives a band ``[lower_mg_dl, upper_mg_dl]`` meant as a
central :data:`BAND_COVERAGE` (90 %) prediction interval; replay reports how
often the later reading falls inside it. The baselines' bands are empirical
(:class:`_EmpiricalBand`): the 5th and 95th percentiles of the method's own
errors at that horizon over the last 24 h of readings, once there are at
least 20 such errors; before that, a heuristic prior of
``±1.645 × 1 mg/dL/min × horizon`` (a rate of change with a standard
deviation of 1 mg/dL/min, held for the whole horizon). Both widen with the
horizon. Only past readings are used, so a band never peeks at the future.

Pure numpy and the standard library (DESIGN.md layering).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from statistics import NormalDist
from typing import Protocol, runtime_checkable

import numpy as np

BAND_COVERAGE = 0.9
"""Nominal coverage of a forecast band: the central 90 % prediction interval."""

GAP_MIN = 15.0
"""Readings more than 15 minutes apart are separated by a gap (DESIGN.md: stale CGM)."""

MATCH_TOLERANCE_MIN = 2.5
"""A reading within ±2.5 min of a target time is its truth (half the usual 5-minute CGM period).

The baselines use it to learn their band from their own past errors; the
evaluation in ``sim.forecast.scoring`` uses the same default.
"""


@dataclass(frozen=True)
class ForecastPoint:
    """Forecast glucose at ``horizon_min`` minutes after the forecaster's latest reading.

    Attributes
    ----------
    horizon_min: minutes ahead of the latest reading; > 0.
    forecast_mg_dl: point forecast, mg/dL.
    lower_mg_dl, upper_mg_dl: the prediction band, mg/dL, with
        ``lower_mg_dl <= forecast_mg_dl <= upper_mg_dl`` (nominally a central
        :data:`BAND_COVERAGE` interval).

    All values are finite. A method may forecast below zero (an extrapolation
    does); nothing here clips it.
    """

    horizon_min: float
    forecast_mg_dl: float
    lower_mg_dl: float
    upper_mg_dl: float

    def __post_init__(self) -> None:
        for label in ("horizon_min", "forecast_mg_dl", "lower_mg_dl", "upper_mg_dl"):
            value = getattr(self, label)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
                raise ValueError(f"{label} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{label} must be finite, got {value!r}")
            object.__setattr__(self, label, value)
        if self.horizon_min <= 0.0:
            raise ValueError(f"horizon_min must be positive, got {self.horizon_min!r}")
        if not (self.lower_mg_dl <= self.forecast_mg_dl <= self.upper_mg_dl):
            raise ValueError(
                "forecast band must satisfy lower <= forecast <= upper, got "
                f"{self.lower_mg_dl!r} <= {self.forecast_mg_dl!r} <= {self.upper_mg_dl!r}"
            )


@runtime_checkable
class Forecaster(Protocol):
    """Anything that forecasts glucose from a stream of CGM readings.

    ``name`` identifies the method (``"persistence"``, ``"linear"``, ``"twin"``).

    ``observe`` is called with readings in time order (non-decreasing times),
    irregularly spaced, possibly with gaps of hours; ``time`` is timezone-aware.
    ``forecast`` returns one :class:`ForecastPoint` per requested horizon it can
    forecast, in the order asked, for horizons counted from the latest observed
    reading; an empty list when it cannot forecast yet (no reading). It must not
    change what later forecasts would be. ``reset`` forgets every reading.
    """

    name: str

    def reset(self) -> None: ...

    def observe(self, time: datetime, glucose_mg_dl: float) -> None: ...

    def forecast(self, horizons_min: Sequence[float]) -> list[ForecastPoint]: ...


# --- the empirical band shared by the baselines ------------------------------------

PRIOR_RATE_SD_MG_DL_PER_MIN = 1.0
"""Band prior: a glucose rate of change with SD 1 mg/dL/min, held over the horizon."""


class _EmpiricalBand:
    """The recent history of a linear-trend method and the band learned from its errors.

    Each observed reading is stored with the slope (mg/dL/min) the method used
    from it, so the method's past forecast from reading ``i`` at horizon ``h``
    is ``g[i] + slope[i] * h``; its error is the reading nearest ``t[i] + h``
    (within ``tolerance_min``) minus that forecast. Readings older than
    ``history_min`` before the latest are forgotten.
    """

    def __init__(self, history_min: float = 24 * 60.0, min_errors: int = 20,
                 tolerance_min: float = MATCH_TOLERANCE_MIN, coverage: float = BAND_COVERAGE) -> None:
        if not (history_min > 0 and min_errors >= 1 and tolerance_min >= 0 and 0 < coverage < 1):
            raise ValueError("band settings: need history_min > 0, min_errors >= 1, "
                             "tolerance_min >= 0 and 0 < coverage < 1")
        self.history_min = history_min
        self.min_errors = min_errors
        self.tolerance_min = tolerance_min
        self.coverage = coverage
        self._z = NormalDist().inv_cdf(0.5 + coverage / 2.0)  # 1.645 for 90 %
        self._t_min: deque[float] = deque()  # minutes since the epoch
        self._g: deque[float] = deque()
        self._slope: deque[float] = deque()
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # the deques as arrays, until add

    def reset(self) -> None:
        self._t_min.clear()
        self._g.clear()
        self._slope.clear()
        self._arrays = None

    def add(self, t_min: float, glucose_mg_dl: float, slope_mg_dl_per_min: float) -> None:
        self._t_min.append(t_min)
        self._g.append(glucose_mg_dl)
        self._slope.append(slope_mg_dl_per_min)
        self._arrays = None
        while self._t_min and self._t_min[0] < t_min - self.history_min:
            self._t_min.popleft()
            self._g.popleft()
            self._slope.popleft()

    def errors(self, horizon_min: float) -> np.ndarray:
        """Errors (truth - forecast, mg/dL) of the method's past forecasts at this horizon."""
        if len(self._t_min) < 2:
            return np.empty(0)
        if self._arrays is None:  # once per reading, shared by every horizon asked
            self._arrays = (np.fromiter(self._t_min, float, len(self._t_min)), np.fromiter(self._g, float, len(self._g)),
                            np.fromiter(self._slope, float, len(self._slope)))
        t, g, slope = self._arrays
        target = t + horizon_min
        right = np.clip(np.searchsorted(t, target), 1, len(t) - 1)
        left = right - 1
        nearest = np.where(np.abs(t[left] - target) <= np.abs(t[right] - target), left, right)
        hit = np.abs(t[nearest] - target) <= self.tolerance_min
        return g[nearest[hit]] - (g[hit] + slope[hit] * horizon_min)

    def point(self, horizon_min: float, forecast_mg_dl: float) -> ForecastPoint:
        errors = self.errors(horizon_min)
        if errors.size >= self.min_errors:
            tail = (1.0 - self.coverage) / 2.0
            low_err, high_err = _quantiles(errors, (tail, 1.0 - tail))
            lower = forecast_mg_dl + min(float(low_err), 0.0)
            upper = forecast_mg_dl + max(float(high_err), 0.0)
        else:
            half = self._z * PRIOR_RATE_SD_MG_DL_PER_MIN * horizon_min
            lower, upper = forecast_mg_dl - half, forecast_mg_dl + half
        return ForecastPoint(horizon_min, forecast_mg_dl, lower, upper)


def _quantiles(values: np.ndarray, qs: tuple[float, ...]) -> list[float]:
    """``np.quantile(values, qs)`` (its default linear method, the same floats bit for bit; a test
    checks it) with one sort: numpy's own call costs ~20 us of overhead per forecast, most of a
    persistence replay's time."""
    s = np.sort(values)
    n = s.size
    out = []
    for q in qs:
        x = q * (n - 1)
        lo = int(math.floor(x))
        hi = min(lo + 1, n - 1)
        t = x - lo
        a, b = float(s[lo]), float(s[hi])
        d = b - a
        out.append(b - d * (1.0 - t) if t >= 0.5 else a + d * t)  # numpy's _lerp
    return out


def _minutes(time: datetime) -> float:
    if time.tzinfo is None or time.utcoffset() is None:
        raise ValueError(f"reading time must be timezone-aware, got naive {time.isoformat()}")
    return time.timestamp() / 60.0


def _check_reading(t_min: float, glucose_mg_dl: float, last_t_min: float | None) -> float:
    glucose = float(glucose_mg_dl)
    if not (math.isfinite(glucose) and glucose > 0):
        raise ValueError(f"glucose_mg_dl must be finite and positive, got {glucose_mg_dl!r}")
    if last_t_min is not None and t_min < last_t_min:
        raise ValueError("readings must be observed in time order")
    return glucose


def _check_horizons(horizons_min: Sequence[float]) -> list[float]:
    horizons = [float(h) for h in horizons_min]
    for h in horizons:
        if not (math.isfinite(h) and h > 0):
            raise ValueError(f"forecast horizons must be positive minutes, got {h!r}")
    return horizons


# --- the baselines --------------------------------------------------------------------


class Persistence:
    """Glucose stays at the latest reading: ``forecast(h) = g_last`` for every horizon.

    Its error at horizon ``h`` is the glucose change over ``h``; the band is the
    empirical spread of those changes over the last 24 h (module docstring).
    """

    name = "persistence"

    def __init__(self) -> None:
        self._band = _EmpiricalBand()
        self._last_t_min: float | None = None
        self._last_g: float | None = None

    def reset(self) -> None:
        self._band.reset()
        self._last_t_min = None
        self._last_g = None

    def observe(self, time: datetime, glucose_mg_dl: float) -> None:
        t_min = _minutes(time)
        glucose = _check_reading(t_min, glucose_mg_dl, self._last_t_min)
        self._last_t_min, self._last_g = t_min, glucose
        self._band.add(t_min, glucose, 0.0)

    def forecast(self, horizons_min: Sequence[float]) -> list[ForecastPoint]:
        horizons = _check_horizons(horizons_min)
        if self._last_g is None:
            return []
        return [self._band.point(h, self._last_g) for h in horizons]


class LinearExtrapolation:
    """The least-squares line through the recent readings, continued.

    The window is the readings within ``window_min`` = 20 minutes before the
    latest one, inclusive (four or five readings at a 5-minute period), and
    after the latest gap of more than :data:`GAP_MIN` = 15 minutes between
    consecutive readings. The line is fitted by ordinary least squares to
    (time, glucose) and anchored at the latest reading:
    ``forecast(h) = g_last + slope * h``. With fewer than two readings in the
    window (the first reading, or the first after a gap) the slope is zero and
    the forecast is persistence. Band: as :class:`Persistence`, from this
    method's own past errors.
    """

    name = "linear"

    def __init__(self, window_min: float = 20.0, gap_min: float = GAP_MIN) -> None:
        if not (math.isfinite(window_min) and window_min > 0):
            raise ValueError(f"window_min must be positive minutes, got {window_min!r}")
        if not (math.isfinite(gap_min) and gap_min > 0):
            raise ValueError(f"gap_min must be positive minutes, got {gap_min!r}")
        self.window_min = float(window_min)
        self.gap_min = float(gap_min)
        self._band = _EmpiricalBand()
        self._recent: deque[tuple[float, float]] = deque()  # (minutes, mg/dL) in the window
        self._slope = 0.0

    def reset(self) -> None:
        self._band.reset()
        self._recent.clear()
        self._slope = 0.0

    @property
    def slope_mg_dl_per_min(self) -> float:
        """The trend used by the latest forecast (0 when it falls back to persistence)."""
        return self._slope

    def observe(self, time: datetime, glucose_mg_dl: float) -> None:
        t_min = _minutes(time)
        last = self._recent[-1][0] if self._recent else None
        glucose = _check_reading(t_min, glucose_mg_dl, last)
        if last is not None and t_min - last > self.gap_min:
            self._recent.clear()
        self._recent.append((t_min, glucose))
        # Inclusive window, with a second of slack for timestamps that drift.
        while self._recent[0][0] < t_min - self.window_min - 1.0 / 60.0:
            self._recent.popleft()
        self._slope = self._fit_slope()
        self._band.add(t_min, glucose, self._slope)

    def _fit_slope(self) -> float:
        if len(self._recent) < 2:
            return 0.0
        t = np.array([p[0] for p in self._recent])
        g = np.array([p[1] for p in self._recent])
        dt = t - t.mean()
        denom = float(dt @ dt)
        if denom <= 0.0:  # all readings at one instant
            return 0.0
        return float(dt @ (g - g.mean())) / denom

    def forecast(self, horizons_min: Sequence[float]) -> list[ForecastPoint]:
        horizons = _check_horizons(horizons_min)
        if not self._recent:
            return []
        g_last = self._recent[-1][1]
        return [self._band.point(h, g_last + self._slope * h) for h in horizons]
