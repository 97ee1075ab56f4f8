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
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from twin.model_params import N_STATES, ModelParams

PMOL_PER_U = 6000.0  # pmol of insulin per unit (U)
MG_PER_G = 1000.0
EAT_RATE_G_PER_MIN = 5.0  # simglucose's T1DPatient.EAT_RATE
SAMPLE_TIME_MIN = 1.0  # simglucose's T1DPatient.SAMPLE_TIME
# The "5" of the gastric emptying shape: alpha = 5 / (2 Dbar (1 - b)),
# beta = 5 / (2 Dbar d) (Dalla Man 2006 meal model).
_GASTRIC_SHAPE = 5.0


class State(IntEnum):
    """Indices of the 13 model states (the order of simglucose's ``x``)."""

    Q_STO1 = 0  # solid glucose in the stomach, mg
    Q_STO2 = 1  # liquid glucose in the stomach, mg
    Q_GUT = 2  # glucose in the intestine, mg
    G_P = 3  # glucose mass in plasma and fast-equilibrating tissue, mg/kg
    G_T = 4  # glucose mass in slowly equilibrating tissue, mg/kg
    I_P = 5  # insulin mass in plasma, pmol/kg
    X = 6  # insulin action on glucose utilization (remote insulin), pmol/L
    I1 = 7  # first delay compartment of the insulin signal to the liver, pmol/L
    I_D = 8  # delayed insulin acting on endogenous production, pmol/L
    I_L = 9  # insulin mass in the liver, pmol/kg
    I_SC1 = 10  # non-monomeric subcutaneous insulin, pmol/kg
    I_SC2 = 11  # monomeric subcutaneous insulin, pmol/kg
    G_SC = 12  # subcutaneous glucose, mg/kg (Gsub = G_SC / Vg, mg/dL)


if len(State) != N_STATES:  # pragma: no cover - guards an edit of either list
    raise ImportError("twin.model.State and twin.model_params.N_STATES disagree")

#: States whose derivative simglucose zeroes once they are negative.
CLAMPED_STATES: tuple[State, ...] = (
    State.G_P,
    State.G_T,
    State.I_P,
    State.I_L,
    State.I_SC1,
    State.I_SC2,
    State.G_SC,
)
_UNCLAMPED_ROWS = np.array([[s not in CLAMPED_STATES] for s in State])  # (13, 1) bool


# ---------------------------------------------------------------------------
# Meal queue and gastric reference (T1DPatient._announce_meal and .step)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MealState:
    """Per-patient eating bookkeeping of simglucose's ``T1DPatient``; arrays of shape (N,).

    Attributes
    ----------
    planned_g: announced carbohydrate not eaten yet, g (``planned_meal``).
    eat_rate_g_per_min: what was eaten during the previous step, g/min
        (``_last_action.CHO``).
    last_qsto_mg: stomach content Qsto1 + Qsto2 when the current or last meal
        started, mg (``_last_Qsto``).
    last_foodtaken_g: carbohydrate eaten since that meal started, g
        (``_last_foodtaken``).
    is_eating: whether the patient is eating (``is_eating``).
    """

    planned_g: np.ndarray
    eat_rate_g_per_min: np.ndarray
    last_qsto_mg: np.ndarray
    last_foodtaken_g: np.ndarray
    is_eating: np.ndarray

    @classmethod
    def initial(cls, x0: np.ndarray) -> "MealState":
        """Bookkeeping of a freshly reset simglucose patient with states ``x0`` (N, 13)."""
        x0 = np.atleast_2d(np.asarray(x0, dtype=np.float64))
        n = x0.shape[0]
        return cls(
            planned_g=np.zeros(n),
            eat_rate_g_per_min=np.zeros(n),
            last_qsto_mg=x0[:, State.Q_STO1] + x0[:, State.Q_STO2],
            last_foodtaken_g=np.zeros(n),
            is_eating=np.zeros(n, dtype=bool),
        )

    @property
    def dbar_mg(self) -> np.ndarray:
        """Reference stomach content of the gastric emptying curve, mg.

        ``Dbar = last_Qsto + last_foodtaken * 1000`` (simglucose issue #41).
        """
        return self.last_qsto_mg + self.last_foodtaken_g * MG_PER_G

    def take(self, index: Any) -> "MealState":
        """The bookkeeping of patients ``index`` (see :meth:`ModelParams.take`)."""
        return MealState(
            planned_g=np.atleast_1d(self.planned_g[index]),
            eat_rate_g_per_min=np.atleast_1d(self.eat_rate_g_per_min[index]),
            last_qsto_mg=np.atleast_1d(self.last_qsto_mg[index]),
            last_foodtaken_g=np.atleast_1d(self.last_foodtaken_g[index]),
            is_eating=np.atleast_1d(self.is_eating[index]),
        )


