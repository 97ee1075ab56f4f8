"""Safety invariant violations (DESIGN.md 1-4), with the numbers of the loop's ``SafetyLimits``.

From the journal's decisions and deliveries, replayed through the loop's own
insulin account (:class:`controller.safety.SafetySupervisor`): delivered basal
above the effective max basal, bolus above max bolus, insulin added while net
IOB would exceed the IOB limit (with the meal allowance), insulin decided while
the CGM used was at or below the low limit, insulin above the scheduled basal
below the correction threshold, anything but the programmed basal on stale or
implausible CGM. From the patient's log of pump reports: while CGM is stale, the
pump running anything but its programmed basal once the last temp basal expired.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sim.hil.faults.evidence import EPS, Evidence, Findings, minute_of_day, pump_programmed_basal

IOB_TOLERANCE_U = 0.001
"""The IOB check's tolerance: one delivery increment of the HIL pump. The loop books what the
pump reports (rates rounded down to 0.001 U/h, from its history after a journal loss), the
check replays the journal's deliveries: the two accounts differ below one increment."""


@dataclass
class DecisionChecks:
    """How many decisions each rule applied to, and the largest share of the IOB limit used."""

    stale: int = 0   # stale or implausible CGM: the programmed basal only
    low: int = 0     # CGM at or below the low limit: no insulin
    below: int = 0   # below the correction threshold: nothing above the scheduled basal
    iob_max_ratio: float = 0.0


def check_decisions(ev: Evidence, fx: Findings) -> DecisionChecks:
    """Each decision (in cycle order) and its delivery against the safety invariants."""
    from controller.policy import ControlInput
    from controller.safety import SafetySupervisor

    account = SafetySupervisor(ev.profile, ev.limits)
    checks = DecisionChecks()
    for d in sorted(ev.decisions, key=lambda e: e.cycle):
        inp = ControlInput.from_dict(d.payload["input"])
        scheduled = ev.profile.basal_u_per_h_at(minute_of_day(inp.time))
        if inp.announced_carbs_g > 0:
            account.announce_carbs(inp.time, inp.announced_carbs_g)
        _check_decided_dose(ev, fx, checks, d, inp, scheduled)
        delivery = ev.deliveries.get(d.cycle)
        if delivery is not None:
            _check_delivery(ev, fx, checks, account, d.cycle, inp, scheduled, delivery)
    return checks


def _check_decided_dose(ev: Evidence, fx: Findings, checks: DecisionChecks, d: Any, inp: Any,
                        scheduled: float) -> None:
    """The decided dose against the rule its CGM falls under: stale or implausible, low, below correction."""
    limits = ev.limits
    dose = d.payload["dose"]
    diag = dose.get("diagnostics") or {}
    safety_rules = str(diag.get("safety", ""))
    if "cgm_fallback" in safety_rules or inp.cgm_mg_dl is None:
        checks.stale += 1
        if abs(dose["basal_u_per_h"] - scheduled) > 0.001 + EPS or dose["bolus_u"] > 0:
            fx.violate("not_programmed_basal_on_stale_or_implausible_cgm", d.cycle)
    elif inp.cgm_mg_dl is not None and inp.cgm_mg_dl <= limits.low_mg_dl:
        checks.low += 1
        if dose["basal_u_per_h"] > 0 or dose["bolus_u"] > 0:
            fx.violate("insulin_while_cgm_low", d.cycle)
    elif inp.cgm_mg_dl is not None and inp.cgm_mg_dl < limits.correction_threshold_mg_dl:
        checks.below += 1
        if dose["basal_u_per_h"] > scheduled + EPS or dose["bolus_u"] > 0:
            fx.violate("above_scheduled_below_correction_threshold", d.cycle)


def _check_delivery(ev: Evidence, fx: Findings, checks: DecisionChecks, account: Any, cycle: int, inp: Any,
                    scheduled: float, delivery: Any) -> None:
    """The cycle's delivery against max basal, max bolus and the net IOB limit; then booked in ``account``."""
    profile, limits = ev.profile, ev.limits
    t = inp.time
    basal = float(delivery.payload["basal_u_per_h"])
    bolus = float(delivery.payload["bolus_u"])
    minutes = float(delivery.payload.get("minutes", inp.cycle_min))
    max_basal = min(limits.max_basal_u_per_h, limits.max_basal_multiple * scheduled)
    if basal > max_basal + EPS:
        fx.violate("delivered_basal_above_max", cycle)
    if bolus > limits.max_bolus_u + EPS:
        fx.violate("bolus_above_max_per_cycle", cycle)
    iob = account.iob_u(t)
    meal = limits.meal_insulin_fraction_max * account.carbs_on_board_g(t) / profile.carb_ratio_g_per_u
    correction = limits.max_iob_u
    if limits.correction_iob_to_target and inp.cgm_mg_dl is not None:
        needed = max(inp.cgm_mg_dl - profile.target_mg_dl, 0.0) / profile.correction_factor_mg_dl_per_u
        correction = min(correction, needed)
    limit = max(correction, meal)
    added = bolus + max(basal - scheduled, 0.0) * minutes / 60.0
    if added > EPS:
        if limit > 0:
            checks.iob_max_ratio = max(checks.iob_max_ratio, (max(iob, 0.0) + added) / limit)
        if max(iob, 0.0) + added > limit + IOB_TOLERANCE_U:
            fx.violate("net_iob_above_limit", {"cycle": cycle, "iob_u": round(iob, 4),
                                               "added_u": round(added, 4), "limit_u": round(limit, 4)})
    account.delivered(t, basal, minutes, bolus)


def check_pump_while_stale(ev: Evidence, fx: Findings, patient_log: dict[str, Any]) -> tuple[int, int]:
    """The pump's reports while CGM is stale: its programmed basal unless the last temp basal still runs;
    returns (reports with stale CGM, of which with a temp basal still running)."""
    accepted_times = sorted(datetime.fromisoformat(d.payload["input"]["time"]).timestamp() * 1000
                            for d in ev.decisions if d.payload["input"].get("cgm_mg_dl") is not None)
    temp_windows = sorted((r["pump_time_ms"], r["pump_time_ms"] + r["duration_min"] * 60_000)
                          for r in ev.executed if r["type"] == "temp_basal" and r.get("pump_time_ms") is not None)
    pump_scheduled = pump_programmed_basal(ev.profile)
    stale_samples = stale_on_temp = 0
    for rep in patient_log.get("reports", []):
        t_ms = rep["t_ms"]
        i = bisect.bisect_right(accepted_times, t_ms)
        last_reading = accepted_times[i - 1] if i else None
        if last_reading is None or (t_ms - last_reading) / 60_000 <= ev.limits.stale_after_min:
            continue
        stale_samples += 1
        j = bisect.bisect_right(temp_windows, (t_ms, float("inf")))
        temp_active = j > 0 and temp_windows[j - 1][1] > t_ms
        if temp_active:
            stale_on_temp += 1
        elif abs(rep["basal_u_per_h"] - pump_scheduled) > 0.001 + EPS:
            fx.violate("pump_not_on_programmed_basal_while_cgm_stale", t_ms)
    return stale_samples, stale_on_temp
