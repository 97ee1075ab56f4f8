"""Virtual populations: hundreds to thousands of patients around simglucose's 30.

The plant here is **glucotwin's batch twin** (:mod:`twin.model`, the
UVA/Padova 2008 equations of simglucose 0.2.11 integrated for N patients at
once), not simglucose's ``T1DPatient``: every output says so
(:data:`PLANT`). Meals, CGM noise and pump follow simglucose's own models.

Virtual patient ``j`` of a population with seed ``S``
-------------------------------------------------------

- **Base patient**: :func:`base_patient`: group ``j mod 3`` (adolescent,
  adult, child), number ``(j div 3) mod 10 + 1``; so patients 0, 1, 2 are
  adolescent#001, adult#001, child#001, and a population of 30 m has m
  patients on each of the 30 bases. Age and age group are the base's.
- **Physiology**: the base's simulator parameters with the multiplicative
  factors of :data:`VARIATIONS`, each ``exp(clip(sigma * z, -2 sigma, 2 sigma))``
  with ``z`` standard normal from ``numpy.random.default_rng([S, j])`` drawn in
  the order of the table (log-normal, truncated at 2 sigma: the documented
  bounds). Patient ``j`` does not depend on the population size.
- **Steady state**: in the model, insulin action on the liver ``kp3`` sets
  basal glucose production ``kp1 - kp2 Gp - kp3 Ib``; to keep the base's basal
  glucose ``Gb`` and basal production ``EGPb``, the basal insulin ``Ib`` and
  the steady-state infusion ``u2ss`` are divided by kp3's factor. The initial
  state is the exact steady state under ``u2ss``: the base's glucose states,
  insulin states recomputed from ``u2ss`` and the varied absorption rates,
  empty gut. Under its programmed basal and no meals a virtual patient stays
  at ``Gb`` (``tests/test_population.py``).
- **Clinical profile** (all its controller may use, DESIGN.md honesty rules):
  weight ``BW``; programmed basal ``u2ss * BW / 6000`` U/min (in U/h); total
  daily insulin = base TDI x (basal / base basal); carb ratio = base CR x s
  and correction factor = base CF x s / w, where s is the insulin-sensitivity
  factor and w the body-weight factor (in this model a gram of carbohydrate
  and a unit of insulin both act per kg of body weight, so CR does not depend
  on weight and CF does). The gastric, absorption and hepatic-share factors
  are not in the profile: the physiology differs from what the profile says.
- **Meals**: simglucose's ``RandomScenario(start_time=2025-01-01 00:00,
  seed=S * 1000000 + j + 1)``, the day's meals drawn at each midnight as in a
  simglucose run. **CGM**: simglucose's sensor noise model (Johnson
  distribution, AR(1) every 15 min, cubic interpolation; ``CGMNoise``) with the
  same seed, reproduced for a batch, clipped to the sensor's range; one
  control cycle per CGM sample (Dexcom: 3 min). **Pump**: simglucose's
  ``Insulet`` rounding and limits; a bolus is spread over one cycle.
- **Controller**: each patient has its own (``mpc``: glucotwin twin + MPC +
  safety supervisor personalized from the clinical profile with the
  population prior that leaves the base patient out; ``bb``: simglucose's
  BBController rule on the clinical profile; ``basal``: programmed basal only).
  The plant is vectorized over the patients of a chunk; chunks are the jobs
  of an engine (:mod:`sim.engine`). Results do not depend on the chunking,
  the engine or the number of workers.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from controller.policy import ControlInput, Dose
from sim.trial.adapter import basal_u_per_h_to_u_per_min, bolus_u_to_u_per_min, rate_per_min_to_amount
from sim.trial.protocol import ARMS, BENCHMARK_START, SENSORS
from twin.model import MealState, glucose_mg_dl, simulate, stable_substeps
from twin.model_params import PARAMETER_NAMES, ModelParams, initial_state_from_mapping
from twin.profile import PatientProfile, flat_basal

PLANT = "glucotwin batch twin (UVA/Padova 2008), not simglucose"
SUMMARY_FORMAT = "glucotwin.population-summary/1"
CONTROLLER_NAMES = ("mpc", "bb", "basal")
CONTROLLER_DESCRIPTIONS = {
    "mpc": "glucotwin: twin estimator + zone MPC + independent safety supervisor, personalized from the "
           "virtual patient's clinical profile (population prior leaving its base patient out)",
    "bb": "simglucose BBController rule on the clinical profile: programmed basal + meal bolus carbs/CR "
          "+ correction (CGM - 140)/CF above 150 mg/dL",
    "basal": "programmed basal only (clinical profile), no boluses",
}
MAX_SIZE = 1_000_000
MAX_SEED = 4000  # scenario and sensor seeds S * 1e6 + j + 1 stay below 2**32
MIN_PER_DAY = 24 * 60
PUMP = "Insulet"


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


# --- the population specification ----------------------------------------------------


@dataclass(frozen=True)
class PopulationSpec:
    """Everything that determines a population run's results (written to summary.json)."""

    size: int = 100
    seed: int = 0
    days: float = 1.0
    controller: str = "mpc"
    arm: str = "hcl"
    sensor: str = "Dexcom"

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and 1 <= self.size <= MAX_SIZE):
            raise ValueError(f"population size must be a whole number in 1..{MAX_SIZE}, got {self.size!r}")
        if not (isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED):
            raise ValueError(f"population seed must be a whole number in 0..{MAX_SEED}, got {self.seed!r}")
        if not (isinstance(self.days, (int, float)) and math.isfinite(self.days) and 0 < self.days <= 366):
            raise ValueError(f"days must be a number in (0, 366], got {self.days!r}")
        if self.controller not in CONTROLLER_NAMES:
            raise ValueError(f"unknown controller {self.controller!r}; available: {', '.join(CONTROLLER_NAMES)}")
        if self.arm not in ARMS:
            raise ValueError(f"arm must be one of {', '.join(ARMS)}, got {self.arm!r}")
        if self.sensor not in SENSORS:
            raise ValueError(f"sensor must be one of {', '.join(SENSORS)}, got {self.sensor!r}")

    @property
    def sample_min(self) -> int:
        return int(sensor_parameters(self.sensor)["sample_time"])

    @property
    def steps(self) -> int:
        """Control cycles (CGM samples after the first): the run covers ``days``, as a trial does."""
        return int(math.ceil(self.days * MIN_PER_DAY / self.sample_min - 1e-9))

    @property
    def patient_days(self) -> float:
        return self.size * self.days

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scenario_seed(population_seed: int, index: int) -> int:
    """Seed of the meal scenario and of the CGM noise of virtual patient ``index``."""
    return population_seed * MAX_SIZE + index + 1


