"""The UVA/Padova 2008 type 1 diabetes model, vectorized over a batch of patients.

This is the twin's physiology: the same 13 equations that simglucose 0.2.11
integrates in ``T1DPatient.model`` (Dalla Man et al. 2007, Kovatchev et al.
2009), written with named states and named parameters and evaluated for N
patients (or N sigma points, or N candidate insulin plans) at once.

Reproduced exactly from simglucose, including its quirks:

- meal: carbohydrate announced at a minute joins a queue that is eaten at up
  to ``EAT_RATE_G_PER_MIN`` = 5 g/min (``T1DPatient._announce_meal``);
- gastric emptying ``kgut`` with the tanh shape around ``Dbar = last_Qsto +
  last_foodtaken * 1000`` (mg), where ``last_Qsto`` and ``last_foodtaken``
  are reset when eating starts and ``last_foodtaken`` grows while eating,
  exactly as in ``T1DPatient.step``; with ``Dbar = 0`` emptying runs at
  ``kmax``;
- endogenous production ``max(EGP, 0)``, renal excretion above ``ke2``;
- the clamps ``dx/dt = (x >= 0) * dx/dt`` on Gp, Gt, Ip, Il, Isc1, Isc2 and
  Gsc (a state that went below zero stays frozen, as in simglucose);
- insulin input in U/min converted to pmol/kg/min as ``u * PMOL_PER_U / BW``;
- the observation is subcutaneous glucose ``Gsub = Gsc / Vg`` (mg/dL), which
  is also what simglucose reports as blood glucose ``BG``.

Inputs are piecewise constant over a step, as in simglucose.

Integrator
----------
Classical fixed-step Runge-Kutta 4 with one step per simulator minute
(``dt_min=1``, ``substeps=1``): 4 right-hand-side evaluations per minute for
the whole batch, no step-size control, no Python work per patient.
simglucose runs scipy's adaptive ``dopri5`` (rtol 1e-6) for every patient
and every minute. The fastest linear mode of the model is at most 1.24 /min
over simglucose's 30 patients (:func:`fastest_rate_per_min`), inside RK4's
stability limit (|lambda h| < 2.78) at h = 1 min, and the inputs change only
at step boundaries, so a 1-minute RK4 step is stable and accurate.

Measured against stock simglucose ``T1DPatient`` (``sim.bench.twin_fidelity``),
all 30 patients, 3 days, ``RandomScenario(seed=k)`` meals plus basal and
carbs/CR boluses, identical inputs: worst-patient BG RMSE 0.030 mg/dL
(child#007), median 0.0016 mg/dL (goal: 0.5). The error is concentrated in the
minutes after a meal in patients whose gastric parameter ``b`` is close to 1
(child#007, adult#006/#007: b = 0.93-0.96), where the tanh switch of
``kgut`` (steepness 5 / (2 Dbar (1 - b))) is sharp; ``substeps=2`` cuts it
about 10x for twice the cost. Speed for a batch of 30: about 200
patient-days/s on one core, about 1000x stock simglucose measured in the
same run (``sim.bench.twin_fidelity.speed``).

Larger steps (``dt_min=5`` for a controller horizon) hold the inputs for the
whole step; :func:`stable_substeps` picks the RK4 substeps that keep the
batch stable (3 for the simulator's fastest patients at 5 minutes).

Layout: the public API uses states of shape ``(N, 13)`` (trajectories
``(N, T+1, 13)``), indexed with :class:`State`. Internally the integrator
works on ``(13, N)`` so that each named state is one contiguous row.

Modules: the states and the eating bookkeeping are defined in
:mod:`twin.model_state`, the right-hand side in :mod:`twin.model_rhs`, the
exact insulin steps in :mod:`twin.exact_insulin`; this module holds the
integrators and re-exports the public names of the first two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.exact_insulin import INSULIN_ROWS, advance, half_and_full
from twin.model_params import N_STATES, ModelParams
from twin.model_rhs import Buffer, Coefficients, Gastric, batch_input, check_batch, derivatives, rhs_rows
from twin.model_state import (
    CLAMPED_STATES,
    EAT_RATE_G_PER_MIN,
    MG_PER_G,
    PMOL_PER_U,
    SAMPLE_TIME_MIN,
    MealState,
    State,
    eat,
)

__all__ = [
    "CLAMPED_STATES", "EAT_RATE_G_PER_MIN", "MG_PER_G", "PMOL_PER_U", "SAMPLE_TIME_MIN", "BatchPatient", "MealState",
    "ModelParams", "State", "Trajectory", "basal_insulin_u_per_min", "derivatives", "eat", "fastest_rate_per_min",
    "glucose_mg_dl", "simulate", "stable_substeps",
]


# ---------------------------------------------------------------------------
# Integration
# ---------------------------------------------------------------------------


# Largest |lambda h| on the negative real axis for which classical RK4 is stable is 2.785;
# keep a margin.
_RK4_STABLE_LAMBDA_H = 2.5


def fastest_rate_per_min(params: ModelParams, include_insulin: bool = True) -> np.ndarray:
    """Upper estimate (N,) of the fastest decay rate of the model's linear modes, 1/min.

    The largest of: kmax and kabs (gut), the exact faster eigenvalue of the
    plasma/liver insulin pair [[-(m2+m4), m1], [m2, -(m1+m30)]], ka1 + kd and
    ka2 (subcutaneous insulin), the trace bound k1 + k2 + kp2 + ke1 + Vm0/Km0
    of the plasma/tissue glucose pair, p2u, ki and ksc. For simglucose's 30
    patients it is 0.46 to 1.24 /min.
    """
    p = params
    trace = p.m2 + p.m4 + p.m1 + p.m30
    det = (p.m2 + p.m4) * (p.m1 + p.m30) - p.m1 * p.m2
    insulin_pair = 0.5 * (trace + np.sqrt(np.maximum(trace * trace - 4.0 * det, 0.0)))
    glucose_pair = p.k1 + p.k2 + p.kp2 + p.ke1 + p.Vm0 / p.Km0
    if not include_insulin:  # the gut and glucose modes only (insulin advanced exactly)
        return np.max(np.stack([p.kmax, p.kabs, glucose_pair, p.ksc]), axis=0)
    return np.max(
        np.stack([p.kmax, p.kabs, insulin_pair, p.ka1 + p.kd, p.ka2, glucose_pair, p.p2u, p.ki, p.ksc]), axis=0
    )


def stable_substeps(params: ModelParams, dt_min: float, include_insulin: bool = True) -> int:
    """Fewest RK4 substeps per step of ``dt_min`` minutes that keep every patient's fastest mode stable."""
    h_max = _RK4_STABLE_LAMBDA_H / float(np.max(fastest_rate_per_min(params, include_insulin)))
    return max(1, int(np.ceil(dt_min / h_max - 1e-12)))


