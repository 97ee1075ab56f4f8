"""``summary.json`` of a trial: protocol, versions, per-patient metrics, aggregates."""

from __future__ import annotations

import platform
from importlib import metadata
from typing import Any

import numpy as np

from sim.trial.cohort import GROUPS, group_of
from sim.trial.metrics import glucose_metrics, mean_metrics, safety_rank_key
from sim.trial.protocol import TrialProtocol
from sim.trial.runner import PatientRun

SUMMARY_FORMAT = "glucotwin.trial-summary/1"
WORST_RULE = "most time below 54 mg/dL, then below 70, then lowest time in range (true BG)"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("glucotwin", "simglucose", "numpy", "scipy", "pandas"):
        try:
            found[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            found[dist] = "not installed"
    return found


def _aggregate(names: list[str], per_patient: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "n": len(names),
        "patients": names,
        "bg": mean_metrics([per_patient[n]["bg"] for n in names]),
        "cgm": mean_metrics([per_patient[n]["cgm"] for n in names]),
    }


def build_summary(
    controller: str,
    protocol: TrialProtocol,
    runs: list[PatientRun],
    plant: str = "simglucose 0.2.11 T1DPatient (UVA/Padova 2008)",
) -> dict[str, Any]:
    """Everything needed to read and rerun the result; deterministic for given inputs."""
    per_patient: dict[str, dict[str, Any]] = {}
    for run in runs:
        per_patient[run.patient] = {
            "group": group_of(run.patient),
            "seed": run.seed,
            "samples": len(run.trace),
            "sample_min": run.trace.sample_min,
            "bg": glucose_metrics(run.trace.bg_mg_dl),
            "cgm": glucose_metrics(run.trace.cgm_mg_dl),
            "insulin_u_per_day": float(np.nansum(run.trace.insulin_u) / protocol.days),
            "carbs_g_per_day": float(np.nansum(run.trace.carbs_g) / protocol.days),
        }
    names = [run.patient for run in runs]
    groups = {
        g: _aggregate([n for n in names if group_of(n) == g], per_patient)
        for g in GROUPS
        if any(group_of(n) == g for n in names)
    }
    worst = max(names, key=lambda n: safety_rank_key(per_patient[n]["bg"]))
    return {
        "format": SUMMARY_FORMAT,
        "controller": controller,
        "plant": plant,
        "protocol": protocol.to_dict(),
        "versions": versions(),
        "patients": per_patient,
        "groups": groups,
        "cohort": _aggregate(names, per_patient),
        "worst_patient": {"name": worst, "rule": WORST_RULE, "bg": per_patient[worst]["bg"]},
    }


# --- text tables --------------------------------------------------------------

_COLUMNS = (
    ("TIR", "in_range_70_180", "{:5.1f}"),
    ("<70", "below_70", "{:5.1f}"),
    ("<54", "below_54", "{:5.1f}"),
    (">180", "above_180", "{:5.1f}"),
    (">250", "above_250", "{:5.1f}"),
    ("mean", "mean", "{:5.0f}"),
    ("CV", "CV", "{:5.1f}"),
    ("LBGI", "LBGI", "{:6.2f}"),
    ("HBGI", "HBGI", "{:6.2f}"),
)


_PLURAL = {"adolescent": "adolescents", "adult": "adults", "child": "children"}


def _row(label: str, metrics: dict[str, float], width: int) -> str:
    cells = [fmt.format(metrics[key]).rjust(7) for _, key, fmt in _COLUMNS]
    return label.ljust(width) + "".join(cells)


def format_tables(summary: dict[str, Any]) -> str:
    """The per-patient table, group rows and cohort summary printed by ``glucotwin trial``."""
    width = 16
    header = "patient".ljust(width) + "".join(title.rjust(7) for title, _, _ in _COLUMNS)
    lines = [
        f"controller {summary['controller']}, arm {summary['protocol']['arm']}, "
        f"{summary['protocol']['days']:g} days, sensor {summary['protocol']['sensor']}, "
        f"seed offset {summary['protocol']['seed_offset']}; true BG, % of samples",
        header,
        "-" * len(header),
    ]
    for name, patient in summary["patients"].items():
        lines.append(_row(name, patient["bg"], width))
    lines.append("-" * len(header))
    for group, agg in summary["groups"].items():
        lines.append(_row(f"{_PLURAL[group]} ({agg['n']})", agg["bg"], width))
    cohort = summary["cohort"]
    lines.append(_row(f"all ({cohort['n']})", cohort["bg"], width))
    worst = summary["worst_patient"]
    lines.append(
        f"worst patient: {worst['name']} (TIR {worst['bg']['in_range_70_180']:.1f} %, "
        f"<70 {worst['bg']['below_70']:.1f} %, <54 {worst['bg']['below_54']:.1f} %)"
    )
    cgm = cohort["cgm"]
    lines.append(
        f"cohort on CGM: TIR {cgm['in_range_70_180']:.1f} %, <70 {cgm['below_70']:.1f} %, "
        f"<54 {cgm['below_54']:.1f} %, mean {cgm['mean']:.0f} mg/dL"
    )
    return "\n".join(lines)
