"""``glucotwin whatif-check``: the what-if against what simglucose then does (validation, issue 19).

Per patient and arm, glucotwin's loop runs a closed-loop day on the public
protocol's patient, seed and sensor. At ``moments`` random cycles (seeded,
between hours 2 and 14 of the day), right after the loop's decision, the
run is branched (a deep copy of simglucose's patient, sensor, scenario and
pump, and of the loop): one branch goes on as it was, and one per action
applies it and goes on under the same loop (closed loop, as the person
lives it). The actions are sampled per moment:

- a meal of 20-80 g eaten now (simglucose has one absorption speed, so only
  ``medium`` is checked), announced to the loop in the HCL arm;
- a bolus of 3-10 % of the total daily insulin now, which the loop learns of
  as the pump's delivery;
- a suspension of 30-120 minutes from the next cycle (the pump delivers
  nothing; the loop's decisions in between are not delivered, and it is told so).

At the same moment the what-if is asked of the loop's live twin (the same
action), and :meth:`TwinEstimator.forecast` gives the twin's own forecast.
Scored against the true BG of the branches at 30 / 60 / 120 / 240 minutes:
RMSE of each forecast, and the error of the predicted effect of the action
(with minus without) relative to its true effect. Validation only: it reads
the simulator's truth; the what-if itself sees what the loop sees.
"""

from __future__ import annotations

import copy
import math
from collections import namedtuple
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np

HORIZONS_MIN = (30, 60, 120, 240)
KINDS = ("meal", "bolus", "suspend")
BRANCH_MIN = 240.0
SimAction = namedtuple("SimAction", ["basal", "bolus"])  # simglucose's controller action, U/min


@dataclass(frozen=True)
class CheckSettings:
    moments: int = 3
    days: float = 1.0  # the protocol's day (meals); the run stops at the last moment
    resolve_min: float = 15.0
    seed_offset: int = 0
    twins_dir: str | None = None  # learned twins (``DIR/<patient>.json``); None: the profile's twin
    twin_purpose: str = "dosing"  # which of a learned file's twins the loop runs on


class _ExtraMeal:
    """A scenario that also serves ``grams`` at the first minute at or after ``at``."""

    def __init__(self, scenario: Any, at: Any, grams: float) -> None:
        self._scenario, self._at, self._grams, self._served = scenario, at, grams, False

    def get_action(self, t: Any) -> Any:
        action = self._scenario.get_action(t)
        if not self._served and t >= self._at:
            self._served = True
            return action._replace(meal=action.meal + self._grams)
        return action

    def __getattr__(self, name: str) -> Any:
        return getattr(self._scenario, name)


class _Run:
    """glucotwin's loop on one simglucose environment, stepped as ``sim.trial.runner`` steps it."""

    def __init__(self, env: Any, policy: Any, arm: str) -> None:
        from sim.trial.meal_info import MealInformation

        self.env, self.policy, self.arm = env, policy, arm
        self.meals = MealInformation(arm == "hcl")
        self.obs, _, _, self.info = env.reset()
        self.suspended_until = None

    def decide(self) -> Any:
        from controller.policy import ControlInput
        from sim.trial.adapter import dose_to_action, rate_per_min_to_amount

        sample = float(self.env.sample_time)
        info = self.info
        announced = self.meals.announced_g_per_min(info["time"], info.get("meal", 0.0), sample)
        inp = ControlInput(time=info["time"], cgm_mg_dl=float(self.obs.CGM),
                           announced_carbs_g=rate_per_min_to_amount(announced, sample), cycle_min=sample)
        if self.suspended_until is not None and info["time"] < self.suspended_until:
            self.policy.decide(inp, assume_delivered=False)
            self.policy.record_delivery(inp.time, 0.0, sample, 0.0)  # the pump delivered nothing
            return SimAction(0.0, 0.0)
        return dose_to_action(self.policy.decide(inp), sample)

    def step(self, action: Any) -> None:
        self.obs, _, _, self.info = self.env.step(action)

    def run_for(self, minutes: float) -> list[float]:
        """True BG at each sample over the next ``minutes`` (the first is the BG now)."""
        bg = [float(self.env.BG_hist[-1])]
        end = self.env.time + timedelta(minutes=minutes)
        while self.env.time < end:
            self.step(self.decide())
            bg.append(float(self.env.BG_hist[-1]))
        return bg


