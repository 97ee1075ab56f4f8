"""Virtual patients: the log-normal factors around simglucose's 30 patients, physiology, steady state, profile.

See the :mod:`sim.population` docstring for the construction of patient ``j``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sim.population.spec import PopulationSpec, scenario_seed
from twin.model import stable_substeps
from twin.model_params import PARAMETER_NAMES, ModelParams, initial_state_from_mapping
from twin.profile import PatientProfile, flat_basal


@dataclass(frozen=True)
class Variation:
    """One log-normal factor of the virtual physiology."""

    name: str
    parameters: tuple[str, ...]
    sigma: float
    meaning: str

    @property
    def bounds(self) -> tuple[float, float]:
        """The factor's range: ``exp(-2 sigma) .. exp(2 sigma)``."""
        return math.exp(-2.0 * self.sigma), math.exp(2.0 * self.sigma)


#: Factors in drawing order. ``hepatic_share`` h multiplies Vmx by h and kp3 by 1/h
#: (sensitivity shifted between periphery and liver at the same overall level).
VARIATIONS: tuple[Variation, ...] = (
    Variation("insulin_sensitivity", ("Vmx", "kp3"), 0.30, "insulin action on glucose uptake and production"),
    Variation("hepatic_share", ("Vmx", "kp3"), 0.15, "Vmx x h, kp3 / h: peripheral vs hepatic insulin action"),
    Variation("meal_absorption", ("kabs",), 0.30, "intestinal glucose absorption rate"),
    Variation("gastric_emptying", ("kmax", "kmin"), 0.25, "gastric emptying rates"),
    Variation("insulin_absorption", ("ka1", "ka2", "kd"), 0.20, "subcutaneous insulin absorption"),
    Variation("body_weight", ("BW",), 0.12, "body weight"),
)
_TRUNCATE_SIGMAS = 2.0


def _variation(name: str) -> Variation:
    return next(v for v in VARIATIONS if v.name == name)


@dataclass(frozen=True)
class VirtualPatient:
    """One virtual patient: simulator parameters (the plant's) and clinical profile (the controller's)."""

    index: int
    name: str
    base: str
    group: str
    factors: dict[str, float]
    params: dict[str, float]
    x0: np.ndarray = field(repr=False)
    profile: PatientProfile = field(repr=False)
    seed: int = 0

    def summary(self) -> dict[str, Any]:
        p = self.profile
        return {
            "base": self.base,
            "group": self.group,
            "seed": self.seed,
            "factors": {k: round(v, 6) for k, v in self.factors.items()},
            "profile": {
                "weight_kg": round(p.weight_kg, 4),
                "basal_u_per_h": round(p.basal_u_per_h_at(0), 6),
                "total_daily_insulin_u": round(p.total_daily_insulin_u, 4),
                "carb_ratio_g_per_u": round(p.carb_ratio_g_per_u, 4),
                "correction_factor_mg_dl_per_u": round(p.correction_factor_mg_dl_per_u, 4),
                "age_years": p.age_years,
            },
        }


@functools.lru_cache(maxsize=None)
def _base(name: str) -> tuple[dict[str, float], np.ndarray, PatientProfile]:
    """Base patient: simulator parameters and initial state (the plant's), clinical profile."""
    from sim.trial.cohort import clinical_profile, simulator_parameters

    row = simulator_parameters(name).to_dict()
    params = {k: float(row[k]) for k in PARAMETER_NAMES}
    return params, initial_state_from_mapping(row), clinical_profile(name)


def draw_factors(population_seed: int, index: int) -> dict[str, float]:
    """The truncated log-normal factors of virtual patient ``index`` (see :data:`VARIATIONS`)."""
    z = np.random.default_rng([population_seed, index]).standard_normal(len(VARIATIONS))
    return {
        v.name: float(np.exp(np.clip(v.sigma * zi, -_TRUNCATE_SIGMAS * v.sigma, _TRUNCATE_SIGMAS * v.sigma)))
        for v, zi in zip(VARIATIONS, z)
    }


