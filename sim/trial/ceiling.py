"""Ceiling references: what a controller with perfect information reaches. **Not fair controllers.**

They break the honesty rules on purpose: they read the virtual patient's
simulator parameters and its true state every cycle, things a real controller
never knows. They answer "how far is glucotwin from the best any controller
could do on this patient?" and never run on a device. ``glucotwin trial
--controller ceiling-causal`` runs one; reports show it under that name.

``ceiling-causal`` (causal perfect information): each CGM sample, a
nonlinear MPC on the true UVA/Padova model (twin/model.py with the patient's
own simulator parameters) from the true state, with no sensor noise. Meals are
known only once they start: in HCL the patient's own record of the meal
being eaten (what is still to eat, how big it is so far); in FCL only what the
true state holds (carbohydrate already in the gut), never the meal record. The plan is insulin rates (U/min) on
blocks that grow over a 5-h horizon, scored over 7 h (the last 2 h at the
programmed basal, so that late insulin's tail is seen) by Kovatchev's risk
function plus a barrier below 80 mg/dL. It is solved by Gauss-Newton in
input space: one batched simulation gives the trajectory and its sensitivity
to every block (finite differences), a bounded quasi-Newton step on the
linearized risk, twice per cycle.

The optimizer's own prediction is checked against simglucose: every
``check_every_min`` the current plan is replayed open loop in a copy of the
simglucose patient, and the largest |BG difference| over the horizon is kept
(:attr:`CausalReference.prediction_checks`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from simglucose.controller.base import Action, Controller
from simglucose.patient.t1dpatient import Action as PatientAction

from sim.trial.cohort import twin_parameters
from twin.model import simulate
from twin.model_state import MealState

DT_MIN = 3.0
HORIZON_STEPS = 100  # 300 min of decisions
TAIL_STEPS = 40  # +120 min at the programmed basal
BLOCK_EDGES = (0, 1, 2, 4, 8, 16, 30, 50, 75, 100)  # steps of DT_MIN
MAX_RATE_U_PER_MIN = 10.0  # 30 U in one 3-min sample: simglucose's Insulet bolus limit
FD_STEP_U_PER_MIN = 0.05
HYPO_BARRIER_MG_DL = 80.0


def risk(bg: np.ndarray) -> np.ndarray:
    """Kovatchev's risk 10 f(BG)^2 plus a quadratic barrier below 80 mg/dL."""
    bg = np.maximum(bg, 10.0)
    f = 1.509 * (np.log(bg) ** 1.084 - 5.381)
    barrier = np.maximum(0.0, HYPO_BARRIER_MG_DL - bg)
    return 10.0 * f * f + 0.5 * barrier * barrier


def risk_slope(bg: np.ndarray) -> np.ndarray:
    """d risk / d BG."""
    bg = np.maximum(bg, 10.0)
    lnbg = np.log(bg)
    f = 1.509 * (lnbg ** 1.084 - 5.381)
    df = 1.509 * 1.084 * lnbg ** 0.084 / bg
    barrier = np.maximum(0.0, HYPO_BARRIER_MG_DL - bg)
    return 20.0 * f * df - barrier


@dataclass
class PredictionCheck:
    """One open-loop replay of the optimizer's plan in a copy of the simglucose patient."""

    minute: float
    max_abs_diff_mg_dl: float
    horizon_min: float


