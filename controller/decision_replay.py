"""Replay a decision record: rebuild the control cycle it holds and decide again.

Above both :mod:`controller.decision_record` (the record's parts) and
:mod:`controller.twin_policy` (the policy that writes a record each cycle).
"""

from __future__ import annotations

from typing import Any

from controller.advice import AdviceSettings
from controller.decision_record import FORMAT, restore_estimator, restore_supervisor, twin_from_dict
from controller.meal_bolus import MealBolusSettings
from controller.mpc import MPCSettings
from controller.policy import ControlInput, Dose
from controller.safety import SafetyLimits
from controller.twin_policy import ControlSettings, TwinMPCPolicy
from twin.estimator import EstimatorSettings


def replay(record: dict[str, Any]) -> Dose:
    """Decide again from a record; equals ``record['output']`` for an unchanged controller."""
    if record.get("format") != FORMAT:
        raise ValueError(f"not a decision record of format {FORMAT}")
    twin = twin_from_dict(record["twin"])
    meal = record["settings"].get("meal_bolus")  # absent in records written before the meal bolus
    advice = record["settings"].get("advice")  # absent in records written before the advice
    settings = ControlSettings(estimator=EstimatorSettings(**record["settings"]["estimator"]),
                               mpc=MPCSettings(**record["settings"]["mpc"]),
                               meal_bolus=MealBolusSettings(**meal) if meal is not None else None,
                               advice=AdviceSettings(**advice) if advice is not None else None)
    limits = SafetyLimits(**record["settings"]["limits"])
    policy = TwinMPCPolicy(twin, settings, limits)
    if record["estimator_before"] is not None:
        policy.estimator = restore_estimator(twin, settings.estimator, record["estimator_before"])
    policy.supervisor = restore_supervisor(twin.profile, limits, record["supervisor_before"])
    return policy.decide(ControlInput.from_dict(record["input"]))
