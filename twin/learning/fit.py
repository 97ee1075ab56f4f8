"""Fit the twin to a person's history: a MAP estimate with its uncertainty.

What is fitted
--------------
The twin personalized from the clinical profile (:mod:`twin.personalize`) is
the prior mean. The learner fits multipliers of it, each a log factor with a
Gaussian prior of mean 0 (:data:`PARAMETERS`):

- ``sensitivity``: insulin action (``Vmx``, ``kp3``), and its deviations in
  four blocks of the day (00-06, 06-12, 12-18, 18-24 h, local time of the
  history) with a tighter prior that shrinks them towards the day's value;
- ``basal_glucose``: the glucose the programmed basal holds (the basal need:
  a person whose basal is too low settles higher);
- ``carb_effect``: the glucose appearance per recorded gram (``f``): the
  person's carb-count bias and the fraction absorbed, which CGM cannot tell apart;
- ``absorption_speed``: gastric emptying and absorption (``kmax``, ``kmin``, ``kabs``);
- ``insulin_speed``: subcutaneous insulin absorption (``ka1``, ``ka2``, ``kd``).

Sensor bias and lag are not fitted: without reference blood glucose they
cannot be told apart from the basal glucose and from the model's own
subcutaneous delay (``ksc``), so they keep the prior (no bias, the group's ``ksc``).

How
---
The history is cut into 6-hour segments aligned to the blocks of the day.
The twin is simulated through the whole history with the recorded insulin
and carbs (5-minute steps, insulin advanced exactly), so insulin and gut
states carry over; at the start of each segment its glucose states are put
at the CGM reading (the anchor), so each segment scores the model's 6-hour
open-loop forecast. Residuals are (model − CGM) / sigma at every reading,
plus the prior's ``theta / prior_sd`` rows; ``scipy.optimize.least_squares``
(trust region reflective, soft-L1 loss so that unrecorded events do not drag
the fit) finds the MAP, with a Jacobian by forward differences evaluated as
one batch of the vectorized model.

Uncertainty: the Gauss-Newton posterior covariance at the MAP, with the data
term's weight corrected for the residuals' measured spread and lag-1
autocorrelation (5-minute residuals are far from independent: the effective
number of readings is ``n (1 - rho) / (1 + rho)``); the fit is repeated once
with that weight. A parameter is *learned* when its posterior SD is under
half its prior SD, *partly learned* under 0.8, otherwise the data could not
tell and it stays near the prior.

Without insulin records only ``basal_glucose`` is fitted, on the night
blocks (00-06 h), where meals and boluses are rarest; without carb records
the carb parameters keep the prior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from twin.learning.history import History
from twin.model import simulate
from twin.model_params import ModelParams
from twin.model_state import State
from twin.personalize import (
    PopulationPrior,
    Twin,
    age_group,
    consistent_parameters,
    insulin_drop_mg_dl,
    personalize,
    steady_state,
)

SEGMENT_MIN = 360.0
BLOCKS = 4
CENSORED_BELOW_MG_DL = 40.0
CENSORED_ABOVE_MG_DL = 400.0
"""CGM at or beyond the sensor's limits says only "at least this low / high": neither scored nor an anchor."""
SIGMA_MG_DL = 15.0
"""Assumed spread of a 6-h forecast's error before the fit measures its own."""
FD_STEP = 1e-3


@dataclass(frozen=True)
class Parameter:
    name: str
    prior_sd: float
    meaning: str
    needs: str  # "insulin", "carbs" or "insulin+carbs": what records it needs to be identifiable


PARAMETERS: tuple[Parameter, ...] = (
    Parameter("sensitivity", 0.5, "log multiplier of insulin action (Vmx, kp3) over the profile's twin", "insulin"),
    Parameter("sensitivity_00_06", 0.15, "log deviation of insulin action 00-06 h from the day's", "insulin"),
    Parameter("sensitivity_06_12", 0.15, "log deviation of insulin action 06-12 h from the day's", "insulin"),
    Parameter("sensitivity_12_18", 0.15, "log deviation of insulin action 12-18 h from the day's", "insulin"),
    Parameter("sensitivity_18_24", 0.15, "log deviation of insulin action 18-24 h from the day's", "insulin"),
    Parameter("basal_glucose", 0.25, "log multiplier of the glucose the programmed basal holds", ""),
    Parameter("carb_effect", 0.3, "log multiplier of glucose appearance per recorded gram (f)", "carbs"),
    Parameter("absorption_speed", 0.4, "log multiplier of gastric emptying and absorption (kmax, kmin, kabs)",
              "carbs"),
    Parameter("insulin_speed", 0.3, "log multiplier of subcutaneous insulin absorption (ka1, ka2, kd)", "insulin"),
)
NAMES = tuple(p.name for p in PARAMETERS)
PRIOR_SD = np.array([p.prior_sd for p in PARAMETERS])
_SENS, _BLOCK0, _GB, _CARB, _ABS, _INS = 0, 1, 5, 6, 7, 8