@dataclass
class CausalReference(Controller):
    """Nonlinear MPC on the true model and state (see the module docstring)."""

    patient_name: str
    meal_announcement: bool
    check_every_min: float = 480.0
    prediction_checks: list[PredictionCheck] = field(default_factory=list)

    def __post_init__(self) -> None:
        params, _ = twin_parameters([self.patient_name])
        n_blocks = len(BLOCK_EDGES) - 1
        self._batch = params.take(np.zeros(n_blocks + 1, dtype=int))
        self._params = params
        self._basal = float(params.u2ss[0] * params.BW[0] / 6000.0)  # U/min, the programmed basal
        steps = HORIZON_STEPS + TAIL_STEPS
        self._basis = np.zeros((n_blocks, steps))
        for b in range(n_blocks):
            self._basis[b, BLOCK_EDGES[b]:BLOCK_EDGES[b + 1]] = 1.0
        self._plan = np.full(n_blocks, self._basal)
        self._env: Any = None
        self._minute = 0.0
        self._next_check = 0.0

    def attach_env(self, env: Any) -> None:
        """The runner hands over the simulation: this reference reads the patient's true state."""
        self._env = env

    def reset(self) -> None:
        self._plan = np.full(len(BLOCK_EDGES) - 1, self._basal)
        self._minute = 0.0
        self._next_check = 0.0
        self.prediction_checks = []

    # --- prediction -----------------------------------------------------------------

    def _start(self, meal_record: bool) -> tuple[np.ndarray, MealState, np.ndarray]:
        """True state, eating bookkeeping and carbs ahead. The meal of the last sample is already
        in the patient (simglucose's ``meal`` information reports the step just simulated): with
        ``meal_record`` its record (carbohydrate still to eat, meal size so far) is used, else
        only the carbohydrate already in the gut is known."""
        patient = self._env.patient
        x = np.asarray(patient.state, dtype=float)[None, :]
        hcl = meal_record
        meal = MealState(
            planned_g=np.array([float(patient.planned_meal) if hcl else 0.0]),
            eat_rate_g_per_min=np.array([float(patient._last_action.CHO) if hcl else 0.0]),
            last_qsto_mg=np.array([float(patient._last_Qsto)]),
            last_foodtaken_g=np.array([float(patient._last_foodtaken) if hcl else 0.0]),
            is_eating=np.array([bool(patient.is_eating) if hcl else False]),
        )
        return x, meal, np.zeros(HORIZON_STEPS + TAIL_STEPS)

    def _rates(self, plans: np.ndarray) -> np.ndarray:
        """(M, n_blocks) plans as (M, steps) insulin rates, the tail at the programmed basal."""
        rates = plans @ self._basis
        rates[:, HORIZON_STEPS:] = self._basal
        return rates

    def _predict(self, plans: np.ndarray, x: np.ndarray, meal: MealState, carbs: np.ndarray) -> np.ndarray:
        m = plans.shape[0]
        batch = self._batch if m == self._batch.BW.shape[0] else self._params.take(np.zeros(m, dtype=int))
        meals = MealState(*(np.repeat(getattr(meal, f), m) for f in
                            ("planned_g", "eat_rate_g_per_min", "last_qsto_mg", "last_foodtaken_g", "is_eating")))
        traj = simulate(batch, np.repeat(x, m, axis=0), np.broadcast_to(carbs, (m, carbs.size)),
                        self._rates(plans), meal=meals, dt_min=DT_MIN, exact_insulin=True)
        return traj.glucose_mg_dl[:, 1:]

    # --- optimization ----------------------------------------------------------------

    def _gauss_newton_step(self, plan: np.ndarray, x: np.ndarray, meal: MealState, carbs: np.ndarray) -> np.ndarray:
        n = plan.size
        probes = np.repeat(plan[None, :], n + 1, axis=0)
        probes[1:] += FD_STEP_U_PER_MIN * np.eye(n)
        bg = self._predict(probes, x, meal, carbs)
        g0, sens = bg[0], (bg[1:] - bg[0]) / FD_STEP_U_PER_MIN  # sens: (n, steps) mg/dL per U/min
        weights = self._basis.sum(axis=1) * DT_MIN  # minutes per block, for the insulin regularizer

        def cost(u: np.ndarray) -> tuple[float, np.ndarray]:
            g = g0 + (u - plan) @ sens
            reg = 1e-3 * weights * (u - self._basal) ** 2
            grad = sens @ risk_slope(g) / g.size + 2e-3 * weights * (u - self._basal)
            return float(risk(g).mean() + reg.sum()), grad

        res = minimize(cost, plan, jac=True, method="L-BFGS-B", bounds=[(0.0, MAX_RATE_U_PER_MIN)] * n,
                       options={"maxiter": 60})
        return res.x

    def plan(self) -> np.ndarray:
        x, meal, carbs = self._start(self.meal_announcement)
        plan = np.clip(self._plan, 0.0, MAX_RATE_U_PER_MIN)  # warm start: the last cycle's plan
        for _ in range(2):
            plan = self._gauss_newton_step(plan, x, meal, carbs)
        return plan

    # --- simglucose controller --------------------------------------------------------

    def policy(self, observation: Any, reward: float, done: bool, **info: Any) -> Action:
        if self._env is None:
            raise RuntimeError("ceiling-causal needs the simulation (the trial runner attaches it)")
        sample_min = float(info.get("sample_time", DT_MIN))
        self._plan = self.plan()
        if self._minute >= self._next_check:
            self._check_prediction()
            self._next_check += self.check_every_min
        self._minute += sample_min
        rate = float(self._plan[0])
        basal = min(rate, self._basal)
        return Action(basal=basal, bolus=rate - basal)

    def _check_prediction(self) -> None:
        """Replay the current plan open loop in a copy of the simglucose patient, no new meal, against
        the model's forecast from the same state and meal record (the model error alone)."""
        x, meal, carbs = self._start(True)
        predicted = self._predict(self._plan[None, :], x, meal, carbs)[0]
        patient = copy.deepcopy(self._env.patient)
        rates = self._rates(self._plan[None, :])[0]
        replayed = []
        for rate in rates:
            for _ in range(int(DT_MIN)):
                patient.step(PatientAction(insulin=rate, CHO=0.0))
            replayed.append(patient.observation.Gsub)
        diff = np.abs(np.asarray(replayed) - predicted)
        self.prediction_checks.append(PredictionCheck(self._minute, float(diff.max()), rates.size * DT_MIN))

    def diagnostics(self) -> dict[str, Any]:
        checks = self.prediction_checks
        return {"prediction_max_abs_diff_mg_dl": max((c.max_abs_diff_mg_dl for c in checks), default=None)}


