"""Advice to the person: what the loop cannot do with insulin. Advice never doses.

Each cycle, after the dose is decided and bounded, the twin is asked three questions:

1. **A low that suspension alone cannot prevent** (kind ``carbs``). The twin forecasts glucose
   with no insulin at all for ``low_horizon_min`` (the most the pump can do) and takes a
   conservative version of it: the forecast minus ``low_band_z`` standard deviations, where the
   standard deviation is ``sqrt(sd_now^2 + (growth * h)^2)`` (the estimator's uncertainty of
   glucose now and its band growth per minute of horizon, as in its forecast band). If that
   dips below ``low_mg_dl``, the advice is the least grams of carbohydrate, eaten now, that keep
   it at or above ``low_mg_dl`` from ``carb_onset_min`` to the horizon (carbs eaten now hardly
   lift glucose sooner: 10 g add about 4 mg/dL at 30 min in an adult twin), rounded up to ``carbs_step_g``; "by when" is when the conservative
   suspended forecast crosses ``low_mg_dl``, minus ``eat_lead_min``. Carbs are advised only once that
   crossing is within ``advise_within_min`` (as oref0's ``carbsReq``, within 45 min). Model assumption: the
   rescue is absorbed by the twin's own gut model like any meal (eaten at 5 g/min); real
   glucose tablets act faster, so for them the grams err on the high side.
2. **A high the supervisor's limits will not let the loop treat** (kind ``high``): the twin's
   forecast under the dose just decided stays at or above ``high_mg_dl`` for the next
   ``high_window_min`` while a cap of the supervisor (max basal, max bolus, max insulin on board)
   binds this cycle.
3. **An unexplained rise** (kind ``site_check``): CGM rising over the last ``rise_window_min``
   (both halves rising, by ``rise_min_mg_dl`` in all) to at least ``site_check_min_glucose_mg_dl``,
   with insulin on board that should have lowered glucose by ``rise_min_iob_effect_mg_dl`` (IOB x
   the profile's correction factor), and no carbohydrates announced or advised in the last
   ``rise_carb_free_min``: check the infusion site. In a fully closed loop a meal nobody
   announced looks the same; the message says so.

:func:`advise` is the pure question; :class:`Advisor` keeps the little history it needs
(CGM over the rise window, when carbs were announced or advised, when each kind was last
announced) and marks an advice ``new`` on its first cycle and again every ``repeat_min`` while
it stands: only new advice is announced (Nightscout treatment, the person acting on it); the
standing advice is in every cycle's diagnostics.

This module never touches the dose: it reads the estimator through
:meth:`twin.estimator.TwinEstimator.plan_glucose` (which changes nothing) and returns plain
data. It imports nothing of the pump or the loop (a test checks).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import numpy as np

KINDS = ("carbs", "high", "site_check")
CAP_RULES = ("max_basal", "max_bolus", "max_iob")
MIN_PER_H = 60.0


@dataclass(frozen=True)
class AdviceSettings:
    """Thresholds of the advice (units in the names).

    Attributes
    ----------
    low_mg_dl: the line carbohydrate advice keeps the conservative forecast above.
    low_horizon_min: how far ahead the suspended forecast is checked.
    low_step_min: the forecast grid.
    low_band_z: standard deviations below the forecast that the conservative forecast takes.
    advise_within_min: carbs are advised only once the conservative suspended forecast crosses
        ``low_mg_dl`` within this many minutes (oref0 reports ``carbsReq`` only within 45 min): a
        low forecast further out is re-checked every cycle and advised when it comes near, so a
        far forecast's error does not send the person to eat.
    carb_onset_min: carbs eaten now are not counted on before this (the check for grams starts here;
        when no amount up to ``max_carbs_g`` keeps the forecast up from then on, the check starts
        at the first later time at which one does: the low comes before carbs can act).
    max_carbs_g: the most advised at once (more is not searched; the message says when even this is short).
    carbs_step_g: advice is rounded up to a multiple of this.
    search_step_g: resolution of the search for the least grams.
    eat_lead_min: "by when" is this long before the conservative forecast crosses ``low_mg_dl``.
    high_mg_dl, high_window_min: a high is the forecast under the decided dose at or above
        ``high_mg_dl`` over the next ``high_window_min`` minutes.
    rise_window_min, rise_min_mg_dl: the unexplained rise: CGM up by this much over this window,
        both halves of the window rising.
    site_check_min_glucose_mg_dl: and CGM at least this high now.
    rise_min_iob_effect_mg_dl: and insulin on board worth at least this much by the correction factor.
    rise_carb_free_min: and no carbs announced or advised for this long.
    repeat_min: a standing advice of the same kind is announced again after this long.
    site_check: False: no "check the infusion site" advice (the rise check is off).
    """

    low_mg_dl: float = 70.0
    low_horizon_min: float = 120.0
    low_step_min: float = 5.0
    low_band_z: float = 1.0
    advise_within_min: float = 45.0
    carb_onset_min: float = 30.0
    max_carbs_g: float = 60.0
    carbs_step_g: float = 5.0
    search_step_g: float = 1.0
    eat_lead_min: float = 10.0
    high_mg_dl: float = 250.0
    high_window_min: float = 60.0
    rise_window_min: float = 120.0
    rise_min_mg_dl: float = 60.0
    site_check_min_glucose_mg_dl: float = 200.0
    rise_min_iob_effect_mg_dl: float = 50.0
    rise_carb_free_min: float = 180.0
    repeat_min: float = 30.0
    site_check: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.site_check, bool):
            raise ValueError(f"site_check must be true or false, got {self.site_check!r}")
        for f in fields(self):
            if f.name == "site_check":
                continue
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"{f.name} must be a finite number >= 0, got {value!r}")
        for name in ("low_mg_dl", "low_horizon_min", "low_step_min", "max_carbs_g", "carbs_step_g",
                     "search_step_g", "high_mg_dl", "high_window_min", "rise_window_min", "rise_min_mg_dl"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if not 40.0 <= self.low_mg_dl < self.high_mg_dl:
            raise ValueError("need 40 <= low_mg_dl < high_mg_dl")
        if self.low_horizon_min % self.low_step_min or self.carb_onset_min >= self.low_horizon_min:
            raise ValueError("low_step_min must divide low_horizon_min, and carb_onset_min lie inside it")
        if self.advise_within_min > self.low_horizon_min:
            raise ValueError("advise_within_min must lie inside low_horizon_min")
        if self.high_window_min > self.low_horizon_min * 4:
            raise ValueError("high_window_min must be at most 4 x low_horizon_min")
        if self.search_step_g > self.carbs_step_g:
            raise ValueError("search_step_g must not exceed carbs_step_g")


@dataclass(frozen=True)
class Advice:
    """One cycle's advice. ``carbs_g`` and ``by_min`` only for kind ``carbs``."""

    kind: str
    issued_at: datetime
    message: str
    reason: str
    carbs_g: float = 0.0
    by_min: float | None = None
    new: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"advice kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not (math.isfinite(self.carbs_g) and self.carbs_g >= 0):
            raise ValueError(f"carbs_g must be >= 0, got {self.carbs_g!r}")

    @property
    def by_time(self) -> datetime | None:
        return None if self.by_min is None else self.issued_at + timedelta(minutes=self.by_min)

    def to_dict(self) -> dict[str, Any]:
        by = self.by_time
        return {"kind": self.kind, "issued_at": self.issued_at.isoformat(), "message": self.message,
                "reason": self.reason, "carbs_g": self.carbs_g, "by_min": self.by_min,
                "by_time": None if by is None else by.isoformat(), "new": self.new}