def eat(
    meal: MealState, announced_g: np.ndarray, stomach_mg: np.ndarray, dt_min: float = SAMPLE_TIME_MIN
) -> tuple[np.ndarray, MealState]:
    """One step of the eating logic; returns (eat rate g/min during the step, new bookkeeping).

    ``announced_g`` (N,) joins the queue; up to ``EAT_RATE_G_PER_MIN * dt_min``
    grams of the queue are eaten during the step. When eating starts,
    ``last_qsto_mg`` becomes ``stomach_mg`` (Qsto1 + Qsto2 at the start of the
    step) and ``last_foodtaken_g`` restarts from 0; while eating, it grows by
    what is eaten. With ``dt_min = 1`` this is ``T1DPatient._announce_meal``
    followed by the bookkeeping of ``T1DPatient.step``.
    """
    planned = meal.planned_g + announced_g
    eaten_g = np.where(planned > 0.0, np.minimum(EAT_RATE_G_PER_MIN * dt_min, planned), 0.0)
    planned = np.maximum(planned - eaten_g, 0.0)
    rate = eaten_g / dt_min if dt_min != 1.0 else eaten_g
    previous = meal.eat_rate_g_per_min
    starts = (rate > 0.0) & (previous <= 0.0)
    last_qsto = np.where(starts, stomach_mg, meal.last_qsto_mg)
    foodtaken = np.where(starts, 0.0, meal.last_foodtaken_g)
    eating = meal.is_eating | starts
    foodtaken = np.where(eating, foodtaken + rate * dt_min, foodtaken)
    eating = eating & ~((rate <= 0.0) & (previous > 0.0))
    return rate, MealState(planned, rate, last_qsto, foodtaken, eating)


# ---------------------------------------------------------------------------
# Right-hand side (T1DPatient.model), rows layout (13, N)
# ---------------------------------------------------------------------------


class _Coefficients:
    """Parameter combinations used by the right-hand side, computed once per run; each (N,)."""

    __slots__ = (
        "kmax", "kmin", "half_dk", "b", "d", "kabs", "ra_per_qgut", "kp1", "kp2", "kp3", "Fsnc",
        "ke1", "ke2", "k1", "k2", "Vm0", "Vmx", "Km0", "m2_m4", "m1", "ka1", "ka2", "Vi", "p2u",
        "Ib", "ki", "m1_m30", "m2", "ka1_kd", "kd", "ksc", "pmol_per_kg_per_u", "Vg",
    )  # fmt: skip

    def __init__(self, p: ModelParams) -> None:
        self.kmax, self.kmin, self.b, self.d, self.kabs = p.kmax, p.kmin, p.b, p.d, p.kabs
        self.half_dk = (p.kmax - p.kmin) / 2.0
        self.ra_per_qgut = p.f * p.kabs / p.BW  # Ra = f * kabs * Qgut / BW, (mg/kg/min) per mg
        self.kp1, self.kp2, self.kp3, self.Fsnc = p.kp1, p.kp2, p.kp3, p.Fsnc
        self.ke1, self.ke2, self.k1, self.k2 = p.ke1, p.ke2, p.k1, p.k2
        self.Vm0, self.Vmx, self.Km0 = p.Vm0, p.Vmx, p.Km0
        self.m2_m4, self.m1, self.m1_m30, self.m2 = p.m2 + p.m4, p.m1, p.m1 + p.m30, p.m2
        self.ka1, self.ka2, self.kd, self.ka1_kd = p.ka1, p.ka2, p.kd, p.ka1 + p.kd
        self.Vi, self.p2u, self.Ib, self.ki, self.ksc, self.Vg = p.Vi, p.p2u, p.Ib, p.ki, p.ksc, p.Vg
        self.pmol_per_kg_per_u = PMOL_PER_U / p.BW


