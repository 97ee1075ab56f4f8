"""``summary.json`` of a trial: protocol, versions, per-patient metrics, aggregates."""

from __future__ import annotations

import math
import platform
from importlib import metadata
from typing import Any

import numpy as np

from sim.trial.cohort import GROUPS, group_of
from sim.trial.metrics import glucose_metrics, mean_metrics, minutes_since_midnight, safety_rank_key
from sim.trial.metrics.gri import ZONES, gri_zone
from sim.trial.metrics.units import GlucoseUnits, glucose_units, metric_in_units
from sim.trial.protocol import TrialProtocol
from sim.trial.runner import PatientRun
from sim.trial.trace import Trace

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


def finite_or_none(metrics: dict[str, float]) -> dict[str, float | None]:
    """Metrics for JSON: a metric the data do not allow (NaN, e.g. MODD of a run shorter than a day) is null."""
    return {k: (v if math.isfinite(v) else None) for k, v in metrics.items()}


def trace_metrics(trace: Trace) -> dict[str, dict[str, float]]:
    """Every metric of a trace on true BG and on CGM, the time-gridded ones on the trace's clock."""
    time_min = minutes_since_midnight(trace.time)
    return {"bg": glucose_metrics(trace.bg_mg_dl, time_min), "cgm": glucose_metrics(trace.cgm_mg_dl, time_min)}


def _zone_counts(names: list[str], per_patient: dict[str, dict[str, Any]], kind: str) -> dict[str, int]:
    zones = [per_patient[n]["gri_zone"][kind] for n in names]
    return {z: zones.count(z) for z in ZONES}


def _aggregate(names: list[str], per_patient: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "n": len(names),
        "patients": names,
        "bg": finite_or_none(mean_metrics([per_patient[n]["bg"] for n in names])),
        "cgm": finite_or_none(mean_metrics([per_patient[n]["cgm"] for n in names])),
        "gri_zone_patients": {kind: _zone_counts(names, per_patient, kind) for kind in ("bg", "cgm")},
    }