@dataclass(frozen=True)
class CycleFacts:
    """What the advice may look at besides the estimator, all from the cycle just decided.

    glucose_mg_dl: the latest CGM reading (None: none this cycle).
    iob_u: the supervisor's net insulin on board.
    correction_factor_mg_dl_per_u: the profile's.
    dose_basal_u_per_h, dose_bolus_u: the dose decided this cycle (not yet in the twin).
    cap: which supervisor limit bound this cycle ("" if none).
    """

    time: datetime
    glucose_mg_dl: float | None
    iob_u: float
    correction_factor_mg_dl_per_u: float
    dose_basal_u_per_h: float
    dose_bolus_u: float
    cap: str = ""


def binding_cap(adjustment_rules: list[str], proposed_basal_u_per_h: float, proposed_bolus_u: float,
                max_basal_u_per_h: float, max_bolus_u: float) -> str:
    """The supervisor limit that stopped more insulin this cycle: a cap rule it applied, or a
    proposal already at the maximum basal or bolus the MPC was given ("" when none binds)."""
    hit = [r for r in adjustment_rules if r in CAP_RULES]
    if proposed_basal_u_per_h >= max_basal_u_per_h * (1.0 - 1e-6) and max_basal_u_per_h > 0 and "max_basal" not in hit:
        hit.append("max_basal")
    if proposed_bolus_u >= max_bolus_u * (1.0 - 1e-6) and max_bolus_u > 0 and "max_bolus" not in hit:
        hit.append("max_bolus")
    return ", ".join(hit)


