"""The protocol and plant rows of a trial run's report, with the command that reruns it."""

from __future__ import annotations

import json
from typing import Any

from sim.report.trial_run import TrialRun


def _protocol_rows(run: TrialRun) -> list[tuple[str, Any]]:
    s = run.summary
    proto = s.get("protocol", {})
    seeds = ", ".join(f"{p} {s['patients'][p].get('seed', '?')}" for p in run.patients)
    rows: list[tuple[str, Any]] = [
        ("controller", s.get("controller", "?")),
        ("plant", s.get("plant", "?")),
        ("arm", f"{proto.get('arm', '?')} ({'meal information given at meal time' if proto.get('arm') == 'hcl' else 'no meal information'})"),
        ("duration", f"{proto.get('days', '?')} days from {proto.get('start', '?')}"),
        ("sensor / pump", f"{proto.get('sensor', '?')} CGM, {proto.get('pump', '?')} pump"),
        ("scenario", proto.get("scenario", "?")),
        ("seeds", f"seed offset {proto.get('seed_offset', '?')}; sensor seed {proto.get('sensor_seed', '?')}; per patient: {seeds}"),
    ]
    factor = proto.get("carb_announcement_factor", 1.0)
    if factor not in (1, 1.0, None):
        rows.append(("carb announcement", f"carbohydrates announced × {factor} (off-protocol check)"))
    delay = proto.get("meal_delay_min", 0.0)
    if delay:
        rows.append(("meal delay", f"meals announced {delay:g} min after they start (off-protocol check)"))
    scale = proto.get("physiology_scale") or {}
    if scale:
        rows.append(("physiology scale", ", ".join(f"{k} × {v}" for k, v in scale.items()) + " (the controller is not told)"))
    if "versions" in s:
        rows.append(("versions", ", ".join(f"{k} {v}" for k, v in s["versions"].items())))
    if "run" in s:
        r = s["run"]
        rows.append(("run", f"wall time {r.get('wall_s', '?')} s with {r.get('workers', '?')} worker(s)"))
    if "hil" in s:
        rows.append(("HIL journals", json.dumps(s["hil"], sort_keys=True)))
    rows.append(("output directory", str(run.directory)))
    rerun = _rerun_command(run)
    if rerun:
        rows.append(("rerun", rerun))
    return rows


def _rerun_command(run: TrialRun) -> str | None:
    s = run.summary
    proto = s.get("protocol", {})
    controller = str(s.get("controller", ""))
    if "HIL" in controller:
        cmd = ["glucotwin", "hil"]
    elif controller and " " not in controller:
        cmd = ["glucotwin", "trial", "--controller", controller]
    else:
        return None
    cmd += ["--arm", str(proto.get("arm", "hcl")), "--days", f"{proto.get('days', 3)}",
            "--seed-offset", str(proto.get("seed_offset", 0)), "--sensor", str(proto.get("sensor", "Dexcom"))]
    if len(run.patients) != 30 or cmd[1] == "hil":
        cmd += ["--patients", *run.patients]
    factor = proto.get("carb_announcement_factor", 1.0)
    if factor not in (1, 1.0, None) and cmd[1] == "trial":
        cmd += ["--carb-error", f"{(float(factor) - 1.0) * 100:g}"]
    if proto.get("meal_delay_min") and cmd[1] == "trial":
        cmd += ["--meal-delay", f"{float(proto['meal_delay_min']):g}"]
    for k, v in (proto.get("physiology_scale") or {}).items():
        cmd += ["--scale", f"{k}={v}"]
    return " ".join(cmd)
