"""The blend: the twin's forecast combined with what the person's own recent history teaches.

:class:`BlendForecaster` wraps a physiological forecaster (the twin; any
:class:`~twin.forecaster.Forecaster`, or none) and, per horizon ``h``, forms
four candidate forecasts of the glucose change ``Δ = g(t + h) - g(t)``:

- persistence: ``Δ = 0``;
- damped trend: the least-squares slope ``s`` of the last 20 minutes (reset
  at gaps), continued with a damping time ``τ``: ``Δ = s τ (1 - e^(-h/τ))``;
- the model: the wrapped forecaster's forecast minus the latest reading;
- stacked: a ridge regression of the observed ``Δ/h`` on features known at
  issue time (intercept, the model's ``Δ/h``, the slope, the acceleration, the
  distance of glucose from the person's recent mean, and the model's latest
  observed error at this horizon: an online residual correction), fitted by
  exponentially forgotten least squares on past forecasts whose outcome is
  already observed. The ridge pulls every weight to zero, i.e. to
  persistence, so with little data the stacked forecast is persistence.

The forecast is the convex combination of the candidates weighted by the
inverse of their exponentially weighted recent mean squared error at that
horizon (:class:`BlendSettings` ``skill_halflife_min``), raised to
``skill_power``; a candidate that has been bad recently fades out, so the
blend stays close to the best of them, persistence included.

Band: a central ``coverage`` (80 %) interval from the blend's own recent
errors, adapted online to its nominal coverage (:mod:`twin.forecast_band`).

Learning uses only outcomes already observed: a forecast issued at ``t`` for
``t + h`` is learned from once a reading at or after ``t + h - tolerance``
arrives (the reading within the tolerance, or the line between the two
readings around the target when they are at most ``gap_min`` apart; a target
inside a longer gap teaches nothing). So a forecast at time ``t`` depends
only on readings up to ``t``. Horizons are learned from the first time they
are asked for; every forecast is computed at ``observe`` and kept, so asking
again gives the same answer.

Pure numpy and the standard library (DESIGN.md layering).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from twin.forecast_band import BandSettings, ConformalBand
from twin.forecaster import (
    GAP_MIN,
    MATCH_TOLERANCE_MIN,
    Forecaster,
    ForecastPoint,
    _check_horizons,
    _check_reading,
    _minutes,
)

BLEND_COVERAGE = 0.8
"""Nominal coverage of the blend's band: the central 80 % prediction interval."""

MAX_RATE_MG_DL_PER_MIN = 5.0
"""Candidate changes are clipped to ±5 mg/dL/min × horizon: faster than glucose moves."""

CANDIDATES = ("persistence", "damped_trend", "model", "stacked")
FEATURES = ("intercept", "model", "slope", "acceleration", "mean_distance", "model_error")


@dataclass(frozen=True)
class BlendSettings:
    """Settings of :class:`BlendForecaster` (all durations in minutes).

    trend_window_min: readings used for slope and acceleration (after the latest gap).
    damping_min: ``τ`` of the damped trend.
    gap_min, tolerance_min: a gap between readings; truth matching.
    skill_halflife_min: half-life of the recent squared errors that weight the candidates.
    skill_power: weights are ``MSE ** -skill_power``.
    min_pairs: observed outcomes at a horizon before the weights leave their prior.
    fit_halflife_min: half-life of the stacked regression's forgetting.
    ridge: the ridge penalty, in effective observations.
    mean_halflife_min: half-life of the person's recent mean glucose.
    band: the band's settings (coverage 0.8).

    The defaults were chosen on simulated runs that are not the benchmark's
    (fully closed loop, glucotwin's MPC, 30 patients, 2 days, seed offset 7000;
    and their CGM alone, every 15 minutes, through the CGM-only twin): damping
    40 min, skill power 4 and ridge 5 beat 20 / 2 / 20 there by 0.3-0.6 mg/dL at
    30 min and 0.6-1.5 mg/dL at 60 min.
    """

    trend_window_min: float = 20.0
    damping_min: float = 40.0
    gap_min: float = GAP_MIN
    tolerance_min: float = MATCH_TOLERANCE_MIN
    skill_halflife_min: float = 6 * 60.0
    skill_power: float = 4.0
    min_pairs: int = 12
    fit_halflife_min: float = 24 * 60.0
    ridge: float = 5.0
    mean_halflife_min: float = 12 * 60.0
    band: BandSettings = field(default_factory=lambda: BandSettings(coverage=BLEND_COVERAGE))

    def __post_init__(self) -> None:
        positive = ("trend_window_min", "damping_min", "gap_min", "skill_halflife_min", "fit_halflife_min",
                    "mean_halflife_min")
        for label in positive:
            value = getattr(self, label)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"blend {label} must be positive minutes, got {value!r}")
        if not (math.isfinite(self.tolerance_min) and self.tolerance_min >= 0):
            raise ValueError(f"blend tolerance_min must be >= 0, got {self.tolerance_min!r}")
        if not (math.isfinite(self.skill_power) and self.skill_power >= 0):
            raise ValueError(f"blend skill_power must be >= 0, got {self.skill_power!r}")
        if not (isinstance(self.min_pairs, int) and self.min_pairs >= 1):
            raise ValueError(f"blend min_pairs must be an integer >= 1, got {self.min_pairs!r}")
        if not (math.isfinite(self.ridge) and self.ridge > 0):
            raise ValueError(f"blend ridge must be positive, got {self.ridge!r}")


