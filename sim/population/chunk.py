"""One engine job: a chunk of virtual patients in closed loop, the plant stepped as one batch.

:func:`simulate_chunk` is the job. Its steps: :func:`_prepare_batch` (patients,
plant parameters and state, meals, CGM noise, one controller each),
:func:`_run_closed_loop` (one control cycle per CGM sample: the controllers
decide, the pump rounds, the plant advances) and :func:`_patient_records`
(each patient's metrics). :func:`plan_chunks` cuts a population into jobs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Sequence

import numpy as np

from controller.policy import ControlInput
from sim.population.controllers import make_policy
from sim.population.simglucose_models import meal_schedule, pump_u_per_min, sensor_noise, sensor_parameters
from sim.population.spec import PopulationSpec
from sim.population.virtual_patients import VirtualPatient, plant_substeps, virtual_patient
from sim.trial.adapter import basal_u_per_h_to_u_per_min, bolus_u_to_u_per_min, rate_per_min_to_amount
from sim.trial.protocol import BENCHMARK_START
from twin.model import MealState, glucose_mg_dl, simulate
from twin.model_params import ModelParams

Progress = Callable[[str, float], None]


@dataclass
class ChunkResult:
    """The results of a chunk of virtual patients (one engine job)."""

    indices: tuple[int, ...]
    patients: dict[str, dict[str, Any]]
    timing: dict[str, float]
    traces: dict[str, np.ndarray] | None = None


_PROGRESS_EVERY_MIN = 60


@dataclass
class _Batch:
    """A chunk set up for the loop: its patients, the batch plant, meals, CGM noise and controllers."""

    patients: list[VirtualPatient]
    params: ModelParams
    x0: np.ndarray
    meals: np.ndarray
    noise: np.ndarray
    sensor: dict[str, float]
    policies: list[Any]
    substeps: int

    def cgm(self, bg: np.ndarray, k: int) -> np.ndarray:
        """CGM sample ``k`` at true glucose ``bg``: the noise added, clipped to the sensor's range."""
        return np.clip(bg + self.noise[:, k], self.sensor["min"], self.sensor["max"])


@dataclass
class _Trajectories:
    """What the loop records per patient: glucose and CGM per sample, insulin and carbs per cycle."""

    bg: np.ndarray
    cgm: np.ndarray
    insulin_u: np.ndarray
    carbs_g: np.ndarray
    controller_cpu_s: float = 0.0

    @classmethod
    def empty(cls, n: int, steps: int) -> _Trajectories:
        return cls(bg=np.empty((n, steps + 1)), cgm=np.empty((n, steps + 1)),
                   insulin_u=np.empty((n, steps)), carbs_g=np.empty((n, steps)))

    def traces(self) -> dict[str, np.ndarray]:
        """The arrays of ``traces.npz`` (float32)."""
        return {"bg_mg_dl": self.bg.astype(np.float32), "cgm_mg_dl": self.cgm.astype(np.float32),
                "insulin_u": self.insulin_u.astype(np.float32), "carbs_g": self.carbs_g.astype(np.float32)}


def _prepare_batch(spec: PopulationSpec, indices: tuple[int, ...]) -> _Batch:
    """The chunk's virtual patients as one batch plant, with their meals, CGM noise and fresh controllers."""
    vps = [virtual_patient(spec.seed, j) for j in indices]
    minutes = spec.steps * spec.sample_min
    params = ModelParams.from_mappings([vp.params for vp in vps])
    x0 = np.stack([vp.x0 for vp in vps])
    meals = np.stack([meal_schedule(vp.seed, minutes) for vp in vps])
    noise = sensor_noise(spec.sensor, [vp.seed for vp in vps], spec.steps + 1)
    sensor = sensor_parameters(spec.sensor)
    policies = [make_policy(spec.controller, vp) for vp in vps]
    for policy in policies:
        policy.reset()
    return _Batch(patients=vps, params=params, x0=x0, meals=meals, noise=noise, sensor=sensor,
                  policies=policies, substeps=plant_substeps())


def _decide(policies: Sequence[Any], now: datetime, cgm: np.ndarray, announced: np.ndarray, hcl: bool,
            cycle_min: int) -> tuple[np.ndarray, np.ndarray]:
    """Each controller's dose for the cycle: basal (U/h) and bolus (U); meals announced only in HCL."""
    basal = np.empty(len(policies))
    bolus = np.empty(len(policies))
    for i, policy in enumerate(policies):
        dose = policy.decide(ControlInput(now, float(cgm[i]), float(announced[i]) if hcl else 0.0, float(cycle_min)))
        basal[i], bolus[i] = dose.basal_u_per_h, dose.bolus_u
    return basal, bolus