# --- virtual patients ----------------------------------------------------------------


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


# --- meals, CGM noise, pump (simglucose's models) ----------------------------------------


def meal_schedule(seed: int, minutes: int, start: datetime = BENCHMARK_START) -> np.ndarray:
    """Carbohydrate announced at each minute (g), ``RandomScenario(start, seed)`` as a simglucose run sees it.

    simglucose draws a new day of meals whenever the clock passes midnight
    (``RandomScenario.get_action``); a meal is announced at its minute.
    """
    from simglucose.simulation.scenario_gen import RandomScenario

    if start.time() != datetime.min.time():
        raise ValueError("populations start at midnight")
    scenario = RandomScenario(start_time=start, seed=seed)
    out = np.zeros(minutes)
    for day in range(int(math.ceil(minutes / MIN_PER_DAY))):
        scenario.get_action(start + timedelta(days=day))  # midnight: the day's meals are drawn
        meals = scenario.scenario["meal"]
        taken: set[int] = set()
        for t, amount in zip(meals["time"], meals["amount"]):
            minute = int(t)
            if minute in taken:  # simglucose's list.index finds the first meal of a minute
                continue
            taken.add(minute)
            k = day * MIN_PER_DAY + minute
            if k < minutes:
                out[k] = float(amount)
    return out


