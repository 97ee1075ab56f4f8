"""The closed-loop what-if: what the loop itself would do in answer to an action, inside the twin's future.

:func:`twin.whatif.open_loop` says what an action does on the programmed
basal. The loop does not hold the programmed basal: it answers a meal with a
meal bolus and a higher basal, a bolus with a lower one. :func:`closed_loop`
runs the loop's own MPC, meal bolus and a copy of its safety supervisor every
cycle of the twin's future, with and without the action, and reports the
glucose and the insulin of both branches.

How, in one batch of model runs rather than one per cycle:

0. the policy's last cycle is already given (its rate runs until the next
   cycle), so the loop's first decision in the future is the next cycle's,
   ``STEP_MIN`` later; a meal now is answered then;
1. per branch, the twin from its current state predicts glucose on the
   programmed basal with the actions (``nominal``) and the glucose change
   after one extra unit now (``response``), over the what-if horizon plus
   the MPC's own;
2. every cycle the MPC sees ``nominal`` plus the shifted responses of the
   insulin it gave above (or below) the programmed basal in earlier cycles:
   the twin's future linearized around the branch (superposition, as the MPC
   itself plans). A meal the loop is not told of (``announced=False``, and
   every meal in FCL) is seen only as far as it has raised glucose by that
   cycle, held flat ahead, as the loop's estimator sees an unexplained rise:
   the loop cannot answer a rise it has not seen. The MPC, the meal bolus (on a copy of the estimator with
   the meal announced) and the supervisor copy decide as in a live cycle,
   with the twin's glucose as the reading. The MPC is solved every
   ``resolve_min`` (15 min by default, every cycle with 5); between solves
   the cycles follow its plan (the second block's rate), each still bounded
   by the supervisor. A solve takes 1-3 ms, and 144 of them (6 h, both
   branches) would take the query well past its budget; the validation
   (``glucotwin whatif-check``) measures what the coarser re-planning costs;
3. the branch is then run again through the nonlinear twin, with the
   estimator's cubature points, under the insulin the loop gave: that run is
   the answer, with its band.

A temporary basal or suspension the person sets overrides the loop for its
duration (the pump runs it); a bolus the person gives adds to the loop's.
A meal is announced to the loop (HCL) unless ``Meal.announced`` is false.

Copies only: the live policy, its estimator and its supervisor are never
changed, and nothing here reaches the pump (tested).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence

import numpy as np

from controller.policy import Dose
from controller.twin_policy import TwinMPCPolicy
from twin.estimator import MIN_PER_H
from twin.whatif import (MAX_HORIZON_MIN, Action, Bolus, Branch, Inputs, Meal, TempBasal, branch_inputs, branches_of,
                         describe, ensemble, open_loop_inputs, programmed_basal, running_basal)

STEP_MIN = 5.0


@dataclass(frozen=True)
class LoopBranch:
    """One closed-loop branch: the twin's forecast under the loop's answer, and that answer."""

    branch: Branch
    loop_bolus_u: float     # boluses the loop gave over the horizon (meal and correction)
    loop_basal_u: float     # basal insulin the loop gave over the horizon
    programmed_basal_u: float
    first_reason: str       # the reason of the loop's first decision in this branch

    def summary(self) -> dict[str, Any]:
        return {**self.branch.summary(), "loop_bolus_u": round(self.loop_bolus_u, 3),
                "loop_basal_u": round(self.loop_basal_u, 3),
                "programmed_basal_u": round(self.programmed_basal_u, 3), "first_reason": self.first_reason}


@dataclass(frozen=True)
class WhatIfAnswer:
    """The what-if's answer: open loop (programmed basal) and closed loop, each without and with."""

    question: str
    issued_at: str
    horizon_min: float
    coverage: float
    open_without: Branch
    open_with: Branch
    loop_without: LoopBranch
    loop_with: LoopBranch
    compute_ms: float

    @property
    def loop_extra_insulin_u(self) -> float:
        """Insulin the loop gives in answer to the action: with minus without."""
        w, o = self.loop_with, self.loop_without
        return (w.loop_bolus_u + w.loop_basal_u) - (o.loop_bolus_u + o.loop_basal_u)

    def to_dict(self) -> dict[str, Any]:
        return {"format": "glucotwin.whatif/1", "question": self.question, "issued_at": self.issued_at,
                "horizon_min": self.horizon_min, "band_coverage": self.coverage,
                "open_loop": {"without": self.open_without.to_dict(), "with": self.open_with.to_dict()},
                "closed_loop": {"without": {**self.loop_without.branch.to_dict(), **self.loop_without.summary()},
                                "with": {**self.loop_with.branch.to_dict(), **self.loop_with.summary()}},
                "loop_extra_insulin_u": round(self.loop_extra_insulin_u, 3),
                "compute_ms": round(self.compute_ms, 2)}


