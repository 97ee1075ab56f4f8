"""Parameter recovery: how close a learned twin is to the simulator's true patient (validation only).

This module reads simglucose's own parameters, so it lives in ``sim/`` and is
never on the control path (DESIGN.md honesty rules). It compares what the
model says about the person, computed the same way on three models: the
simulator's true patient, the twin personalized from the clinical profile,
the learned twin and, when given, the learned twin's dosing twin
(:mod:`twin.learning.trust`):

- ``drop_mg_dl_per_u``: glucose drop at the nadir after 1 U from the basal
  steady state (insulin sensitivity as a clinician would measure it);
- ``basal_glucose_mg_dl``: the glucose the programmed basal holds;
- ``cr_model_g_per_u``: grams whose 8-h glucose excursion area equals that of
  1 U (the carb ratio the model implies);
- ``kabs_per_min``: intestinal absorption rate.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twin.learning.therapy import _areas
from twin.model_params import ModelParams
from twin.model_state import State
from twin.personalize import Twin, insulin_drop_mg_dl

QUANTITIES = ("drop_mg_dl_per_u", "basal_glucose_mg_dl", "cr_model_g_per_u", "kabs_per_min")


def describe_model(params: ModelParams, x_basal: np.ndarray) -> dict[str, float]:
    x = np.atleast_2d(x_basal)
    ins, carb = _areas(params, x)
    return {
        "drop_mg_dl_per_u": float(insulin_drop_mg_dl(params, x)[0]),
        "basal_glucose_mg_dl": float(x[0, State.G_SC] / params.Vg[0]),
        "cr_model_g_per_u": float(10.0 * ins[0] / carb[0]),
        "kabs_per_min": float(params.kabs[0]),
    }


def recovery(patient: str, profile_twin: Twin, learned_twin: Twin, dosing_twin: Twin | None = None) -> dict[str, Any]:
    """True, profile-twin, learned-twin (and dosing-twin) values of :data:`QUANTITIES`, and each twin's error (%)."""
    from sim.trial.cohort import twin_parameters

    true_params, true_x0 = twin_parameters([patient])
    rows = {"true": describe_model(true_params, true_x0),
            "profile": describe_model(profile_twin.params, profile_twin.x_basal),
            "learned": describe_model(learned_twin.params, learned_twin.x_basal)}
    if dosing_twin is not None:
        rows["dosing"] = describe_model(dosing_twin.params, dosing_twin.x_basal)
    errors = {which: {q: round(100.0 * (rows[which][q] / rows["true"][q] - 1.0), 1) for q in QUANTITIES}
              for which in rows if which != "true"}
    return {"values": {k: {q: round(v, 4) for q, v in row.items()} for k, row in rows.items()},
            "error_pct": errors}