class _RK4:
    """Classical fixed-step Runge-Kutta 4 on the rows layout, with reusable stage buffers."""

    def __init__(self, n: int) -> None:
        self.x = Buffer(n)
        self.stage = Buffer(n)
        self.k = [Buffer(n) for _ in range(4)]

    def step(self, x_in, x_out, eat_mg, insulin, g, c, h, substeps, dist=None) -> None:
        """Advance ``x_in`` (13, N) by ``substeps`` RK4 steps of h minutes into ``x_out`` (13, N)."""
        x, stage = self.x, self.stage
        k1, k2, k3, k4 = self.k
        half, sixth = 0.5 * h, h / 6.0
        x.array[...] = x_in
        for _ in range(substeps):
            rhs_rows(x, eat_mg, insulin, g, c, k1, dist)
            np.multiply(k1.array, half, out=stage.array)
            stage.array += x.array
            rhs_rows(stage, eat_mg, insulin, g, c, k2, dist)
            np.multiply(k2.array, half, out=stage.array)
            stage.array += x.array
            rhs_rows(stage, eat_mg, insulin, g, c, k3, dist)
            np.multiply(k3.array, h, out=stage.array)
            stage.array += x.array
            rhs_rows(stage, eat_mg, insulin, g, c, k4, dist)
            # x += h/6 (k1 + 2 k2 + 2 k3 + k4)
            k2.array += k3.array
            k2.array *= 2.0
            k1.array += k2.array
            k1.array += k4.array
            k1.array *= sixth
            x.array += k1.array
        x_out[...] = x.array


    def step_exact_insulin(self, x_in, x_out, eat_mg, insulin, g, c, h, substeps, dist, rows, mats) -> None:
        """As :meth:`step`, with the insulin rows ``rows`` advanced exactly (``mats``: h/2 and h at once).

        Runge-Kutta integrates the other states with the exact insulin values at
        each stage time (t, t + h/2, t + h) as a known input.
        """
        x, stage = self.x, self.stage
        k1, k2, k3, k4 = self.k
        h_half, sixth = 0.5 * h, h / 6.0
        x.array[...] = x_in
        for _ in range(substeps):
            both = advance(mats, x.array[rows], insulin)
            y_half, y_full = both[:7], both[7:]
            rhs_rows(x, eat_mg, insulin, g, c, k1, dist, False)
            np.multiply(k1.array, h_half, out=stage.array)
            stage.array += x.array
            stage.array[rows] = y_half
            rhs_rows(stage, eat_mg, insulin, g, c, k2, dist, False)
            np.multiply(k2.array, h_half, out=stage.array)
            stage.array += x.array
            stage.array[rows] = y_half
            rhs_rows(stage, eat_mg, insulin, g, c, k3, dist, False)
            np.multiply(k3.array, h, out=stage.array)
            stage.array += x.array
            stage.array[rows] = y_full
            rhs_rows(stage, eat_mg, insulin, g, c, k4, dist, False)
            k2.array += k3.array
            k2.array *= 2.0
            k1.array += k2.array
            k1.array += k4.array
            k1.array *= sixth
            x.array += k1.array
            x.array[rows] = y_full
        x_out[...] = x.array