@functools.lru_cache(maxsize=None)
def sensor_parameters(name: str) -> dict[str, float]:
    """A row of simglucose's ``sensor_params.csv``."""
    with resources.files("simglucose").joinpath("params", "sensor_params.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == name:
                return {k: float(v) for k, v in row.items() if k != "Name"}
    raise ValueError(f"unknown sensor {name!r}")


@functools.lru_cache(maxsize=None)
def pump_parameters(name: str = PUMP) -> dict[str, float]:
    """A row of simglucose's ``pump_params.csv``."""
    with resources.files("simglucose").joinpath("params", "pump_params.csv").open() as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == name:
                return {k: float(v) for k, v in row.items() if k != "Name"}
    raise ValueError(f"unknown pump {name!r}")


_NOISE_PRECOMPUTE = 10  # simglucose CGMNoise.PRECOMPUTE
_NOISE_MODEL_MIN = 15  # simglucose CGMNoise.MDL_SAMPLE_TIME


def sensor_noise(sensor: str, seeds: Sequence[int], samples: int) -> np.ndarray:
    """CGM noise (mg/dL), shape (len(seeds), samples): simglucose's ``CGMNoise(params, seed)`` for each seed.

    The first ``samples`` values its iterator yields (the first is the noise of
    the reading at time 0), computed for the whole batch at once.
    """
    from scipy.interpolate import make_interp_spline

    prm = sensor_parameters(sensor)
    sample = prm["sample_time"]
    per_segment = int(math.floor(_NOISE_PRECOMPUTE * _NOISE_MODEL_MIN / sample))
    segments = int(math.ceil(samples / per_segment))
    points = segments * _NOISE_PRECOMPUTE + 1
    draws = np.stack([np.random.RandomState(int(s)).randn(points) for s in seeds])  # noqa: NPY002 (simglucose's generator)
    e = np.empty_like(draws)
    e[:, 0] = draws[:, 0]
    for k in range(1, points):
        e[:, k] = prm["PACF"] * (e[:, k - 1] + draws[:, k])
    eps = prm["xi"] + prm["lambda"] * np.sinh((e - prm["gamma"]) / prm["delta"])  # Johnson SU
    t15 = np.arange(_NOISE_PRECOMPUTE + 1) * float(_NOISE_MODEL_MIN)
    t = np.arange(per_segment + 1) * sample
    out = np.empty((len(seeds), segments * per_segment))
    for s in range(segments):
        block = eps[:, s * _NOISE_PRECOMPUTE: (s + 1) * _NOISE_PRECOMPUTE + 1]
        spline = make_interp_spline(t15, block.T, k=3)  # interp1d(kind="cubic")
        out[:, s * per_segment: (s + 1) * per_segment] = spline(t)[1:].T
    return out[:, :samples]


def pump_u_per_min(rate_u_per_min: np.ndarray, kind: str, pump: str = PUMP) -> np.ndarray:
    """simglucose ``InsulinPump.basal``/``.bolus`` for a batch: round to the increment, clip to the limits."""
    prm = pump_parameters(pump)
    inc, low, high = prm[f"inc_{kind}"], prm[f"min_{kind}"], prm[f"max_{kind}"]
    pmol = np.round(np.asarray(rate_u_per_min, dtype=float) * 6000.0 / inc) * inc
    return np.clip(pmol / 6000.0, low, high)


# --- controllers --------------------------------------------------------------------------


class ProfileBasalBolus:
    """simglucose's ``BBController`` rule with the clinical profile's basal, CR and CF (target 140)."""

    TARGET_MG_DL = 140.0
    CORRECTION_ABOVE_MG_DL = 150.0

    def __init__(self, profile: PatientProfile) -> None:
        self.profile = profile

    def decide(self, inp: ControlInput) -> Dose:
        minute = inp.time.hour * 60 + inp.time.minute
        basal = self.profile.basal_u_per_h_at(minute)
        if inp.announced_carbs_g <= 0:
            return Dose(basal, 0.0, "programmed basal")
        bolus = inp.announced_carbs_g / self.profile.carb_ratio_g_per_u
        glucose = inp.cgm_mg_dl if inp.cgm_mg_dl is not None else 0.0
        if glucose > self.CORRECTION_ABOVE_MG_DL:
            bolus += (glucose - self.TARGET_MG_DL) / self.profile.correction_factor_mg_dl_per_u
        return Dose(basal, bolus, "meal bolus")

    def reset(self) -> None:
        pass


@functools.lru_cache(maxsize=None)
def _prior_without(base: str):
    from sim.trial.priors import population_prior

    return population_prior(exclude=base)


def make_policy(controller: str, vp: VirtualPatient):
    """A fresh controller for one virtual patient, built from its clinical profile only."""
    if controller == "basal":
        from controller.baselines import BasalOnly

        return BasalOnly(vp.profile)
    if controller == "bb":
        return ProfileBasalBolus(vp.profile)
    if controller == "mpc":
        from controller.twin_policy import TwinMPCPolicy
        from twin.personalize import personalize

        return TwinMPCPolicy(personalize(vp.profile, _prior_without(vp.base)))
    raise ValueError(f"unknown controller {controller!r}; available: {', '.join(CONTROLLER_NAMES)}")


# --- one chunk of patients: the job ------------------------------------------------------


@dataclass
class ChunkResult:
    """The results of a chunk of virtual patients (one engine job)."""

    indices: tuple[int, ...]
    patients: dict[str, dict[str, Any]]
    timing: dict[str, float]
    traces: dict[str, np.ndarray] | None = None


_PROGRESS_EVERY_MIN = 60


def simulate_chunk(spec: PopulationSpec, indices: Sequence[int], traces: bool = False,
                   progress: Callable[[str, float], None] | None = None) -> ChunkResult:
    """Closed loop for virtual patients ``indices``: the plant stepped as one batch, one controller each."""
    from sim.trial.metrics import glucose_metrics

    cpu0, wall0 = time.process_time(), time.perf_counter()
    indices = tuple(int(i) for i in indices)
    vps = [virtual_patient(spec.seed, j) for j in indices]
    n, s, steps = len(vps), spec.sample_min, spec.steps
    minutes = steps * s
    params = ModelParams.from_mappings([vp.params for vp in vps])
    x = np.stack([vp.x0 for vp in vps])
    meals = np.stack([meal_schedule(vp.seed, minutes) for vp in vps])
    noise = sensor_noise(spec.sensor, [vp.seed for vp in vps], steps + 1)
    sensor = sensor_parameters(spec.sensor)
    policies = [make_policy(spec.controller, vp) for vp in vps]
    for policy in policies:
        policy.reset()
    substeps = plant_substeps()
    cpu_setup = time.process_time() - cpu0

    bg = np.empty((n, steps + 1))
    cgm = np.empty((n, steps + 1))
    insulin_u = np.empty((n, steps))
    carbs_g = np.empty((n, steps))
    meal = MealState.initial(x)
    bg[:, 0] = glucose_mg_dl(x, params)
    cgm[:, 0] = np.clip(bg[:, 0] + noise[:, 0], sensor["min"], sensor["max"])
    announced = np.zeros(n)
    basal = np.empty(n)
    bolus = np.empty(n)
    hcl = spec.arm == "hcl"
    cpu_controller = 0.0
    pending = 0
    for k in range(steps):
        now = BENCHMARK_START + timedelta(minutes=k * s)
        c0 = time.process_time()
        for i, policy in enumerate(policies):
            dose = policy.decide(ControlInput(now, float(cgm[i, k]), float(announced[i]) if hcl else 0.0, float(s)))
            basal[i], bolus[i] = dose.basal_u_per_h, dose.bolus_u
        cpu_controller += time.process_time() - c0
        rate = (pump_u_per_min(basal_u_per_h_to_u_per_min(basal), "basal")
                + pump_u_per_min(bolus_u_to_u_per_min(bolus, s), "bolus"))
        window = meals[:, k * s: (k + 1) * s]
        trajectory = simulate(params, x, window, np.broadcast_to(rate[:, None], (n, s)), meal=meal,
                              substeps=substeps)
        x = trajectory.final_state.copy()
        meal = trajectory.meal
        bg[:, k + 1] = trajectory.glucose_mg_dl[:, -1]
        cgm[:, k + 1] = np.clip(bg[:, k + 1] + noise[:, k + 1], sensor["min"], sensor["max"])
        announced = window.sum(axis=1)
        insulin_u[:, k] = rate_per_min_to_amount(rate, s)
        carbs_g[:, k] = announced
        pending += s
        if progress is not None and pending >= _PROGRESS_EVERY_MIN:
            progress(vps[0].name, pending * n)
            pending = 0
    if progress is not None and pending:
        progress(vps[0].name, pending * n)

    patients: dict[str, dict[str, Any]] = {}
    for i, vp in enumerate(vps):
        record = vp.summary()
        record.update(
            bg=glucose_metrics(bg[i]),
            cgm=glucose_metrics(cgm[i]),
            insulin_u_per_day=float(insulin_u[i].sum() / spec.days),
            carbs_g_per_day=float(carbs_g[i].sum() / spec.days),
        )
        patients[vp.name] = record
    cpu_total = time.process_time() - cpu0
    timing = {
        "wall_s": time.perf_counter() - wall0,
        "cpu_s": cpu_total,
        "setup_cpu_s": cpu_setup,
        "controller_cpu_s": cpu_controller,
        "plant_cpu_s": cpu_total - cpu_setup - cpu_controller,
        "cycles": float(n * steps),
    }
    saved = None
    if traces:
        saved = {"bg_mg_dl": bg.astype(np.float32), "cgm_mg_dl": cgm.astype(np.float32),
                 "insulin_u": insulin_u.astype(np.float32), "carbs_g": carbs_g.astype(np.float32)}
    return ChunkResult(indices=indices, patients=patients, timing=timing, traces=saved)


def plan_chunks(size: int, workers: int, chunk_size: int | None = None) -> list[tuple[int, ...]]:
    """Consecutive chunks of patient indices: ``chunk_size``, or about 4 chunks per worker (at most 128 patients).

    Results do not depend on the chunking (the plant's batch arithmetic is per patient).
    """
    if chunk_size is None:
        chunk_size = max(1, min(128, math.ceil(size / (4 * max(workers, 1)))))
    if chunk_size < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk_size}")
    return [tuple(range(a, min(a + chunk_size, size))) for a in range(0, size, chunk_size)]