class _Gastric:
    """Gastric emptying shape for one step (Dbar is constant during a step); each (N,)."""

    __slots__ = ("alpha", "beta", "b_dbar", "d_dbar")

    def __init__(self, dbar_mg: np.ndarray, c: _Coefficients) -> None:
        has_meal = dbar_mg > 0.0
        safe = np.where(has_meal, dbar_mg, 1.0)
        # alpha = beta = 0 makes the tanh terms vanish, i.e. kgut = kmax: simglucose's Dbar <= 0 branch
        self.alpha = np.where(has_meal, _GASTRIC_SHAPE / (2.0 * safe * (1.0 - c.b)), 0.0)
        self.beta = np.where(has_meal, _GASTRIC_SHAPE / (2.0 * safe * c.d), 0.0)
        self.b_dbar = c.b * dbar_mg
        self.d_dbar = c.d * dbar_mg


class _Buffer:
    """A (13, N) array and its 13 row views, reused across steps (saves allocations in the hot loop)."""

    __slots__ = ("array", "rows")

    def __init__(self, n: int) -> None:
        self.array = np.zeros((N_STATES, n))
        self.rows = tuple(self.array)


def _rhs_rows(
    x: _Buffer,
    eat_mg_per_min: np.ndarray,
    insulin_pmol_per_kg_min: np.ndarray,
    g: _Gastric,
    c: _Coefficients,
    out: _Buffer,
    disturbance: np.ndarray | None = None,
    with_insulin: bool = True,
) -> None:
    """Write dx/dt (13, N) of states ``x`` (13, N) into ``out``; units per minute of those of :class:`State`.

    Term by term ``T1DPatient.model``; only parameter-only sub-expressions are
    precomputed (:class:`_Coefficients`), which changes results by rounding only.
    """
    q_sto1, q_sto2, q_gut, g_p, g_t, i_p, x_u, i_1, i_d, i_l, i_sc1, i_sc2, g_sc = x.rows
    d_q_sto1, d_q_sto2, d_q_gut, d_g_p, d_g_t = out.rows[:5]
    d_g_sc = out.rows[State.G_SC]

    # gastro-intestinal tract (mg/min)
    # kgut = kmin + (kmax - kmin)/2 * (tanh(alpha (Qsto - b Dbar)) - tanh(beta (Qsto - d Dbar)) + 2)
    q_sto = q_sto1 + q_sto2
    k_gut = c.kmax + c.half_dk * (np.tanh(g.alpha * (q_sto - g.b_dbar)) - np.tanh(g.beta * (q_sto - g.d_dbar)))
    to_liquid = c.kmax * q_sto1  # solid -> liquid (grinding)
    emptied = k_gut * q_sto2  # stomach -> intestine
    np.subtract(eat_mg_per_min, to_liquid, out=d_q_sto1)
    np.subtract(to_liquid, emptied, out=d_q_sto2)
    np.subtract(emptied, c.kabs * q_gut, out=d_q_gut)

    # glucose (mg/kg/min)
    ra = c.ra_per_qgut * q_gut  # rate of appearance f * kabs * Qgut / BW
    egp = np.maximum(c.kp1 - c.kp2 * g_p - c.kp3 * i_d, 0.0)  # endogenous production, max(EGP, 0)
    losses = c.ke1 * np.maximum(g_p - c.ke2, 0.0) + c.Fsnc  # renal excretion + insulin-independent use
    exchange = c.k1 * g_p - c.k2 * g_t  # plasma -> tissue
    appearance = egp + ra if disturbance is None else egp + ra + disturbance  # + unexplained appearance
    np.subtract(appearance - losses, exchange, out=d_g_p)
    uid = (c.Vm0 + c.Vmx * x_u) * g_t / (c.Km0 + g_t)  # insulin-dependent utilization
    np.subtract(exchange, uid, out=d_g_t)

    # subcutaneous glucose (mg/kg/min)
    np.multiply(c.ksc, g_p - g_sc, out=d_g_sc)

    if with_insulin:  # (False: the caller advances the insulin rows exactly and ignores them here)
        _insulin_rows(i_p, x_u, i_1, i_d, i_l, i_sc1, i_sc2, insulin_pmol_per_kg_min, c, out)

    # simglucose: dxdt[i] = (x[i] >= 0) * dxdt[i] for the clamped states
    out.array *= (x.array >= 0.0) | _UNCLAMPED_ROWS