class _LinearFuture:
    """What :meth:`ZoneMPC.solve` asks of an estimator, from the branch's linearized future."""

    def __init__(self, glucose: np.ndarray, response: np.ndarray) -> None:
        self.glucose, self.response = glucose, response

    def plan_glucose(self, plans: np.ndarray, step_min: float, **_: Any) -> np.ndarray:
        n = plans.shape[1] + 1
        g = self.glucose[:n]
        return np.stack([g, g + self.response[:n]])


def closed_loop(policy: TwinMPCPolicy, actions: Sequence[Action], horizon_min: float = 360.0,
                coverage: float = 0.8, resolve_min: float = 15.0) -> WhatIfAnswer:
    """The what-if of ``actions`` on ``policy``'s live twin (module docstring). ``policy`` is not changed."""
    tic = time.perf_counter()
    est = policy.estimator
    if est is None or est.readings_accepted == 0:
        raise ValueError("the twin has no accepted CGM reading yet: nothing to ask it")
    if not (STEP_MIN <= horizon_min <= MAX_HORIZON_MIN) or horizon_min % STEP_MIN:
        raise ValueError(f"horizon_min must be a multiple of {STEP_MIN:g} within {STEP_MIN:g}..{MAX_HORIZON_MIN:g}")
    if not (STEP_MIN <= resolve_min <= 60.0) or resolve_min % STEP_MIN:
        raise ValueError(f"resolve_min must be a multiple of {STEP_MIN:g} within {STEP_MIN:g}..60")
    steps = int(horizon_min // STEP_MIN)
    mpc_steps = int(round(policy.mpc.settings.horizon_min / STEP_MIN))
    total = steps + mpc_steps
    basal = programmed_basal(est, total, STEP_MIN)
    running = running_basal(est, total, STEP_MIN)
    plain = [branch_inputs((), running, STEP_MIN), branch_inputs(actions, running, STEP_MIN)]
    dosed = [Inputs(b.insulin_u_per_min.copy(), b.carbs_g, b.absorption_scale) for b in plain]
    for d in dosed:
        d.insulin_u_per_min[0] += 1.0 / STEP_MIN
    # what the loop can see coming: not the meals nobody tells it of
    visible = branch_inputs([a for a in actions if not (isinstance(a, Meal) and not a.announced)], running, STEP_MIN)
    mean, _ = ensemble(est, plain + dosed + [visible], STEP_MIN, spread=False)
    hidden = [np.zeros(total + 1), mean[1] - mean[4]]  # the unannounced meals' effect on the branch
    runs = [_run_branch(policy, acts, plain[i], mean[i], mean[2 + i] - mean[i], basal, steps, resolve_min, hidden[i])
            for i, acts in enumerate(((), tuple(actions)))]
    # one nonlinear batch for the answer: the closed-loop branches and the open-loop ones
    loop_inputs = [Inputs(r[0], p.carbs_g[:steps], p.absorption_scale) for r, p in zip(runs, plain)]
    open_inputs = open_loop_inputs(est, actions, steps, STEP_MIN)
    g, sd = ensemble(est, loop_inputs + open_inputs, STEP_MIN)
    closed = branches_of(loop_inputs, g[:2], sd[:2], STEP_MIN, coverage)
    open_without, open_with = branches_of(open_inputs, g[2:], sd[2:], STEP_MIN, coverage)
    programmed_u = float(basal[:steps].sum() * STEP_MIN / MIN_PER_H)
    loops = [LoopBranch(b, r[1], r[2], programmed_u, r[3]) for b, r in zip(closed, runs)]
    return WhatIfAnswer(describe(actions), est.time.isoformat(), horizon_min, coverage, open_without, open_with,
                        loops[0], loops[1], (time.perf_counter() - tic) * 1000.0)


def _run_branch(policy: TwinMPCPolicy, actions: tuple[Action, ...], inputs: Inputs, nominal: np.ndarray,
                response: np.ndarray, basal: np.ndarray, steps: int,
                resolve_min: float, hidden: np.ndarray) -> tuple[np.ndarray, float, float, str]:
    """The loop's decisions over one branch's linearized future: (insulin U/min per step, bolus U, basal U, reason)."""
    est = policy.estimator
    supervisor = copy.deepcopy(policy.supervisor)
    limits = policy.limits
    glucose = nominal.copy()  # the branch's future given the insulin decided so far
    insulin = inputs.insulin_u_per_min[:steps].copy()
    meals = {max(int(a.at_min // STEP_MIN), 1): a for a in actions if isinstance(a, Meal) and a.announced}
    temp_u_per_h = np.full(steps, np.nan)  # the person's temporary basal, where one runs
    user_bolus_u = np.zeros(steps)
    for a in actions:
        k0 = int(a.at_min // STEP_MIN)
        if isinstance(a, TempBasal):
            temp_u_per_h[k0:int(np.ceil((a.at_min + a.duration_min) / STEP_MIN - 1e-9))] = a.rate_u_per_h
        elif isinstance(a, Bolus) and k0 < steps:
            user_bolus_u[k0] += a.units_u
    bolus_total = basal_total = 0.0
    first_reason = ""
    length = glucose.size
    every = int(resolve_min // STEP_MIN)
    plan_rate: float | None = None  # the last solve's rate for the cycles until the next solve
    since_solve = every
    if user_bolus_u[0] > 0:  # the last cycle's own insulin is booked already: only the person's bolus now
        supervisor.delivered(est.time, float(basal[0]), 0.0, float(user_bolus_u[0]))
    for k in range(1, steps):
        now = est.time + timedelta(minutes=k * STEP_MIN)
        supervisor.observe(now, float(glucose[k]))
        if np.isfinite(temp_u_per_h[k]):
            rate = float(temp_u_per_h[k])
            supervisor.delivered(now, rate, STEP_MIN, float(user_bolus_u[k]))
            basal_total += rate * STEP_MIN / MIN_PER_H
            first_reason = first_reason or "the person's temporary basal runs; the loop waits"
            continue
        scheduled = float(basal[k])
        max_basal = policy.max_basal_u_per_h(scheduled)
        meal_bolus = None
        if k in meals and policy.settings.meal_bolus is not None:
            carbs = meals[k].carbs_g
            supervisor.announce_carbs(now, carbs)
            announced = copy.deepcopy(est)
            announced.predict(now)
            announced.add_carbs(carbs)
            meal_bolus = policy.meal_bolus(announced, carbs, float(glucose[k]), supervisor.iob_u(now), now, scheduled)
        if meal_bolus is not None or since_solve >= every or plan_rate is None:
            # an unannounced meal: the loop sees what it has done so far, held (as its estimator's
            # disturbance would), not the rise still to come
            view = glucose[k:] - hidden[k:] + hidden[k]
            future = _LinearFuture(view, response)
            result = policy.mpc.solve(future, STEP_MIN, scheduled, max_basal, limits.max_bolus_u,
                                      min_bolus_u=meal_bolus.bolus_u if meal_bolus is not None else 0.0,
                                      target_mg_dl=policy.target_at(now)[0])
            reason = result.status if meal_bolus is None else f"{meal_bolus.reason}; {result.status}"
            proposal = Dose(result.basal_u_per_h, result.bolus_u, reason)
            plan_rate = min(result.plan_u_per_h[1], max_basal) if len(result.plan_u_per_h) > 1 else scheduled
            since_solve = 1
        else:
            proposal = Dose(plan_rate, 0.0, "following the last plan")
            since_solve += 1
        safe = supervisor.bound(proposal, now, STEP_MIN)
        given_basal, given_bolus = safe.dose.basal_u_per_h, safe.dose.bolus_u
        supervisor.delivered(now, given_basal, STEP_MIN, given_bolus + float(user_bolus_u[k]))
        first_reason = first_reason or safe.reason
        extra_u = (given_basal - scheduled) * STEP_MIN / MIN_PER_H + given_bolus
        insulin[k] = max(insulin[k] + extra_u / STEP_MIN, 0.0)  # a suspension: exactly 0, not -1e-18
        glucose[k:] += extra_u * response[:length - k]
        bolus_total += given_bolus
        basal_total += given_basal * STEP_MIN / MIN_PER_H
    return insulin, bolus_total, basal_total, first_reason