# --- a population run -----------------------------------------------------------------------

_QUANTILES = (("p5", 5), ("p25", 25), ("median", 50), ("p75", 75), ("p95", 95))
DISTRIBUTION_METRICS = ("in_range_70_180", "below_70", "below_54", "above_180", "above_250", "mean", "CV",
                        "LBGI", "HBGI")
TARGETS = {  # consensus targets for people (BENCHMARK.md)
    "in_range_70_180 > 70": ("in_range_70_180", ">", 70.0),
    "below_70 < 4": ("below_70", "<", 4.0),
    "below_54 < 1": ("below_54", "<", 1.0),
}


def distribution(values: Sequence[float]) -> dict[str, float]:
    """Mean, SD, min, 5/25/50/75/95th percentiles and max."""
    v = np.asarray(values, dtype=float)
    out = {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if v.size > 1 else 0.0, "min": float(v.min())}
    out.update({label: float(np.percentile(v, q)) for label, q in _QUANTILES})
    out["max"] = float(v.max())
    return out


def _meets(metrics: dict[str, float], rule: tuple[str, str, float]) -> bool:
    key, op, bound = rule
    return metrics[key] > bound if op == ">" else metrics[key] < bound


def population_description() -> dict[str, Any]:
    return {
        "base_patients": "simglucose 0.2.11 patient of group j mod 3 (adolescent, adult, child), "
                         "number (j div 3) mod 10 + 1",
        "factors": "exp(clip(sigma * z, -2 sigma, 2 sigma)), z ~ N(0, 1) from numpy default_rng([seed, j]) "
                   "in the order below",
        "variations": [
            {"name": v.name, "parameters": list(v.parameters), "sigma": v.sigma,
             "bounds": [round(b, 6) for b in v.bounds], "meaning": v.meaning}
            for v in VARIATIONS
        ],
        "steady_state": "Ib and u2ss divided by kp3's factor (same basal glucose Gb and production EGPb); "
                        "initial state = steady state under u2ss, empty gut",
        "clinical_profile": "weight BW; basal u2ss*BW/6000 U/min; TDI = base TDI x basal/base basal; "
                            "CR = base CR x insulin_sensitivity; CF = base CF x insulin_sensitivity / body_weight; "
                            "age of the base",
    }


