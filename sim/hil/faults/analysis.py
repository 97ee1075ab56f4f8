"""The campaign's analysis: the loop's journal, the pump's audit trail and the patient's log compared.

:func:`analyse` runs the checks (duplicate doses and the pump's executions:
:mod:`sim.hil.faults.executions`; journal records lost:
:mod:`sim.hil.faults.lost_records`; safety invariant violations:
:mod:`sim.hil.faults.safety_checks`) and adds the figures around them: doses
the pump executed, the journal's counts, the insulin each side accounts for,
and the loop's restarts and whether it resumed after the last one.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

from sim.hil.faults.evidence import Evidence, Findings, load_evidence, minute_of_day, pump_programmed_basal
from sim.hil.faults.executions import check_announcements_used_twice, check_executions, check_readings_decided_twice
from sim.hil.faults.lost_records import (check_deliveries_booked_after_journal_loss, check_readings_journaled,
                                         check_treatments_journaled, check_unresolved_commands)
from sim.hil.faults.safety_checks import check_decisions, check_pump_while_stale


def analyse(journal_path: Path, audit_path: Path, config_path: Path, patient_log: dict[str, Any],
            final_startup_id: int | None = None, audit_limit: int | None = None) -> dict[str, Any]:
    """Compare the journal, the pump's audit trail and the patient's log (see :mod:`sim.hil.faults.campaign`).

    ``audit_limit``: only the first so many audit records are the loop's (the rogue host's follow).
    """
    ev = load_evidence(journal_path, audit_path, config_path, final_startup_id, audit_limit)
    fx = Findings()
    recovered_from_pump = check_executions(ev, fx)
    readings_decided_twice = check_readings_decided_twice(ev, fx)
    check_announcements_used_twice(ev, fx)
    check_unresolved_commands(ev, fx)
    check_deliveries_booked_after_journal_loss(ev, fx)
    in_flight_lost = check_readings_journaled(ev, fx, patient_log)
    treatments_lost_in_flight = check_treatments_journaled(ev, fx, patient_log)
    decided = check_decisions(ev, fx)
    stale_samples, stale_on_temp = check_pump_while_stale(ev, fx, patient_log)
    restarts = restart_summary(ev)
    journal = journal_summary(ev, fx)
    return {
        **fx.report(),
        "doses": dose_summary(ev),
        "checks": {
            "decisions": len(ev.decisions),
            "decisions_with_delivery": sum(1 for d in ev.decisions if d.cycle in ev.deliveries),
            "stale_or_implausible_decisions_checked": decided.stale, "low_cgm_decisions_checked": decided.low,
            "below_correction_decisions_checked": decided.below,
            "max_iob_use_of_limit": round(decided.iob_max_ratio, 4),
            "pump_samples_with_stale_cgm": stale_samples, "of_which_last_temp_basal_still_running": stale_on_temp,
            "readings_decided_twice_without_second_dose": readings_decided_twice,
            "readings_lost_in_flight_at_sigkill": in_flight_lost,
            "treatments_lost_in_flight_at_sigkill": treatments_lost_in_flight,
            "executed_commands_known_from_the_pump_history_only": recovered_from_pump,
            "journals_lost": len(ev.segments) - 1,
        },
        "journal": journal,
        "insulin_accounting": insulin_accounting(ev, patient_log),
        "restarts": restarts,
    }


def restart_summary(ev: Evidence) -> dict[str, Any]:
    """The loop's startups before the final restore, and how many cycles it ran after the last restart."""
    startups = [e.id for e in ev.by_kind["startup"]]
    final_startup_id = ev.final_startup_id
    if final_startup_id is not None:
        run_startups = [i for i in startups if i < final_startup_id]
    else:
        run_startups = startups
    last_restart = run_startups[-1] if len(run_startups) > 1 else None
    end = final_startup_id or float("inf")
    cycles_after_last_restart = (sum(1 for d in ev.decisions if last_restart < d.id < end)
                                 if last_restart is not None else None)
    return {
        "loop_startups": len(run_startups),
        "loop_restarts": max(0, len(run_startups) - 1),
        "cycles_after_last_restart": cycles_after_last_restart,
        "resumed": None if cycles_after_last_restart is None else cycles_after_last_restart > 0,
    }