@dataclass(frozen=True)
class Trajectory:
    """Result of :func:`simulate` for N patients over T steps.

    Attributes
    ----------
    states: (N, T+1, 13) states at the step boundaries, first row = x0; units of :class:`State`.
    glucose_mg_dl: (N, T+1) subcutaneous glucose ``G_SC / Vg`` (simglucose's ``BG``).
    eat_rate_g_per_min: (N, T) carbohydrate eaten during each step, g/min.
    meal: eating bookkeeping after the last step (pass it to the next run).
    dt_min: step length, minutes.
    """

    states: np.ndarray
    glucose_mg_dl: np.ndarray
    eat_rate_g_per_min: np.ndarray
    meal: MealState
    dt_min: float

    @property
    def final_state(self) -> np.ndarray:
        """(N, 13) states after the last step."""
        return self.states[:, -1, :]

    def state(self, which: State) -> np.ndarray:
        """(N, T+1) trajectory of one named state."""
        return self.states[:, :, which]


def simulate(
    params: ModelParams,
    x0: np.ndarray,
    carbs_g: np.ndarray,
    insulin_u_per_min: np.ndarray,
    *,
    meal: MealState | None = None,
    dt_min: float = SAMPLE_TIME_MIN,
    substeps: int | None = None,
    disturbance_mg_per_kg_per_min: np.ndarray | None = None,
    exact_insulin: bool = False,
) -> Trajectory:
    """Simulate N patients for T steps of ``dt_min`` minutes with piecewise-constant inputs.

    Parameters
    ----------
    params: parameters of the N patients (``params.take`` repeats a patient,
        e.g. for sigma points or candidate insulin plans).
    x0: (N, 13) or (13,) initial states.
    carbs_g: (N, T), broadcastable: carbohydrate announced at the start of
        each step, g. It is queued and eaten at up to 5 g/min.
    insulin_u_per_min: (N, T), broadcastable: insulin infusion held during
        each step, U/min (a bolus of B units in one 1-minute step is B U/min).
    meal: eating bookkeeping at the start (default: a freshly reset
        simglucose patient, :meth:`MealState.initial`).
    dt_min: step length in minutes. 1 reproduces simglucose step for step.
        Larger steps (e.g. 5 for a controller's horizon) hold the inputs over
        the step, eat up to ``5 * dt_min`` g per step, and are less accurate.
    substeps: RK4 steps per step. Default: :func:`stable_substeps`, the
        fewest that keep RK4 stable for the batch (1 for every simglucose
        patient at ``dt_min = 1``, 2-3 at ``dt_min = 5``).

    Returns
    -------
    Trajectory with states (N, T+1, 13) and glucose (N, T+1).
    """
    substeps = _checked_substeps(params, dt_min, substeps, exact_insulin)
    x0, carbs, insulin, meal = _checked_inputs(params, x0, carbs_g, insulin_u_per_min, meal)
    n, steps = carbs.shape
    dist_t = _disturbance_by_step(disturbance_mg_per_kg_per_min, n, steps)
    c = Coefficients(params)
    insulin_pmol = (insulin * c.pmol_per_kg_per_u[:, None]).T  # (T, N) pmol/kg/min
    out = np.empty((steps + 1, N_STATES, n))  # rows layout per step
    out[0] = x0.T
    eaten, meal = _integrate(params, c, out, carbs.T, insulin_pmol, dist_t, meal, dt_min, substeps, exact_insulin)
    states = out.transpose(2, 0, 1)  # (N, T+1, 13) view
    glucose = out[:, State.G_SC, :].T / c.Vg[:, None]
    return Trajectory(states=states, glucose_mg_dl=glucose, eat_rate_g_per_min=eaten.T, meal=meal, dt_min=float(dt_min))