def protocol_description(spec: PopulationSpec) -> dict[str, Any]:
    return {
        "arm": spec.arm,
        "days": spec.days,
        "start": BENCHMARK_START.isoformat(),
        "scenario": "simglucose RandomScenario(start_time=start, seed=seed * 1000000 + j + 1)",
        "sensor": f"simglucose {spec.sensor} noise model (CGMNoise, seed as the scenario), "
                  f"{spec.sample_min:g}-minute samples, clipped to the sensor range",
        "sensor_seed": "seed * 1000000 + j + 1",
        "pump": f"simglucose {PUMP} rounding and limits; bolus spread over one cycle",
        "cycle_min": spec.sample_min,
        "integrator": f"RK4, 1-minute steps, {plant_substeps()} substep(s)",
        "glucose_for_metrics": "true glucose of the plant (Gsub), CGM metrics beside it",
    }


def build_population_summary(spec: PopulationSpec, chunks: Sequence[ChunkResult]) -> dict[str, Any]:
    """The deterministic part of ``summary.json`` (everything but ``run``)."""
    from sim.trial.cohort import GROUPS
    from sim.trial.metrics import mean_metrics, safety_rank_key
    from sim.trial.summary import versions

    patients: dict[str, dict[str, Any]] = {}
    for chunk in sorted(chunks, key=lambda c: c.indices[0]):
        patients.update(chunk.patients)
    names = list(patients)

    def block(members: list[str]) -> dict[str, Any]:
        return {
            "n": len(members),
            "bg": {m: distribution([patients[n]["bg"][m] for n in members]) for m in DISTRIBUTION_METRICS},
            "cgm": {m: distribution([patients[n]["cgm"][m] for n in members]) for m in DISTRIBUTION_METRICS},
            "mean_bg": mean_metrics([patients[n]["bg"] for n in members]),
            "meeting_targets_pct": {
                **{label: 100.0 * np.mean([_meets(patients[n]["bg"], rule) for n in members])
                   for label, rule in TARGETS.items()},
                "all three": 100.0 * np.mean([all(_meets(patients[n]["bg"], r) for r in TARGETS.values())
                                              for n in members]),
            },
        }

    worst = max(names, key=lambda n: safety_rank_key(patients[n]["bg"]))
    return {
        "format": SUMMARY_FORMAT,
        "plant": PLANT,
        "controller": spec.controller,
        "controller_description": CONTROLLER_DESCRIPTIONS[spec.controller],
        "spec": spec.to_dict(),
        "population": population_description(),
        "protocol": protocol_description(spec),
        "versions": versions(),
        "population_results": block(names),
        "groups": {g: block([n for n in names if patients[n]["group"] == g])
                   for g in GROUPS if any(patients[n]["group"] == g for n in names)},
        "worst_patient": {"name": worst, "base": patients[worst]["base"], "bg": patients[worst]["bg"],
                          "rule": "most time below 54 mg/dL, then below 70, then lowest TIR (true glucose)"},
        "patients": patients,
    }