def _sample_action(rng: np.random.Generator, kind: str, tdi_u: float) -> dict[str, float]:
    if kind == "meal":
        return {"carbs_g": float(rng.integers(4, 17) * 5)}
    if kind == "bolus":
        return {"units_u": round(float(rng.uniform(0.03, 0.10)) * tdi_u, 2)}
    return {"minutes": float(rng.integers(2, 9) * 15)}


def check_patient(patient: str, arm: str, settings: CheckSettings) -> list[dict[str, Any]]:
    """Every moment's branches of one patient and arm, scored (module docstring)."""
    from controller.twin_policy import TwinMPCPolicy
    from controller.whatif import closed_loop
    from sim.trial.cohort import PATIENTS, clinical_profile
    from sim.trial.priors import population_prior
    from sim.trial.protocol import TrialProtocol
    from sim.trial.simglucose_env import make_env
    from twin.personalize import personalize
    from twin.whatif import Bolus, Meal, TempBasal

    protocol = TrialProtocol(arm=arm, days=settings.days, seed_offset=settings.seed_offset)
    seed = protocol.seed_for(patient)
    profile = clinical_profile(patient)
    if settings.twins_dir is None:
        twin = personalize(profile, population_prior(exclude=patient))
    else:
        from pathlib import Path

        from twin.learning.learned import load_learned_twin

        twin = load_learned_twin(Path(settings.twins_dir) / f"{patient}.json", purpose=settings.twin_purpose)
    policy = TwinMPCPolicy(twin)
    run = _Run(make_env(patient, seed, protocol.start, protocol.sensor, protocol.pump), policy, arm)
    sample = float(run.env.sample_time)
    cycles = int(settings.days * 24 * 60 / sample)
    rng = np.random.default_rng(10_000 * (PATIENTS.index(patient) + 1) + (arm == "fcl") + settings.seed_offset)
    first, last = int(120 / sample), int(min(14 * 60, settings.days * 24 * 60 - BRANCH_MIN) / sample)
    moments = set(int(m) for m in rng.choice(np.arange(first, last), size=settings.moments, replace=False))
    rows: list[dict[str, Any]] = []
    for i in range(min(cycles, max(moments) + 1)):  # the day's run ends at its last moment
        action = run.decide()
        if i in moments:
            rows += _branch(run, action, rng, profile, sample, settings, closed_loop, Meal, Bolus, TempBasal)
        run.step(action)
    for r in rows:
        r.update(patient=patient, arm=arm, seed=seed)
    return rows


def _branch(run: _Run, action: Any, rng: np.random.Generator, profile: Any, sample: float, settings: CheckSettings,
            closed_loop: Any, Meal: Any, Bolus: Any, TempBasal: Any) -> list[dict[str, Any]]:
    est = run.policy.estimator
    if est is None or est.readings_accepted == 0:
        return []
    now = run.info["time"]
    own = est.forecast(BRANCH_MIN)
    base = copy.deepcopy(run)
    without = copy.deepcopy(base)
    without.step(action)
    truth_without = [float(base.env.BG_hist[-1])] + without.run_for(BRANCH_MIN - sample)
    rows = []
    for kind in KINDS:
        spec = _sample_action(rng, kind, profile.total_daily_insulin_u)
        b = copy.deepcopy(base)
        first = action
        if kind == "meal":
            asked = Meal(spec["carbs_g"], announced=run.arm == "hcl")
            b.env.scenario = _ExtraMeal(b.env.scenario, now, spec["carbs_g"])
        elif kind == "bolus":
            asked = Bolus(spec["units_u"])
            first = SimAction(action.basal, action.bolus + spec["units_u"] / sample)
            b.policy.estimator.add_bolus(spec["units_u"])  # the loop learns of it from the pump
            b.policy.supervisor.delivered(now, profile.basal_u_per_h_at(now), 0.0,
                                          spec["units_u"])
        else:
            asked = TempBasal(0.0, spec["minutes"], at_min=5.0)
            b.suspended_until = now + timedelta(minutes=sample + spec["minutes"])
        b.step(first)
        truth_with = [float(base.env.BG_hist[-1])] + b.run_for(BRANCH_MIN - sample)
        answer = closed_loop(run.policy, [asked], horizon_min=BRANCH_MIN, resolve_min=settings.resolve_min)
        rows.append(_score(kind, spec, now, sample, est, own, answer, truth_without, truth_with))
    return rows