@dataclass
class _Issued:
    """A forecast waiting for its outcome."""

    t_min: float
    glucose_mg_dl: float
    candidates: np.ndarray  # Δ of each candidate, mg/dL
    features: np.ndarray
    point: ForecastPoint


def _decay(halflife_min: float, dt_min: float) -> float:
    return 0.5 ** (max(dt_min, 0.0) / halflife_min)


class _Horizon:
    """What the blend has learned at one horizon."""

    def __init__(self, horizon_min: float, settings: BlendSettings) -> None:
        self.h = horizon_min
        self.s = settings
        k = len(FEATURES)
        self.gram = np.zeros((k, k))
        self.moment = np.zeros(k)
        self.fit_t: float | None = None
        self.sq_err = np.zeros(len(CANDIDATES))
        self.weight_sum = 0.0
        self.skill_t: float | None = None
        self.pairs = 0
        self.pending: deque[_Issued] = deque()
        self.band = ConformalBand(horizon_min, settings.band)
        self.model_error: tuple[float, float] | None = None  # (minute observed, truth - model forecast)

    def learn(self, issued: _Issued, truth: float, t_min: float) -> None:
        delta = truth - issued.glucose_mg_dl
        decay = _decay(self.s.fit_halflife_min, t_min - self.fit_t) if self.fit_t is not None else 1.0
        x, y = issued.features, delta / self.h
        self.gram = decay * self.gram + np.outer(x, x)
        self.moment = decay * self.moment + x * y
        self.fit_t = t_min
        decay = _decay(self.s.skill_halflife_min, t_min - self.skill_t) if self.skill_t is not None else 1.0
        self.sq_err = decay * self.sq_err + (issued.candidates - delta) ** 2
        self.weight_sum = decay * self.weight_sum + 1.0
        self.skill_t = t_min
        self.pairs += 1
        point = issued.point
        self.band.learn(t_min, truth - point.forecast_mg_dl, not (point.lower_mg_dl <= truth <= point.upper_mg_dl))
        self.model_error = (t_min, delta - issued.candidates[2])

    def stacked_weights(self) -> np.ndarray:
        k = len(FEATURES)
        return np.linalg.solve(self.gram + self.s.ridge * np.eye(k), self.moment)

    def candidate_weights(self) -> np.ndarray:
        """Convex weights of the candidates from their recent skill; persistence alone before ``min_pairs``."""
        if self.pairs < self.s.min_pairs or self.weight_sum <= 0:
            prior = np.zeros(len(CANDIDATES))
            prior[0] = 1.0  # persistence until the others have shown their skill
            return prior
        mse = self.sq_err / self.weight_sum
        inv = (np.maximum(mse, 1e-6)) ** (-self.s.skill_power)
        return inv / inv.sum()