def _steady_state(p: dict[str, float], base_x0: np.ndarray) -> np.ndarray:
    """Steady state under ``u2ss`` at the base's glucose states (State order, see twin.model)."""
    from twin.model import State

    x = np.array(base_x0, dtype=float)
    ipb = p["u2ss"] / (p["m2"] + p["m4"] - p["m1"] * p["m2"] / (p["m1"] + p["m30"]))
    x[State.Q_STO1] = x[State.Q_STO2] = x[State.Q_GUT] = 0.0
    x[State.I_P] = ipb
    x[State.X] = 0.0
    x[State.I1] = x[State.I_D] = p["Ib"]
    x[State.I_L] = p["m2"] * ipb / (p["m1"] + p["m30"])
    x[State.I_SC1] = p["u2ss"] / (p["kd"] + p["ka1"])
    x[State.I_SC2] = p["kd"] * x[State.I_SC1] / p["ka2"]
    return x


def base_patient(index: int) -> str:
    """The simglucose patient virtual patient ``index`` is built on: groups in turn, then numbers."""
    from sim.trial.cohort import GROUPS

    return f"{GROUPS[index % 3]}#{(index // 3) % 10 + 1:03d}"


def virtual_patient(population_seed: int, index: int) -> VirtualPatient:
    """Virtual patient ``index`` of the population with seed ``population_seed`` (module docstring)."""
    from sim.trial.cohort import group_of

    base = base_patient(index)
    base_params, base_x0, clinic = _base(base)
    base_basal = clinic.basal_u_per_h_at(0)
    f = draw_factors(population_seed, index)
    p = dict(base_params)
    s, h = f["insulin_sensitivity"], f["hepatic_share"]
    p["Vmx"] *= s * h
    kp3_factor = s / h
    p["kp3"] *= kp3_factor
    p["kabs"] *= f["meal_absorption"]
    p["kmax"] *= f["gastric_emptying"]
    p["kmin"] *= f["gastric_emptying"]
    for name in ("ka1", "ka2", "kd"):
        p[name] *= f["insulin_absorption"]
    p["BW"] *= f["body_weight"]
    # same basal production kp3 * Ib at the same glucose: Ib and u2ss / kp3's factor
    p["u2ss"] /= kp3_factor
    ipb = p["u2ss"] / (p["m2"] + p["m4"] - p["m1"] * p["m2"] / (p["m1"] + p["m30"]))
    p["Ib"] = ipb / p["Vi"]
    x0 = _steady_state(p, base_x0)
    basal_u_per_h = p["u2ss"] * p["BW"] / 6000.0 * 60.0
    name = f"vp{index:05d}"
    profile = PatientProfile(
        name=name,
        weight_kg=p["BW"],
        total_daily_insulin_u=clinic.total_daily_insulin_u * basal_u_per_h / base_basal,
        carb_ratio_g_per_u=clinic.carb_ratio_g_per_u * s,
        correction_factor_mg_dl_per_u=clinic.correction_factor_mg_dl_per_u * s / f["body_weight"],
        age_years=clinic.age_years,
        basal_schedule=flat_basal(basal_u_per_h),
    )
    return VirtualPatient(index=index, name=name, base=base, group=group_of(base), factors=f, params=p, x0=x0,
                          profile=profile, seed=scenario_seed(population_seed, index))


def generate_population(size: int, seed: int = 0) -> list[VirtualPatient]:
    """Virtual patients 0 .. size-1 of the population with ``seed``."""
    PopulationSpec(size=size, seed=seed)  # validates
    return [virtual_patient(seed, j) for j in range(size)]


@functools.lru_cache(maxsize=1)
def plant_substeps() -> int:
    """RK4 substeps per simulator minute for every virtual patient: stable at the factors' upper bounds.

    A fixed number for all populations, so that a patient's trajectory does not
    depend on which patients share its batch (1 for the documented bounds).
    """
    from sim.trial.cohort import PATIENTS

    rows = []
    for name in PATIENTS:
        p = dict(_base(name)[0])
        for v in VARIATIONS:
            if v.name in ("meal_absorption", "gastric_emptying", "insulin_absorption"):
                for q in v.parameters:
                    p[q] *= v.bounds[1]
        rows.append(p)
    return stable_substeps(ModelParams.from_mappings(rows), 1.0)
