"""The 30 simglucose virtual patients and their clinical profiles.

Patient index ``k`` (1..30) follows BENCHMARK.md: adolescent#001..#010,
adult#001..#010, child#001..#010. Seeds of the public benchmark are derived
from ``k``.

:func:`clinical_profile` is the honest view of a virtual patient: Quest.csv
(CR, CF, TDI, Age), body weight and the programmed basal
``u2ss * BW / 6000`` U/min. :func:`simulator_parameters` is the full
simulator row; it is for building the simulated patient and for validating
the twin model, never for control.
"""

from __future__ import annotations

import csv
import functools
from importlib import resources
from typing import Sequence

import numpy as np
import pandas as pd

from twin.model_params import ModelParams, initial_states_from_mappings
from twin.profile import PatientProfile, flat_basal

GROUPS = ("adolescent", "adult", "child")
PATIENTS: tuple[str, ...] = tuple(f"{group}#{i:03d}" for group in GROUPS for i in range(1, 11))

_MIN_PER_H = 60.0
_PMOL_PER_U = 6000.0  # simglucose's insulin unit conversion, pmol per U


def _params_path(filename: str):
    return resources.files("simglucose").joinpath("params", filename)


def patient_index(name: str) -> int:
    """Benchmark index k (1..30) of a patient name."""
    try:
        return PATIENTS.index(name) + 1
    except ValueError:
        raise ValueError(f"unknown patient {name!r}; expected one of adolescent#001..#010, adult#001..#010, child#001..#010") from None


def group_of(name: str) -> str:
    """``adolescent``, ``adult`` or ``child``."""
    patient_index(name)
    return name.split("#", 1)[0]


def patients_in_group(group: str) -> list[str]:
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; expected one of {', '.join(GROUPS)}")
    return [p for p in PATIENTS if p.startswith(group + "#")]


@functools.lru_cache(maxsize=1)
def _quest_rows() -> dict[str, dict[str, str]]:
    with _params_path("Quest.csv").open() as handle:
        return {row["Name"]: row for row in csv.DictReader(handle)}


@functools.lru_cache(maxsize=1)
def _simulator_table() -> pd.DataFrame:
    with _params_path("vpatient_params.csv").open() as handle:
        return pd.read_csv(handle)


def simulator_parameters(name: str) -> pd.Series:
    """simglucose's full parameter row (for the plant and model validation only)."""
    patient_index(name)
    table = _simulator_table()
    return table.loc[table.Name == name].squeeze()


@functools.lru_cache(maxsize=None)
def _clinical_values(name: str) -> tuple[float, float, float, float, float, float]:
    patient_index(name)
    quest = _quest_rows()[name]
    row = simulator_parameters(name)
    weight_kg = float(row["BW"])
    # programmed basal: u2ss (pmol/(L*kg)) * BW / 6000 -> U/min, then U/h
    basal_u_per_h = float(row["u2ss"]) * weight_kg / _PMOL_PER_U * _MIN_PER_H
    return (
        weight_kg,
        float(quest["TDI"]),
        float(quest["CR"]),
        float(quest["CF"]),
        float(quest["Age"]),
        basal_u_per_h,
    )


def clinical_profile(name: str, target_mg_dl: float = 120.0) -> PatientProfile:
    """What a clinic knows about a virtual patient (DESIGN.md honesty rules)."""
    weight_kg, tdi_u, cr, cf, age, basal_u_per_h = _clinical_values(name)
    return PatientProfile(
        name=name,
        weight_kg=weight_kg,
        total_daily_insulin_u=tdi_u,
        carb_ratio_g_per_u=cr,
        correction_factor_mg_dl_per_u=cf,
        age_years=age,
        basal_schedule=flat_basal(basal_u_per_h),
        target_mg_dl=target_mg_dl,
    )


def twin_parameters(patients: Sequence[str]) -> tuple[ModelParams, np.ndarray]:
    """Model parameters (N,) and initial states (N, 13) of simglucose patients, from their simulator rows
    (validation and reference controllers only, never the control path)."""
    rows = [simulator_parameters(name).to_dict() for name in patients]
    return ModelParams.from_mappings(rows), initial_states_from_mappings(rows)