def _score(kind: str, spec: dict[str, float], now: Any, sample: float, est: Any, own: Any, answer: Any,
           truth_without: list[float], truth_with: list[float]) -> dict[str, Any]:
    """Forecasts and truths at :data:`HORIZONS_MIN` (the truth at the sample nearest each horizon)."""
    # the estimator's time is the decision's, the branches' first sample is that time too
    t_truth = np.arange(len(truth_with)) * sample
    row: dict[str, Any] = {"kind": kind, **spec, "time": now.isoformat(), "compute_ms": answer.compute_ms}
    for h in HORIZONS_MIN:
        tw = float(np.interp(h, t_truth, truth_without))
        ta = float(np.interp(h, t_truth, truth_with))
        cw, ca = answer.loop_without.branch, answer.loop_with.branch
        row[f"truth_without_{h}"], row[f"truth_with_{h}"] = tw, ta
        row[f"own_{h}"] = own.at(h)[0]
        row[f"open_with_{h}"], row[f"open_without_{h}"] = answer.open_with.at(h), answer.open_without.at(h)
        row[f"loop_with_{h}"], row[f"loop_without_{h}"] = ca.at(h), cw.at(h)
        lo = float(np.interp(h, ca.horizons_min, ca.lower_mg_dl))
        hi = float(np.interp(h, ca.horizons_min, ca.upper_mg_dl))
        row[f"loop_with_covered_{h}"] = bool(lo <= ta <= hi)
    return row


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy by horizon and action (module docstring); RMSE in mg/dL, effect errors in % of the true effect."""
    out: dict[str, Any] = {"moments": len(rows) // len(KINDS) if rows else 0, "by_kind": {}}
    for kind in KINDS + ("all",):
        sel = [r for r in rows if kind == "all" or r["kind"] == kind]
        if not sel:
            continue
        k: dict[str, Any] = {"n": len(sel)}
        for h in HORIZONS_MIN:
            tw = np.array([r[f"truth_without_{h}"] for r in sel])
            ta = np.array([r[f"truth_with_{h}"] for r in sel])
            rm = lambda a, b: float(np.sqrt(np.mean((a - b) ** 2)))  # noqa: E731
            k[f"rmse_{h}"] = {
                "own_forecast_without": rm(np.array([r[f"own_{h}"] for r in sel]), tw),
                "closed_loop_without": rm(np.array([r[f"loop_without_{h}"] for r in sel]), tw),
                "open_loop_with": rm(np.array([r[f"open_with_{h}"] for r in sel]), ta),
                "closed_loop_with": rm(np.array([r[f"loop_with_{h}"] for r in sel]), ta),
            }
            true_effect = ta - tw
            for which in ("loop", "open"):
                pred = np.array([r[f"{which}_with_{h}"] - r[f"{which}_without_{h}"] for r in sel])
                big = np.abs(true_effect) >= 5.0  # effects under 5 mg/dL: relative error meaningless
                rel = np.abs(pred[big] - true_effect[big]) / np.abs(true_effect[big])
                k[f"effect_{which}_{h}"] = {"median_rel_error_pct": float(np.median(rel) * 100) if rel.size else math.nan,
                                            "n": int(rel.size),
                                            "median_true_effect_mg_dl": float(np.median(true_effect))}
            k[f"band80_coverage_{h}"] = float(np.mean([r[f"loop_with_covered_{h}"] for r in sel]))
        k["compute_ms_median"] = float(np.median([r["compute_ms"] for r in sel]))
        out["by_kind"][kind] = k
    return out


def _job(args: tuple[str, str, CheckSettings]) -> list[dict[str, Any]]:
    return check_patient(*args)


def run_check(patients: list[str], arms: list[str], settings: CheckSettings, workers: int = 1) -> list[dict[str, Any]]:
    jobs = [(p, a, settings) for a in arms for p in patients]
    if workers <= 1:
        return [r for j in jobs for r in _job(j)]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        return [r for rows in pool.map(_job, jobs) for r in rows]