@dataclass(frozen=True)
class TwinBase:
    """What the learner starts from: the profile's twin and the group prior it came from."""

    twin: Twin
    base_params: dict[str, float]
    basal_u_per_h: float
    basal_glucose_mg_dl: float
    basal_egp: float

    @classmethod
    def from_profile(cls, profile, prior: PopulationPrior) -> "TwinBase":
        twin = personalize(profile, prior)
        g = prior.groups[age_group(profile.age_years)]
        return cls(twin, dict(g.params), profile.daily_basal_u / 24.0, g.basal_glucose_mg_dl, g.basal_egp_mg_per_kg_min)

    def params_for(self, theta: np.ndarray) -> tuple[ModelParams, float]:
        """Parameters (one per block of the day, N=4) and basal glucose of one parameter vector."""
        base = dict(self.base_params)
        base["f"] = base["f"] * math.exp(theta[_CARB])
        for k in ("kmax", "kmin", "kabs"):
            base[k] = base[k] * math.exp(theta[_ABS])
        for k in ("ka1", "ka2", "kd"):
            base[k] = base[k] * math.exp(theta[_INS])
        gb = self.basal_glucose_mg_dl * math.exp(theta[_GB])
        scales = self.twin.sensitivity_scale * np.exp(theta[_SENS] + theta[_BLOCK0:_BLOCK0 + BLOCKS])
        params = consistent_parameters(base, self.twin.profile.weight_kg, self.basal_u_per_h, gb, self.basal_egp, scales)
        return params, gb

    def learned_twin(self, theta: np.ndarray) -> Twin:
        """The twin with the day's mean of the fitted parameters (block deviations averaged out)."""
        day = np.array(theta, dtype=float)
        day[_SENS] += float(np.mean(day[_BLOCK0:_BLOCK0 + BLOCKS]))
        day[_BLOCK0:_BLOCK0 + BLOCKS] = 0.0
        params, gb = self.params_for(day)
        one = params.take([0])
        x_basal = steady_state(one, gb, self.basal_egp)[0]
        scale = self.twin.sensitivity_scale * math.exp(day[_SENS])
        drop = float(insulin_drop_mg_dl(one, x_basal[None, :])[0])
        return Twin(self.twin.profile, one, x_basal, gb, scale, drop, self.twin.group)


def segment_starts(history: History) -> np.ndarray:
    """Grid indices where 6-h segments start: 0 and every local 00, 06, 12, 18 h."""
    minute = history.minute_of_day(np.arange(history.steps))
    starts = np.union1d([0], np.flatnonzero(np.isclose(minute % SEGMENT_MIN, 0.0)))
    return starts[starts < history.steps - 1]


