"""The meal bolus: the clinic's bolus, cut only where the twin forecasts a low.

When the person announces carbohydrates (hybrid closed loop), a bolus
calculator's dose is the start: carbs / carb ratio, plus the insulin that
brings the current glucose to the target by the correction factor, less the
insulin already on board. The twin then predicts glucose over
``horizon_min`` for candidate boluses from none to that dose, in a scenario
where insulin acts ``robust_sensitivity`` times more strongly than the
estimator believes (its sensitivity estimate is uncertain, and a clinic's
carb ratio can over-dose a person), on the scheduled basal. The largest
candidate whose forecast stays at or above ``floor_mg_dl`` is the meal
bolus; the reason says how much was cut and why.

The horizon is long on purpose (6 h): a dinner bolus's tail acts at night,
and a plan that looks only 3 h ahead gives insulin whose low it never sees.
This module decides the feed-forward only; the MPC adds to it and modulates
the basal (down to a suspension) around it, and the supervisor bounds the sum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

MIN_PER_H = 60.0


@dataclass(frozen=True)
class MealBolusSettings:
    """How the meal bolus is checked (see the module docstring).

    Attributes
    ----------
    horizon_min: how far the twin's forecast is checked.
    step_min: forecast grid.
    floor_mg_dl: the robust forecast must stay at or above this.
    robust_sensitivity: insulin sensitivity multiple of the check's scenario (>= 1).
    candidates: number of candidate boluses between none and the clinic's dose.
    include_correction: add the calculator's correction (less insulin on board) to the meal part.
    robust_carbs: share of the announced carbohydrates the check's scenario assumes are eaten (<= 1:
        a meal over-counted, or a carb ratio that over-doses this person).
    """

    horizon_min: float = 360.0
    step_min: float = 5.0
    floor_mg_dl: float = 80.0
    robust_sensitivity: float = 1.3
    candidates: int = 41
    include_correction: bool = True
    robust_carbs: float = 1.0

    def __post_init__(self) -> None:
        if not (60.0 <= self.horizon_min <= 600.0) or not (1.0 <= self.step_min <= 15.0):
            raise ValueError("horizon_min must be within 60..600 and step_min within 1..15")
        if self.horizon_min % self.step_min:
            raise ValueError("step_min must divide horizon_min")
        if not (math.isfinite(self.floor_mg_dl) and 40.0 <= self.floor_mg_dl <= 140.0):
            raise ValueError(f"floor_mg_dl must be within 40..140, got {self.floor_mg_dl}")
        if not (math.isfinite(self.robust_sensitivity) and 1.0 <= self.robust_sensitivity <= 3.0):
            raise ValueError(f"robust_sensitivity must be within 1..3, got {self.robust_sensitivity}")
        if not (math.isfinite(self.robust_carbs) and 0.3 <= self.robust_carbs <= 1.0):
            raise ValueError(f"robust_carbs must be within 0.3..1, got {self.robust_carbs}")
        if not (isinstance(self.candidates, int) and 2 <= self.candidates <= 401):
            raise ValueError(f"candidates must be an integer within 2..401, got {self.candidates!r}")


@dataclass(frozen=True)
class MealBolus:
    """The meal bolus decided, and how."""

    bolus_u: float
    calculator_u: float
    forecast_min_mg_dl: float  # robust forecast's lowest glucose with this bolus
    reason: str


def calculator_bolus_u(carbs_g: float, glucose_mg_dl: float, iob_u: float, target_mg_dl: float,
                       carb_ratio_g_per_u: float, correction_factor_mg_dl_per_u: float,
                       include_correction: bool = True) -> float:
    """A bolus calculator's dose: carbs / CR, plus (glucose - target) / CF less positive IOB
    (the correction part never negative, and never taken off the meal part)."""
    meal_u = max(carbs_g, 0.0) / carb_ratio_g_per_u
    if not include_correction:
        return meal_u
    correction_u = (glucose_mg_dl - target_mg_dl) / correction_factor_mg_dl_per_u - max(iob_u, 0.0)
    return meal_u + max(correction_u, 0.0)


def decide_meal_bolus(estimator: Any, carbs_g: float, glucose_mg_dl: float, iob_u: float, target_mg_dl: float,
                      carb_ratio_g_per_u: float, correction_factor_mg_dl_per_u: float, scheduled_u_per_h: float,
                      settings: MealBolusSettings | None = None) -> MealBolus:
    """The meal bolus for ``carbs_g`` announced now (already added to ``estimator``)."""
    s = settings or MealBolusSettings()
    calc = calculator_bolus_u(carbs_g, glucose_mg_dl, iob_u, target_mg_dl, carb_ratio_g_per_u,
                              correction_factor_mg_dl_per_u, s.include_correction)
    if calc <= 0:
        return MealBolus(0.0, 0.0, float("nan"), "meal bolus: the calculator gives none")
    steps = int(round(s.horizon_min / s.step_min))
    doses = np.linspace(0.0, calc, s.candidates)
    plans = np.full((s.candidates, steps), scheduled_u_per_h / MIN_PER_H)
    plans[:, 0] += doses / s.step_min
    try:
        glucose = estimator.plan_glucose(plans, s.step_min, sensitivity_scale=s.robust_sensitivity,
                                         new_carbs_scale=s.robust_carbs)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        return MealBolus(0.0, calc, float("nan"), f"meal bolus withheld: forecast failed ({exc})")
    lows = np.min(glucose[:, 1:], axis=1)
    if not np.all(np.isfinite(lows)):
        return MealBolus(0.0, calc, float("nan"), "meal bolus withheld: forecast not finite")
    failing = np.nonzero(lows < s.floor_mg_dl)[0]  # lows fall as the dose grows
    k = s.candidates - 1 if failing.size == 0 else int(failing[0]) - 1  # the largest dose before the first failing
    scenario = f"insulin x{s.robust_sensitivity:g} as strong, " + (
        f"{s.robust_carbs:.0%} of the carbs, " if s.robust_carbs < 1 else "") + f"{s.horizon_min / MIN_PER_H:g} h"
    if k < 0:
        return MealBolus(0.0, calc, float(lows[0]),
                         f"meal bolus withheld: even without it the twin forecasts {lows[0]:.0f} mg/dL "
                         f"< {s.floor_mg_dl:g} ({scenario}); calculator {calc:.2f} U")
    bolus = float(doses[k])
    if k == s.candidates - 1:
        return MealBolus(bolus, calc, float(lows[k]),
                         f"meal bolus {bolus:.2f} U, the calculator's dose (twin forecast low "
                         f"{lows[k]:.0f} mg/dL with {scenario})")
    return MealBolus(bolus, calc, float(lows[k]),
                     f"meal bolus {bolus:.2f} U of the calculator's {calc:.2f} U: more would take the twin's "
                     f"forecast below {s.floor_mg_dl:g} mg/dL ({scenario})")