def journal_summary(ev: Evidence, fx: Findings) -> dict[str, Any]:
    """The journal's counts, its replies by status and NAK reason, rejections, and the insulin it booked;
    a first send refused as replayed (the loop reused a seq the pump had seen) is a record lost."""
    replies_by_status: Counter[str] = Counter()
    nak_reasons: Counter[str] = Counter()
    resolved_by_status = 0
    for seq, rs in ev.replies.items():
        r = rs[-1].payload
        replies_by_status[r.get("status", "?")] += 1
        reason = str(r.get("reason", ""))
        if r.get("status") == "nak":
            nak_reasons[reason.split(":")[0]] += 1
            if reason.startswith("replayed"):  # a first send refused: the loop reused a seq the pump had seen
                fx.lose("command_refused_as_replayed", seq)
        if r.get("resolved_by") == "status" or r.get("status") == "not_executed" or "status ring" in reason:
            resolved_by_status += 1
    rejection_reasons = Counter(str(e.payload.get("reason", "")).split(":")[0] for e in ev.by_kind["rejection"])
    booked_u = sum(float(e.payload["basal_u_per_h"]) * float(e.payload.get("minutes", 0)) / 60.0
                   + float(e.payload["bolus_u"]) for e in ev.deliveries.values())
    return {
        "counts": dict(Counter(e.kind for e in ev.events)),
        "replies_by_status": dict(replies_by_status),
        "nak_reasons": dict(nak_reasons),
        "replies_resolved_by_status_query": resolved_by_status,
        "rejection_reasons": dict(rejection_reasons),
        "insulin_booked_u": round(booked_u, 3),
    }


def insulin_accounting(ev: Evidence, patient_log: dict[str, Any]) -> dict[str, Any]:
    """Insulin above the programmed basal (what insulin on board counts): booked by the loop vs given by
    the pump."""
    booked_net_u = 0.0
    for d in ev.decisions:
        e = ev.deliveries.get(d.cycle)
        if e is not None:
            t = datetime.fromisoformat(d.payload["input"]["time"])
            booked_net_u += ((float(e.payload["basal_u_per_h"]) - ev.profile.basal_u_per_h_at(minute_of_day(t)))
                             * float(e.payload.get("minutes", 0)) / 60.0 + float(e.payload["bolus_u"]))
    pump_scheduled = pump_programmed_basal(ev.profile)
    reports = patient_log.get("reports", [])
    given_net_u = 0.0
    for a, b in zip(reports, reports[1:]):
        minutes = (b["t_ms"] - a["t_ms"]) / 60_000
        given_net_u += (a["basal_u_per_h"] - pump_scheduled) * minutes / 60.0 + a["bolus_u"]
    return {
        "net_above_programmed_booked_by_loop_u": round(booked_net_u, 3),
        "net_above_programmed_given_by_pump_u": round(given_net_u, 3),
        "note": "the loop books each cycle's temp basal for one cycle; while it is down or has no usable "
                "reading the pump keeps the temp basal up to its 30 min duration (not booked), and a temp "
                "basal refused or not executed is booked as the programmed basal whatever the pump runs",
    }


def dose_summary(ev: Evidence) -> dict[str, Any]:
    """What the pump's audit trail says it executed, refused and answered from its cache."""
    executed, audit = ev.executed, ev.audit
    return {
        "commands_executed": len(executed),
        "temp_basals_executed": sum(1 for r in executed if r["type"] == "temp_basal"),
        "boluses_executed": sum(1 for r in executed if r["type"] == "bolus" and r["bolus_u"] > 0),
        "bolus_u_executed": round(sum(r["bolus_u"] for r in executed if r["type"] == "bolus"), 3),
        "refused_consumed": sum(1 for r in audit if r.get("outcome") == "refused"),
        "nak_not_consumed": dict(Counter(r.get("reason", "") for r in audit if r.get("outcome") == "nak")),
        "exact_retries_answered_from_cache": sum(1 for r in audit if r.get("outcome") == "exact_retry"),
    }