def conservative_margin_mg_dl(horizons_min: np.ndarray, sd_now_mg_dl: float, growth_mg_dl_per_min: float,
                              band_z: float) -> np.ndarray:
    """``band_z * sqrt(sd_now^2 + (growth * h)^2)`` at each horizon (mg/dL)."""
    h = np.asarray(horizons_min, dtype=float)
    return band_z * np.sqrt(sd_now_mg_dl**2 + (growth_mg_dl_per_min * h) ** 2)


def low_advice(est: Any, now: datetime, s: AdviceSettings) -> Advice | None:
    """Kind ``carbs`` when the conservative suspended forecast goes below ``low_mg_dl`` (see the module)."""
    steps = int(round(s.low_horizon_min / s.low_step_min))
    h = np.arange(steps + 1) * s.low_step_min
    margin = conservative_margin_mg_dl(h, est.glucose_sd_mg_dl, est.settings.band_growth_mg_dl_per_min, s.low_band_z)
    suspended = est.plan_glucose(np.zeros((1, steps)), s.low_step_min)[0] - margin
    if not np.all(np.isfinite(suspended)) or float(suspended.min()) >= s.low_mg_dl:
        return None
    below = np.nonzero(suspended < s.low_mg_dl)[0]
    crossing_min = float(h[below[0]])
    if crossing_min > s.advise_within_min:
        return None
    lowest = float(suspended.min())
    grams = np.arange(0.0, s.max_carbs_g + 1e-9, s.search_step_g)
    plans = np.zeros((grams.size, steps))
    with_carbs = est.plan_glucose(plans, s.low_step_min, extra_carbs_g=grams) - margin[None, :]
    # the least grams that keep it up from carb_onset_min on; when no amount does (the low comes
    # before carbs can act), from the first later time at which some amount does
    enough, needed, from_min = False, float(s.max_carbs_g), float(s.carb_onset_min)
    for start in h[h >= s.carb_onset_min]:
        ok = np.nonzero(with_carbs[:, h >= start].min(axis=1) >= s.low_mg_dl)[0]
        if ok.size:
            enough, needed, from_min = True, float(grams[ok[0]]), float(start)
            break
    advised = max(s.carbs_step_g, math.ceil(needed / s.carbs_step_g - 1e-9) * s.carbs_step_g)
    advised = min(advised, max(s.max_carbs_g, s.carbs_step_g))
    by_min = max(0.0, crossing_min - s.eat_lead_min)
    by = now + timedelta(minutes=by_min)
    message = (f"Eat {advised:g} g of fast carbs now" + (f" (at the latest by {by:%H:%M})" if by_min > 0 else "")
               + ": the loop has stopped insulin and the twin still forecasts a low")
    reason = (f"with no insulin for {s.low_horizon_min:g} min the twin's conservative forecast (mean - "
              f"{s.low_band_z:g} sd) reaches {lowest:.0f} mg/dL"
              + (f", below {s.low_mg_dl:g} in {crossing_min:.0f} min" if crossing_min > 0 else f", below {s.low_mg_dl:g} now")
              + (f"; {needed:g} g eaten now keep it at or above {s.low_mg_dl:g} from {from_min:g} min on"
                 if enough else f"; even {s.max_carbs_g:g} g do not bring it back above {s.low_mg_dl:g} within "
                                f"{s.low_horizon_min:g} min: treat and recheck"))
    return Advice("carbs", now, message, reason, carbs_g=float(advised), by_min=by_min)


def high_advice(est: Any, facts: CycleFacts, s: AdviceSettings) -> Advice | None:
    """Kind ``high`` when the forecast under the decided dose stays high while a cap binds."""
    if not facts.cap:
        return None
    step = s.low_step_min
    steps = max(1, int(math.ceil(s.high_window_min / step)))
    plan = np.full((1, steps), facts.dose_basal_u_per_h / MIN_PER_H)
    plan[0, 0] += facts.dose_bolus_u / step
    glucose = est.plan_glucose(plan, step)[0]
    lowest = float(glucose.min())
    if not math.isfinite(lowest) or lowest < s.high_mg_dl:
        return None
    message = (f"High: the twin forecasts at least {lowest:.0f} mg/dL for the next {s.high_window_min:g} min and "
               f"the safety limits ({facts.cap}) stop the loop from giving more insulin")
    reason = (f"forecast with this cycle's dose ({facts.dose_basal_u_per_h:.2f} U/h, bolus {facts.dose_bolus_u:.2f} U) "
              f"stays >= {s.high_mg_dl:g} mg/dL over {s.high_window_min:g} min (lowest {lowest:.0f}); "
              f"binding: {facts.cap}; IOB {facts.iob_u:.2f} U")
    return Advice("high", facts.time, message, reason)


