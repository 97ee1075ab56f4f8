"""Decision records: one control cycle as plain data, replayable to the same decision.

A record holds everything the cycle used: the input (reading, announced
carbs, clock, cycle length), the twin it ran on (profile, personalized
parameters), the estimator's and the supervisor's state before the cycle,
and the settings; and what it decided: the dose, the reason, the forecast
components, the MPC's status and the compute time.

This module writes and reads the record's parts; it sits below
:mod:`controller.twin_policy`, which builds a record each cycle.
:func:`controller.decision_replay.replay`, above both, rebuilds the cycle
from a record (after a JSON round trip) and decides again.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict
from datetime import datetime
from typing import Any

import numpy as np

from controller.insulin_math import Delivery
from controller.share_learning import ShareLearner
from controller.policy import ControlInput, Dose
from controller.safety import SafetyLimits, SafetySupervisor
from twin.estimator import EstimatorSettings, TwinEstimator
from twin.model import MealState
from twin.personalize import Twin
from twin.profile import PatientProfile

FORMAT = "glucotwin.decision/1"


def twin_to_dict(twin: Twin) -> dict[str, Any]:
    return twin.to_dict()


def twin_from_dict(data: dict[str, Any]) -> Twin:
    return Twin.from_dict(data)


def estimator_state(est: TwinEstimator | None) -> dict[str, Any] | None:
    if est is None:
        return None
    meal = est.meal
    return {
        "time": est.time.isoformat(),
        "x": est.x.tolist(),
        "z": est.z.tolist(),
        "P": est.P.tolist(),
        "basal_u_per_h": est.basal_u_per_h,
        "pending_carbs_g": est._pending_carbs_g,
        "rejections_in_row": est.rejections_in_row,
        "readings_accepted": est.readings_accepted,
        "meal": {k: np.asarray(getattr(meal, k)).tolist() for k in
                 ("planned_g", "eat_rate_g_per_min", "last_qsto_mg", "last_foodtaken_g", "is_eating")},
    }


def restore_estimator(twin: Twin, settings: EstimatorSettings, state: dict[str, Any]) -> TwinEstimator:
    est = TwinEstimator(twin, datetime.fromisoformat(state["time"]), settings)
    est.x = np.array(state["x"], dtype=float)
    est.z = np.array(state["z"], dtype=float)
    est.P = np.array(state["P"], dtype=float)
    est.basal_u_per_h = float(state["basal_u_per_h"])
    est._pending_carbs_g = float(state["pending_carbs_g"])
    est.rejections_in_row = int(state["rejections_in_row"])
    est.readings_accepted = int(state["readings_accepted"])
    m = state["meal"]
    est.meal = MealState(np.array(m["planned_g"], dtype=float), np.array(m["eat_rate_g_per_min"], dtype=float),
                         np.array(m["last_qsto_mg"], dtype=float), np.array(m["last_foodtaken_g"], dtype=float),
                         np.array(m["is_eating"], dtype=bool))
    return est


def supervisor_state(sup: SafetySupervisor) -> dict[str, Any]:
    return {
        "readings": [[t.isoformat(), g] for t, g in sup.readings],
        "deliveries": [[d.time.isoformat(), d.amount_u] for d in sup.deliveries],
        "announced": [[t.isoformat(), g] for t, g in sup.announced],
        "meal_learner": sup.meal_learner.to_dict(),
        "correction_learner": sup.correction_learner.to_dict(),
    }


def restore_supervisor(profile: PatientProfile, limits: SafetyLimits, state: dict[str, Any]) -> SafetySupervisor:
    sup = SafetySupervisor(profile, limits)
    sup.readings = deque(((datetime.fromisoformat(t), float(g)) for t, g in state["readings"]), maxlen=12)
    sup.deliveries = deque(Delivery(datetime.fromisoformat(t), float(a)) for t, a in state["deliveries"])
    sup.announced = deque((datetime.fromisoformat(t), float(g)) for t, g in state["announced"])
    sup.meal_learner = ShareLearner.from_dict(state["meal_learner"], SafetySupervisor.meal_learning_settings(limits))
    sup.correction_learner = ShareLearner.from_dict(state["correction_learner"],
                                                    SafetySupervisor.correction_learning_settings(limits))
    return sup


def build_record(policy: Any, inp: ControlInput, estimator_before: dict | None, supervisor_before: dict,
                 dose: Dose) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "input": inp.to_dict(),
        "twin": twin_to_dict(policy.twin),
        "settings": {"estimator": asdict(policy.settings.estimator), "mpc": asdict(policy.settings.mpc),
                     "meal_bolus": (asdict(policy.settings.meal_bolus)
                                    if policy.settings.meal_bolus is not None else None),
                     "limits": asdict(policy.limits),
                     "advice": asdict(policy.settings.advice) if policy.settings.advice is not None else None},
        "estimator_before": estimator_before,
        "supervisor_before": supervisor_before,
        "output": dose.to_dict(),
    }