def _pump_rate(basal_u_per_h: np.ndarray, bolus_u: np.ndarray, cycle_min: int) -> np.ndarray:
    """Insulin the pump delivers (U/min) over the cycle: its basal and the bolus spread over the cycle."""
    return (pump_u_per_min(basal_u_per_h_to_u_per_min(basal_u_per_h), "basal")
            + pump_u_per_min(bolus_u_to_u_per_min(bolus_u, cycle_min), "bolus"))


def _run_closed_loop(spec: PopulationSpec, batch: _Batch, progress: Progress | None) -> _Trajectories:
    """``spec.steps`` control cycles: the controllers decide on the CGM, the plant advances one cycle."""
    n, s, steps = len(batch.patients), spec.sample_min, spec.steps
    out = _Trajectories.empty(n, steps)
    x = batch.x0
    meal = MealState.initial(x)
    out.bg[:, 0] = glucose_mg_dl(x, batch.params)
    out.cgm[:, 0] = batch.cgm(out.bg[:, 0], 0)
    announced = np.zeros(n)
    hcl = spec.arm == "hcl"
    pending = 0
    for k in range(steps):
        now = BENCHMARK_START + timedelta(minutes=k * s)
        c0 = time.process_time()
        basal, bolus = _decide(batch.policies, now, out.cgm[:, k], announced, hcl, s)
        out.controller_cpu_s += time.process_time() - c0
        rate = _pump_rate(basal, bolus, s)
        window = batch.meals[:, k * s: (k + 1) * s]
        trajectory = simulate(batch.params, x, window, np.broadcast_to(rate[:, None], (n, s)), meal=meal,
                              substeps=batch.substeps)
        x = trajectory.final_state.copy()
        meal = trajectory.meal
        out.bg[:, k + 1] = trajectory.glucose_mg_dl[:, -1]
        out.cgm[:, k + 1] = batch.cgm(out.bg[:, k + 1], k + 1)
        announced = window.sum(axis=1)
        out.insulin_u[:, k] = rate_per_min_to_amount(rate, s)
        out.carbs_g[:, k] = announced
        pending += s
        if progress is not None and pending >= _PROGRESS_EVERY_MIN:
            progress(batch.patients[0].name, pending * n)
            pending = 0
    if progress is not None and pending:
        progress(batch.patients[0].name, pending * n)
    return out


def _patient_records(spec: PopulationSpec, patients: Sequence[VirtualPatient],
                     loop: _Trajectories) -> dict[str, dict[str, Any]]:
    """Each patient's summary with its true-glucose and CGM metrics and daily insulin and carbs."""
    from sim.trial.metrics import glucose_metrics

    records: dict[str, dict[str, Any]] = {}
    for i, vp in enumerate(patients):
        record = vp.summary()
        record.update(
            bg=glucose_metrics(loop.bg[i]),
            cgm=glucose_metrics(loop.cgm[i]),
            insulin_u_per_day=float(loop.insulin_u[i].sum() / spec.days),
            carbs_g_per_day=float(loop.carbs_g[i].sum() / spec.days),
        )
        records[vp.name] = record
    return records


def simulate_chunk(spec: PopulationSpec, indices: Sequence[int], traces: bool = False,
                   progress: Progress | None = None) -> ChunkResult:
    """Closed loop for virtual patients ``indices``: the plant stepped as one batch, one controller each."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    indices = tuple(int(i) for i in indices)
    batch = _prepare_batch(spec, indices)
    cpu_setup = time.process_time() - cpu0
    loop = _run_closed_loop(spec, batch, progress)
    patients = _patient_records(spec, batch.patients, loop)
    cpu_total = time.process_time() - cpu0
    timing = {
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": cpu_total,
        "setup_cpu_s": cpu_setup,
        "controller_cpu_s": loop.controller_cpu_s,
        "plant_cpu_s": cpu_total - cpu_setup - loop.controller_cpu_s,
        "cycles": float(len(batch.patients) * spec.steps),
    }
    return ChunkResult(indices=indices, patients=patients, timing=timing, traces=loop.traces() if traces else None)


def plan_chunks(size: int, workers: int, chunk_size: int | None = None) -> list[tuple[int, ...]]:
    """Consecutive chunks of patient indices: ``chunk_size``, or about 4 chunks per worker (at most 128 patients).

    Results do not depend on the chunking (the plant's batch arithmetic is per patient).
    """
    if chunk_size is None:
        chunk_size = max(1, min(128, math.ceil(size / (4 * max(workers, 1)))))
    if chunk_size < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk_size}")
    return [tuple(range(a, min(a + chunk_size, size))) for a in range(0, size, chunk_size)]