def ceiling_causal_controller(patient_name: str, arm: str) -> CausalReference:
    """Factory for ``glucotwin trial --controller ceiling-causal``."""
    return CausalReference(patient_name, meal_announcement=arm == "hcl")


class ClairvoyantReference(CausalReference):
    """``ceiling-clairvoyant``: :class:`CausalReference` that also knows every future meal of the run
    (time and grams, read from a copy of the simulation's scenario) within its 7-h prediction.

    A receding-horizon stand-in for optimizing the whole run at once: each cycle re-plans 7 h ahead
    with all meals in that window known, so pre-meal boluses and post-meal suspensions are chosen
    with the next meals in view; insulin's action (about 6 h) is shorter than the window.
    """

    def reset(self) -> None:
        super().reset()
        self._meals_g: dict[int, float] | None = None
        self._t0: Any = None

    def _future_meals(self) -> dict[int, float]:
        """Minutes since the run's start -> grams, for the whole run and one horizon beyond."""
        if self._meals_g is None:
            from datetime import timedelta

            scenario = copy.deepcopy(self._env.scenario)  # after env.reset(): replays what the env will do
            self._t0 = self._env.time
            total = int(3 * 1440 * 4)  # generous: up to 12 days; trials stop earlier
            meals = {}
            for minute in range(total):
                grams = scenario.get_action(self._t0 + timedelta(minutes=minute)).meal
                if grams > 0:
                    meals[minute] = float(grams)
            self._meals_g = meals
        return self._meals_g

    def _start(self, meal_record: bool) -> tuple[np.ndarray, MealState, np.ndarray]:
        x, meal, carbs = super()._start(True)
        now = int(round((self._env.time - self._env_start()).total_seconds() / 60.0))
        for minute, grams in self._future_meals().items():
            step = (minute - now) // int(DT_MIN)
            if minute >= now and 0 <= step < carbs.size:
                carbs[step] += grams
        return x, meal, carbs

    def _env_start(self) -> Any:
        self._future_meals()
        return self._t0


def ceiling_clairvoyant_controller(patient_name: str, arm: str) -> ClairvoyantReference:
    """Factory for ``glucotwin trial --controller ceiling-clairvoyant`` (the arm does not matter: it
    knows every meal in advance)."""
    ref = ClairvoyantReference(patient_name, meal_announcement=True)
    ref.reset()
    return ref
