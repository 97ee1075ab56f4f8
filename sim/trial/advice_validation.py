"""Validating the advice (issue 19): the same trial with and without the patient following it.

:func:`run_follow` runs a trial whose virtual patients eat every new carbohydrate advice
(``TrialProtocol.follow_advice``) and, for every ``least_every``-th advice event, measures on
deep copies of the run the least rescue that would have sufficed
(:func:`sim.trial.rescue.least_sufficient_g`). :func:`compare` reads the two runs' summaries and
traces and gives time below 70 and 54 mg/dL (true BG) per patient and overall, and the grams per
advice event. The controller is the same in both runs and is never told of a rescue.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from sim.engine import resolve_engine
from sim.trial.baselines import ControllerFactory
from sim.trial.protocol import TrialProtocol
from sim.trial.rescue import least_sufficient_g
from sim.trial.runner import PatientRun, check_writable, simulate_patient
from sim.trial.summary import build_summary
from sim.trial.trace import advice_events, read_trace_csv, trace_filename, write_trace_csv

EVENTS_FILENAME = "advice_events.json"
LEAST_MAX_G = 60.0
LEAST_STEP_G = 5.0


def simulate_following(patient: str, controller: str | ControllerFactory, protocol: TrialProtocol,
                       least_every: int = 0, progress: Any = None) -> tuple[PatientRun, list[dict[str, Any]]]:
    """One patient following the advice; the list has one record per new carbohydrate advice."""
    events: list[dict[str, Any]] = []
    count = itertools.count()

    def probe(env: Any, ctrl: Any, meals: Any, action: Any, advice: dict[str, Any]) -> None:
        k = next(count)
        record: dict[str, Any] = {"time": env.time.isoformat(), "advised_g": float(advice["carbs_g"]),
                                  "bg_mg_dl": float(env.BG_hist[-1]), "by_min": advice.get("by_min")}
        if least_every and k % least_every == 0:
            record["least_g"] = least_sufficient_g(env, ctrl, meals, action, max_g=LEAST_MAX_G, step_g=LEAST_STEP_G)
        events.append(record)

    run = simulate_patient(patient, controller, protocol, progress=progress, rescue_probe=probe)
    return run, events


def run_follow(controller: str | ControllerFactory, patients: list[str], protocol: TrialProtocol, out_dir: Path,
               workers: int | None = None, least_every: int = 0, label: str = "mpc") -> dict[str, Any]:
    """A follow-advice trial written like ``glucotwin trial`` writes one, plus ``advice_events.json``."""
    if not protocol.follow_advice:
        raise ValueError("run_follow needs a protocol with follow_advice=True")
    check_writable(out_dir)
    tic = time.perf_counter()
    engine = resolve_engine(None, workers)
    results = engine.map(simulate_following, [(p, controller, protocol, least_every) for p in patients])
    runs = [r for r, _ in results]
    summary = build_summary(label, protocol, runs)
    summary["run"] = {"wall_s": round(time.perf_counter() - tic, 3), "workers": engine.describe()["workers"]}
    for run in runs:
        write_trace_csv(run.trace, out_dir / trace_filename(run.patient))
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    events = {run.patient: ev for run, (_, ev) in zip(runs, results)}
    (out_dir / EVENTS_FILENAME).write_text(json.dumps({"least_every": least_every, "least_max_g": LEAST_MAX_G,
                                                        "least_step_g": LEAST_STEP_G, "events": events}, indent=2))
    return summary


def compare(without_dir: Path, with_dir: Path) -> dict[str, Any]:
    """Time below 70 / 54 (true BG, % of samples) per patient without and with following the advice,
    and the advice events of the follow run (grams per event, least sufficient where measured)."""
    a = json.loads((Path(without_dir) / "summary.json").read_text())
    b = json.loads((Path(with_dir) / "summary.json").read_text())
    days = float(b["protocol"]["days"])
    events_file = Path(with_dir) / EVENTS_FILENAME
    measured = json.loads(events_file.read_text())["events"] if events_file.exists() else {}
    rows = {}
    for name, pa in a["patients"].items():
        pb = b["patients"][name]
        trace = read_trace_csv(Path(with_dir) / trace_filename(name))
        ev = advice_events(trace)
        carbs = [g for _, kind, g in ev if kind == "carbs"]
        rescue = trace.diagnostics.get("rescue_carbs_g") or []
        eaten = float(np.nansum([float(x) for x in rescue if x not in ("", None)]))
        rows[name] = {
            "without": {"below_70": pa["bg"]["below_70"], "below_54": pa["bg"]["below_54"],
                        "tir": pa["bg"]["in_range_70_180"]},
            "with": {"below_70": pb["bg"]["below_70"], "below_54": pb["bg"]["below_54"],
                     "tir": pb["bg"]["in_range_70_180"]},
            "carb_events": len(carbs), "carbs_g_per_day": eaten / days,
            "high_events": sum(1 for _, k, _ in ev if k == "high"),
            "site_check_events": sum(1 for _, k, _ in ev if k == "site_check"),
        }
    all_events = [e for evs in measured.values() for e in evs]
    grams = [float(e["advised_g"]) for e in all_events]
    least = [e for e in all_events if "least_g" in e]
    below70_a = sum(r["without"]["below_70"] for r in rows.values())
    below70_b = sum(r["with"]["below_70"] for r in rows.values())
    below54_a = sum(r["without"]["below_54"] for r in rows.values())
    below54_b = sum(r["with"]["below_54"] for r in rows.values())
    n = len(rows)
    overall = {
        "below_70_without": below70_a / n, "below_70_with": below70_b / n,
        "below_54_without": below54_a / n, "below_54_with": below54_b / n,
        "tir_without": statistics.fmean(r["without"]["tir"] for r in rows.values()),
        "tir_with": statistics.fmean(r["with"]["tir"] for r in rows.values()),
        "below_70_removed": (1.0 - below70_b / below70_a) if below70_a > 0 else None,
        "below_54_removed": (1.0 - below54_b / below54_a) if below54_a > 0 else None,
        "carb_events": len(grams),
        "carb_events_per_patient_day": len(grams) / (n * days),
        "median_g_per_event": statistics.median(grams) if grams else None,
        "least_measured": len(least),
        "least_median_g": _median([e["least_g"] for e in least if e["least_g"] is not None]),
        "least_insufficient": sum(1 for e in least if e["least_g"] is None),
        "least_zero": sum(1 for e in least if e["least_g"] == 0.0),
        "advised_median_g_where_least_measured": _median([e["advised_g"] for e in least]),
        "advised_below_least": sum(1 for e in least if e["least_g"] is None or e["advised_g"] < e["least_g"]),
    }
    return {"patients": rows, "overall": overall, "without": str(without_dir), "with": str(with_dir)}


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def markdown(result: dict[str, Any], title: str) -> str:
    """The comparison as a markdown table (per patient, then overall)."""
    o = result["overall"]
    lines = [f"### {title}", "",
             "| patient | <70 without | <70 with | <54 without | <54 with | carb advice events | rescue g/day | high | site check |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["patients"].items():
        lines.append(f"| {name} | {r['without']['below_70']:.2f} | {r['with']['below_70']:.2f} | "
                     f"{r['without']['below_54']:.2f} | {r['with']['below_54']:.2f} | {r['carb_events']} | "
                     f"{r['carbs_g_per_day']:.0f} | {r['high_events']} | {r['site_check_events']} |")

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.0f} %"

    def g(x: float | None) -> str:
        return "n/a" if x is None else f"{x:g} g"

    lines += ["", f"Overall (mean over patients, % of samples, true BG): <70 {o['below_70_without']:.2f} -> "
              f"{o['below_70_with']:.2f} (removed {pct(o['below_70_removed'])}); <54 {o['below_54_without']:.2f} -> "
              f"{o['below_54_with']:.2f} (removed {pct(o['below_54_removed'])}); TIR {o['tir_without']:.1f} -> "
              f"{o['tir_with']:.1f}.",
              f"Carb advice events: {o['carb_events']} ({o['carb_events_per_patient_day']:.1f} per patient-day), "
              f"median {g(o['median_g_per_event'])} per event. Least sufficient measured on {o['least_measured']} "
              f"events: median {g(o['least_median_g'])} (advised median on those {g(o['advised_median_g_where_least_measured'])}); "
              f"0 g sufficed (no low would have come) on {o['least_zero']}; advised less than the least sufficient "
              f"on {o['advised_below_least']} (of which {o['least_insufficient']} not even {LEAST_MAX_G:g} g)."]
    return "\n".join(lines) + "\n"
