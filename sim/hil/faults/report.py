"""The table ``glucotwin faults`` prints from a campaign's report.

One section each: the faults injected (and the relay's frame counts), what the
pump executed, the results (duplicate doses, journal records lost, safety
violations, restarts and what was checked), the rogue host against the pump's
limits (:func:`sim.hil.faults.pump_caps.format_pump_caps`), and true BG with the
verdict.
"""

from __future__ import annotations

from typing import Any

from sim.hil.faults.pump_caps import format_pump_caps


def format_report(report: dict[str, Any]) -> str:
    """The table ``glucotwin faults`` prints."""
    lines = [f"fault campaign: {report['patient']}, {report['days']:g} day(s), seed {report['seed']}, "
             f"{report['samples']} samples, {report['wall_s']:.0f} s wall"]
    lines.append("")
    lines.extend(_faults_lines(report))
    lines.append("")
    lines.extend(_pump_lines(report["doses"]))
    lines.append("")
    lines.extend(_result_lines(report))
    if report.get("pump_caps"):
        lines.append("")
        lines.extend(format_pump_caps(report["pump_caps"]))
    lines.append("")
    bg = report["true_bg"]
    lines.append(f"true BG: TIR {bg['tir_70_180']:.1f} %, <70 {bg['below_70']:.1f} %, <54 {bg['below_54']:.1f} %, "
                 f"mean {bg['mean']:.0f} mg/dL")
    lines.append("campaign: " + ("PASS" if report.get("ok") else "FAIL"))
    return "\n".join(lines)


def _faults_lines(report: dict[str, Any]) -> list[str]:
    """The faults injected by kind, and the frames the relay passed."""
    lines = [f"{'fault injected':<28}{'count':>7}"]
    for kind, n in report["faults_injected"].items():
        lines.append(f"  {kind:<26}{n:>7}")
    relay = report.get("relay", {})
    lines.append(f"  {'(relay frames to pump/host)':<26}{relay.get('frames_to_pump', 0):>7}/"
                 f"{relay.get('frames_to_host', 0)}")
    return lines


def _pump_lines(d: dict[str, Any]) -> list[str]:
    """What the pump executed, answered from its cache, and refused without consuming the seq."""
    lines = [f"{'pump':<28}"]
    lines.append(f"  {'commands executed':<26}{d['commands_executed']:>7}")
    lines.append(f"  {'temp basals executed':<26}{d['temp_basals_executed']:>7}")
    lines.append(f"  {'boluses executed':<26}{d['boluses_executed']:>7}  ({d['bolus_u_executed']:.2f} U)")
    lines.append(f"  {'exact retries (cache)':<26}{d['exact_retries_answered_from_cache']:>7}")
    naks = ", ".join(f"{k} {v}" for k, v in sorted(d["nak_not_consumed"].items())) or "-"
    lines.append(f"  {'NAKs (seq not consumed)':<26}{sum(d['nak_not_consumed'].values()):>7}  ({naks})")
    return lines


def _result_lines(report: dict[str, Any]) -> list[str]:
    """Duplicates, records lost, violations (each OK or FAIL), restarts, and what was checked."""
    lines = [f"{'result':<28}{'count':>7}"]
    for section, label in (("duplicates", "duplicate doses"), ("lost", "journal records lost"),
                           ("violations", "safety violations")):
        block = report[section]
        lines.append(f"  {label:<26}{block['total']:>7}   {'OK' if block['total'] == 0 else 'FAIL'}")
        for key, n in block.items():
            if key != "total":
                lines.append(f"    {key:<40}{n:>5}")
    r = report["restarts"]
    c = report["checks"]
    lines.append(f"  {'loop restarts':<26}{r['loop_restarts']:>7}   ({report['loop']['kills']} SIGKILLs, "
                 f"{report['loop']['crashes']} crashes, {report['loop']['stalls']} stalls)")
    resumed = {None: "n/a", True: "yes", False: "NO"}[r["resumed"]]
    lines.append(f"  {'loop resumed':<26}{resumed:>7}   ({r['cycles_after_last_restart']} cycles after the last restart)")
    lines.append(f"  {'decisions checked':<26}{c['decisions']:>7}   (stale/implausible {c['stale_or_implausible_decisions_checked']}, "
                 f"low {c['low_cgm_decisions_checked']}, below correction {c['below_correction_decisions_checked']}; "
                 f"max IOB use {100 * c['max_iob_use_of_limit']:.0f} % of limit)")
    lines.append(f"  {'readings lost at SIGKILL':<26}{c['readings_lost_in_flight_at_sigkill']:>7}   (in flight: "
                 "acknowledged by MQTT, never journaled, never acted on)")
    j = report["journal"]
    lines.append(f"  {'replies resolved by STATUS':<26}{j['replies_resolved_by_status_query']:>7}")
    acc = report.get("insulin_accounting")
    if acc:
        lines.append(f"  {'IOB-relevant insulin':<26}{'':>7}   (above programmed basal: loop booked "
                     f"{acc['net_above_programmed_booked_by_loop_u']:.2f} U, pump gave "
                     f"{acc['net_above_programmed_given_by_pump_u']:.2f} U)")
    harness = report.get("harness")
    if harness and not harness["consistent"]:
        lines.append(f"  harness: the patient received {harness['bolus_received_by_patient_u']:.3f} U of bolus, "
                     f"the pump executed {harness['bolus_executed_by_pump_u']:.3f} U")
    return lines
