"""One control cycle: estimator update, MPC proposal, safety bound, and the reason.

``TwinMPCPolicy`` implements :class:`controller.policy.Policy`. Per cycle:

1. announced carbohydrates go into the twin; the CGM reading updates the
   estimator (gated; a rejection is recorded) and the supervisor's history;
2. the MPC proposes a temporary basal for the cycle and a bolus;
3. the supervisor bounds the proposal and says why it changed it;
4. the advice to the person (:mod:`controller.advice`: carbs for a low suspension cannot
   prevent, a high the limits will not let it treat, an unexplained rise) is added to the
   dose's diagnostics; it is computed after the dose and never changes it;
5. the dose given is fed back to the twin and to the supervisor's IOB.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.advice import AdviceSettings, Advisor, CycleFacts, binding_cap
from controller.temp_target import TempTarget, TempTargets
from controller.decision_record import build_record, estimator_state, supervisor_state
from controller.meal_bolus import MealBolusSettings, decide_meal_bolus
from controller.mpc import MPCSettings, ZoneMPC
from controller.policy import ControlInput, Dose
from controller.safety import SafetyLimits, SafetySupervisor
from twin.estimator import EstimatorSettings, TwinEstimator
from twin.personalize import Twin


@dataclass(frozen=True)
class ControlSettings:
    """Estimator and MPC tuning, and the pump's dose resolution.

    pump_increment_u: doses are rounded down to this many units (bolus) and U/h
        (basal) before they are booked, so the dose recorded is one the pump can
        give exactly. 0.001 is the wire protocol's resolution (firmware_bridge).
    max_twin_gap_min: the twin's memory. A cycle this long after the twin's last
        update restarts the twin at its reading (with the reason in the dose)
        instead of integrating the gap: after 12 h no meal or bolus the twin knew
        is still acting, and a reading dated a year ahead must not cost a year of
        integration.
    advice: thresholds of the advice to the person (:mod:`controller.advice`); None: no advice.
        Advice never changes a dose (a property test checks).
    """

    estimator: EstimatorSettings = field(default_factory=EstimatorSettings)
    mpc: MPCSettings = field(default_factory=MPCSettings)
    meal_bolus: MealBolusSettings | None = field(default_factory=MealBolusSettings)
    pump_increment_u: float = 0.001
    max_twin_gap_min: float = 720.0
    advice: AdviceSettings | None = field(default_factory=AdviceSettings)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.pump_increment_u) and 0.0 < self.pump_increment_u <= 0.1):
            raise ValueError(f"pump_increment_u must be in (0, 0.1], got {self.pump_increment_u}")
        if not (math.isfinite(self.max_twin_gap_min) and 60.0 <= self.max_twin_gap_min <= 2880.0):
            raise ValueError(f"max_twin_gap_min must be in [60, 2880], got {self.max_twin_gap_min}")


def floor_to_increment(amount: float, increment: float) -> float:
    """``amount`` rounded down to a whole number of ``increment`` (never more than asked)."""
    steps = math.floor(round(amount / increment, 6))
    return round(steps * increment, 9)


class TwinMPCPolicy:
    """The glucotwin controller for one person."""

    def __init__(self, twin: Twin, settings: ControlSettings | None = None, limits: SafetyLimits | None = None,
                 record_decisions: bool = False) -> None:
        self.twin = twin
        self.record_decisions = record_decisions
        self.last_record: dict[str, Any] | None = None
        self.profile = twin.profile
        self.settings = settings or ControlSettings()
        self.limits = limits or SafetyLimits.for_profile(self.profile)
        self.mpc = ZoneMPC(self.profile.target_mg_dl, self.settings.mpc)
        self.reset()

    def reset(self) -> None:
        self.estimator: TwinEstimator | None = None
        self.supervisor = SafetySupervisor(self.profile, self.limits)
        self.advisor = Advisor(self.settings.advice) if self.settings.advice is not None else None
        self.temp_targets = TempTargets()
        self.last_cycle_ms = float("nan")
        self._insulin_before_twin = False  # pump-history insulin booked before the twin existed

    def decide(self, inp: ControlInput, *, assume_delivered: bool = True) -> Dose:
        """One cycle's dose. With ``assume_delivered`` (simulation) the dose is booked as given;
        the live loop passes False and calls :meth:`record_delivery` with what the pump confirmed."""
        if not self.record_decisions:
            return self._decide(inp, assume_delivered)
        before = (estimator_state(self.estimator), supervisor_state(self.supervisor))
        dose = self._decide(inp, assume_delivered)
        self.last_record = build_record(self, inp, before[0], before[1], dose)
        if assume_delivered and self.estimator is not None and self.estimator.readings_accepted:
            # the forecast after the dose, split into its causes (explains the decision)
            self.last_record["output"]["forecast"] = self.estimator.forecast(180.0).to_dict()
        return dose

    def set_temp_target(self, tt: TempTarget) -> None:
        """A temporary target (or its cancellation) from the person (:mod:`controller.temp_target`)."""
        self.temp_targets.set(tt)

    def target_at(self, time: datetime) -> tuple[float, TempTarget | None]:
        """The controller's target at ``time``: a running temporary target's, else the profile's schedule."""
        tt = self.temp_targets.active(time)
        if tt is not None:
            return tt.target_mg_dl, tt
        return self.profile.target_at(time), None

    def max_basal_u_per_h(self, scheduled_u_per_h: float) -> float:
        """The highest temp basal the MPC may propose now (the supervisor bounds it again)."""
        return min(self.limits.max_basal_u_per_h, self.limits.max_basal_multiple * scheduled_u_per_h)

    def meal_bolus(self, est: TwinEstimator, carbs_g: float, glucose_mg_dl: float, iob_u: float, time: datetime,
                   scheduled_u_per_h: float) -> Any:
        """The meal bolus for ``carbs_g`` announced at ``time`` (:func:`decide_meal_bolus` with the
        settings in force then: target, carb ratio, correction factor), or None when meal boluses are off.
        Shared by the live cycle and the closed-loop what-if, so both decide alike."""
        if self.settings.meal_bolus is None:
            return None
        p, minute = self.profile, self.profile.minute_of_day(time)
        return decide_meal_bolus(est, carbs_g, glucose_mg_dl, iob_u, self.target_at(time)[0], p.carb_ratio_at(minute),
                                 p.correction_factor_at(minute), scheduled_u_per_h, self.settings.meal_bolus)

    def record_delivery(self, time: datetime, basal_u_per_h: float, minutes: float, bolus_u: float) -> None:
        """Book insulin the pump confirmed: the twin and the supervisor's insulin on board."""
        if self.estimator is not None:
            self.estimator.set_basal(basal_u_per_h)
            if bolus_u > 0:
                self.estimator.add_bolus(bolus_u)
        self.supervisor.delivered(time, basal_u_per_h, minutes, bolus_u)

    def book_pump_delivery(self, time: datetime, basal_u_per_h: float, minutes: float, bolus_u: float) -> None:
        """Book insulin the pump's own history shows and the journal lacked (a new or lost
        journal, another host): into insulin on board at its time, and into the twin as the
        insulin it adds (basal above the scheduled rate counts, below it never does). Before
        the twin exists the insulin still on board is given to it when it starts."""
        scheduled = self.profile.basal_u_per_h_at(time)
        basal = max(basal_u_per_h, scheduled)
        self.supervisor.delivered(time, basal, minutes, bolus_u)
        extra_u = bolus_u + (basal - scheduled) * minutes / 60.0
        if self.estimator is None:
            self._insulin_before_twin = self._insulin_before_twin or extra_u > 0
        elif extra_u > 0:
            self.estimator.add_bolus(extra_u)

    def _decide(self, inp: ControlInput, assume_delivered: bool = True) -> Dose:
        tic = time.perf_counter()
        restarted = ""
        if self.estimator is not None:
            gap_min = (inp.time - self.estimator.time).total_seconds() / 60.0
            if gap_min > self.settings.max_twin_gap_min:
                restarted = (f"twin restarted: {gap_min:.0f} min since its last update exceeds its memory "
                             f"({self.settings.max_twin_gap_min:g} min)")
                self.estimator = None
        if self.estimator is None:
            self.estimator = TwinEstimator(self.twin, inp.time, self.settings.estimator)
            if self._insulin_before_twin:  # as a bolus now: over-counts its near-term action (the safe error)
                carried_u = self.supervisor.iob_u(inp.time)
                if carried_u > 0:
                    self.estimator.add_bolus(carried_u)
                self._insulin_before_twin = False
        est = self.estimator
        minute = self.profile.minute_of_day(inp.time)
        scheduled = self.profile.basal_u_per_h_at(minute)
        target, temp_target = self.target_at(inp.time)
        if inp.announced_carbs_g > 0:
            est.add_carbs(inp.announced_carbs_g)
            self.supervisor.announce_carbs(inp.time, inp.announced_carbs_g)
        outcome = est.update(inp.time, inp.cgm_mg_dl)
        self.supervisor.observe(inp.time, inp.cgm_mg_dl)  # the supervisor judges every reading itself

        max_basal = self.max_basal_u_per_h(scheduled)
        meal = None
        if est.readings_accepted == 0:
            proposal = Dose(scheduled, 0.0, "no accepted CGM reading yet: scheduled basal")
            mpc_status = "not run"
        else:
            if inp.announced_carbs_g > 0:
                glucose_now = inp.cgm_mg_dl if outcome.accepted and inp.cgm_mg_dl is not None else est.glucose_mg_dl
                meal = self.meal_bolus(est, inp.announced_carbs_g, glucose_now, self.supervisor.iob_u(inp.time),
                                       inp.time, scheduled)
            result = self.mpc.solve(est, inp.cycle_min, scheduled, max_basal, self.limits.max_bolus_u,
                                    min_bolus_u=meal.bolus_u if meal is not None else 0.0, target_mg_dl=target)
            mpc_status = result.status
            reason = _explain(result, scheduled)
            if meal is not None:
                reason = f"{meal.reason}; {reason}"
            proposal = Dose(result.basal_u_per_h, result.bolus_u, reason)
        safe = self.supervisor.bound(proposal, inp.time, inp.cycle_min)
        inc = self.settings.pump_increment_u
        dose = Dose(floor_to_increment(safe.dose.basal_u_per_h, inc), floor_to_increment(safe.dose.bolus_u, inc),
                    safe.dose.reason)
        advice = self._advise(inp, est, safe, proposal, max_basal, dose)  # never feeds the dose
        if assume_delivered:
            self.record_delivery(inp.time, dose.basal_u_per_h, inp.cycle_min, dose.bolus_u)
        self.last_cycle_ms = (time.perf_counter() - tic) * 1000.0
        diagnostics: dict[str, Any] = {
            "twin_glucose_mg_dl": est.glucose_mg_dl,
            "disturbance_mg_per_kg_min": est.disturbance_mg_per_kg_min,
            "sensitivity_factor": est.sensitivity_factor,
            "reading": outcome.reason if not outcome.accepted else "accepted",
            "mpc_status": mpc_status,
            "meal_bolus_u": meal.bolus_u if meal is not None else None,
            "meal_bolus_reason": meal.reason if meal is not None else None,
            "proposed_basal_u_per_h": proposal.basal_u_per_h,
            "proposed_bolus_u": proposal.bolus_u,
            "iob_u": safe.iob_u,
            "meal_share": self.supervisor.meal_learner.share,
            "correction_share": self.supervisor.correction_learner.share,
            "safety": "; ".join(a.rule for a in safe.adjustments),
            "cycle_ms": self.last_cycle_ms,
            "advice": advice,
            "target_mg_dl": target,
        }
        reason = safe.reason
        if temp_target is not None:
            diagnostics["temp_target"] = temp_target.to_dict()
            reason = f"{reason}; temporary target: {temp_target.describe()}"
        if restarted:
            diagnostics["twin_restart"] = restarted
            reason = f"{reason}; {restarted}"
        return Dose(dose.basal_u_per_h, dose.bolus_u, reason, diagnostics=diagnostics)


    def _advise(self, inp: ControlInput, est: TwinEstimator, safe: Any, proposal: Dose, max_basal: float,
                dose: Dose) -> dict[str, Any] | None:
        """This cycle's advice as plain data (None: none), from the dose already decided; a failure
        is reported in the advice, never raised into the cycle."""
        if self.advisor is None or est.readings_accepted == 0:
            return None
        try:
            cap = binding_cap([a.rule for a in safe.adjustments], proposal.basal_u_per_h, proposal.bolus_u,
                              max_basal, self.limits.max_bolus_u)
            facts = CycleFacts(inp.time, inp.cgm_mg_dl, safe.iob_u,
                               self.profile.correction_factor_at(inp.time),
                               dose.basal_u_per_h, dose.bolus_u, cap)
            advice = self.advisor.cycle(est, facts, inp.announced_carbs_g)
        except Exception as exc:  # noqa: BLE001 - advice is never worth a cycle
            return {"kind": None, "error": f"advice failed: {type(exc).__name__}: {exc}"}
        return None if advice is None else advice.to_dict()


def _explain(result: Any, scheduled: float) -> str:
    if result.status.startswith("fallback"):
        return result.status
    pred = result.predicted_mg_dl
    nominal = result.nominal_mg_dl
    peak_nominal, low_nominal = float(nominal.max()), float(nominal.min())
    if result.bolus_u > 0:
        what = f"bolus {result.bolus_u:.2f} U + {result.basal_u_per_h:.2f} U/h"
    elif result.basal_u_per_h > scheduled * 1.05:
        what = f"temp basal up {result.basal_u_per_h:.2f} U/h"
    elif result.basal_u_per_h < scheduled * 0.95:
        what = f"temp basal down {result.basal_u_per_h:.2f} U/h"
    else:
        what = f"scheduled basal {result.basal_u_per_h:.2f} U/h"
    return (f"MPC: {what}; on scheduled basal the twin forecasts {low_nominal:.0f}-{peak_nominal:.0f} mg/dL "
            f"over {len(nominal) - 1} steps, with this plan {float(pred.min()):.0f}-{float(pred.max()):.0f}")
