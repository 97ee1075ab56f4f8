"""Journal records lost: what happened (at the pump, on MQTT) that the loop's journal does not hold.

Commands without a reply or resolution after the final restore, cycles with
commands but no delivery, pump deliveries a journal loss left unbooked, and
readings or carb treatments the patient published (and that were not in
flight when the loop was killed) or that ``loop/processed`` confirmed, but
that were never journaled. (Executed commands the journal lacks are found with
the executions, :mod:`sim.hil.faults.executions`.)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sim.hil.faults.evidence import Evidence, Findings


def check_unresolved_commands(ev: Evidence, fx: Findings) -> None:
    """Commands without a reply, cycles with commands but no delivery; those of a lost journal
    count only when the pump's history did not settle them."""
    # a journal lost with commands in flight: the pump's history, booked by the next journal, settles them
    executed_seqs = {r["seq"] for r in ev.executed}
    lost_ids = max((seg["first_id"] for seg in ev.segments[1:]), default=None)

    def settled_by_pump(seq: int | None, event_id: int) -> bool:
        return lost_ids is not None and event_id < lost_ids and (seq in ev.booked_from_pump
                                                                 or seq not in executed_seqs)

    for e in ev.unanswered:
        if not settled_by_pump(e.seq, e.id):
            fx.lose("command_without_reply_after_final_restore", e.seq)
    for cycle, cmds in ev.commands_of_cycle.items():
        if cycle is not None and cycle not in ev.deliveries and not all(settled_by_pump(c.seq, c.id) for c in cmds):
            fx.lose("cycle_with_commands_without_delivery", cycle)


def check_deliveries_booked_after_journal_loss(ev: Evidence, fx: Findings) -> None:
    """After each journal loss, every pump delivery of the insulin-action window booked by the new journal."""
    window_ms = ev.limits.iob_action_duration_min * 60_000
    for seg in ev.segments[1:]:
        start_ms = datetime.fromisoformat(seg["startup_time"]).timestamp() * 1000 if seg["startup_time"] else None
        for r in ev.executed:
            if start_ms is None or r.get("pump_time_ms") is None or not (start_ms - window_ms <= r["pump_time_ms"]
                                                                        <= start_ms):
                continue
            if (r["type"] == "temp_basal" or r["bolus_u"] > 0) and r["seq"] not in seg["booked_from_pump"] \
                    and r["seq"] not in seg["commands"]:
                fx.lose("pump_delivery_not_booked_after_journal_loss", r["seq"])


def check_readings_journaled(ev: Evidence, fx: Findings, patient_log: dict[str, Any]) -> int:
    """Every reading published (but not in flight at a kill) or confirmed processed is journaled;
    returns how many were lost in flight at a SIGKILL."""
    journaled_times = set()
    for e in ev.by_kind["reading"]:
        try:
            journaled_times.add(int(round(datetime.fromisoformat(e.payload["time"]).timestamp() * 1000)))
        except (KeyError, ValueError, TypeError):
            continue
    in_flight_lost = 0
    for p in patient_log.get("published", []):
        if p["kind"] == "republished" or p["t_ms"] in journaled_times:
            continue
        if p.get("in_flight_at_kill"):
            in_flight_lost += 1
            continue
        fx.lose("published_reading_not_journaled", p["t_ms"])
    for msg in patient_log.get("processed", []):
        if msg.get("reading_t_ms") is not None and msg["reading_t_ms"] not in journaled_times:
            fx.lose("processed_reading_not_journaled", msg["reading_t_ms"])
    return in_flight_lost


def check_treatments_journaled(ev: Evidence, fx: Findings, patient_log: dict[str, Any]) -> int:
    """Every carb treatment published (but not in flight at a kill) is journaled, as an announcement or a
    rejection; returns how many were lost in flight at a SIGKILL."""
    announcements_journaled = {int(round(datetime.fromisoformat(e.payload["time"]).timestamp() * 1000))
                               for e in ev.by_kind["announcement"] + ev.by_kind["rejection"]
                               if isinstance(e.payload.get("time"), str)}
    for e in ev.by_kind["rejection"]:
        item = e.payload.get("item") or {}
        if isinstance(item, dict) and "carbs_g" in item and isinstance(item.get("time"), str):
            announcements_journaled.add(int(round(datetime.fromisoformat(item["time"]).timestamp() * 1000)))
    treatments_lost_in_flight = 0
    for tr in patient_log.get("treatments", []):
        if tr["t_ms"] not in announcements_journaled:
            if tr.get("in_flight_at_kill"):
                treatments_lost_in_flight += 1
            else:
                fx.lose("published_treatment_not_journaled", tr["t_ms"])
    return treatments_lost_in_flight