def rise_unexplained(readings: list[tuple[datetime, float]], facts: CycleFacts, last_carbs: datetime | None,
                     s: AdviceSettings) -> str:
    """Why the recent CGM rise is unexplained ("" when it is not such a rise)."""
    if facts.glucose_mg_dl is None or facts.glucose_mg_dl < s.site_check_min_glucose_mg_dl or not readings:
        return ""
    if last_carbs is not None and (facts.time - last_carbs).total_seconds() / 60.0 < s.rise_carb_free_min:
        return ""
    effect = facts.iob_u * facts.correction_factor_mg_dl_per_u
    if effect < s.rise_min_iob_effect_mg_dl:
        return ""
    now = facts.time

    def at(minutes_ago: float) -> float | None:
        target = now - timedelta(minutes=minutes_ago)
        best = min(readings, key=lambda r: abs((r[0] - target).total_seconds()))
        return best[1] if abs((best[0] - target).total_seconds()) <= 6 * 60 else None

    start, middle, end = at(s.rise_window_min), at(s.rise_window_min / 2.0), facts.glucose_mg_dl
    if start is None or middle is None:
        return ""
    if not (middle > start and end > middle and end - start >= s.rise_min_mg_dl):
        return ""
    return (f"CGM rose {start:.0f} -> {middle:.0f} -> {end:.0f} mg/dL over {s.rise_window_min:g} min with "
            f"{facts.iob_u:.2f} U on board (worth {effect:.0f} mg/dL by the correction factor) and no carbs "
            f"announced or advised for {s.rise_carb_free_min:g} min")


def advise(est: Any, facts: CycleFacts, readings: list[tuple[datetime, float]], last_carbs: datetime | None,
           s: AdviceSettings) -> Advice | None:
    """This cycle's advice (``new`` is left True; :class:`Advisor` decides it), or None."""
    low = low_advice(est, facts.time, s)
    if low is not None:
        return low
    rise = rise_unexplained(readings, facts, last_carbs, s) if s.site_check else ""
    high = high_advice(est, facts, s) if facts.cap else None
    if rise:
        message = ("Unexplained rise: check the infusion site and the pump (occlusion, a loose or old set); "
                   "if you ate without announcing it, announce it")
        reason = rise + (f"; {high.reason}" if high is not None else "")
        return Advice("site_check", facts.time, message, reason)
    return high


class Advisor:
    """The advice's memory across cycles (see the module docstring)."""

    def __init__(self, settings: AdviceSettings | None = None) -> None:
        self.settings = settings or AdviceSettings()
        self.readings: deque[tuple[datetime, float]] = deque()
        self.last_carbs: datetime | None = None  # announced or advised (new advice) last
        self.last_announced: dict[str, datetime] = {}

    def cycle(self, est: Any, facts: CycleFacts, announced_carbs_g: float) -> Advice | None:
        s = self.settings
        if announced_carbs_g > 0:
            self.last_carbs = facts.time
        if facts.glucose_mg_dl is not None and math.isfinite(facts.glucose_mg_dl):
            if not self.readings or facts.time > self.readings[-1][0]:
                self.readings.append((facts.time, float(facts.glucose_mg_dl)))
        keep = timedelta(minutes=s.rise_window_min + 15.0)
        while self.readings and facts.time - self.readings[0][0] > keep:
            self.readings.popleft()
        advice = advise(est, facts, list(self.readings), self.last_carbs, s)
        if advice is None:
            return None
        last = self.last_announced.get(advice.kind)
        new = last is None or (facts.time - last).total_seconds() / 60.0 >= s.repeat_min - 1e-9 or facts.time < last
        if new:
            self.last_announced[advice.kind] = facts.time
            if advice.kind == "carbs":
                self.last_carbs = facts.time
        return Advice(advice.kind, advice.issued_at, advice.message, advice.reason, advice.carbs_g, advice.by_min, new)
