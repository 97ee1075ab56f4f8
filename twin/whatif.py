"""What-if on the live twin: glucose with and without an action, from the estimator's current state.

An action is something the person (or the pump) might do in the next hours:

- :class:`Meal`: ``carbs_g`` eaten at ``at_min`` minutes from now, absorbed
  ``fast``, ``medium`` or ``slow``; :data:`ABSORPTION_SCALE` multiplies the
  twin's gastric emptying and absorption rates (``kmax``, ``kmin``,
  ``kabs``). The scales are stated assumptions (a fast carbohydrate empties
  and absorbs about 1.6 times as fast as a mixed meal, a slow, fatty one at 0.6),
  not fitted to anyone. The twin has one gut, so a branch's scale applies to
  all carbohydrate in it, also a meal already on board: the carb-weighted
  scale of the branch's meals.
- :class:`Bolus`: ``units_u`` at ``at_min``.
- :class:`TempBasal`: ``rate_u_per_h`` from ``at_min`` for ``duration_min``
  (0 U/h: a suspension), instead of the programmed basal.
- Exercise is refused (:class:`NotModelled`): the UVA/Padova 2008 model the twin
  and simglucose share has no exercise term (no insulin-independent uptake
  that rises with activity, no heart-rate input), so any answer would be
  invented. Dalla Man's 2009 exercise extension would carry it; it is not
  implemented here.

The open-loop answer (:func:`open_loop`) runs the twin from its current state
(glucose, insulin and carbs on board, the estimated disturbance and
sensitivity, with the estimator's cubature points for the band) with and
without the actions, under the rate the last cycle set until the next cycle
and the programmed basal after it. What the loop itself would
do in answer, the closed loop, is :mod:`controller.whatif`, which builds on
:func:`ensemble` here.

Pure: no clock, no I/O. Times are minutes from the estimator's time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from statistics import NormalDist
from typing import Any, Sequence, Union

import numpy as np

from twin.estimator import MIN_PER_H, TwinEstimator, sensitivity_params
from twin.model import State, simulate

ABSORPTION_SCALE: dict[str, float] = {"fast": 1.6, "medium": 1.0, "slow": 0.6}
MAX_HORIZON_MIN = 720.0
LOW_MG_DL = 70.0
HIGH_MG_DL = 180.0


class NotModelled(ValueError):
    """An action the twin's model cannot carry (the message says why)."""


@dataclass(frozen=True)
class Meal:
    carbs_g: float
    at_min: float = 0.0
    absorption: str = "medium"
    announced: bool = True  # told to the loop (HCL): the loop's meal bolus answers it in the closed loop

    def __post_init__(self) -> None:
        _check("carbs_g", self.carbs_g, 0.0, 300.0)
        _check("at_min", self.at_min, 0.0, MAX_HORIZON_MIN)
        if self.absorption not in ABSORPTION_SCALE:
            raise ValueError(f"absorption must be one of {sorted(ABSORPTION_SCALE)}, got {self.absorption!r}")

    def describe(self) -> str:
        return f"eat {self.carbs_g:g} g ({self.absorption}){_when(self.at_min)}"


@dataclass(frozen=True)
class Bolus:
    units_u: float
    at_min: float = 0.0

    def __post_init__(self) -> None:
        _check("units_u", self.units_u, 0.0, 30.0)
        _check("at_min", self.at_min, 0.0, MAX_HORIZON_MIN)

    def describe(self) -> str:
        return f"bolus {self.units_u:g} U{_when(self.at_min)}"


@dataclass(frozen=True)
class TempBasal:
    rate_u_per_h: float
    duration_min: float
    at_min: float = 0.0

    def __post_init__(self) -> None:
        _check("rate_u_per_h", self.rate_u_per_h, 0.0, 10.0)
        _check("duration_min", self.duration_min, 1.0, MAX_HORIZON_MIN)
        _check("at_min", self.at_min, 0.0, MAX_HORIZON_MIN)

    def describe(self) -> str:
        what = "suspend" if self.rate_u_per_h == 0 else f"temp basal {self.rate_u_per_h:g} U/h"
        return f"{what} for {self.duration_min:g} min{_when(self.at_min)}"


@dataclass(frozen=True)
class Exercise:
    intensity: str
    duration_min: float
    at_min: float = 0.0

    def __post_init__(self) -> None:
        raise NotModelled("exercise is not in the twin's model (UVA/Padova 2008 has no exercise term), "
                          "so the twin cannot say what it does; see twin.whatif")


