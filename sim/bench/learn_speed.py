"""``glucotwin bench``'s learning figures: time to learn 14 days, and what the fit recovers.

The history is synthetic (:mod:`sim.learn.synthetic`): 14 days of a person
40 % more insulin-sensitive than the profile says, absorbing carbs 30 %
faster, with seeded CGM noise, so the recovered factors can be checked
exactly. ``learn_s`` is the wall time of one ``learn`` (the fit, the implied
therapy and the meal habits) in this process; a Raspberry Pi 4 core is
about 3-4 times slower than the x86 development machine.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

TRUTH = {"sensitivity": 1.4, "absorption_speed": 1.3}


def learn_figures(days: float = 14.0, patient: str = "adult#001") -> dict[str, Any]:
    from sim.learn.synthetic import synthetic_history
    from sim.trial.cohort import clinical_profile
    from sim.trial.priors import population_prior
    from twin.learning.fit import NAMES, TwinBase
    from twin.learning.learned import learn

    profile = clinical_profile(patient)
    base = TwinBase.from_profile(profile, population_prior(exclude=patient))
    truth = np.zeros(len(NAMES))
    for name, factor in TRUTH.items():
        truth[NAMES.index(name)] = math.log(factor)
    history = synthetic_history(base, truth, days=days, seed=2026)
    tic = time.perf_counter()
    learned = learn(base, history)
    learn_s = time.perf_counter() - tic
    day_sensitivity = math.exp(learned.theta["sensitivity"] + float(np.mean(
        [learned.theta[n] for n in NAMES if n.startswith("sensitivity_")])))
    return {
        "learn_s": round(learn_s, 2),
        "learn_days": days,
        "learn_evaluations": learned.fit_stats["evaluations"],
        "learn_sensitivity_true": TRUTH["sensitivity"],
        "learn_sensitivity_fitted": round(day_sensitivity, 3),
        "learn_absorption_true": TRUTH["absorption_speed"],
        "learn_absorption_fitted": round(math.exp(learned.theta["absorption_speed"]), 3),
        "learn_rmse_6h_profile_mg_dl": learned.fit_stats["rmse_6h_profile_mg_dl"],
        "learn_rmse_6h_mg_dl": learned.fit_stats["rmse_6h_mg_dl"],
    }