def _checked_substeps(params: ModelParams, dt_min: float, substeps: int | None, exact_insulin: bool) -> int:
    """RK4 substeps per step: the given number, checked, or the fewest stable ones (:func:`stable_substeps`)."""
    if not (np.isfinite(dt_min) and dt_min > 0.0):
        raise ValueError(f"dt_min must be > 0, got {dt_min}")
    if substeps is None:
        substeps = stable_substeps(params, dt_min, include_insulin=not exact_insulin)
    elif int(substeps) != substeps or substeps < 1:
        raise ValueError(f"substeps must be a positive integer, got {substeps}")
    return int(substeps)


def _checked_inputs(
    params: ModelParams, x0: np.ndarray, carbs_g: np.ndarray, insulin_u_per_min: np.ndarray, meal: MealState | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, MealState]:
    """(x0 (N, 13), carbs (N, T), insulin (N, T), meal bookkeeping) of :func:`simulate`, checked and broadcast."""
    n = params.size
    x0 = check_batch(params, x0)
    insulin_u_per_min = np.asarray(insulin_u_per_min, dtype=np.float64)
    carbs_g = np.asarray(carbs_g, dtype=np.float64)
    if insulin_u_per_min.ndim == 0 and carbs_g.ndim == 0:
        raise ValueError("carbs_g or insulin_u_per_min must have a time axis (T steps)")
    steps = insulin_u_per_min.shape[-1] if insulin_u_per_min.ndim else carbs_g.shape[-1]
    carbs = batch_input("carbs_g", carbs_g, n, steps)
    insulin = batch_input("insulin_u_per_min", insulin_u_per_min, n, steps)
    meal = MealState.initial(x0) if meal is None else meal
    if meal.planned_g.shape != (n,):
        raise ValueError(f"meal bookkeeping is for {meal.planned_g.shape[0]} patients, expected {n}")
    return x0, carbs, insulin, meal


def _disturbance_by_step(disturbance_mg_per_kg_per_min: np.ndarray | None, n: int, steps: int) -> np.ndarray | None:
    """The disturbance input as (T, N), checked, or None without one."""
    if disturbance_mg_per_kg_per_min is None:
        return None
    dist = np.broadcast_to(np.asarray(disturbance_mg_per_kg_per_min, dtype=np.float64), (n, steps))
    if not np.all(np.isfinite(dist)):
        raise ValueError("disturbance_mg_per_kg_per_min must be finite")
    return np.ascontiguousarray(dist.T)  # (T, N)


