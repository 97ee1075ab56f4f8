"""What the UVA/Padova model carries from step to step: its 13 named states and the eating bookkeeping.

:class:`State` names the rows of a state vector (the order of simglucose's
``x``); :class:`MealState` and :func:`eat` are simglucose's meal queue and
gastric reference (``T1DPatient._announce_meal`` and ``.step``). The
equations are in :mod:`twin.model_rhs`, the integrators in :mod:`twin.model`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np

from twin.model_params import N_STATES

PMOL_PER_U = 6000.0  # pmol of insulin per unit (U)
MG_PER_G = 1000.0
EAT_RATE_G_PER_MIN = 5.0  # simglucose's T1DPatient.EAT_RATE
SAMPLE_TIME_MIN = 1.0  # simglucose's T1DPatient.SAMPLE_TIME


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
    raise ImportError("twin.model_state.State and twin.model_params.N_STATES disagree")

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