def _insulin_rows(i_p, x_u, i_1, i_d, i_l, i_sc1, i_sc2, insulin_pmol_per_kg_min, c, out) -> None:
    (_, _, _, _, _, d_i_p, d_x_u, d_i_1, d_i_d, d_i_l, d_i_sc1, d_i_sc2, _) = out.rows  # fmt: skip
    # insulin (pmol/kg/min; X, I1, Id in pmol/L/min)
    np.subtract(c.m1 * i_l + c.ka1 * i_sc1 + c.ka2 * i_sc2, c.m2_m4 * i_p, out=d_i_p)
    i_plasma = i_p / c.Vi  # pmol/L
    np.multiply(c.p2u, i_plasma - c.Ib - x_u, out=d_x_u)
    np.multiply(c.ki, i_plasma - i_1, out=d_i_1)
    np.multiply(c.ki, i_1 - i_d, out=d_i_d)
    np.subtract(c.m2 * i_p, c.m1_m30 * i_l, out=d_i_l)
    np.subtract(insulin_pmol_per_kg_min, c.ka1_kd * i_sc1, out=d_i_sc1)
    np.subtract(c.kd * i_sc1, c.ka2 * i_sc2, out=d_i_sc2)


def _check_batch(params: ModelParams, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = np.broadcast_to(x, (params.size, N_STATES))
    if x.shape != (params.size, N_STATES):
        raise ValueError(f"states must have shape ({params.size}, {N_STATES}), got {x.shape}")
    return x


def _batch_input(name: str, value: Any, n: int, steps: int | None = None) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    shape = (n,) if steps is None else (n, steps)
    try:
        array = np.broadcast_to(array, shape)
    except ValueError:
        raise ValueError(f"{name} must broadcast to shape {shape}, got {array.shape}") from None
    if not np.all(np.isfinite(array)) or np.any(array < 0.0):
        raise ValueError(f"{name} must be finite and >= 0")
    return array


def derivatives(
    x: np.ndarray,
    eat_g_per_min: np.ndarray,
    insulin_u_per_min: np.ndarray,
    dbar_mg: np.ndarray,
    params: ModelParams,
) -> np.ndarray:
    """The model's right-hand side dx/dt, shape (N, 13), as ``T1DPatient.model`` computes it.

    Parameters
    ----------
    x: states (N, 13), units of :class:`State`.
    eat_g_per_min: carbohydrate being eaten (N,), g/min (simglucose's ``action.CHO``
        after the meal queue).
    insulin_u_per_min: subcutaneous insulin infusion (N,), U/min.
    dbar_mg: gastric reference ``Dbar`` (N,), mg (:attr:`MealState.dbar_mg`).
    params: parameters of the N patients.
    """
    x = _check_batch(params, x)
    c = _Coefficients(params)
    n = params.size
    eat_mg = _batch_input("eat_g_per_min", eat_g_per_min, n) * MG_PER_G
    insulin = _batch_input("insulin_u_per_min", insulin_u_per_min, n) * c.pmol_per_kg_per_u
    dbar = np.broadcast_to(np.asarray(dbar_mg, dtype=np.float64), (n,))
    rows, out = _Buffer(n), _Buffer(n)
    rows.array[...] = x.T
    _rhs_rows(rows, eat_mg, insulin, _Gastric(dbar, c), c, out)
    return out.array.T.copy()


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
        self.x = _Buffer(n)
        self.stage = _Buffer(n)
        self.k = [_Buffer(n) for _ in range(4)]

    def step(self, x_in, x_out, eat_mg, insulin, g, c, h, substeps, dist=None) -> None:
        """Advance ``x_in`` (13, N) by ``substeps`` RK4 steps of h minutes into ``x_out`` (13, N)."""
        x, stage = self.x, self.stage
        k1, k2, k3, k4 = self.k
        half, sixth = 0.5 * h, h / 6.0
        x.array[...] = x_in
        for _ in range(substeps):
            _rhs_rows(x, eat_mg, insulin, g, c, k1, dist)
            np.multiply(k1.array, half, out=stage.array)
            stage.array += x.array
            _rhs_rows(stage, eat_mg, insulin, g, c, k2, dist)
            np.multiply(k2.array, half, out=stage.array)
            stage.array += x.array
            _rhs_rows(stage, eat_mg, insulin, g, c, k3, dist)
            np.multiply(k3.array, h, out=stage.array)
            stage.array += x.array
            _rhs_rows(stage, eat_mg, insulin, g, c, k4, dist)
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
        from twin.exact_insulin import advance

        x, stage = self.x, self.stage
        k1, k2, k3, k4 = self.k
        h_half, sixth = 0.5 * h, h / 6.0
        x.array[...] = x_in
        for _ in range(substeps):
            both = advance(mats, x.array[rows], insulin)
            y_half, y_full = both[:7], both[7:]
            _rhs_rows(x, eat_mg, insulin, g, c, k1, dist, False)
            np.multiply(k1.array, h_half, out=stage.array)
            stage.array += x.array
            stage.array[rows] = y_half
            _rhs_rows(stage, eat_mg, insulin, g, c, k2, dist, False)
            np.multiply(k2.array, h_half, out=stage.array)
            stage.array += x.array
            stage.array[rows] = y_half
            _rhs_rows(stage, eat_mg, insulin, g, c, k3, dist, False)
            np.multiply(k3.array, h, out=stage.array)
            stage.array += x.array
            stage.array[rows] = y_full
            _rhs_rows(stage, eat_mg, insulin, g, c, k4, dist, False)
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
    if not (np.isfinite(dt_min) and dt_min > 0.0):
        raise ValueError(f"dt_min must be > 0, got {dt_min}")
    if substeps is None:
        substeps = stable_substeps(params, dt_min, include_insulin=not exact_insulin)
    elif int(substeps) != substeps or substeps < 1:
        raise ValueError(f"substeps must be a positive integer, got {substeps}")
    substeps = int(substeps)
    n = params.size
    x0 = _check_batch(params, x0)
    insulin_u_per_min = np.asarray(insulin_u_per_min, dtype=np.float64)
    carbs_g = np.asarray(carbs_g, dtype=np.float64)
    if insulin_u_per_min.ndim == 0 and carbs_g.ndim == 0:
        raise ValueError("carbs_g or insulin_u_per_min must have a time axis (T steps)")
    steps = insulin_u_per_min.shape[-1] if insulin_u_per_min.ndim else carbs_g.shape[-1]
    carbs = _batch_input("carbs_g", carbs_g, n, steps)
    insulin = _batch_input("insulin_u_per_min", insulin_u_per_min, n, steps)
    meal = MealState.initial(x0) if meal is None else meal
    if meal.planned_g.shape != (n,):
        raise ValueError(f"meal bookkeeping is for {meal.planned_g.shape[0]} patients, expected {n}")

    dist_t = None
    if disturbance_mg_per_kg_per_min is not None:
        dist = np.broadcast_to(np.asarray(disturbance_mg_per_kg_per_min, dtype=np.float64), (n, steps))
        if not np.all(np.isfinite(dist)):
            raise ValueError("disturbance_mg_per_kg_per_min must be finite")
        dist_t = np.ascontiguousarray(dist.T)  # (T, N)
    c = _Coefficients(params)
    insulin_pmol = (insulin * c.pmol_per_kg_per_u[:, None]).T  # (T, N) pmol/kg/min
    carbs_t = carbs.T  # (T, N)
    announced = carbs_t.any(axis=1)  # (T,) whether any patient announces carbohydrate at a step
    h = float(dt_min) / substeps
    out = np.empty((steps + 1, N_STATES, n))  # rows layout per step
    eaten = np.zeros((steps, n))
    out[0] = x0.T
    rk4 = _RK4(n)
    if exact_insulin:
        from twin.exact_insulin import INSULIN_ROWS, half_and_full

        rows, mats = INSULIN_ROWS, half_and_full(params, n, h)
    no_meal = np.zeros(n)
    gastric = _Gastric(meal.dbar_mg, c)
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
                gastric = _Gastric(meal.dbar_mg, c)
        dist_k = None if dist_t is None else dist_t[k]
        if exact_insulin:
            rk4.step_exact_insulin(out[k], out[k + 1], eat_mg, insulin_pmol[k], gastric, c, h, substeps, dist_k,
                                   rows, mats)
        else:
            rk4.step(out[k], out[k + 1], eat_mg, insulin_pmol[k], gastric, c, h, substeps, dist_k)
    states = out.transpose(2, 0, 1)  # (N, T+1, 13) view
    glucose = out[:, State.G_SC, :].T / c.Vg[:, None]
    return Trajectory(states=states, glucose_mg_dl=glucose, eat_rate_g_per_min=eaten.T, meal=meal, dt_min=float(dt_min))


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
        self._x0 = np.array(_check_batch(params, x0), dtype=np.float64)
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
        carbs = np.repeat(_batch_input("carbs_g_per_min", carbs_g_per_min, n)[:, None], minutes, axis=1)
        insulin = np.repeat(_batch_input("insulin_u_per_min", insulin_u_per_min, n)[:, None], minutes, axis=1)
        trajectory = simulate(self.params, self.state, carbs, insulin, meal=self.meal, substeps=self._substeps)
        self.state = trajectory.final_state.copy()
        self.meal = trajectory.meal
        self.t_min += minutes * SAMPLE_TIME_MIN
        return trajectory
