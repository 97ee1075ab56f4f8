"""From a clinical profile to the twin's model parameters.

A person's UVA/Padova parameters are unknown; what is known is the clinical
profile (weight, daily insulin, carb ratio, correction factor, age, basal).
The twin starts from a population prior (typical parameters of the person's
age group, from a cohort that does not include the person) and personalizes
it in two ways:

1. **Basal equilibrium.** The programmed basal is taken to hold glucose at
   the group's typical basal glucose: the steady-state insulin (``Ib``), the
   basal glucose uptake (``Vm0``) and production (``kp1``) are re-derived so
   that the model sits exactly at steady state under the programmed basal.
2. **Insulin sensitivity.** The prior's regression predicts, from the
   correction factor and total daily insulin, how far 1 U lowers glucose at
   its nadir; insulin action on uptake and production (``Vmx``, ``kp3``) is
   scaled until the model's own 1-U nadir drop equals that prediction.

Everything else (gut, insulin kinetics, glucose kinetics) keeps the group's
typical values; the state estimator adapts a sensitivity factor and an
unexplained-appearance disturbance online.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from twin.model import PMOL_PER_U, State, simulate
from twin.model_params import N_STATES, PARAMETER_NAMES, ModelParams
from twin.profile import PatientProfile

MIN_PER_H = 60.0
GROUPS = ("child", "adolescent", "adult")
SENSITIVITY_TEST_DOSE_U = 1.0
SENSITIVITY_WINDOW_MIN = 480


def age_group(age_years: float) -> str:
    """``child`` (< 13 y), ``adolescent`` (13-19 y) or ``adult`` (>= 20 y)."""
    if age_years < 13:
        return "child"
    if age_years < 20:
        return "adolescent"
    return "adult"


@dataclass(frozen=True)
class GroupPrior:
    """Typical model parameters of one age group.

    ``params``: every model parameter except the personalized ones (``BW``,
    ``u2ss``, ``Ib``, ``Vm0``, ``kp1`` are derived). ``basal_glucose_mg_dl``:
    glucose the programmed basal holds. ``basal_egp_mg_per_kg_min``:
    endogenous glucose production at basal. ``log_drop_intercept``: the
    group's intercept in the sensitivity regression.
    """

    params: dict[str, float]
    basal_glucose_mg_dl: float
    basal_egp_mg_per_kg_min: float
    log_drop_intercept: float


@dataclass(frozen=True)
class PopulationPrior:
    """Population knowledge used to build a twin; excludes the person it is for.

    The sensitivity regression is
    ``ln(drop_1U) = intercept[group] + log_cf * ln(CF) + log_tdi * ln(TDI)``,
    where ``drop_1U`` is the nadir drop (mg/dL) of glucose after 1 U from the
    basal steady state.
    """

    source: str
    groups: dict[str, GroupPrior]
    log_cf: float
    log_tdi: float
    excluded: tuple[str, ...] = field(default_factory=tuple)

    def predicted_drop_mg_dl_per_u(self, profile: PatientProfile) -> float:
        g = self.groups[age_group(profile.age_years)]
        return math.exp(
            g.log_drop_intercept
            + self.log_cf * math.log(profile.correction_factor_mg_dl_per_u)
            + self.log_tdi * math.log(profile.total_daily_insulin_u)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "excluded": list(self.excluded),
            "log_cf": self.log_cf,
            "log_tdi": self.log_tdi,
            "groups": {
                name: {
                    "params": g.params,
                    "basal_glucose_mg_dl": g.basal_glucose_mg_dl,
                    "basal_egp_mg_per_kg_min": g.basal_egp_mg_per_kg_min,
                    "log_drop_intercept": g.log_drop_intercept,
                }
                for name, g in self.groups.items()
            },
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PopulationPrior":
        return cls(
            source=str(data["source"]),
            excluded=tuple(data.get("excluded", ())),
            log_cf=float(data["log_cf"]),
            log_tdi=float(data["log_tdi"]),
            groups={
                name: GroupPrior(
                    params={k: float(v) for k, v in g["params"].items()},
                    basal_glucose_mg_dl=float(g["basal_glucose_mg_dl"]),
                    basal_egp_mg_per_kg_min=float(g["basal_egp_mg_per_kg_min"]),
                    log_drop_intercept=float(g["log_drop_intercept"]),
                )
                for name, g in data["groups"].items()
            },
        )


def default_prior() -> PopulationPrior:
    """The prior shipped with glucotwin (``twin/data/population_prior.json``).

    Derived from the 30 published UVA/Padova virtual patients of simglucose;
    regenerate with ``python -m sim.trial.priors``. For in-silico trials against
    those same patients use a leave-one-out prior (``sim.trial.priors``) instead.
    """
    text = resources.files("twin").joinpath("data", "population_prior.json").read_text()
    return PopulationPrior.from_dict(json.loads(text))


# --- steady state --------------------------------------------------------------------------

DERIVED = ("BW", "u2ss", "Ib", "Vm0", "kp1")


def consistent_parameters(
    base: dict[str, float],
    weight_kg: float,
    basal_u_per_h: float,
    basal_glucose_mg_dl: float,
    basal_egp: float,
    sensitivity_scale: np.ndarray | float = 1.0,
) -> ModelParams:
    """Model parameters (a batch, one per sensitivity scale) at steady state under the basal.

    Insulin action ``Vmx`` and ``kp3`` are multiplied by ``sensitivity_scale``.
    """
    scale = np.atleast_1d(np.asarray(sensitivity_scale, dtype=float))
    p = {k: np.full(scale.shape, float(v)) for k, v in base.items() if k not in DERIVED}
    p["Vmx"] = p["Vmx"] * scale
    p["kp3"] = p["kp3"] * scale
    bw = np.full(scale.shape, float(weight_kg))
    u2ss = basal_u_per_h / MIN_PER_H * PMOL_PER_U / bw  # pmol/kg/min
    ipb = u2ss / (p["m2"] + p["m4"] - p["m1"] * p["m2"] / (p["m1"] + p["m30"]))  # pmol/kg
    ib = ipb / p["Vi"]  # pmol/L
    gpb = basal_glucose_mg_dl * p["Vg"]  # mg/kg
    renal = p["ke1"] * np.maximum(gpb - p["ke2"], 0.0)
    gtb = (p["Fsnc"] + renal + p["k1"] * gpb - basal_egp) / p["k2"]
    uptake = basal_egp - p["Fsnc"] - renal
    if np.any(gtb <= 0) or np.any(uptake <= 0):
        raise ValueError("prior has no steady state at this basal glucose and production")
    p["Vm0"] = uptake * (p["Km0"] + gtb) / gtb
    p["kp1"] = basal_egp + p["kp2"] * gpb + p["kp3"] * ib
    p["Ib"], p["BW"], p["u2ss"] = ib, bw, u2ss
    return ModelParams(**{name: p[name] for name in PARAMETER_NAMES})


def steady_state(params: ModelParams, basal_glucose_mg_dl: float, basal_egp: float) -> np.ndarray:
    """States (N, 13) at steady state under ``u2ss`` with an empty gut."""
    p = params
    x = np.zeros((p.size, N_STATES))
    gpb = basal_glucose_mg_dl * p.Vg
    renal = p.ke1 * np.maximum(gpb - p.ke2, 0.0)
    ipb = p.Ib * p.Vi
    x[:, State.G_P] = gpb
    x[:, State.G_T] = (p.Fsnc + renal + p.k1 * gpb - basal_egp) / p.k2
    x[:, State.I_P] = ipb
    x[:, State.X] = 0.0
    x[:, State.I1] = p.Ib
    x[:, State.I_D] = p.Ib
    x[:, State.I_L] = p.m2 * ipb / (p.m1 + p.m30)
    x[:, State.I_SC1] = p.u2ss / (p.kd + p.ka1)
    x[:, State.I_SC2] = p.kd * x[:, State.I_SC1] / p.ka2
    x[:, State.G_SC] = gpb
    return x


def insulin_drop_mg_dl(params: ModelParams, x_basal: np.ndarray, dose_u: float = SENSITIVITY_TEST_DOSE_U) -> np.ndarray:
    """Nadir drop of glucose (N,) after ``dose_u`` on top of basal, over 8 h (mg/dL)."""
    basal = (params.u2ss * params.BW / PMOL_PER_U)[:, None] * np.ones((1, SENSITIVITY_WINDOW_MIN // 5))
    dosed = basal.copy()
    dosed[:, 0] += dose_u / 5.0
    both = ModelParams.concatenate([params, params])
    x0 = np.concatenate([x_basal, x_basal])
    traj = simulate(both, x0, 0.0, np.concatenate([basal, dosed]), dt_min=5.0)
    n = params.size
    return np.max(traj.glucose_mg_dl[:n] - traj.glucose_mg_dl[n:], axis=1)


@dataclass(frozen=True)
class Twin:
    """A personalized model: parameters (N=1), basal steady state, and how it was obtained."""

    profile: PatientProfile
    params: ModelParams
    x_basal: np.ndarray
    basal_glucose_mg_dl: float
    sensitivity_scale: float
    drop_mg_dl_per_u: float
    group: str

    def to_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the twin (decision records, learned twin files)."""
        return {
            "profile": self.profile.to_dict(),
            "params": self.params.to_dict(),
            "x_basal": self.x_basal.tolist(),
            "basal_glucose_mg_dl": self.basal_glucose_mg_dl,
            "sensitivity_scale": self.sensitivity_scale,
            "drop_mg_dl_per_u": self.drop_mg_dl_per_u,
            "group": self.group,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Twin":
        """Inverse of :meth:`to_dict`. Raises KeyError, TypeError or ValueError on bad data."""
        return cls(
            profile=PatientProfile.from_dict(data["profile"]),
            params=ModelParams(**{k: np.array(v, dtype=float) for k, v in data["params"].items()}),
            x_basal=np.array(data["x_basal"], dtype=float),
            basal_glucose_mg_dl=float(data["basal_glucose_mg_dl"]),
            sensitivity_scale=float(data["sensitivity_scale"]),
            drop_mg_dl_per_u=float(data["drop_mg_dl_per_u"]),
            group=str(data["group"]),
        )

    def describe(self) -> dict[str, Any]:
        return {
            "profile": self.profile.name,
            "group": self.group,
            "basal_glucose_mg_dl": self.basal_glucose_mg_dl,
            "sensitivity_scale": self.sensitivity_scale,
            "drop_mg_dl_per_u": self.drop_mg_dl_per_u,
        }


_SCALES = np.exp(np.linspace(math.log(0.05), math.log(20.0), 40))


def personalize(profile: PatientProfile, prior: PopulationPrior) -> Twin:
    """The twin of the person with ``profile`` (see the module docstring)."""
    group = age_group(profile.age_years)
    g = prior.groups[group]
    basal = profile.daily_basal_u / 24.0  # mean programmed rate, U/h
    target_drop = prior.predicted_drop_mg_dl_per_u(profile)
    candidates = consistent_parameters(g.params, profile.weight_kg, basal, g.basal_glucose_mg_dl,
                                       g.basal_egp_mg_per_kg_min, _SCALES)
    drops = insulin_drop_mg_dl(candidates, steady_state(candidates, g.basal_glucose_mg_dl, g.basal_egp_mg_per_kg_min))
    order = np.argsort(drops)
    log_scale = float(np.interp(math.log(target_drop), np.log(drops[order]), np.log(_SCALES[order])))
    scale = math.exp(log_scale)
    params = consistent_parameters(g.params, profile.weight_kg, basal, g.basal_glucose_mg_dl,
                                   g.basal_egp_mg_per_kg_min, scale)
    x_basal = steady_state(params, g.basal_glucose_mg_dl, g.basal_egp_mg_per_kg_min)
    drop = float(insulin_drop_mg_dl(params, x_basal)[0])
    return Twin(profile, params, x_basal[0], g.basal_glucose_mg_dl, scale, drop, group)