def build_summary(
    controller: str,
    protocol: TrialProtocol,
    runs: list[PatientRun],
    plant: str = "simglucose 0.2.11 T1DPatient (UVA/Padova 2008)",
) -> dict[str, Any]:
    """Everything needed to read and rerun the result; deterministic for given inputs.

    Metrics (:mod:`sim.trial.metrics`, mg/dL) per patient on true BG and on CGM,
    with the GRI zone of each; group and cohort rows are means over patients,
    with the number of patients in each GRI zone. A metric the data do not
    allow is null (the mean over patients too, when one of them is).
    """
    per_patient: dict[str, dict[str, Any]] = {}
    for run in runs:
        metrics = trace_metrics(run.trace)
        per_patient[run.patient] = {
            "group": group_of(run.patient),
            "seed": run.seed,
            "samples": len(run.trace),
            "sample_min": run.trace.sample_min,
            "bg": metrics["bg"],
            "cgm": metrics["cgm"],
            "gri_zone": {kind: gri_zone(metrics[kind]["gri"]) for kind in ("bg", "cgm")},
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
    cohort = _aggregate(names, per_patient)
    for info in per_patient.values():
        info["bg"], info["cgm"] = finite_or_none(info["bg"]), finite_or_none(info["cgm"])
    return {
        "format": SUMMARY_FORMAT,
        "controller": controller,
        "plant": plant,
        "protocol": protocol.to_dict(),
        "versions": versions(),
        "patients": per_patient,
        "groups": groups,
        "cohort": cohort,
        "worst_patient": {"name": worst, "rule": WORST_RULE, "bg": per_patient[worst]["bg"]},
    }


# --- text tables --------------------------------------------------------------

_PLURAL = {"adolescent": "adolescents", "adult": "adults", "child": "children"}
_WIDTH = 16
_CELL = 7


def _range_columns(u: GlucoseUnits) -> tuple[tuple[str, str, str], ...]:
    """(title, metric, format) of the main table; thresholds written in ``u``."""
    t = u.threshold
    return (
        ("TIR", "in_range_70_180", ".1f"),
        (f"<{t(70)}", "below_70", ".1f"),
        (f"<{t(54)}", "below_54", ".1f"),
        (f">{t(180)}", "above_180", ".1f"),
        (f">{t(250)}", "above_250", ".1f"),
        ("TITR", "in_tight_range_70_140_pct", ".1f"),
        ("mean", "mean", u.spec),
        ("CV", "CV", ".1f"),
        ("LBGI", "LBGI", ".2f"),
        ("HBGI", "HBGI", ".2f"),
        ("GRI", "gri", ".1f"),
    )


def _variability_columns(u: GlucoseUnits) -> tuple[tuple[str, str, str], ...]:
    return (
        ("GRI hypo", "gri_hypo_pct", ".2f"),
        ("GRI hyper", "gri_hyper_pct", ".2f"),
        ("MAGE", "mage_mg_dl", u.fine_spec),
        ("MODD", "modd_mg_dl", u.fine_spec),
        ("CONGA1", "conga_1h_mg_dl", u.fine_spec),
        ("J-index", "j_index", ".1f"),
    )


def _value(metrics: dict[str, Any], key: str) -> float:
    """A metric of a summary as a float: NaN when absent (an older summary) or null (not computable)."""
    value = metrics.get(key)
    return float("nan") if value is None else float(value)


def _cell(key: str, metrics: dict[str, float], spec: str, u: GlucoseUnits, width: int) -> str:
    value = metric_in_units(key, _value(metrics, key), u)
    return format(value, spec).rjust(width)


def _row(label: str, metrics: dict[str, float], columns, u: GlucoseUnits, zone: str | None, width: int) -> str:
    cells = "".join(_cell(key, metrics, spec, u, width) for _, key, spec in columns)
    return label.ljust(_WIDTH) + cells + ("" if zone is None else f"  {zone or '-'}")


def _table(summary: dict[str, Any], columns, u: GlucoseUnits, width: int, zones: bool) -> list[str]:
    """Per-patient rows, then group and cohort rows (means over patients), true BG."""
    header = "patient".ljust(_WIDTH) + "".join(title.rjust(width) for title, _, _ in columns)
    header += "  zone" if zones else ""
    lines = [header, "-" * len(header)]
    for name, patient in summary["patients"].items():
        zone = patient.get("gri_zone", {}).get("bg", gri_zone(_value(patient["bg"], "gri"))) if zones else None
        lines.append(_row(name, patient["bg"], columns, u, zone, width))
    lines.append("-" * len(header))
    aggregates = [(f"{_PLURAL.get(g, g)} ({agg['n']})", agg) for g, agg in summary["groups"].items()]
    aggregates.append((f"all ({summary['cohort']['n']})", summary["cohort"]))
    for label, agg in aggregates:
        lines.append(_row(label, agg["bg"], columns, u, None, width))
    return lines


def format_tables(summary: dict[str, Any], units: str | GlucoseUnits | None = "mg") -> str:
    """The tables printed by ``glucotwin trial``: time in ranges and risk per patient, group and cohort,
    then glycemic variability; glucose values in ``units`` ("mg" for mg/dL, "mmol" for mmol/L)."""
    u = glucose_units(units)
    proto = summary["protocol"]
    lines = [
        f"controller {summary['controller']}, arm {proto['arm']}, "
        f"{proto['days']:g} days, sensor {proto['sensor']}, "
        f"seed offset {proto['seed_offset']}; true BG, % of samples, glucose in {u.label}",
    ]
    lines += _table(summary, _range_columns(u), u, _CELL, zones=True)
    cohort = summary["cohort"]
    worst = summary["worst_patient"]
    lines.append(
        f"worst patient: {worst['name']} (TIR {worst['bg']['in_range_70_180']:.1f} %, "
        f"<{u.threshold(70)} {worst['bg']['below_70']:.1f} %, <{u.threshold(54)} {worst['bg']['below_54']:.1f} %)"
    )
    cgm = cohort["cgm"]
    lines.append(
        f"cohort on CGM: TIR {cgm['in_range_70_180']:.1f} %, <{u.threshold(70)} {cgm['below_70']:.1f} %, "
        f"<{u.threshold(54)} {cgm['below_54']:.1f} %, mean {format(u.value(_value(cgm, 'mean')), u.spec)} {u.label}"
        + (f", GRI {_value(cgm, 'gri'):.1f}" if "gri" in cgm else "")
    )
    zones = cohort.get("gri_zone_patients", {}).get("bg")
    lines.append(f"TITR: time in tight range {u.threshold(70)}-{u.threshold(140)}; GRI: Glycemia Risk Index, "
                 "0-100, zone A (best) to E" + (": patients per zone " + ", ".join(f"{z} {n}" for z, n in zones.items())
                                                if zones else ""))
    lines.append("")
    lines.append(f"glycemic variability (true BG; MAGE, MODD, CONGA1 in {u.label} on iglu's interpolated grid; "
                 "GRI hypo/hyper components in %)")
    lines += _table(summary, _variability_columns(u), u, 10, zones=False)
    return "\n".join(lines)
