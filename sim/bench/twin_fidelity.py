"""How faithful and how fast the twin model is, against simglucose itself.

The twin (:mod:`twin.model`) is fed exactly the inputs that simglucose's
``T1DPatient`` gets, minute by minute, and both start from the simulator's
initial state with the simulator's own parameters:

- meals: ``RandomScenario(start_time=2025-01-01 00:00, seed=k + seed_offset)``,
  k = benchmark index of the patient (BENCHMARK.md), grams announced at the
  scenario's minute, eaten by both at 5 g/min;
- insulin: the programmed basal ``u2ss * BW / 6000`` U/min every minute plus,
  at each meal minute, a bolus of ``carbs / CR`` units (Quest.csv CR) given
  as a 1-minute pulse.

BG is simglucose's observation ``Gsub`` (what its environment records as
``BG``) and the twin's ``G_SC / Vg``, compared at every minute including t=0.

This is validation glue: it reads the full simulator parameter row, which a
controller must never do (DESIGN.md honesty rules).
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timedelta
from typing import Sequence

import numpy as np
from simglucose.patient.t1dpatient import Action, T1DPatient
from simglucose.simulation.scenario_gen import RandomScenario

from sim.trial.cohort import (
    PATIENTS,
    clinical_profile,
    patient_index,
    simulator_parameters,
    twin_parameters,
)
from twin.model import PMOL_PER_U, simulate

BENCHMARK_START = datetime(2025, 1, 1, 0, 0)
MINUTES_PER_DAY = 24 * 60


def scenario_inputs(name: str, days: float, seed_offset: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-minute inputs (carbs announced g, insulin U/min), each of shape (T,), T = days * 1440.

    Meals from ``RandomScenario(BENCHMARK_START, seed=k + seed_offset)``;
    insulin is the programmed basal plus a 1-minute ``carbs / CR`` bolus at each meal.
    """
    minutes = int(round(days * MINUTES_PER_DAY))
    row = simulator_parameters(name)
    basal_u_per_min = float(row["u2ss"]) * float(row["BW"]) / PMOL_PER_U
    carb_ratio_g_per_u = clinical_profile(name).carb_ratio_g_per_u
    scenario = RandomScenario(start_time=BENCHMARK_START, seed=patient_index(name) + seed_offset)
    carbs_g = np.array(
        [float(scenario.get_action(BENCHMARK_START + timedelta(minutes=t)).meal) for t in range(minutes)]
    )
    insulin_u_per_min = basal_u_per_min + carbs_g / carb_ratio_g_per_u
    return carbs_g, insulin_u_per_min


def simglucose_glucose(
    name: str, carbs_g: np.ndarray, insulin_u_per_min: np.ndarray, patient_cls: type = T1DPatient
) -> np.ndarray:
    """simglucose's ``Gsub`` (T+1,), mg/dL, stepping ``patient_cls`` (stock ``T1DPatient``) minute by minute."""
    patient = patient_cls(simulator_parameters(name))
    glucose = np.empty(len(carbs_g) + 1)
    glucose[0] = patient.observation.Gsub
    for t, (carbs, insulin) in enumerate(zip(carbs_g.tolist(), insulin_u_per_min.tolist())):
        patient.step(Action(CHO=carbs, insulin=insulin))
        glucose[t + 1] = patient.observation.Gsub
    return glucose


def _inputs(patients: Sequence[str], days: float, seed_offset: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [scenario_inputs(name, days, seed_offset) for name in patients]
    return np.stack([c for c, _ in pairs]), np.stack([i for _, i in pairs])


def fidelity(
    patients: Sequence[str] = PATIENTS, days: float = 3.0, seed_offset: int = 0, patient_cls: type = T1DPatient
) -> dict[str, float]:
    """BG RMSE (mg/dL) of the twin vs simglucose per patient, identical inputs, over ``days``.

    The twin runs the whole cohort as one batch; simglucose runs each patient
    (stock ``T1DPatient`` unless ``patient_cls`` says otherwise; about 5 s per
    patient-day).
    """
    patients = list(patients)
    carbs, insulin = _inputs(patients, days, seed_offset)
    params, x0 = twin_parameters(patients)
    twin_bg = simulate(params, x0, carbs, insulin).glucose_mg_dl
    result = {}
    for i, name in enumerate(patients):
        reference = simglucose_glucose(name, carbs[i], insulin[i], patient_cls)
        result[name] = float(np.sqrt(np.mean((twin_bg[i] - reference) ** 2)))
    return result


def speed(
    patients: Sequence[str] = PATIENTS,
    simglucose_patients: Sequence[str] = ("adolescent#001", "adult#001", "child#001"),
    days: float = 1.0,
    simglucose_days: float = 1.0,
    repeats: int = 3,
    seed_offset: int = 0,
) -> dict[str, float]:
    """Patient-days per second of stock simglucose ``T1DPatient`` and of the twin, same run, same inputs.

    simglucose steps each of ``simglucose_patients`` minute by minute for
    ``simglucose_days`` (timed once, all patients together); the twin
    simulates ``patients`` as one batch for ``days`` (median of ``repeats``
    timed runs). Building the inputs is not timed.
    """
    patients = list(patients)
    sim_patients = list(simglucose_patients)
    sim_carbs, sim_insulin = _inputs(sim_patients, simglucose_days, seed_offset)
    start = time.perf_counter()
    for i, name in enumerate(sim_patients):
        simglucose_glucose(name, sim_carbs[i], sim_insulin[i])
    simglucose_rate = len(sim_patients) * simglucose_days / (time.perf_counter() - start)

    carbs, insulin = _inputs(patients, days, seed_offset)
    params, x0 = twin_parameters(patients)
    simulate(params, x0, carbs[:, :60], insulin[:, :60])  # warm-up
    durations = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        simulate(params, x0, carbs, insulin)
        durations.append(time.perf_counter() - start)
    twin_rate = len(patients) * days / statistics.median(durations)
    return {
        "simglucose_patient_days_per_s": simglucose_rate,
        "twin_patient_days_per_s": twin_rate,
        "speedup": twin_rate / simglucose_rate,
        "twin_batch": float(len(patients)),
    }
