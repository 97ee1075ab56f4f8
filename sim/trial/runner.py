"""Closed-loop trial runner: any simglucose ``Controller`` on a list of patients.

Each patient runs in simglucose's own environment (``T1DSimEnv``) stepped
exactly as simglucose's ``SimObj.simulate`` steps it, so a run of
simglucose's ``BBController`` here equals simglucose's own engine sample for
sample. Patients run as independent jobs of an engine (:mod:`sim.engine`:
local worker processes by default, or a Dask cluster); each run depends only
on its patient, controller and protocol, so results are identical whatever
the engine and the number of workers.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np

from sim.trial.adapter import rate_per_min_to_amount
from sim.trial.baselines import ControllerFactory, controller_factory
from sim.trial.meal_info import MealInformation
from sim.engine import Engine, default_workers, resolve_engine  # noqa: F401 (default_workers: re-exported)
from sim.trial.protocol import TrialProtocol
from sim.trial.rescue import RescueScenario
from sim.trial.simglucose_csv import simglucose_history
from sim.trial.simglucose_env import make_env
from sim.trial.trace import Trace

ProgressCallback = Callable[[str, float], None]  # (patient, simulated minutes since last call)

_PROGRESS_EVERY_MIN = 60.0


@dataclass(frozen=True)
class PatientRun:
    """One patient's finished run.

    ``simglucose_history``: simglucose's own ``env.show_history()`` frame of the run (Time, BG, CGM,
    CHO, insulin, LBGI, HBGI, Risk), written as simglucose writes it (:mod:`sim.trial.simglucose_csv`).
    """

    patient: str
    seed: int
    trace: Trace
    wall_s: float
    simglucose_history: Any = field(default=None, compare=False, repr=False)


def _resolve(controller: str | ControllerFactory) -> ControllerFactory:
    """A built-in name (``mpc``, ``bb``, ...), a user's ``module:attr`` or a factory, as a factory."""
    if isinstance(controller, str):
        from sim.trial.controllers import is_user_spec, user_controller_factory

        return user_controller_factory(controller) if is_user_spec(controller) else controller_factory(controller)
    return controller


def simulate_patient(
    patient: str,
    controller: str | ControllerFactory,
    protocol: TrialProtocol,
    progress: ProgressCallback | None = None,
    rescue_probe: Callable[..., None] | None = None,
) -> PatientRun:
    """Run one virtual patient under ``protocol`` with a freshly built controller.

    ``rescue_probe`` (validation only, with ``protocol.follow_advice``) is called as
    ``rescue_probe(env, ctrl, meals, action, advice)`` at each new carbohydrate advice, before
    the patient eats it: a counterfactual may copy the run from there (:mod:`sim.trial.rescue`)."""
    tic = time.perf_counter()
    seed = protocol.seed_for(patient)
    env = make_env(patient, seed, protocol.start, protocol.sensor, protocol.pump,
                   physiology_scale=protocol.physiology_scale)
    ctrl = _resolve(controller)(patient, protocol.arm)
    diagnostics_of = getattr(ctrl, "diagnostics", None)
    attach_env = getattr(ctrl, "attach_env", None)  # ceiling references only: they read the true state
    if attach_env is not None:
        attach_env(env)

    rescue = None
    if protocol.follow_advice:
        rescue = env.scenario = RescueScenario(env.scenario)
    advice_of = getattr(ctrl, "advice", None)
    ctrl.reset()
    obs, reward, done, info = env.reset()
    end = protocol.start + protocol.duration
    diag_rows: list[dict[str, Any]] = []
    pending_min = 0.0
    meals = MealInformation(protocol.meal_announcement, protocol.carb_announcement_factor, protocol.meal_delay_min)
    while env.time < end:
        meal = float(info.get("meal", 0.0) or 0.0)
        if rescue is not None and "time" in info:  # eaten, never announced: out of the meal information
            step_start = info["time"] - timedelta(minutes=env.sample_time)
            meal = max(meal - rescue.rescue_g(step_start, env.sample_time) / env.sample_time, 0.0)
        info = dict(info, meal=meals.announced_g_per_min(info["time"], meal, env.sample_time))
        action = ctrl.policy(obs, reward, done, **info)
        row = diagnostics_of() if diagnostics_of else {}
        if rescue is not None:
            advice = advice_of() if advice_of else None
            grams = float(advice["carbs_g"]) if advice and advice.get("kind") == "carbs" and advice.get("new") else 0.0
            if grams > 0 and rescue_probe is not None:
                rescue_probe(env, ctrl, meals, action, advice)
            rescue.eat(env.time, grams)
            row = dict(row, rescue_carbs_g=grams)
        diag_rows.append(row)
        obs, reward, done, info = env.step(action)
        pending_min += env.sample_time
        if progress and pending_min >= _PROGRESS_EVERY_MIN:
            progress(patient, pending_min)
            pending_min = 0.0
    if progress and pending_min:
        progress(patient, pending_min)

    sample_min = float(env.sample_time)
    n = len(env.BG_hist)
    carbs = np.full(n, np.nan)
    insulin = np.full(n, np.nan)
    carbs[: n - 1] = [rate_per_min_to_amount(c, sample_min) for c in env.CHO_hist]
    insulin[: n - 1] = [rate_per_min_to_amount(u, sample_min) for u in env.insulin_hist]
    columns: list[str] = []
    for row in diag_rows:
        columns += [c for c in row if c not in columns]
    diagnostics = {c: [row.get(c) for row in diag_rows] + [None] for c in columns}
    trace = Trace(
        patient=patient,
        sample_min=sample_min,
        time=list(env.time_hist),
        bg_mg_dl=np.asarray(env.BG_hist, dtype=float),
        cgm_mg_dl=np.asarray(env.CGM_hist, dtype=float),
        carbs_g=carbs,
        insulin_u=insulin,
        diagnostics=diagnostics,
    )
    return PatientRun(patient=patient, seed=seed, trace=trace, wall_s=time.perf_counter() - tic,
                      simglucose_history=simglucose_history(env))