def _integrate(
    params: ModelParams,
    c: Coefficients,
    out: np.ndarray,
    carbs_t: np.ndarray,
    insulin_pmol: np.ndarray,
    dist_t: np.ndarray | None,
    meal: MealState,
    dt_min: float,
    substeps: int,
    exact_insulin: bool,
) -> tuple[np.ndarray, MealState]:
    """Fill ``out[1:]`` (T, 13, N) from ``out[0]``, step by step; returns (eaten g/min (T, N), final bookkeeping).

    ``carbs_t`` (T, N) g announced, ``insulin_pmol`` (T, N) pmol/kg/min held
    over each step, ``dist_t`` (T, N) or None.
    """
    steps, n = carbs_t.shape
    announced = carbs_t.any(axis=1)  # (T,) whether any patient announces carbohydrate at a step
    h = float(dt_min) / substeps
    eaten = np.zeros((steps, n))
    rk4 = _RK4(n)
    if exact_insulin:
        rows, mats = INSULIN_ROWS, half_and_full(params, n, h)
    no_meal = np.zeros(n)
    gastric = Gastric(meal.dbar_mg, c)
    busy = bool(meal.planned_g.any() or meal.eat_rate_g_per_min.any())
    for k in range(steps):
        eat_mg = no_meal
        # With nothing announced, queued or being eaten, eat() changes nothing: skip it.
        if busy or announced[k]:
            rate, meal = eat(meal, carbs_t[k], out[k, State.Q_STO1] + out[k, State.Q_STO2], dt_min)
            busy = bool(meal.planned_g.any() or rate.any())
            if rate.any():  # Dbar moves only while eating
                eaten[k] = rate
                eat_mg = rate * MG_PER_G
                gastric = Gastric(meal.dbar_mg, c)
        dist_k = None if dist_t is None else dist_t[k]
        if exact_insulin:
            rk4.step_exact_insulin(out[k], out[k + 1], eat_mg, insulin_pmol[k], gastric, c, h, substeps, dist_k,
                                   rows, mats)
        else:
            rk4.step(out[k], out[k + 1], eat_mg, insulin_pmol[k], gastric, c, h, substeps, dist_k)
    return eaten, meal


def glucose_mg_dl(x: np.ndarray, params: ModelParams) -> np.ndarray:
    """Observed glucose ``G_SC / Vg`` (mg/dL) of states (N, 13) or trajectories (N, T, 13)."""
    x = np.asarray(x, dtype=np.float64)
    vg = params.Vg if x.ndim == 2 else params.Vg[:, None]
    return x[..., State.G_SC] / vg


def basal_insulin_u_per_min(params: ModelParams) -> np.ndarray:
    """Steady-state basal infusion ``u2ss * BW / PMOL_PER_U`` (N,), U/min."""
    return params.u2ss * params.BW / PMOL_PER_U


# ---------------------------------------------------------------------------
# Stateful wrapper
# ---------------------------------------------------------------------------


class BatchPatient:
    """N simulated patients stepped together, like N simglucose ``T1DPatient`` objects.

    ``step(carbs, insulin, minutes=k)`` does what calling ``T1DPatient.step``
    k times with the same action does for each patient: ``carbs_g_per_min``
    is announced at each of the k minutes and ``insulin_u_per_min`` is held
    for all k minutes.
    """

    def __init__(self, params: ModelParams, x0: np.ndarray, *, substeps: int | None = None) -> None:
        self.params = params
        self._x0 = np.array(check_batch(params, x0), dtype=np.float64)
        self._substeps = substeps
        self.reset()

    def reset(self) -> None:
        """Back to the initial states, empty meal queues, time 0."""
        self.state = self._x0.copy()
        self.meal = MealState.initial(self.state)
        self.t_min = 0.0

    @property
    def size(self) -> int:
        return self.params.size

    @property
    def glucose_mg_dl(self) -> np.ndarray:
        """(N,) observed glucose ``G_SC / Vg``, mg/dL (simglucose's ``observation.Gsub``)."""
        return glucose_mg_dl(self.state, self.params)

    def value(self, which: State) -> np.ndarray:
        """(N,) current value of one named state."""
        return self.state[:, which].copy()

    def step(self, carbs_g_per_min: np.ndarray, insulin_u_per_min: np.ndarray, minutes: int = 1) -> Trajectory:
        """Advance ``minutes`` one-minute steps; returns the trajectory of those minutes."""
        if int(minutes) != minutes or minutes < 1:
            raise ValueError(f"minutes must be a positive integer, got {minutes}")
        n = self.size
        carbs = np.repeat(batch_input("carbs_g_per_min", carbs_g_per_min, n)[:, None], minutes, axis=1)
        insulin = np.repeat(batch_input("insulin_u_per_min", insulin_u_per_min, n)[:, None], minutes, axis=1)
        trajectory = simulate(self.params, self.state, carbs, insulin, meal=self.meal, substeps=self._substeps)
        self.state = trajectory.final_state.copy()
        self.meal = trajectory.meal
        self.t_min += minutes * SAMPLE_TIME_MIN
        return trajectory
