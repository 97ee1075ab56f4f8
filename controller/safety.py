"""The safety supervisor: bounds every proposed dose, independently of the MPC.

It sees the proposal, the CGM history, the insulin it has let through (its
own insulin-on-board account, :mod:`controller.insulin_math`) and the
clinical limits; it never sees the twin. Each rule that changes the proposal
adds a :class:`Adjustment` with the reason, so every delivered dose says why
it is what it is. Rules, in order (DESIGN.md safety invariants):

1. stale, implausible or jumping CGM -> programmed basal, no bolus;
2. glucose low, or forecast low by the supervisor's own trend -> suspend;
3. glucose below the correction threshold -> nothing above the scheduled basal;
4. max basal rate (min(configured, 4 x scheduled)), max bolus per cycle,
   max insulin on board (net of the scheduled basal): for corrections the
   smaller of the configured maximum and the insulin the current glucose calls
   for; for announced carbohydrates on board, a share of their bolus insulin.
   Both shares are learned from CGM (:mod:`controller.share_learning`) and
   never loosen the configured limits.
   Insulin withheld by a suspension (negative net IOB) is not given back.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from controller.insulin_math import Delivery, insulin_on_board_u
from controller.share_learning import ShareLearner, ShareLearningSettings
from controller.policy import Dose
from twin.profile import PatientProfile


@dataclass(frozen=True)
class SafetyLimits:
    """Clinical limits; defaults are conservative and derived from the profile when not given.

    Attributes
    ----------
    max_basal_u_per_h: configured maximum temporary basal; the effective maximum is
        ``min(max_basal_u_per_h, max_basal_multiple * scheduled basal)``.
    max_basal_multiple: multiple of the scheduled basal never exceeded (4).
    max_bolus_u: largest bolus in one cycle.
    max_iob_u: largest insulin on board above the scheduled basal for corrections
        (scaled down by the learned correction share). While announced carbohydrates
        are absorbed, the limit is the larger of this and the learned meal share x their
        bolus-calculator insulin (carbs on board / carb ratio); the two do not add up.
    correction_iob_to_target: corrections are further limited to the insulin that brings
        the current glucose to the target by the profile's correction factor, as a bolus
        calculator would: insulin on board for corrections never exceeds what the latest
        reading calls for, whatever the MPC's twin believes (no credit for a rising trend:
        a sensor artefact rises too).
    meal_insulin_fraction: share of the bolus-calculator insulin allowed for announced carbs
        at first (0.8: a clinical carb ratio can over-dose; the MPC adds no correction on top
        of it while the carbs are on board). The supervisor then learns the share from what
        the CGM does after each meal (:mod:`controller.share_learning`), within
        ``[meal_insulin_fraction_min, meal_insulin_fraction_max]``. 1.0 (the calculator's
        whole dose from the first meal) gains time in range and costs time below 54 mg/dL for
        children whose profile over-doses them (issue 17's measurements, README).
    meal_insulin_fraction_min, meal_insulin_fraction_max: bounds of the learned share;
        the maximum is at most 1 (never more than the bolus calculator). Set both equal to
        ``meal_insulin_fraction`` to switch learning off.
    correction_share_initial, correction_share_min: first and lowest learned correction
        share. The share scales ``max_iob_u`` and the insulin the current glucose calls
        for; it never exceeds 1, so learning never loosens the configured maximum
        (DESIGN.md invariant 1; :mod:`controller.share_learning`). Both 1 switch it off.
    iob_action_duration_min, iob_peak_min: the insulin activity curve of the supervisor's
        own insulin-on-board account. 10 h is deliberately longer than the 5-6 h pumps
        assume: a slow absorber (subcutaneous time constants up to 7 h in the UVA/Padova
        children) still has insulin acting after 6 h, and an account that forgets it lets
        corrections stack.
    carb_absorption_min: announced carbohydrates count as on board for this long
        (linearly decreasing).
    low_mg_dl: glucose at or below which insulin is suspended.
    suspend_forecast_mg_dl: suspend if the supervisor's own 30-minute forecast is below this.
    correction_threshold_mg_dl: below this, no insulin above the scheduled basal.
    stale_after_min: CGM older than this stops automatic dosing.
    sensor_min_mg_dl, sensor_max_mg_dl: a reading at or beyond these is implausible (sensor limits).
    max_rate_mg_dl_per_min: a jump faster than this between readings is implausible.
    """

    max_basal_u_per_h: float
    max_bolus_u: float
    max_iob_u: float
    max_basal_multiple: float = 4.0
    carb_absorption_min: float = 180.0
    meal_insulin_fraction: float = 0.8
    meal_insulin_fraction_min: float = 0.4
    meal_insulin_fraction_max: float = 1.0
    correction_share_initial: float = 1.0
    correction_share_min: float = 0.5
    correction_iob_to_target: bool = True
    iob_action_duration_min: float = 600.0
    iob_peak_min: float = 100.0
    low_mg_dl: float = 70.0
    suspend_forecast_mg_dl: float = 80.0
    correction_threshold_mg_dl: float = 90.0
    stale_after_min: float = 15.0
    sensor_min_mg_dl: float = 39.0
    sensor_max_mg_dl: float = 600.0
    max_rate_mg_dl_per_min: float = 10.0

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite non-negative number, got {value!r}")
        if not self.low_mg_dl < self.correction_threshold_mg_dl:
            raise ValueError("low_mg_dl must be below correction_threshold_mg_dl")
        if not 0.0 < self.iob_peak_min < self.iob_action_duration_min / 2.0:
            raise ValueError("iob_peak_min must be positive and below half of iob_action_duration_min")
        if not (self.meal_insulin_fraction_min <= self.meal_insulin_fraction <= self.meal_insulin_fraction_max <= 1.0):
            raise ValueError("need meal_insulin_fraction_min <= meal_insulin_fraction <= meal_insulin_fraction_max <= 1")
        if not self.correction_share_min <= self.correction_share_initial <= 1.0:  # invariant 1
            raise ValueError("need correction_share_min <= correction_share_initial <= 1")
        if not self.sensor_min_mg_dl < self.sensor_max_mg_dl:
            raise ValueError("sensor_min_mg_dl must be below sensor_max_mg_dl")

    @classmethod
    def for_profile(cls, profile: PatientProfile, **overrides: Any) -> "SafetyLimits":
        """Defaults from the profile: max basal 4 x the largest scheduled rate,
        max bolus 25 % and max correction IOB 10 % of the total daily insulin."""
        largest = max(s.rate_u_per_h for s in profile.basal_schedule)
        values = dict(
            max_basal_u_per_h=4.0 * largest,
            max_bolus_u=0.25 * profile.total_daily_insulin_u,
            max_iob_u=0.10 * profile.total_daily_insulin_u,
        )
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class Adjustment:
    """One change the supervisor made, and why."""

    rule: str
    detail: str
    basal_before_u_per_h: float
    basal_after_u_per_h: float
    bolus_before_u: float
    bolus_after_u: float

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class SafeDose:
    """The dose the supervisor lets through, with every adjustment it made."""

    dose: Dose
    adjustments: tuple[Adjustment, ...]
    iob_u: float
    automatic: bool  # False when automatic dosing stopped (fallback to programmed basal)
    notes: tuple[str, ...] = ()  # rules that held without changing the proposal

    @property
    def reason(self) -> str:
        if not self.adjustments:
            if self.notes:
                return f"{self.dose.reason}; supervisor: " + "; ".join(self.notes)
            return self.dose.reason
        return "; ".join(f"{a.rule}: {a.detail}" for a in self.adjustments)


class SafetySupervisor:
    """Bounds proposals (see the module docstring). Feed it every reading and every delivery."""

    def __init__(self, profile: PatientProfile, limits: SafetyLimits | None = None) -> None:
        self.profile = profile
        self.limits = limits or SafetyLimits.for_profile(profile)
        self.readings: deque[tuple[datetime, float]] = deque(maxlen=12)
        self.deliveries: deque[Delivery] = deque()
        self.announced: deque[tuple[datetime, float]] = deque()
        self.meal_learner = ShareLearner(self.meal_learning_settings(self.limits))
        self.correction_learner = ShareLearner(self.correction_learning_settings(self.limits))
        self.conservative_until: datetime | None = None  # insulin history unknown: see restrict()
        self.conservative_reason = ""

    def restrict(self, until: datetime, reason: str) -> None:
        """Conservative mode until ``until``: no bolus and no basal above the scheduled rate.

        For a loop that cannot know the insulin already given (a new or lost journal and a
        pump that cannot tell its history): after one insulin-action duration nothing
        unknown is still acting. A later ``until`` extends it, an earlier one never cuts it."""
        if self.conservative_until is None or until > self.conservative_until:
            self.conservative_until = until
            self.conservative_reason = reason

    def lift_restriction(self) -> None:
        """End conservative mode (the pump's history has been booked after all)."""
        self.conservative_until = None
        self.conservative_reason = ""

    @staticmethod
    def meal_learning_settings(limits: SafetyLimits) -> ShareLearningSettings:
        return ShareLearningSettings(initial=limits.meal_insulin_fraction, lowest=limits.meal_insulin_fraction_min,
                                     highest=limits.meal_insulin_fraction_max, low_mg_dl=limits.low_mg_dl)

    @staticmethod
    def correction_learning_settings(limits: SafetyLimits) -> ShareLearningSettings:
        return ShareLearningSettings(initial=limits.correction_share_initial, lowest=limits.correction_share_min,
                                     highest=1.0, low_mg_dl=limits.low_mg_dl,
                                     windows="clock")

    # --- inputs ---------------------------------------------------------------------
    def observe(self, time: datetime, glucose_mg_dl: float | None) -> None:
        if glucose_mg_dl is None or not math.isfinite(glucose_mg_dl):
            return
        if self.readings and time <= self.readings[-1][0]:
            return  # duplicate or out of order: keep the newest
        self.readings.append((time, float(glucose_mg_dl)))
        self.meal_learner.observe(time, float(glucose_mg_dl))
        self.correction_learner.observe(time, float(glucose_mg_dl))

    def announce_carbs(self, time: datetime, carbs_g: float) -> None:
        """Carbohydrates announced by the person (HCL); they raise the IOB limit while absorbed."""
        if carbs_g > 0 and math.isfinite(carbs_g):
            self.announced.append((time, float(carbs_g)))
            self.meal_learner.announce(time, float(carbs_g))

    def carry_over_shares(self, meal_share: float | None, correction_share: float | None) -> None:
        """Start from shares learned before a restart (journaled with each decision); values
        outside a learner's bounds are clipped to them, and missing ones leave it as it is."""
        for learner, value in ((self.meal_learner, meal_share), (self.correction_learner, correction_share)):
            if isinstance(value, (int, float)) and math.isfinite(value):
                _set_share_within_bounds(learner, float(value))

    def learner_state(self) -> dict[str, Any]:
        """Both learners' full state (JSON-ready), journaled with each live decision."""
        return {"meal": self.meal_learner.to_dict(), "correction": self.correction_learner.to_dict()}

    def restore_learners(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`learner_state` saved before a restart: shares, open windows,
        pending raises and low episodes, so a restart neither forgets a low nor restarts the
        first-day rule. Shares outside today's bounds are clipped to them. Raises ValueError
        (nothing changed) when ``state`` is not such a state."""
        try:
            meal = ShareLearner.from_dict(state["meal"], self.meal_learning_settings(self.limits))
            correction = ShareLearner.from_dict(state["correction"], self.correction_learning_settings(self.limits))
        except (TypeError, KeyError, ValueError, IndexError) as exc:
            raise ValueError(f"not a learner state: {exc!r}") from None
        for learner in (meal, correction):
            _set_share_within_bounds(learner, learner.share if math.isfinite(learner.share) else learner.settings.initial)
        self.meal_learner, self.correction_learner = meal, correction

    def carbs_on_board_g(self, now: datetime) -> float:
        span = self.limits.carb_absorption_min
        while self.announced and (now - self.announced[0][0]).total_seconds() / 60.0 >= span:
            self.announced.popleft()
        return sum(g * max(0.0, 1.0 - (now - t).total_seconds() / 60.0 / span) for t, g in self.announced if t <= now)

    def delivered(self, time: datetime, basal_u_per_h: float, minutes: float, bolus_u: float) -> None:
        """Record insulin given (net of the scheduled basal counts toward IOB)."""
        scheduled = self.profile.basal_u_per_h_at(time)
        net = (basal_u_per_h - scheduled) * minutes / 60.0 + bolus_u
        if net:
            self.deliveries.append(Delivery(time, net))
        horizon = timedelta(minutes=self.limits.iob_action_duration_min)
        while self.deliveries and (time - self.deliveries[0].time) > horizon:
            self.deliveries.popleft()

    def correction_insulin_u(self, glucose_mg_dl: float, minute_of_day: float = 0.0) -> float:
        """Insulin that brings ``glucose_mg_dl`` to the profile's scheduled target by its scheduled
        correction factor at ``minute_of_day`` (0 at or below the target). Temporary targets do not
        move it: the supervisor judges against the clinical settings only."""
        excess = glucose_mg_dl - self.profile.target_at(minute_of_day)
        return max(excess, 0.0) / self.profile.correction_factor_at(minute_of_day)

    def iob_u(self, now: datetime) -> float:
        """Net insulin on board above the scheduled basal (may be negative after a suspension)."""
        return insulin_on_board_u(self.deliveries, now, self.limits.iob_action_duration_min, self.limits.iob_peak_min)

    # --- the rules ------------------------------------------------------------------
    def _cgm_problem(self, now: datetime) -> str | None:
        lim = self.limits
        if not self.readings:
            return "no CGM reading yet"
        t, g = self.readings[-1]
        age = (now - t).total_seconds() / 60.0
        if age > lim.stale_after_min:
            return f"CGM stale: last reading {age:.0f} min old (limit {lim.stale_after_min:g})"
        if g >= lim.sensor_max_mg_dl:
            return f"CGM {g:.0f} mg/dL at the sensor's upper limit ({lim.sensor_max_mg_dl:g})"
        if len(self.readings) >= 2 and g > lim.low_mg_dl:  # a fresh low suspends even after a jump
            t0, g0 = self.readings[-2]
            minutes = (t - t0).total_seconds() / 60.0
            if minutes > 0 and abs(g - g0) / minutes > lim.max_rate_mg_dl_per_min:
                return (f"CGM jump {g0:.0f} -> {g:.0f} mg/dL in {minutes:.0f} min "
                        f"(> {lim.max_rate_mg_dl_per_min:g} mg/dL/min)")
        return None

    def trend_mg_dl_per_min(self) -> float:
        """Least-squares slope over readings of the last 20 minutes (0 with fewer than 3)."""
        if len(self.readings) < 3:
            return 0.0
        t_end = self.readings[-1][0]
        pts = [((t - t_end).total_seconds() / 60.0, g) for t, g in self.readings if (t_end - t) <= timedelta(minutes=20)]
        if len(pts) < 3:
            return 0.0
        n = len(pts)
        mt = sum(p[0] for p in pts) / n
        mg = sum(p[1] for p in pts) / n
        var = sum((p[0] - mt) ** 2 for p in pts)
        return sum((p[0] - mt) * (p[1] - mg) for p in pts) / var if var > 0 else 0.0

    def bound(self, proposal: Dose, now: datetime, cycle_min: float) -> SafeDose:
        """The safe version of ``proposal`` for the cycle starting ``now``."""
        lim = self.limits
        scheduled = self.profile.basal_u_per_h_at(now)
        basal, bolus = proposal.basal_u_per_h, proposal.bolus_u
        adjustments: list[Adjustment] = []
        notes: list[str] = []

        def change(rule: str, detail: str, new_basal: float, new_bolus: float) -> None:
            nonlocal basal, bolus
            if new_basal != basal or new_bolus != bolus:
                adjustments.append(Adjustment(rule, detail, basal, new_basal, bolus, new_bolus))
                basal, bolus = new_basal, new_bolus
            else:
                notes.append(f"{rule} ({detail}) already met")

        iob = self.iob_u(now)
        problem = self._cgm_problem(now)
        if problem is not None:
            change("cgm_fallback", problem + "; programmed basal", scheduled, 0.0)
            if not adjustments:  # proposal already equal to the fallback: still say why
                adjustments.append(Adjustment("cgm_fallback", problem + "; programmed basal", basal, basal, bolus, bolus))
            return SafeDose(Dose(basal, bolus, proposal.reason, proposal.diagnostics), tuple(adjustments), iob, False)

        glucose = self.readings[-1][1]
        forecast_30 = glucose + 30.0 * self.trend_mg_dl_per_min()
        if glucose <= lim.sensor_min_mg_dl:
            change("low_suspend", f"CGM {glucose:.0f} mg/dL at the sensor's lower limit", 0.0, 0.0)
        elif glucose <= lim.low_mg_dl:
            change("low_suspend", f"glucose {glucose:.0f} mg/dL <= {lim.low_mg_dl:g}", 0.0, 0.0)
        elif forecast_30 < lim.suspend_forecast_mg_dl:
            change("predicted_low_suspend",
                   f"30-min trend forecast {forecast_30:.0f} mg/dL < {lim.suspend_forecast_mg_dl:g}", 0.0, 0.0)
        elif glucose < lim.correction_threshold_mg_dl:
            if basal > scheduled or bolus > 0:
                change("below_correction_threshold",
                       f"glucose {glucose:.0f} mg/dL < {lim.correction_threshold_mg_dl:g}: at most scheduled basal",
                       min(basal, scheduled), 0.0)

        if self.conservative_until is not None and now < self.conservative_until and (basal > scheduled or bolus > 0):
            change("insulin_history_unknown", f"{self.conservative_reason}: until "
                   f"{self.conservative_until:%Y-%m-%d %H:%M} no bolus and at most the scheduled basal",
                   min(basal, scheduled), 0.0)
        max_basal = min(lim.max_basal_u_per_h, lim.max_basal_multiple * scheduled)
        if basal > max_basal:
            change("max_basal", f"{basal:.2f} U/h above the maximum {max_basal:.2f} U/h", max_basal, bolus)
        if bolus > lim.max_bolus_u:
            change("max_bolus", f"{bolus:.2f} U above the maximum {lim.max_bolus_u:.2f} U", basal, lim.max_bolus_u)
        # insulin on board above scheduled basal after this cycle must stay within the IOB limit
        meal_share = self.meal_learner.share
        minute = self.profile.minute_of_day(now)
        meal_insulin = meal_share * self.carbs_on_board_g(now) / self.profile.carb_ratio_at(minute)
        correction_share = self.correction_learner.share
        correction_limit = lim.max_iob_u * correction_share
        why = f"max {correction_limit:.2f} U" + (f" ({correction_share:.2f} x {lim.max_iob_u:.2f})" if correction_share != 1.0 else "")
        if lim.correction_iob_to_target:
            # the bolus calculator's correction shrinks only once lows have lowered the share
            needed = self.correction_insulin_u(glucose, minute) * min(1.0, correction_share / lim.correction_share_initial)
            if needed < correction_limit:
                correction_limit = needed
                why = f"{needed:.2f} U corrects {glucose:.0f} mg/dL to the {self.profile.target_at(minute):.0f} target"
        limit = max(correction_limit, meal_insulin)
        added = bolus + max(basal - scheduled, 0.0) * cycle_min / 60.0
        # insulin withheld (negative IOB, e.g. after a suspension for a low) is not owed back:
        # a suspension usually means there was too much insulin, and a sensor recovering
        # from a low often reads high
        room = max(limit - max(iob, 0.0), 0.0)
        if added > room + 1e-12:
            new_bolus = min(bolus, room)
            extra_rate = max(room - new_bolus, 0.0) * 60.0 / cycle_min
            new_basal = min(basal, scheduled + extra_rate)
            change("max_iob", f"IOB {iob:.2f} U + {added:.2f} U would exceed {limit:.2f} U "
                   f"(corrections: {why}; announced carbs on board: {meal_insulin:.2f} U at "
                   f"{meal_share:.2f} of the bolus calculator)",
                   new_basal, new_bolus)
        return SafeDose(Dose(basal, bolus, proposal.reason, proposal.diagnostics), tuple(adjustments), iob, True,
                        tuple(notes))


def _set_share_within_bounds(learner: ShareLearner, share: float) -> None:
    """A share carried over a restart, clipped to the learner's bounds of today."""
    learner.share = min(max(share, learner.settings.lowest), learner.settings.highest)
