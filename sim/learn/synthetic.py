"""A synthetic history from the twin's own model: days a known person lived, for tests and ``glucotwin bench``.

The "person" is the profile's twin with known multipliers (``truth``, in
:data:`twin.learning.fit.NAMES` order); meals come at seeded random times
around breakfast, lunch and dinner, each bolused at the profile's carb
ratio, and the CGM adds seeded Gaussian noise. Nothing here reads a
simulator's parameters: the truth is whatever the caller chose.
"""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from twin.learning.fit import TwinBase
from twin.learning.history import History, STEP_MIN
from twin.model import simulate

MEALS = ((7.0, 50.0), (12.5, 70.0), (19.0, 80.0))  # (hour, grams) of the usual day


def synthetic_history(base: TwinBase, truth: np.ndarray, days: float = 14.0, seed: int = 0,
                      noise_mg_dl: float = 8.0, start: datetime | None = None) -> History:
    """``days`` of CGM, insulin and carbs of the person ``base`` with multipliers ``truth``."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2025, 1, 1, tzinfo=timezone.utc)
    steps = int(round(days * 1440 / STEP_MIN))
    carbs = np.zeros(steps)
    insulin = np.full(steps, base.basal_u_per_h * STEP_MIN / 60.0)
    cr = base.twin.profile.carb_ratio_g_per_u
    for day in range(int(np.ceil(days))):
        for hour, grams in MEALS:
            k = int(round((day * 24 + hour + rng.normal(0, 0.75)) * 60 / STEP_MIN))
            g = max(10.0, grams * rng.uniform(0.6, 1.4))
            if 0 <= k < steps:
                carbs[k] += g
                insulin[k] += g / cr
    params, gb = base.params_for(np.asarray(truth, dtype=float))
    # The person's own daily pattern: the block of each step picks its sensitivity.
    minutes = (np.arange(steps) * STEP_MIN) % 1440
    x = None
    bg = np.empty(steps + 1)
    meal = None
    from twin.personalize import steady_state

    x = steady_state(params.take([0]), gb, base.basal_egp)
    per = int(360 / STEP_MIN)
    for s in range(0, steps, per):
        e = min(s + per, steps)
        block = int(minutes[s] // 360) % 4
        p = params.take([block])
        traj = simulate(p, x, carbs[None, s:e], insulin[None, s:e] / STEP_MIN, meal=meal, dt_min=1.0 * STEP_MIN,
                        exact_insulin=True)
        bg[s:e + 1] = traj.glucose_mg_dl[0]
        x, meal = traj.final_state.copy(), traj.meal
    cgm = bg + rng.normal(0.0, noise_mg_dl, bg.shape)
    return History(start, STEP_MIN, np.clip(cgm, 39.0, 401.0), insulin, carbs)