class _Progress:
    """A progress bar in simulated patient-hours (tqdm on a terminal, silent otherwise)."""

    def __init__(self, total_min: float, enabled: bool, desc: str = "trial") -> None:
        self._bar = None
        if enabled:
            try:
                from tqdm import tqdm

                self._bar = tqdm(
                    total=round(total_min / 60.0, 1),
                    unit="patient-h",
                    desc=desc,
                    file=sys.stderr,
                    disable=None,
                    dynamic_ncols=True,
                )
            except ImportError:  # tqdm is part of the sim extra; run without a bar otherwise
                self._bar = None

    def advance(self, patient: str, minutes: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(patient, refresh=False)
            self._bar.update(round(minutes / 60.0, 1))

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run_patients(
    patients: list[str],
    controller: str | ControllerFactory,
    protocol: TrialProtocol,
    workers: int | None = None,
    progress: bool = True,
    engine: str | Engine | None = None,
) -> list[PatientRun]:
    """Run every patient; results come back in the order of ``patients``.

    ``engine``: ``"local"`` (the default: ``workers`` processes of this
    machine, in-process for one), ``"dask"`` (a Dask ``LocalCluster`` of
    ``workers`` processes) or an :class:`~sim.engine.Engine`, e.g.
    ``make_engine("dask", scheduler="tcp://host:8786")``.
    """
    if not patients:
        raise ValueError("no patients to run")
    factory = _resolve(controller)  # fail early on an unknown name or a user's controller that cannot run
    if isinstance(controller, str) and ":" in controller:
        controller = factory  # a user's module:attr: found from this process's directory, then in each worker
    runner = resolve_engine(engine, workers)
    bar = _Progress(total_min=len(patients) * protocol.days * 24 * 60, enabled=progress)
    try:
        runs = runner.map(simulate_patient, [(p, controller, protocol) for p in patients], progress=bar.advance)
    finally:
        bar.close()
    return runs


def check_writable(out_dir: Path) -> None:
    """Create ``out_dir`` and prove it is writable, before any simulation runs."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".glucotwin-write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise OSError(f"cannot write to output directory {out_dir}: {exc.strerror or exc}") from None
