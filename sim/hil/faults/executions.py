"""The pump's executions against the loop's journal, and the journal's own duplicate doses.

Duplicate doses: a seq the pump executed twice, two executed commands of one
kind for one decision, two decisions that dosed for the same reading, one carb
announcement used twice. With them, what each execution says about the journal
(an executed command it lacks, or of another kind: records lost) and about the
pump (beyond its command, its limits or the command's expiry: violations).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import datetime
from typing import Any

from sim.hil.faults.evidence import EPS, Evidence, Findings, minute_of_day


def check_executions(ev: Evidence, fx: Findings) -> int:
    """Each executed audit record against its journaled command; returns how many executed
    commands are known from the pump's history only (their command record lost with a journal)."""
    for seq, n in Counter(r["seq"] for r in ev.executed).items():
        if n > 1:
            fx.duplicate("seq_executed_twice", seq)
    per_decision: Counter[tuple[int, str]] = Counter()
    recovered_from_pump = 0
    for r in ev.executed:
        cmd = ev.commands.get(r["seq"])
        if cmd is None:
            if r["seq"] in ev.booked_from_pump:  # the command's record was lost, the pump's record booked it
                recovered_from_pump += 1
            else:
                fx.lose("executed_command_not_journaled", r)
            continue
        _check_execution(ev, fx, r, cmd)
        per_decision[(cmd.cycle, cmd.payload["kind"])] += 1
    for (cycle, kind), n in per_decision.items():
        if n > 1:
            fx.duplicate(f"{kind}_executed_twice_for_one_decision", cycle)
    return recovered_from_pump


def _check_execution(ev: Evidence, fx: Findings, r: dict[str, Any], cmd: Any) -> None:
    """One execution: of the journaled kind, within its command, before its expiry, within the limits."""
    profile, limits = ev.profile, ev.limits
    kind = cmd.payload["kind"]
    if r["type"] != kind:
        fx.lose("executed_type_differs_from_journal", {"seq": r["seq"], "pump": r["type"], "journal": kind})
    if kind == "bolus" and r["bolus_u"] > cmd.payload["bolus_u"] + EPS:
        fx.violate("pump_bolus_above_command", r)
    if kind == "temp_basal" and r["rate_u_per_h"] > cmd.payload["rate_u_per_h"] + EPS and r["duration_min"]:
        fx.violate("pump_rate_above_command", r)
    expires = datetime.fromisoformat(cmd.payload["expires_at"])
    if r.get("pump_time_ms") is not None and r["pump_time_ms"] > expires.timestamp() * 1000 + 0.5:
        fx.violate("pump_executed_after_expiry", r)
    t = datetime.fromisoformat(cmd.payload["issued_at"])
    scheduled = profile.basal_u_per_h_at(minute_of_day(t))
    if kind == "temp_basal" and r["rate_u_per_h"] > min(limits.max_basal_u_per_h,
                                                        limits.max_basal_multiple * scheduled) + EPS:
        fx.violate("pump_basal_above_max", r)
    if kind == "bolus" and r["bolus_u"] > limits.max_bolus_u + EPS:
        fx.violate("pump_bolus_above_max", r)


def check_readings_decided_twice(ev: Evidence, fx: Findings) -> int:
    """Readings with more than one decision (a restart re-deciding it): a duplicate dose when two of
    them dosed; returns how many readings were decided twice."""
    dosing_cycles = {ev.commands[r["seq"]].cycle for r in ev.executed if r["seq"] in ev.commands
                     and (r["type"] == "temp_basal" or r["bolus_u"] > 0)}
    decisions_per_reading: dict[str, list[int]] = defaultdict(list)
    for d in ev.decisions:
        if d.payload["input"].get("cgm_mg_dl") is not None:
            decisions_per_reading[d.payload["input"]["time"]].append(d.cycle)
    readings_decided_twice = 0
    for t_iso, cycles in decisions_per_reading.items():
        if len(cycles) > 1:
            readings_decided_twice += 1
            if sum(1 for c in cycles if c in dosing_cycles) > 1:
                fx.duplicate("two_decisions_dosed_for_one_reading", t_iso)
    return readings_decided_twice


def check_announcements_used_twice(ev: Evidence, fx: Findings) -> None:
    """A carb announcement (time, grams) the loop used more than once."""
    used_announcements = Counter((e.payload.get("time"), e.payload.get("carbs_g"))
                                 for e in ev.by_kind["announcement"] if "ignored" not in e.payload)
    for key, n in used_announcements.items():
        if n > 1:
            fx.duplicate("carb_announcement_used_twice", key)