def throughput(spec: PopulationSpec, chunks: Sequence[ChunkResult], wall_s: float, workers: int) -> dict[str, Any]:
    """Patient-days per second (wall clock, per worker) and per CPU-second, and where the CPU went."""
    cpu = {key: float(sum(c.timing[key] for c in chunks))
           for key in ("cpu_s", "setup_cpu_s", "controller_cpu_s", "plant_cpu_s")}
    cycles = sum(c.timing["cycles"] for c in chunks)
    pd_ = spec.patient_days
    return {
        "wall_s": round(wall_s, 3),
        "workers": workers,
        "patient_days": pd_,
        "patient_days_per_s": pd_ / wall_s,
        "patient_days_per_s_per_worker": pd_ / wall_s / workers,
        "patient_days_per_cpu_s": pd_ / cpu["cpu_s"] if cpu["cpu_s"] > 0 else float("nan"),
        **{k: round(v, 3) for k, v in cpu.items()},
        "controller_ms_per_patient_cycle": 1000.0 * cpu["controller_cpu_s"] / cycles if cycles else float("nan"),
        "plant_us_per_patient_cycle": 1e6 * cpu["plant_cpu_s"] / cycles if cycles else float("nan"),
        "chunks": len(chunks),
        "load_avg_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
    }


@dataclass
class PopulationResult:
    summary: dict[str, Any]
    chunks: list[ChunkResult]
    out_dir: Path | None


def _run_once(spec, engine, chunks, traces, progress, desc) -> tuple[list[ChunkResult], float]:
    from sim.trial.runner import _Progress

    bar = _Progress(total_min=spec.patient_days * MIN_PER_DAY, enabled=progress, desc=desc)
    tic = time.perf_counter()
    try:
        results = engine.map(simulate_chunk, [(spec, chunk, traces) for chunk in chunks], progress=bar.advance)
    finally:
        bar.close()
    return results, time.perf_counter() - tic