def predict(base: TwinBase, history: History, thetas: np.ndarray) -> np.ndarray:
    """Anchored 6-h forecasts (B, steps + 1) of CGM glucose for B parameter vectors (module docstring)."""
    thetas = np.atleast_2d(thetas)
    b = thetas.shape[0]
    per_candidate = [base.params_for(t) for t in thetas]
    blocks = [ModelParams.concatenate([p.take([j]) for p, _ in per_candidate]) for j in range(BLOCKS)]
    x = np.concatenate([steady_state(p.take([0]), gb, base.basal_egp) for p, gb in per_candidate])
    starts = segment_starts(history)
    ends = np.append(starts[1:], history.steps)
    out = np.full((b, history.steps + 1), np.nan)
    insulin = history.insulin_u / history.step_min
    meal = None
    for s, e in zip(starts, ends):
        block = int(history.minute_of_day(s) // SEGMENT_MIN) % BLOCKS
        params = blocks[block]
        anchor = history.cgm_mg_dl[s]
        if np.isfinite(anchor) and CENSORED_BELOW_MG_DL < anchor < CENSORED_ABOVE_MG_DL:
            x = _anchored(x, params, float(anchor))
        traj = simulate(params, x, history.carbs_g[None, s:e], insulin[None, s:e], meal=meal,
                        dt_min=history.step_min, exact_insulin=True)
        out[:, s:e + 1] = traj.glucose_mg_dl
        x, meal = traj.final_state.copy(), traj.meal
    return out


def _anchored(x: np.ndarray, params: ModelParams, glucose_mg_dl: float) -> np.ndarray:
    """States with plasma and subcutaneous glucose at the reading, tissue glucose scaled alike."""
    x = x.copy()
    target = glucose_mg_dl * params.Vg
    ratio = np.where(x[:, State.G_P] > 0, target / np.maximum(x[:, State.G_P], 1e-9), 1.0)
    x[:, State.G_T] *= ratio
    x[:, State.G_P] = target
    x[:, State.G_SC] = target
    return x


@dataclass(frozen=True)
class FitResult:
    theta: np.ndarray          # MAP, log factors (NAMES order)
    sd: np.ndarray             # posterior SD
    free: np.ndarray           # bool: fitted (False: not identifiable from the records, fixed at the prior)
    residual_rmse_mg_dl: float  # 6-h anchored forecasts vs CGM, learned twin
    prior_rmse_mg_dl: float     # the same, profile's twin
    residual_autocorr: float
    readings_used: int
    evaluations: int

    def status(self, i: int) -> str:
        if not self.free[i]:
            return "prior (not identifiable from these records)"
        ratio = self.sd[i] / PRIOR_SD[i]
        return "learned" if ratio < 0.5 else "partly learned" if ratio < 0.8 else "prior (the data could not tell)"


def _free_mask(history: History) -> np.ndarray:
    free = np.ones(len(PARAMETERS), dtype=bool)
    for i, p in enumerate(PARAMETERS):
        if ("insulin" in p.needs and not history.insulin_recorded) or ("carbs" in p.needs and not history.carbs_recorded):
            free[i] = False
    if not history.insulin_recorded:
        free[:] = False
        free[_GB] = True
    return free


def _scored(history: History) -> np.ndarray:
    """Grid points scored: readings that are not a segment's anchor (night blocks only without insulin records)."""
    cgm = history.cgm_mg_dl
    mask = np.isfinite(cgm) & (cgm > CENSORED_BELOW_MG_DL) & (cgm < CENSORED_ABOVE_MG_DL)
    mask[segment_starts(history)] = False
    if not history.insulin_recorded:
        mask &= history.minute_of_day(np.arange(history.steps + 1)) < SEGMENT_MIN
    return mask


def fit(base: TwinBase, history: History, max_evaluations: int = 40) -> FitResult:
    """The MAP fit of :data:`PARAMETERS` to ``history`` (module docstring)."""
    free = _free_mask(history)
    scored = _scored(history)
    cgm = history.cgm_mg_dl[scored]
    if cgm.size < 12:
        raise ValueError(f"history has {cgm.size} usable CGM readings; the fit needs at least 12")
    idx = np.flatnonzero(free)
    evaluations = 0

    def full(z: np.ndarray) -> np.ndarray:
        theta = np.zeros(len(PARAMETERS))
        theta[idx] = z
        return theta

    def residuals(z_batch: np.ndarray, sigma: float) -> np.ndarray:
        nonlocal evaluations
        evaluations += 1
        pred = predict(base, history, np.array([full(z) for z in z_batch]))[:, scored]
        data = (pred - cgm) / sigma
        prior = z_batch / PRIOR_SD[idx]
        return np.concatenate([data, prior], axis=1)

    def fun(z, sigma):
        return residuals(z[None, :], sigma)[0]

    def jac(z, sigma):
        batch = np.vstack([z, z + FD_STEP * np.eye(len(z))])
        r = residuals(batch, sigma)
        return ((r[1:] - r[0]) / FD_STEP).T

    sigma = SIGMA_MG_DL
    z = np.zeros(len(idx))
    prior_rmse = float(np.sqrt(np.mean((predict(base, history, np.zeros((1, len(PARAMETERS))))[0, scored] - cgm) ** 2)))
    for _ in range(2):
        sol = least_squares(fun, z, jac=jac, args=(sigma,), loss="soft_l1", f_scale=2.0, method="trf",
                            max_nfev=max_evaluations, x_scale=PRIOR_SD[idx])
        z = sol.x
        error = residuals(z[None, :], 1.0)[0, :cgm.size]
        rho = _lag1(error, scored)
        inflation = (1.0 + rho) / max(1.0 - rho, 1e-3)
        spread = float(np.sqrt(np.mean(np.minimum(error ** 2, (4 * SIGMA_MG_DL) ** 2))))
        new_sigma = max(spread, 1.0) * math.sqrt(inflation)
        done = abs(new_sigma - sigma) / sigma < 0.2
        sigma = new_sigma
        if done:
            break
    j = jac(z, sigma)
    cov = np.linalg.inv(j.T @ j)
    sd = np.array(PRIOR_SD, dtype=float)
    sd[idx] = np.sqrt(np.diag(cov))
    rmse = float(np.sqrt(np.mean(error ** 2)))
    return FitResult(full(z), sd, free, rmse, prior_rmse, rho, int(cgm.size), evaluations)


def _lag1(error: np.ndarray, scored: np.ndarray) -> float:
    """Lag-1 autocorrelation of the residuals between consecutive scored grid points."""
    pos = np.flatnonzero(scored)
    pairs = np.flatnonzero(np.diff(pos) == 1)
    if pairs.size < 3:
        return 0.0
    a, b = error[pairs], error[pairs + 1]
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(np.clip((a @ b) / denom, 0.0, 0.99)) if denom > 0 else 0.0
