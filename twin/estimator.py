"""State estimator: keeps the twin synchronized with the CGM stream.

A cubature Kalman filter (the unscented transform with weights 1/2n, always
positive definite) over the uncertain part of the twin:

    z = [G_P, G_T, G_SC, d_meal, d_bias, ln s, e_cgm]

``G_P, G_T, G_SC`` are the model's glucose masses (mg/kg); ``d_meal + d_bias``
is glucose appearance the model cannot explain (mg/kg/min): ``d_meal`` is
fast (unannounced meals, errors in announced carbohydrates), decays with time
constant ``disturbance_tau_min`` and is driven by a fast random walk;
``d_bias`` is a slow random walk that holds (model mismatch at the patient's
current glucose, sensor drift, physiology the prior misses); ``s`` is a slowly
varying insulin-sensitivity factor that scales insulin action on uptake and
production around the basal steady state (so that it changes nothing while
insulin is at basal and the disturbance alone explains drift); ``e_cgm`` is
the sensor's own slowly varying error (mg/dL), a first-order autoregressive
process: CGM errors are strongly correlated in time (simglucose's Dexcom
model, after Breton and Kovatchev 2008: SD about 12 mg/dL, correlation 0.72
at 15 minutes and 0.47 at 30), so a run of high readings is not necessarily
rising glucose. The gut and
insulin states are driven by known inputs (announced carbohydrates, delivered
insulin) and are propagated by the model without uncertainty.

The CGM reading is ``G_SC / Vg + e_cgm`` plus a small white noise, linear
in z, so the measurement update is exact. Forecasts are of glucose itself
(``G_SC / Vg``), not of the sensor. Readings are gated on the innovation (Mahalanobis distance): an
outlier is rejected with a recorded reason; after
``max_consecutive_rejections`` rejections in a row the next reading is
accepted with an inflated covariance (the glucose really moved). Irregular
sample times are handled by predicting over the actual interval; a gap is
predict-only.

All times are passed in (``datetime``); nothing here reads a clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np

from twin.model import PMOL_PER_U, MealState, State, simulate
from twin.model_params import ModelParams
from twin.personalize import Twin

Z_NAMES = ("G_P", "G_T", "G_SC", "disturbance_meal", "disturbance_bias", "log_sensitivity", "cgm_error")
_GP, _GT, _GSC, _D, _B, _LS, _E = range(7)
_N = len(Z_NAMES)
_GLUCOSE_STATES = [State.G_P, State.G_T, State.G_SC]
"""Model states (not z indices) kept positive after every propagation."""
MIN_PER_H = 60.0
REFERENCE_WEIGHT_KG = 70.0


@dataclass(frozen=True)
class EstimatorSettings:
    """Noise model and gating of the estimator.

    Attributes
    ----------
    cgm_noise_sd_mg_dl: standard deviation of the white part of CGM noise.
    cgm_error_sd_mg_dl: stationary standard deviation of the correlated CGM error.
    cgm_error_tau_min: correlation time of the CGM error, minutes.
    glucose_process_sd: random walk of G_P, mg/kg per sqrt(min).
    disturbance_rw_sd: random walk of d_meal, mg/kg/min per sqrt(min), for a
        person of ``REFERENCE_WEIGHT_KG``; it scales with reference weight / body
        weight (a meal's appearance per kg is larger in a lighter person).
    disturbance_tau_min: decay time constant of d_meal, minutes (filter and forecasts).
    bias_rw_sd: random walk of d_bias, mg/kg/min per sqrt(min).
    disturbance_limit: |d_meal| and |d_bias| bound, mg/kg/min.
    log_sensitivity_rw_sd: random walk of ln s per sqrt(min).
    log_sensitivity_prior_sd: initial standard deviation of ln s.
    log_sensitivity_limit: |ln s| bound.
    gate_sigma: innovations beyond this many standard deviations are rejected.
    max_consecutive_rejections: after this many, the next reading is accepted.
    max_step_min: longest model step while predicting, minutes.
    band_growth_mg_dl_per_min: forecast band growth with horizon (sd, mg/dL per minute).
    """

    cgm_noise_sd_mg_dl: float = 3.0
    cgm_error_sd_mg_dl: float = 10.0
    cgm_error_tau_min: float = 40.0
    glucose_process_sd: float = 0.05
    disturbance_rw_sd: float = 0.3
    disturbance_tau_min: float = 60.0
    bias_rw_sd: float = 0.01
    disturbance_limit: float = 15.0
    log_sensitivity_rw_sd: float = 0.001
    log_sensitivity_prior_sd: float = 0.3
    log_sensitivity_limit: float = 0.7
    gate_sigma: float = 4.5
    max_consecutive_rejections: int = 2
    max_step_min: float = 5.0
    band_growth_mg_dl_per_min: float = 0.35

    def __post_init__(self) -> None:
        for name in ("cgm_noise_sd_mg_dl", "cgm_error_sd_mg_dl", "cgm_error_tau_min", "glucose_process_sd", "disturbance_rw_sd", "disturbance_tau_min", "bias_rw_sd",
                     "disturbance_limit", "log_sensitivity_rw_sd", "log_sensitivity_prior_sd",
                     "log_sensitivity_limit", "gate_sigma", "max_step_min", "band_growth_mg_dl_per_min"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if not isinstance(self.max_consecutive_rejections, int) or self.max_consecutive_rejections < 0:
            raise ValueError("max_consecutive_rejections must be a non-negative integer")


@dataclass(frozen=True)
class UpdateOutcome:
    """What the estimator did with one reading."""

    time: datetime
    glucose_mg_dl: float | None
    accepted: bool
    reason: str
    innovation_mg_dl: float = float("nan")
    mahalanobis: float = float("nan")


@dataclass(frozen=True)
class Forecast:
    """Glucose forecast from ``issued_at``; arrays over ``horizons_min`` (0 = now).

    ``glucose_mg_dl = baseline + insulin_effect + carb_effect + disturbance_effect``
    exactly: the baseline is glucose with no insulin on board above basal, no
    carbohydrate and no disturbance; each effect adds one cause on top.
    """

    issued_at: datetime
    horizons_min: np.ndarray
    glucose_mg_dl: np.ndarray
    lower_mg_dl: np.ndarray
    upper_mg_dl: np.ndarray
    baseline_mg_dl: np.ndarray
    insulin_effect_mg_dl: np.ndarray
    carb_effect_mg_dl: np.ndarray
    disturbance_effect_mg_dl: np.ndarray

    def at(self, horizon_min: float) -> tuple[float, float, float]:
        """(forecast, lower, upper) at a horizon, linearly interpolated."""
        h = self.horizons_min
        return (float(np.interp(horizon_min, h, self.glucose_mg_dl)),
                float(np.interp(horizon_min, h, self.lower_mg_dl)),
                float(np.interp(horizon_min, h, self.upper_mg_dl)))

    def to_dict(self) -> dict[str, Any]:
        return {
            "issued_at": self.issued_at.isoformat(),
            "horizons_min": self.horizons_min.tolist(),
            "glucose_mg_dl": self.glucose_mg_dl.tolist(),
            "lower_mg_dl": self.lower_mg_dl.tolist(),
            "upper_mg_dl": self.upper_mg_dl.tolist(),
            "baseline_mg_dl": self.baseline_mg_dl.tolist(),
            "insulin_effect_mg_dl": self.insulin_effect_mg_dl.tolist(),
            "carb_effect_mg_dl": self.carb_effect_mg_dl.tolist(),
            "disturbance_effect_mg_dl": self.disturbance_effect_mg_dl.tolist(),
        }


def sensitivity_params(params: ModelParams, log_s: np.ndarray) -> ModelParams:
    """Batch of ``params`` (N=1) with insulin action scaled by ``exp(log_s)`` around basal.

    ``Vmx`` and ``kp3`` are multiplied by s, and ``kp1`` is shifted by
    ``kp3 * Ib * (s - 1)`` so that the basal steady state is unchanged.
    """
    s = np.exp(np.asarray(log_s, dtype=float))
    batch = params.take(np.zeros(s.size, dtype=int))
    return batch.replace(Vmx=batch.Vmx * s, kp3=batch.kp3 * s, kp1=batch.kp1 + batch.kp3 * batch.Ib * (s - 1.0))


class TwinEstimator:
    """Cubature Kalman filter on the personalized twin (see the module docstring).

    Inputs are given as they happen: :meth:`set_basal` (U/h, held until
    changed), :meth:`add_bolus` (U, into the subcutaneous depot now),
    :meth:`add_carbs` (g announced now, eaten at 5 g/min). :meth:`update`
    takes a CGM reading (or None: predict only).
    """

    def __init__(self, twin: Twin, start: datetime, settings: EstimatorSettings | None = None,
                 glucose_mg_dl: float | None = None) -> None:
        self.twin = twin
        self.settings = settings or EstimatorSettings()
        self.time = start
        self.x = twin.x_basal.copy()
        self.meal = MealState.initial(self.x[None, :])
        self.basal_u_per_h = twin.profile.daily_basal_u / 24.0
        self._weight_scale = REFERENCE_WEIGHT_KG / float(twin.params.BW[0])
        self._pending_carbs_g = 0.0
        self.rejections_in_row = 0
        self.readings_accepted = 0
        self.z = np.array([self.x[State.G_P], self.x[State.G_T], self.x[State.G_SC], 0.0, 0.0, 0.0, 0.0])
        vg = float(twin.params.Vg[0])
        g_sd = 40.0 * vg  # glucose unknown before the first reading: wide
        self.P = np.diag([g_sd**2, (2 * g_sd) ** 2, g_sd**2, 0.5**2, 0.2**2, self.settings.log_sensitivity_prior_sd**2,
                          self.settings.cgm_error_sd_mg_dl**2])
        if glucose_mg_dl is not None:
            self._set_glucose(glucose_mg_dl)

    # --- inputs --------------------------------------------------------------------------
    def set_basal(self, basal_u_per_h: float) -> None:
        if not (math.isfinite(basal_u_per_h) and basal_u_per_h >= 0):
            raise ValueError(f"basal_u_per_h must be >= 0, got {basal_u_per_h}")
        self.basal_u_per_h = float(basal_u_per_h)

    def add_bolus(self, bolus_u: float) -> None:
        if not (math.isfinite(bolus_u) and bolus_u >= 0):
            raise ValueError(f"bolus_u must be >= 0, got {bolus_u}")
        self.x[State.I_SC1] += bolus_u * PMOL_PER_U / float(self.twin.params.BW[0])

    def add_carbs(self, carbs_g: float) -> None:
        if not (math.isfinite(carbs_g) and carbs_g >= 0):
            raise ValueError(f"carbs_g must be >= 0, got {carbs_g}")
        self._pending_carbs_g += float(carbs_g)

    # --- filter ------------------------------------------------------------------------
    @property
    def vg(self) -> float:
        return float(self.twin.params.Vg[0])

    @property
    def glucose_mg_dl(self) -> float:
        return float(self.z[_GSC] / self.vg)

    @property
    def glucose_sd_mg_dl(self) -> float:
        return float(math.sqrt(max(self.P[_GSC, _GSC], 0.0)) / self.vg)

    @property
    def disturbance_mg_per_kg_min(self) -> float:
        """Current unexplained appearance d_meal + d_bias."""
        return float(self.z[_D] + self.z[_B])

    @property
    def sensitivity_factor(self) -> float:
        return float(math.exp(self.z[_LS]))

    @property
    def pending_carbs_g(self) -> float:
        """Carbohydrate announced since the last update, not yet in the twin's gut."""
        return self._pending_carbs_g

    def sigma_points(self) -> np.ndarray:
        """The cubature points (2n, n) of z: what forecasts run to carry the estimate's uncertainty."""
        return self._sigma_points()

    def _sigma_points(self) -> np.ndarray:
        try:
            root = np.linalg.cholesky(self.P)
        except np.linalg.LinAlgError:
            w, v = np.linalg.eigh(0.5 * (self.P + self.P.T))
            root = v @ np.diag(np.sqrt(np.maximum(w, 1e-12)))
        offsets = math.sqrt(_N) * np.concatenate([root.T, -root.T])
        return self.z[None, :] + offsets  # (2n, n)

    def _propagate(self, x0: np.ndarray, zs: np.ndarray, minutes: float, insulin_u_per_min: float,
                   carbs_g: float, meal: MealState) -> tuple[np.ndarray, MealState]:
        """Run rows of ``zs`` from full state ``x0`` for ``minutes``; returns final states (M, 13)."""
        m = zs.shape[0]
        steps = max(1, math.ceil(minutes / self.settings.max_step_min - 1e-9))
        dt = minutes / steps
        x = np.repeat(x0[None, :], m, axis=0)
        x[:, State.G_P], x[:, State.G_T], x[:, State.G_SC] = zs[:, _GP], zs[:, _GT], zs[:, _GSC]
        x[:, _GLUCOSE_STATES] = np.maximum(x[:, _GLUCOSE_STATES], 1e-3)
        decay = np.exp(-dt * (np.arange(steps) + 0.5) / self.settings.disturbance_tau_min)
        carbs = np.zeros((m, steps))
        carbs[:, 0] = carbs_g
        traj = simulate(sensitivity_params(self.twin.params, zs[:, _LS]), x, carbs, insulin_u_per_min,
                        meal=meal.take(np.zeros(m, dtype=int)), dt_min=dt,
                        disturbance_mg_per_kg_per_min=zs[:, _D:_D + 1] * decay[None, :] + zs[:, _B:_B + 1])
        return traj.final_state, traj.meal.take(0)

    def predict(self, to_time: datetime) -> None:
        """Advance the twin to ``to_time`` with the current inputs (no-op if not later)."""
        minutes = (to_time - self.time).total_seconds() / 60.0
        if minutes <= 0:
            return
        s = self.settings
        sigma = self._sigma_points()
        states, meal = self._propagate(self.x, sigma, minutes, self.basal_u_per_h / MIN_PER_H,
                                       self._pending_carbs_g, self.meal)
        prop = sigma.copy()
        prop[:, _GP], prop[:, _GT], prop[:, _GSC] = states[:, State.G_P], states[:, State.G_T], states[:, State.G_SC]
        prop[:, _D] *= math.exp(-minutes / s.disturbance_tau_min)
        error_decay = math.exp(-minutes / s.cgm_error_tau_min)
        prop[:, _E] *= error_decay
        self.z = prop.mean(axis=0)
        dev = prop - self.z
        q = np.zeros(_N)
        q[_GP] = s.glucose_process_sd**2 * minutes
        q[_GSC] = 0.25 * s.glucose_process_sd**2 * minutes
        q[_D] = (s.disturbance_rw_sd * self._weight_scale) ** 2 * minutes
        q[_B] = s.bias_rw_sd**2 * minutes
        q[_LS] = s.log_sensitivity_rw_sd**2 * minutes
        q[_E] = s.cgm_error_sd_mg_dl**2 * (1.0 - error_decay**2)
        self.P = dev.T @ dev / prop.shape[0] + np.diag(q)
        self.P = 0.5 * (self.P + self.P.T)
        self.x = states.mean(axis=0)
        self.meal = meal
        self._pending_carbs_g = 0.0
        self.time = to_time
        self._clip()

    def _clip(self) -> None:
        s = self.settings
        self.z[[_D, _B]] = np.clip(self.z[[_D, _B]], -s.disturbance_limit, s.disturbance_limit)
        self.z[_LS] = float(np.clip(self.z[_LS], -s.log_sensitivity_limit, s.log_sensitivity_limit))
        self.z[[_GP, _GT, _GSC]] = np.maximum(self.z[[_GP, _GT, _GSC]], 1e-3)
        self.x[State.G_P], self.x[State.G_T], self.x[State.G_SC] = self.z[_GP], self.z[_GT], self.z[_GSC]

    def _set_glucose(self, glucose_mg_dl: float) -> None:
        """Initialize glucose states at a reading, keeping the basal G_T / G_P ratio."""
        ratio = self.x[State.G_T] / self.x[State.G_P]
        gp = glucose_mg_dl * self.vg
        self.z[_GP], self.z[_GT], self.z[_GSC], self.z[_E] = gp, gp * ratio, gp, 0.0
        sd = self.settings.cgm_error_sd_mg_dl * self.vg
        self.P[[_GP, _GT, _GSC], :] = 0.0
        self.P[:, [_GP, _GT, _GSC]] = 0.0
        self.P[_GP, _GP], self.P[_GT, _GT], self.P[_GSC, _GSC] = sd**2, (2 * sd * ratio) ** 2, sd**2
        self.P[_GP, _GSC] = self.P[_GSC, _GP] = 0.9 * sd * sd
        self._clip()

    def _measurement_row(self) -> np.ndarray:
        """H: CGM (mg/dL) = G_SC / Vg + e_cgm."""
        h = np.zeros(_N)
        h[_GSC] = 1.0 / self.vg
        h[_E] = 1.0
        return h

    def update(self, time: datetime, glucose_mg_dl: float | None) -> UpdateOutcome:
        """Predict to ``time`` and, with a reading, correct the twin; never raises on bad data."""
        if time < self.time:
            return UpdateOutcome(time, glucose_mg_dl, False, "out of order: reading is older than the twin's time")
        self.predict(time)
        if glucose_mg_dl is None:
            return UpdateOutcome(time, None, False, "no reading: predicted only")
        if not (isinstance(glucose_mg_dl, (int, float)) and math.isfinite(glucose_mg_dl) and glucose_mg_dl > 0):
            return UpdateOutcome(time, None, False, f"implausible glucose value {glucose_mg_dl!r}")
        if self.readings_accepted == 0:
            self._set_glucose(float(glucose_mg_dl))
            self.readings_accepted = 1
            return UpdateOutcome(time, glucose_mg_dl, True, "first reading: twin initialized at it")
        s = self.settings
        r = s.cgm_noise_sd_mg_dl**2
        h = self._measurement_row()
        innovation = float(glucose_mg_dl - h @ self.z)
        ph = self.P @ h
        var = float(h @ ph + r)
        distance = abs(innovation) / math.sqrt(var)
        reason = "accepted"
        if distance > s.gate_sigma:
            if self.rejections_in_row < s.max_consecutive_rejections:
                self.rejections_in_row += 1
                return UpdateOutcome(time, glucose_mg_dl, False,
                                     f"outlier: innovation {innovation:+.0f} mg/dL is {distance:.1f} sigma",
                                     innovation, distance)
            # persistent disagreement: the glucose really moved; trust the sensor again
            for i in (_GP, _GT, _GSC):
                self.P[i, i] += (innovation * self.vg) ** 2
            ph = self.P @ h
            var = float(h @ ph + r)
            reason = f"accepted after {self.rejections_in_row} rejections; covariance inflated"
        self.rejections_in_row = 0
        gain = ph / var
        self.z = self.z + gain * innovation
        joseph = np.eye(_N) - np.outer(gain, h)
        self.P = joseph @ self.P @ joseph.T + r * np.outer(gain, gain)
        self.P = 0.5 * (self.P + self.P.T)
        self.readings_accepted += 1
        self._clip()
        return UpdateOutcome(time, glucose_mg_dl, True, reason, innovation, distance)

    # --- forecasts ------------------------------------------------------------------------
    def forecast(self, horizon_min: float = 180.0, step_min: float = 5.0,
                 basal_u_per_h: float | None = None, band_z: float = 1.96) -> Forecast:
        """Forecast glucose to ``horizon_min`` holding ``basal_u_per_h`` (default: the current rate).

        The band is ``band_z`` standard deviations of the cubature spread (which
        includes the uncertainty of glucose now) and an error growing linearly with the horizon
        (``band_growth_mg_dl_per_min``: what the disturbance can do that the
        current estimate does not show).
        """
        s = self.settings
        steps = max(1, int(round(horizon_min / step_min)))
        rate = (self.basal_u_per_h if basal_u_per_h is None else basal_u_per_h) / MIN_PER_H
        sigma = self._sigma_points()
        base_z = np.repeat(self.z[None, :], 4, axis=0)
        base_z[:3, _D] = 0.0  # baseline, insulin, carb rows: no disturbance
        base_z[:3, _B] = 0.0
        zs = np.concatenate([base_z, sigma])
        m = zs.shape[0]
        x = np.repeat(self.x[None, :], m, axis=0)
        x[:, State.G_P], x[:, State.G_T], x[:, State.G_SC] = zs[:, _GP], zs[:, _GT], zs[:, _GSC]
        x[:, _GLUCOSE_STATES] = np.maximum(x[:, _GLUCOSE_STATES], 1e-3)
        insulin_states = [State.I_P, State.X, State.I1, State.I_D, State.I_L, State.I_SC1, State.I_SC2]
        basal_x = self.twin.x_basal
        x[0, insulin_states] = basal_x[insulin_states]  # baseline: insulin at basal steady state
        gut = [State.Q_STO1, State.Q_STO2, State.Q_GUT]
        x[0:2, gut] = 0.0  # baseline and insulin rows: no carbohydrate on board
        meal = self.meal.take(np.zeros(m, dtype=int))
        planned = meal.planned_g.copy()
        planned[0:2] = 0.0
        meal = replace(meal, planned_g=planned)
        insulin = np.full((m, steps), rate)
        insulin[0] = float(self.twin.params.u2ss[0] * self.twin.params.BW[0] / PMOL_PER_U)
        carbs = np.zeros((m, steps))
        carbs[2:, 0] = self._pending_carbs_g
        decay = np.exp(-step_min * (np.arange(steps) + 0.5) / s.disturbance_tau_min)
        traj = simulate(sensitivity_params(self.twin.params, zs[:, _LS]), x, carbs, insulin, meal=meal,
                        dt_min=step_min, exact_insulin=True,
                        disturbance_mg_per_kg_per_min=zs[:, _D:_D + 1] * decay[None, :] + zs[:, _B:_B + 1])
        g = traj.glucose_mg_dl
        baseline, with_insulin, with_carbs, full = g[0], g[1], g[2], g[3]
        spread = g[4:]
        h = np.arange(steps + 1) * step_min
        var = spread.var(axis=0) + (s.band_growth_mg_dl_per_min * h) ** 2
        half = band_z * np.sqrt(var)
        return Forecast(
            issued_at=self.time,
            horizons_min=h,
            glucose_mg_dl=full,
            lower_mg_dl=np.maximum(full - half, 0.0),
            upper_mg_dl=full + half,
            baseline_mg_dl=baseline,
            insulin_effect_mg_dl=with_insulin - baseline,
            carb_effect_mg_dl=with_carbs - with_insulin,
            disturbance_effect_mg_dl=full - with_carbs,
        )

    def plan_glucose(self, insulin_u_per_min: np.ndarray, step_min: float,
                     sensitivity_scale: float | np.ndarray = 1.0, new_carbs_scale: float = 1.0,
                     extra_carbs_g: float | np.ndarray = 0.0) -> np.ndarray:
        """Glucose (M, T+1) from the current mean state under M insulin plans (M, T) U/min.

        Announced carbohydrates and the disturbance estimate are included, as in
        the forecast's ``glucose_mg_dl``; this is what a controller compares plans with.
        ``sensitivity_scale`` (scalar or one per plan) multiplies the estimated insulin
        sensitivity: a scenario of a person more (> 1) or less sensitive than the twin
        believes, for plans that must be safe if the estimate is wrong. ``new_carbs_scale``
        scales the carbohydrates announced since the last update (not those already eaten):
        a scenario of a meal smaller than announced, or a carb ratio that over-doses.
        ``extra_carbs_g`` (scalar or one per plan, g) are hypothetical carbohydrates eaten
        now on top of everything the twin knows (queued at the first step, eaten at 5 g/min
        and absorbed by the twin's own gut model, like any meal): what a rescue snack would
        do (:mod:`controller.advice`). 0 (the default) changes nothing.
        """
        plans = np.atleast_2d(np.asarray(insulin_u_per_min, dtype=float))
        m, steps = plans.shape
        x = np.repeat(self.x[None, :], m, axis=0)
        zs = np.repeat(self.z[None, :], m, axis=0)
        scale = np.broadcast_to(np.asarray(sensitivity_scale, dtype=float), (m,))
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise ValueError("sensitivity_scale must be positive and finite")
        zs[:, _LS] = zs[:, _LS] + np.log(scale)
        carbs = np.zeros((m, steps))
        if not (math.isfinite(new_carbs_scale) and new_carbs_scale >= 0):
            raise ValueError("new_carbs_scale must be finite and >= 0")
        carbs[:, 0] = self._pending_carbs_g * new_carbs_scale
        extra = np.broadcast_to(np.asarray(extra_carbs_g, dtype=float), (m,))
        if not np.all(np.isfinite(extra) & (extra >= 0)):
            raise ValueError("extra_carbs_g must be finite and >= 0")
        carbs[:, 0] += extra
        meal = self.meal.take(np.zeros(m, dtype=int))
        if new_carbs_scale != 1.0:  # announced, not eaten yet
            meal = replace(meal, planned_g=meal.planned_g * new_carbs_scale)
        decay = np.exp(-step_min * (np.arange(steps) + 0.5) / self.settings.disturbance_tau_min)
        traj = simulate(sensitivity_params(self.twin.params, zs[:, _LS]), x, carbs, plans,
                        meal=meal, dt_min=step_min, exact_insulin=True,
                        disturbance_mg_per_kg_per_min=zs[:, _D:_D + 1] * decay[None, :] + zs[:, _B:_B + 1])
        return traj.glucose_mg_dl

    def snapshot(self) -> dict[str, Any]:
        """Serializable estimator state (for journals and decision records)."""
        return {
            "time": self.time.isoformat(),
            "z": dict(zip(Z_NAMES, self.z.tolist())),
            "P": self.P.tolist(),
            "x": self.x.tolist(),
            "basal_u_per_h": self.basal_u_per_h,
            "glucose_mg_dl": self.glucose_mg_dl,
            "sensitivity_factor": self.sensitivity_factor,
            "cgm_error_mg_dl": float(self.z[_E]),
        }
