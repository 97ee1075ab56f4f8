"""The right-hand side of the UVA/Padova 2008 model (simglucose's ``T1DPatient.model``), batch rows layout.

Internally the integrators of :mod:`twin.model` work on ``(13, N)`` arrays so
that each named state is one contiguous row: :class:`Buffer` holds one such
array and its row views, :func:`rhs_rows` writes dx/dt into one.
:func:`derivatives` is the public ``(N, 13)`` form.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twin.model_params import N_STATES, ModelParams
from twin.model_state import CLAMPED_STATES, MG_PER_G, PMOL_PER_U, State

# The "5" of the gastric emptying shape: alpha = 5 / (2 Dbar (1 - b)),
# beta = 5 / (2 Dbar d) (Dalla Man 2006 meal model).
_GASTRIC_SHAPE = 5.0
_UNCLAMPED_ROWS = np.array([[s not in CLAMPED_STATES] for s in State])  # (13, 1) bool


class Coefficients:
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


class Gastric:
    """Gastric emptying shape for one step (Dbar is constant during a step); each (N,)."""

    __slots__ = ("alpha", "beta", "b_dbar", "d_dbar")

    def __init__(self, dbar_mg: np.ndarray, c: Coefficients) -> None:
        has_meal = dbar_mg > 0.0
        safe = np.where(has_meal, dbar_mg, 1.0)
        # alpha = beta = 0 makes the tanh terms vanish, i.e. kgut = kmax: simglucose's Dbar <= 0 branch
        self.alpha = np.where(has_meal, _GASTRIC_SHAPE / (2.0 * safe * (1.0 - c.b)), 0.0)
        self.beta = np.where(has_meal, _GASTRIC_SHAPE / (2.0 * safe * c.d), 0.0)
        self.b_dbar = c.b * dbar_mg
        self.d_dbar = c.d * dbar_mg


class Buffer:
    """A (13, N) array and its 13 row views, reused across steps (saves allocations in the hot loop)."""

    __slots__ = ("array", "rows")

    def __init__(self, n: int) -> None:
        self.array = np.zeros((N_STATES, n))
        self.rows = tuple(self.array)


def rhs_rows(
    x: Buffer,
    eat_mg_per_min: np.ndarray,
    insulin_pmol_per_kg_min: np.ndarray,
    g: Gastric,
    c: Coefficients,
    out: Buffer,
    disturbance: np.ndarray | None = None,
    with_insulin: bool = True,
) -> None:
    """Write dx/dt (13, N) of states ``x`` (13, N) into ``out``; units per minute of those of :class:`State`.

    Term by term ``T1DPatient.model``; only parameter-only sub-expressions are
    precomputed (:class:`Coefficients`), which changes results by rounding only.
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


def check_batch(params: ModelParams, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = np.broadcast_to(x, (params.size, N_STATES))
    if x.shape != (params.size, N_STATES):
        raise ValueError(f"states must have shape ({params.size}, {N_STATES}), got {x.shape}")
    return x


def batch_input(name: str, value: Any, n: int, steps: int | None = None) -> np.ndarray:
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
    x = check_batch(params, x)
    c = Coefficients(params)
    n = params.size
    eat_mg = batch_input("eat_g_per_min", eat_g_per_min, n) * MG_PER_G
    insulin = batch_input("insulin_u_per_min", insulin_u_per_min, n) * c.pmol_per_kg_per_u
    dbar = np.broadcast_to(np.asarray(dbar_mg, dtype=np.float64), (n,))
    rows, out = Buffer(n), Buffer(n)
    rows.array[...] = x.T
    rhs_rows(rows, eat_mg, insulin, Gastric(dbar, c), c, out)
    return out.array.T.copy()
