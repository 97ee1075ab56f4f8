"""What the control path takes from a fit: the twin that doses, fitted only where that lowers insulin.

A fit of closed-loop or bolus-calculator history confounds the parameters
that decide how much insulin the loop gives. Under a bolus calculator every
bolus is proportional to its meal's carbs, so "the person is less sensitive"
and "the carbs raise glucose less" explain the same days (the onboarding arm
measured it: child#002 fitted at sensitivity x0.50 and carb effect x0.29,
its true 1-U drop 55 % larger than the learned one, and with that twin it
spent 0.5 % of the time below 54 mg/dL where the profile's twin spent none).
A wrong fit in that direction doses more insulin; in the other, less.

So the twin that doses takes two of the fitted factors, each only in the
direction that gives less insulin, and the profile's value for everything
else (oref0's autosens and autotune bound their factors for the same reason,
in both directions):

========================  ==========================  ==========================
parameter                 kept when the fit says       why that direction is safe
========================  ==========================  ==========================
sensitivity (day's)       more sensitive (factor > 1)  each unit forecast to lower more
insulin_speed             faster (factor > 1)          insulin's effect seen sooner, within the horizon
basal_glucose             never (the profile's)        it moves insulin both ways (below)
carb_effect               never (the profile's)        a smaller one over-doses after meals (below)
absorption_speed          never (the profile's)        the same, through the meal's timing
========================  ==========================  ==========================

The basal glucose is not taken in either direction: a twin whose basal
holds glucose lower forecasts a fall and gives less insulin now, but in this
model 1 U then lowers glucose less (insulin-dependent utilization grows with
glucose: a basal glucose x0.78 cut child#002's 1-U drop from 70 to 52 mg/dL),
so each correction it does give is larger. Absorption speed shifts when the
carbs arrive, not how much insulin they need, but it has the carb effect's problem.

The carb effect looked safe to take when smaller (each gram forecast to
raise glucose less), and measurement said otherwise: with child#002's
dosing twin differing from the profile's only by carb effect x0.29 (and
absorption x0.96), the HCL trial still spent 0.6 % of the time below 54
mg/dL (profile's twin 0.0). A twin that expects a meal to raise glucose too
little explains the rise as an unexplained disturbance, which its estimator
lets decay slowly, so the MPC keeps correcting after the meal has been
absorbed. So only sensitivity and insulin speed are taken, one way each.

The fitted twin itself (both directions) is what forecasts and replay use,
and what the report and the implied therapy show: the person sees what the
fit says even where the loop does not act on it.
"""

from __future__ import annotations

import numpy as np

from twin.learning.fit import BLOCKS, NAMES, _BLOCK0, _INS, _SENS

DOSING_RULES: dict[str, str] = {
    "sensitivity": "kept if more sensitive than the profile's twin, else the profile's",
    "basal_glucose": "the profile's (it moves insulin both ways: lower holds glucose lower but 1 U then drops less)",
    "carb_effect": "the profile's (a smaller one measured to over-dose after meals: child#002)",
    "insulin_speed": "kept if faster than the profile's, else the profile's",
    "absorption_speed": "the profile's (it shifts the meal's timing: the carb effect's problem)",
}


def dosing_theta(theta: np.ndarray) -> np.ndarray:
    """The fitted log factors with every insulin-increasing direction put back to the profile's (0).

    Time-of-day deviations are folded into the day's sensitivity first (the
    twin that doses has one set of parameters for the day), as
    :meth:`TwinBase.learned_twin` does.
    """
    theta = np.asarray(theta, dtype=float)
    if theta.shape != (len(NAMES),):
        raise ValueError(f"theta has shape {theta.shape}, expected ({len(NAMES)},)")
    out = np.zeros_like(theta)
    day_sensitivity = theta[_SENS] + float(np.mean(theta[_BLOCK0:_BLOCK0 + BLOCKS]))
    out[_SENS] = max(day_sensitivity, 0.0)
    out[_INS] = max(theta[_INS], 0.0)
    return out