def run_population(
    spec: PopulationSpec,
    workers: int | None = None,
    engine: Any = None,
    out_dir: Path | None = None,
    progress: bool = True,
    chunk_size: int | None = None,
    traces: bool = False,
    scaling: bool = False,
    scheduler: str | None = None,
) -> PopulationResult:
    """Run the population; with ``out_dir`` write ``summary.json``, ``patients.csv`` (and ``traces.npz``).

    ``engine``: ``"local"`` (default) or ``"dask"`` (with ``scheduler``, or a
    LocalCluster of ``workers`` processes). ``scaling``: first run the same
    population on one worker, then on ``workers``, check the results are
    identical and report the speedup in ``run.scaling``. The ``run`` section is
    the only part of the summary that changes between identical runs.
    """
    from sim.engine import LocalEngine, default_workers, make_engine
    from sim.trial.runner import check_writable

    if engine is None or isinstance(engine, str):
        kind = engine or "local"
        runner = make_engine(kind, workers, scheduler)
    elif scaling:
        raise ValueError("scaling needs an engine name (local or dask), not an engine object")
    else:
        kind, runner = None, engine
    if scaling and scheduler is not None:
        raise ValueError("scaling starts its own workers: not with a scheduler address")
    n_workers = workers or default_workers()
    chunks = plan_chunks(spec.size, n_workers, chunk_size)
    if out_dir is not None:
        check_writable(out_dir)

    single = None
    if scaling:
        if n_workers < 2:
            raise ValueError("scaling compares 1 worker with --workers >= 2")
        # one worker started like the others (a process, not this one), so start-up costs compare
        one = LocalEngine(1, in_process=False) if kind == "local" else make_engine(kind, 1)
        single_results, single_wall = _run_once(spec, one, chunks, False, progress, "population, 1 worker")
        single = (single_results, single_wall)
    results, wall = _run_once(spec, runner, chunks, traces, progress, "population")
    used = runner.describe()
    summary = build_population_summary(spec, results)
    run = throughput(spec, results, wall, int(used["workers"]))
    run["engine"] = used
    if single is not None:
        one_summary = build_population_summary(spec, single[0])
        base = throughput(spec, single[0], single[1], 1)
        run["scaling"] = {
            "workers_1": {k: base[k] for k in ("wall_s", "patient_days_per_s", "patient_days_per_cpu_s")},
            f"workers_{run['workers']}": {k: run[k] for k in ("wall_s", "patient_days_per_s",
                                                               "patient_days_per_cpu_s")},
            "speedup": single[1] / wall,
            "efficiency": single[1] / wall / run["workers"],
            "results_identical": one_summary["patients"] == summary["patients"],
        }
    summary["run"] = run
    if out_dir is not None:
        _write_outputs(out_dir, summary, results, traces)
    return PopulationResult(summary=summary, chunks=list(results), out_dir=out_dir)


# --- outputs --------------------------------------------------------------------------------

_CSV_METRICS = ("in_range_70_180", "below_70", "below_54", "above_180", "above_250", "mean", "CV", "LBGI", "HBGI")