class BlendForecaster:
    """The twin blended with persistence, a damped trend and a stacked fit (module docstring)."""

    name = "blend"

    def __init__(self, model: Forecaster | None = None, settings: BlendSettings | None = None) -> None:
        self.model = model
        self.settings = settings or BlendSettings()
        self.reset()

    def reset(self) -> None:
        if self.model is not None:
            self.model.reset()
        self._horizons: dict[float, _Horizon] = {}
        self._recent: deque[tuple[float, float]] = deque()  # readings in the trend window
        self._last: tuple[float, float] | None = None
        self._mean: float | None = None
        self._cache: dict[float, ForecastPoint] = {}

    # --- observing -------------------------------------------------------------------

    def observe(self, time: datetime, glucose_mg_dl: float) -> None:
        t_min = _minutes(time)
        glucose = _check_reading(t_min, glucose_mg_dl, self._last[0] if self._last else None)
        if self.model is not None:
            self.model.observe(time, glucose)
        previous = self._last
        self._resolve(t_min, glucose, previous)
        self._update_trend(t_min, glucose, previous)
        s = self.settings
        if self._mean is None or previous is None:
            self._mean = glucose
        else:
            keep = _decay(s.mean_halflife_min, t_min - previous[0])
            self._mean = keep * self._mean + (1.0 - keep) * glucose
        self._last = (t_min, glucose)
        self._cache = {}
        if self._horizons:
            self._issue(sorted(self._horizons))

    def _resolve(self, t_min: float, glucose: float, previous: tuple[float, float] | None) -> None:
        """Learn from every pending forecast whose target this reading settles."""
        s = self.settings
        for horizon in self._horizons.values():
            while horizon.pending:
                issued = horizon.pending[0]
                target = issued.t_min + horizon.h
                if t_min < target - s.tolerance_min:
                    break
                horizon.pending.popleft()
                truth = None
                if previous is not None and abs(previous[0] - target) <= s.tolerance_min:
                    truth = previous[1]
                elif abs(t_min - target) <= s.tolerance_min:
                    truth = glucose
                elif previous is not None and previous[0] <= target <= t_min and t_min - previous[0] <= s.gap_min:
                    w = (target - previous[0]) / (t_min - previous[0])
                    truth = (1.0 - w) * previous[1] + w * glucose
                if truth is not None:
                    horizon.learn(issued, truth, t_min)

    def _update_trend(self, t_min: float, glucose: float, previous: tuple[float, float] | None) -> None:
        s = self.settings
        if previous is not None and t_min - previous[0] > s.gap_min:
            self._recent.clear()
        self._recent.append((t_min, glucose))
        while self._recent[0][0] < t_min - s.trend_window_min - 1.0 / 60.0:
            self._recent.popleft()

    def _trend(self) -> tuple[float, float]:
        """(slope mg/dL/min, acceleration mg/dL/min²) at the latest reading, by least squares."""
        if len(self._recent) < 2:
            return 0.0, 0.0
        t = np.array([p[0] for p in self._recent])
        g = np.array([p[1] for p in self._recent])
        dt = t - t[-1]
        if float(np.ptp(dt)) <= 0.0:
            return 0.0, 0.0
        if len(self._recent) >= 4 and float(np.ptp(dt)) >= 10.0:
            c2, c1, _ = np.polyfit(dt, g, 2)
            slope_lin = float(np.polyfit(dt, g, 1)[0])
            return slope_lin, float(np.clip(2.0 * c2, -0.2, 0.2))
        return float(np.polyfit(dt, g, 1)[0]), 0.0

    # --- forecasting -----------------------------------------------------------------

    def _model_deltas(self, horizons: list[float], glucose: float) -> dict[float, float]:
        if self.model is None:
            return {}
        return {p.horizon_min: p.forecast_mg_dl - glucose for p in self.model.forecast(horizons)}

    def _issue(self, horizons: list[float]) -> None:
        """Compute, keep and queue for learning the forecasts of these horizons from the latest reading."""
        if self._last is None:
            return
        t_min, glucose = self._last
        s = self.settings
        slope, accel = self._trend()
        model = self._model_deltas(horizons, glucose)
        for h in horizons:
            horizon = self._horizons[h]
            model_delta = model.get(h, 0.0)
            model_error = 0.0
            if horizon.model_error is not None and t_min - horizon.model_error[0] <= 2.0 * s.gap_min:
                model_error = horizon.model_error[1]
            features = np.array([1.0, model_delta / h, slope, accel * h / 2.0,
                                 (glucose - (self._mean or glucose)) / h, model_error / h])
            damped = slope * s.damping_min * (1.0 - math.exp(-h / s.damping_min))
            stacked = float(features @ horizon.stacked_weights()) * h
            candidates = np.array([0.0, damped, model_delta, stacked])
            if self.model is None or h not in model:
                candidates[2] = damped  # no model forecast: the trend stands in
            limit = MAX_RATE_MG_DL_PER_MIN * h
            candidates = np.clip(np.nan_to_num(candidates, nan=0.0), -limit, limit)
            delta = float(horizon.candidate_weights() @ candidates)
            forecast = glucose + delta
            lower, upper = horizon.band.interval(forecast)
            point = ForecastPoint(h, forecast, lower, upper)
            self._cache[h] = point
            horizon.pending.append(_Issued(t_min, glucose, candidates, features, point))

    def forecast(self, horizons_min: Sequence[float]) -> list[ForecastPoint]:
        horizons = _check_horizons(horizons_min)
        if self._last is None:
            return []
        new = sorted({h for h in horizons if h not in self._horizons})
        for h in new:
            self._horizons[h] = _Horizon(h, self.settings)
        if new:
            self._issue(new)
        return [self._cache[h] for h in horizons]

    def weights(self, horizon_min: float) -> dict[str, float]:
        """The candidates' current weights at a horizon (for reports; empty if never asked)."""
        horizon = self._horizons.get(float(horizon_min))
        if horizon is None:
            return {}
        return dict(zip(CANDIDATES, (float(w) for w in horizon.candidate_weights())))


def blend_factory(model_factory: Callable[[], Forecaster] | None = None,
                  settings: BlendSettings | None = None) -> Callable[[], BlendForecaster]:
    """Each call of the result gives a fresh blend around a fresh model forecaster."""
    return lambda: BlendForecaster(model_factory() if model_factory else None, settings)