Action = Union[Meal, Bolus, TempBasal]


def _check(name: str, value: float, low: float, high: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be within {low:g}..{high:g}, got {value!r}")


def _when(at_min: float) -> str:
    return " now" if at_min == 0 else f" in {at_min:g} min"


def describe(actions: Sequence[Action]) -> str:
    return "; ".join(a.describe() for a in actions) if actions else "nothing"


@dataclass(frozen=True)
class Inputs:
    """One branch's inputs on the step grid: insulin U/min held over each step, carbs g at each step."""

    insulin_u_per_min: np.ndarray
    carbs_g: np.ndarray
    absorption_scale: float


def branch_inputs(actions: Sequence[Action], basal_u_per_h: np.ndarray, step_min: float) -> Inputs:
    """The inputs of a branch: ``basal_u_per_h`` (per step, the programmed basal) with ``actions`` on top."""
    insulin = np.asarray(basal_u_per_h, dtype=float) / MIN_PER_H
    insulin = insulin.copy()
    steps = insulin.size
    carbs = np.zeros(steps)
    meal_g, meal_scaled = 0.0, 0.0
    for a in actions:
        k = int(a.at_min // step_min)
        if k >= steps:
            continue
        if isinstance(a, TempBasal):
            k1 = min(steps, int(math.ceil((a.at_min + a.duration_min) / step_min - 1e-9)))
            insulin[k:k1] = a.rate_u_per_h / MIN_PER_H
    for a in actions:  # boluses after temp basals: a suspension does not cancel a bolus
        k = int(a.at_min // step_min)
        if k >= steps:
            continue
        if isinstance(a, Bolus):
            insulin[k] += a.units_u / step_min
        elif isinstance(a, Meal):
            carbs[k] += a.carbs_g
            meal_g += a.carbs_g
            meal_scaled += a.carbs_g * ABSORPTION_SCALE[a.absorption]
    return Inputs(insulin, carbs, meal_scaled / meal_g if meal_g > 0 else 1.0)


def programmed_basal(est: TwinEstimator, steps: int, step_min: float) -> np.ndarray:
    """The profile's basal (U/h) over each step from the estimator's time (its time-of-day schedule)."""
    profile = est.twin.profile
    out = np.empty(steps)
    for k in range(steps):
        t = est.time + timedelta(minutes=k * step_min)
        out[k] = profile.basal_u_per_h_at(t)
    return out


def ensemble(est: TwinEstimator, branches: Sequence[Inputs], step_min: float,
             spread: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Mean glucose (B, T+1) and its SD (B, T+1) of B branches from the estimator's state.

    Each branch is run from the mean state and (``spread``) from the
    estimator's cubature points (glucose, disturbance, sensitivity, sensor
    error uncertain), in one batch; the SD adds the estimator's band growth
    with the horizon, as its own forecast does (without ``spread`` only the
    growth). Carbohydrate announced and not yet eaten is included.
    """
    zs = np.concatenate([est.z[None, :], est.sigma_points()]) if spread else est.z[None, :]
    rows = zs.shape[0]
    b = len(branches)
    steps = branches[0].insulin_u_per_min.size
    z = np.tile(zs, (b, 1))
    x = np.repeat(est.x[None, :], rows * b, axis=0)
    gp, gt, gsc, d, bias, ls = range(6)
    x[:, State.G_P], x[:, State.G_T], x[:, State.G_SC] = z[:, gp], z[:, gt], z[:, gsc]
    x[:, [State.G_P, State.G_T, State.G_SC]] = np.maximum(x[:, [State.G_P, State.G_T, State.G_SC]], 1e-3)
    insulin = np.repeat(np.stack([br.insulin_u_per_min for br in branches]), rows, axis=0)
    carbs = np.repeat(np.stack([br.carbs_g for br in branches]), rows, axis=0)
    carbs[:, 0] += est.pending_carbs_g
    scale = np.repeat([br.absorption_scale for br in branches], rows)
    params = sensitivity_params(est.twin.params, z[:, ls])
    params = params.replace(kmax=params.kmax * scale, kmin=params.kmin * scale, kabs=params.kabs * scale)
    decay = np.exp(-step_min * (np.arange(steps) + 0.5) / est.settings.disturbance_tau_min)
    traj = simulate(params, x, carbs, insulin, meal=est.meal.take(np.zeros(rows * b, dtype=int)), dt_min=step_min,
                    exact_insulin=True, disturbance_mg_per_kg_per_min=z[:, d:d + 1] * decay[None, :] + z[:, bias:bias + 1])
    g = traj.glucose_mg_dl.reshape(b, rows, steps + 1)
    h = np.arange(steps + 1) * step_min
    var = g[:, 1:].var(axis=1) if spread else 0.0
    sd = np.sqrt(var + (est.settings.band_growth_mg_dl_per_min * h) ** 2)
    return g[:, 0], sd


@dataclass(frozen=True)
class Branch:
    """One branch's forecast over ``horizons_min`` and the insulin it assumed."""

    label: str
    horizons_min: np.ndarray
    glucose_mg_dl: np.ndarray
    lower_mg_dl: np.ndarray
    upper_mg_dl: np.ndarray
    insulin_u_per_min: np.ndarray = field(repr=False)

    def minutes_below(self, mg_dl: float = LOW_MG_DL) -> float:
        return _minutes(self.horizons_min, self.glucose_mg_dl < mg_dl)

    def minutes_above(self, mg_dl: float = HIGH_MG_DL) -> float:
        return _minutes(self.horizons_min, self.glucose_mg_dl > mg_dl)

    @property
    def insulin_u(self) -> float:
        step = float(self.horizons_min[1] - self.horizons_min[0])
        return float(self.insulin_u_per_min.sum() * step)

    def at(self, minute: float) -> float:
        return float(np.interp(minute, self.horizons_min, self.glucose_mg_dl))

    def summary(self) -> dict[str, Any]:
        return {"label": self.label, "min_mg_dl": round(float(self.glucose_mg_dl.min()), 1),
                "max_mg_dl": round(float(self.glucose_mg_dl.max()), 1),
                "minutes_below_70": self.minutes_below(), "minutes_above_180": self.minutes_above(),
                "insulin_u": round(self.insulin_u, 3)}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "horizons_min": self.horizons_min.tolist(),
                "glucose_mg_dl": np.round(self.glucose_mg_dl, 2).tolist(),
                "lower_mg_dl": np.round(self.lower_mg_dl, 2).tolist(),
                "upper_mg_dl": np.round(self.upper_mg_dl, 2).tolist()}


def _minutes(h: np.ndarray, mask: np.ndarray) -> float:
    """Minutes of the horizon where ``mask`` holds (each grid point stands for its step after it)."""
    step = float(h[1] - h[0]) if h.size > 1 else 0.0
    return float(mask[1:].sum() * step)


def band(glucose: np.ndarray, sd: np.ndarray, coverage: float) -> tuple[np.ndarray, np.ndarray]:
    z = NormalDist().inv_cdf(0.5 + coverage / 2.0)
    return np.maximum(glucose - z * sd, 0.0), glucose + z * sd


def open_loop(est: TwinEstimator, actions: Sequence[Action], horizon_min: float = 360.0, step_min: float = 5.0,
              coverage: float = 0.8) -> tuple[Branch, Branch]:
    """(without, with) ``actions`` on the programmed basal: the twin's open-loop answer (module docstring)."""
    _check("horizon_min", horizon_min, step_min, MAX_HORIZON_MIN)
    steps = int(round(horizon_min / step_min))
    inputs = open_loop_inputs(est, actions, steps, step_min)
    mean, sd = ensemble(est, inputs, step_min)
    w, a = branches_of(inputs, mean, sd, step_min, coverage)
    return w, a


def open_loop_inputs(est: TwinEstimator, actions: Sequence[Action], steps: int, step_min: float) -> list[Inputs]:
    """Without and with ``actions``: the rate running now for the first step (the last cycle's), then the
    programmed basal."""
    basal = running_basal(est, steps, step_min)
    return [branch_inputs((), basal, step_min), branch_inputs(actions, basal, step_min)]


def running_basal(est: TwinEstimator, steps: int, step_min: float) -> np.ndarray:
    """The programmed basal per step, except the first: the rate the last cycle set runs until the next."""
    basal = programmed_basal(est, steps, step_min)
    basal[0] = est.basal_u_per_h
    return basal


def branches_of(inputs: Sequence[Inputs], mean: np.ndarray, sd: np.ndarray, step_min: float, coverage: float,
                labels: Sequence[str] = ("without", "with")) -> list[Branch]:
    h = np.arange(mean.shape[1]) * step_min
    out = []
    for i, label in enumerate(labels):
        lo, hi = band(mean[i], sd[i], coverage)
        out.append(Branch(label, h, mean[i], lo, hi, inputs[i].insulin_u_per_min))
    return out