def _write_outputs(out_dir: Path, summary: dict[str, Any], chunks: Sequence[ChunkResult], traces: bool) -> None:
    with open(out_dir / "summary.json", "w") as handle:
        json.dump(summary, handle, indent=2)
        handle.write("\n")
    factor_names = [v.name for v in VARIATIONS]
    profile_names = ["weight_kg", "basal_u_per_h", "total_daily_insulin_u", "carb_ratio_g_per_u",
                     "correction_factor_mg_dl_per_u", "age_years"]
    header = (["plant", "patient", "base", "group", "seed"] + factor_names + profile_names
              + [f"bg_{m}" for m in _CSV_METRICS] + [f"cgm_{m}" for m in _CSV_METRICS]
              + ["insulin_u_per_day", "carbs_g_per_day"])
    with open(out_dir / "patients.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for name, p in summary["patients"].items():
            writer.writerow(
                [PLANT, name, p["base"], p["group"], p["seed"]]
                + [p["factors"][f] for f in factor_names]
                + [p["profile"][k] for k in profile_names]
                + [p["bg"][m] for m in _CSV_METRICS] + [p["cgm"][m] for m in _CSV_METRICS]
                + [p["insulin_u_per_day"], p["carbs_g_per_day"]]
            )
    if traces:
        ordered = sorted(chunks, key=lambda c: c.indices[0])
        arrays = {key: np.concatenate([c.traces[key] for c in ordered]) for key in ordered[0].traces}
        names = np.array([n for c in ordered for n in c.patients])
        np.savez_compressed(out_dir / "traces.npz", plant=np.array(PLANT), patients=names,
                            sample_min=np.array(summary["protocol"]["cycle_min"]), **arrays)


_TABLE_COLUMNS = (("TIR", "in_range_70_180", "{:6.1f}"), ("<70", "below_70", "{:6.1f}"),
                  ("<54", "below_54", "{:6.1f}"), (">180", "above_180", "{:6.1f}"),
                  (">250", "above_250", "{:6.1f}"), ("mean", "mean", "{:6.0f}"), ("CV", "CV", "{:6.1f}"))
_STATS = ("mean", "sd", "min", "p5", "p25", "median", "p75", "p95", "max")


def format_population_tables(summary: dict[str, Any]) -> str:
    """The tables ``glucotwin population`` prints: distributions over the population, throughput."""
    spec = summary["spec"]
    lines = [
        f"plant: {summary['plant']}",
        f"population of {spec['size']} (seed {spec['seed']}), controller {summary['controller']}, arm {spec['arm']}, "
        f"{spec['days']:g} days, sensor {spec['sensor']}; true glucose, % of samples",
    ]
    head = "metric".ljust(8) + "".join(s.rjust(8) for s in _STATS)
    lines += ["distribution over patients", head, "-" * len(head)]
    dist = summary["population_results"]["bg"]
    for title, key, _ in _TABLE_COLUMNS:
        lines.append(title.ljust(8) + "".join(f"{dist[key][s]:8.1f}" for s in _STATS))
    lines.append("-" * len(head))
    group_head = "group".ljust(18) + "".join(f"{t:>7}" for t, _, _ in _TABLE_COLUMNS) + "   median TIR"
    lines += ["means by base group (true glucose)", group_head]
    plural = {"adolescent": "adolescents", "adult": "adults", "child": "children"}
    for group, block in summary["groups"].items():
        cells = "".join(fmt.format(block["mean_bg"][key]).rjust(7) for _, key, fmt in _TABLE_COLUMNS)
        lines.append(f"{plural[group]} ({block['n']})".ljust(18) + cells
                     + f"{block['bg']['in_range_70_180']['median']:13.1f}")
    total = summary["population_results"]
    cells = "".join(fmt.format(total["mean_bg"][key]).rjust(7) for _, key, fmt in _TABLE_COLUMNS)
    lines.append(f"all ({total['n']})".ljust(18) + cells + f"{total['bg']['in_range_70_180']['median']:13.1f}")
    targets = total["meeting_targets_pct"]
    lines.append("patients meeting consensus targets: "
                 + ", ".join(f"{label}: {pct:.1f} %" for label, pct in targets.items()))
    worst = summary["worst_patient"]
    lines.append(f"worst patient: {worst['name']} (base {worst['base']}; TIR {worst['bg']['in_range_70_180']:.1f} %, "
                 f"<70 {worst['bg']['below_70']:.1f} %, <54 {worst['bg']['below_54']:.1f} %)")
    run = summary.get("run")
    if run:
        lines.append(
            f"throughput: {run['patient_days']:g} patient-days in {run['wall_s']:.1f} s on {run['workers']} "
            f"worker(s) ({run['engine']['engine']}): {run['patient_days_per_s']:.2f} patient-days/s, "
            f"{run['patient_days_per_s_per_worker']:.2f} per worker, {run['patient_days_per_cpu_s']:.2f} per CPU-second "
            f"(CPU per patient-cycle: controller {run['controller_ms_per_patient_cycle']:.3g} ms, plant "
            f"{run['plant_us_per_patient_cycle']:.3g} us; load average {run['load_avg_1min']})"
        )
        scaling = run.get("scaling")
        if scaling:
            lines.append(
                f"scaling 1 -> {run['workers']} workers: {scaling['workers_1']['wall_s']:.1f} s -> {run['wall_s']:.1f} s, "
                f"speedup {scaling['speedup']:.2f}x (efficiency {100 * scaling['efficiency']:.0f} %), "
                f"results identical: {scaling['results_identical']}"
            )
    return "\n".join(lines)
