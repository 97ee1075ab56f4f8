"""Exact discretization of the model's insulin subsystem, for long predictions.

The insulin states of the UVA/Padova model (subcutaneous depots, plasma and
liver insulin, remote insulin action X, the delayed insulin signal I1, Id)
form a linear time-invariant system driven by the infusion and untouched by
glucose. With the infusion held over a step, ``exp(M h)`` of the augmented
matrix advances them exactly. :func:`twin.model.simulate` with
``exact_insulin=True`` uses it so that Runge-Kutta only integrates the gut and
glucose states, whose slowest-to-fastest range allows 5-minute steps: the
fastest insulin mode (plasma/liver exchange, ~0.6 /min) no longer sets the
step. This halves the cost of the MPC's 3-hour predictions.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import expm

from twin.model_params import ModelParams
from twin.model_state import State

INSULIN_STATES = (State.I_P, State.X, State.I1, State.I_D, State.I_L, State.I_SC1, State.I_SC2)
INSULIN_ROWS = slice(State.I_P, State.I_SC2 + 1)
"""The insulin states are contiguous in :class:`State` (5..11); a slice is a cheap view."""
_N_INS = len(INSULIN_STATES)
assert tuple(range(INSULIN_ROWS.start, INSULIN_ROWS.stop)) == INSULIN_STATES
_CACHE: dict[tuple[bytes, float], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
_CACHE_MAX = 256


def insulin_matrices(p: ModelParams, n: int, h_min: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Phi (N,7,7), g_u (N,7), g_c (N,7)): y(t+h) = Phi y + g_u u + g_c, u in pmol/kg/min held over h."""
    params = np.stack([p.ka1, p.ka2, p.kd, p.m1, p.m2, p.m30, p.m4, p.Vi, p.p2u, p.Ib, p.ki], axis=1)  # (N, 11)
    key = (params.tobytes(), float(h_min))
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    phi = np.empty((n, _N_INS, _N_INS))
    g_u = np.empty((n, _N_INS))
    g_c = np.empty((n, _N_INS))
    for i, (ka1, ka2, kd, m1, m2, m30, m4, vi, p2u, ib, ki) in enumerate(params):
        m = np.zeros((_N_INS + 2, _N_INS + 2))
        ip, x, i1, idl, il, sc1, sc2, u, one = range(_N_INS + 2)  # State order, then input and constant
        m[sc1, sc1], m[sc1, u] = -(ka1 + kd), 1.0
        m[sc2, sc1], m[sc2, sc2] = kd, -ka2
        m[ip, sc1], m[ip, sc2], m[ip, ip], m[ip, il] = ka1, ka2, -(m2 + m4), m1
        m[il, ip], m[il, il] = m2, -(m1 + m30)
        m[x, ip], m[x, x], m[x, one] = p2u / vi, -p2u, -p2u * ib
        m[i1, ip], m[i1, i1] = ki / vi, -ki
        m[idl, i1], m[idl, idl] = ki, -ki
        e = expm(m * h_min)
        phi[i], g_u[i], g_c[i] = e[:_N_INS, :_N_INS], e[:_N_INS, u], e[:_N_INS, one]
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.clear()
    _CACHE[key] = (phi, g_u, g_c)
    return phi, g_u, g_c


def half_and_full(p: ModelParams, n: int, h_min: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Matrices advancing by h/2 and by h in one product: rows 0..6 give t + h/2, rows 7..13 t + h."""
    a, b = insulin_matrices(p, n, h_min / 2.0), insulin_matrices(p, n, h_min)
    return (np.concatenate([a[0], b[0]], axis=1), np.concatenate([a[1], b[1]], axis=1),
            np.concatenate([a[2], b[2]], axis=1))


def advance(mats: tuple[np.ndarray, np.ndarray, np.ndarray], y: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Insulin states (K, N) after one held step of infusion ``u`` (N,) pmol/kg/min, from ``y`` (7, N)."""
    phi, g_u, g_c = mats
    return (np.matmul(phi, y.T[:, :, None])[:, :, 0] + g_u * u[:, None] + g_c).T
