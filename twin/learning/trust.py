"""What the control path takes from a fit: the twin that doses, fitted only where that lowers insulin.

A fit of closed-loop or bolus-calculator history confounds the parameters
that decide how much insulin the loop gives. Under a bolus calculator every
bolus is proportional to its meal's carbs, so "the person is less sensitive"
and "the carbs raise glucose less" explain the same days (the onboarding arm
measured it: child#002 fitted at sensitivity x0.50 and carb effect x0.29,
its true 1-U drop 55 % larger than the learned one, and with that twin it
spent 0.5 % of the time below 54 mg/dL where the profile's twin spent none).
A wrong fit in that direction doses more insulin; in the other, less.

So the twin that doses takes each fitted factor only in the direction that
gives less insulin (oref0's autosens and autotune bound their factors for
the same reason, in both directions); in the other direction it keeps the
profile's value:

========================  ==========================  ==========================
parameter                 kept when the fit says       why that direction is safe
========================  ==========================  ==========================
sensitivity (day's)       more sensitive (factor > 1)  each unit forecast to lower more
basal_glucose             never (the profile's)        it moves insulin both ways (below)
carb_effect               smaller (factor < 1)         each gram forecast to raise less
insulin_speed             faster (factor > 1)          insulin's effect seen sooner, within the horizon
absorption_speed          as fitted                    neither direction is insulin-increasing by itself
========================  ==========================  ==========================

The basal glucose is not taken in either direction: a twin whose basal
holds glucose lower forecasts a fall and gives less insulin now, but in this
model 1 U then lowers glucose less (insulin-dependent utilization grows with
glucose: a basal glucose x0.78 cut child#002's 1-U drop from 70 to 52 mg/dL),
so each correction it does give is larger. Absorption speed shifts when the
carbs arrive, not how much insulin they need.

The fitted twin itself (both directions) is what forecasts and replay use,
and what the report and the implied therapy show: the person sees what the
fit says even where the loop does not act on it.
"""

from __future__ import annotations

import numpy as np

from twin.learning.fit import BLOCKS, NAMES, _ABS, _BLOCK0, _CARB, _INS, _SENS

DOSING_RULES: dict[str, str] = {
    "sensitivity": "kept if more sensitive than the profile's twin, else the profile's",
    "basal_glucose": "the profile's (it moves insulin both ways: lower holds glucose lower but 1 U then drops less)",
    "carb_effect": "kept if smaller than the profile's, else the profile's",
    "insulin_speed": "kept if faster than the profile's, else the profile's",
    "absorption_speed": "kept as fitted",
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
    out[_CARB] = min(theta[_CARB], 0.0)
    out[_INS] = max(theta[_INS], 0.0)
    out[_ABS] = theta[_ABS]
    return out
