"""The one place where simglucose's U/min insulin actions meet pump units.

simglucose actions are insulin *rates* in U/min for both basal and bolus, and
its histories are per-minute averages over a sample interval. glucotwin's
policies speak pump units: basal in U/h, bolus in U. Every conversion between
the two lives in this module.
"""

from __future__ import annotations

from typing import Any

from simglucose.controller.base import Action, Controller

from controller.policy import ControlInput, Dose, Policy

MIN_PER_H = 60.0


def basal_u_per_h_to_u_per_min(basal_u_per_h: float) -> float:
    return basal_u_per_h / MIN_PER_H


def bolus_u_to_u_per_min(bolus_u: float, sample_min: float) -> float:
    """A bolus spread evenly over one simulator step (as simglucose's BBController does)."""
    return bolus_u / sample_min


def dose_to_action(dose: Dose, sample_min: float) -> Action:
    """A pump-unit dose as a simglucose controller action (U/min)."""
    return Action(
        basal=basal_u_per_h_to_u_per_min(dose.basal_u_per_h),
        bolus=bolus_u_to_u_per_min(dose.bolus_u, sample_min),
    )


def rate_per_min_to_amount(rate_per_min: float, sample_min: float) -> float:
    """A simglucose history value (per-minute average over a sample) as an amount per sample.

    Used for insulin (U/min -> U) and carbohydrates (g/min -> g).
    """
    return rate_per_min * sample_min


def advice_columns(advice: dict[str, Any] | None) -> dict[str, Any]:
    """A cycle's advice as flat trace columns (empty when there is none)."""
    a = advice if isinstance(advice, dict) else {}
    return {"advice_kind": a.get("kind") or "", "advice_carbs_g": a.get("carbs_g") if a.get("kind") == "carbs" else None,
            "advice_by_min": a.get("by_min"), "advice_new": bool(a.get("new")) if a.get("kind") else None,
            "advice_reason": a.get("reason") or a.get("error") or ""}


class PolicyController(Controller):
    """A glucotwin :class:`~controller.policy.Policy` as a simglucose ``Controller``.

    Works in simglucose's own ``sim()`` engine and in ``glucotwin trial``.
    With ``meal_announcement=False`` (fully closed loop) the meal information
    that simglucose passes is ignored.
    """

    def __init__(self, policy: Policy, meal_announcement: bool = True) -> None:
        super().__init__(init_state=None)
        self._policy = policy
        self.meal_announcement = meal_announcement
        self.last_input: ControlInput | None = None
        self.last_dose: Dose | None = None

    def policy(self, observation: Any, reward: float, done: bool, **info: Any) -> Action:
        sample_min = float(info.get("sample_time", 1.0))
        meal_g_per_min = float(info.get("meal", 0.0) or 0.0) if self.meal_announcement else 0.0
        inp = ControlInput(
            time=info["time"],
            cgm_mg_dl=float(observation.CGM),
            announced_carbs_g=rate_per_min_to_amount(meal_g_per_min, sample_min),
            cycle_min=sample_min,
        )
        dose = self._policy.decide(inp)
        self.last_input, self.last_dose = inp, dose
        return dose_to_action(dose, sample_min)

    def diagnostics(self) -> dict[str, Any]:
        """Columns added to the trial trace for the latest decision."""
        if self.last_dose is None:
            return {}
        row: dict[str, Any] = {
            "basal_u_per_h": self.last_dose.basal_u_per_h,
            "bolus_u": self.last_dose.bolus_u,
            "reason": self.last_dose.reason,
        }
        row.update(self.last_dose.diagnostics)
        advice = row.pop("advice", None)
        if "advice" in self.last_dose.diagnostics:  # glucotwin's policy: advice columns on every row
            row.update(advice_columns(advice))
        temp_target = row.pop("temp_target", None)
        if "target_mg_dl" in row:  # glucotwin's policy: the target, and the temporary one's reason, on every row
            row["temp_target"] = (f"{temp_target.get('reason') or 'temporary target'} "
                                  f"{temp_target.get('target_mg_dl'):g} mg/dL") if isinstance(temp_target, dict) else ""
        return row

    def advice(self) -> dict[str, Any] | None:
        """The latest decision's advice (:mod:`controller.advice`, as a dict), or None."""
        if self.last_dose is None:
            return None
        advice = self.last_dose.diagnostics.get("advice")
        return advice if isinstance(advice, dict) and advice.get("kind") else None

    def reset(self) -> None:
        self._policy.reset()
        self.last_input = None
        self.last_dose = None
