"""A trial or HIL output directory read back (TrialRun, load_trial_run), and its patients' groups."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.report.errors import ReportError
from sim.trial.metrics import glucose_metrics, mean_metrics
from sim.trial.trace import Trace, read_trace_csv, trace_filename

GROUP_ORDER = ("adolescent", "adult", "child")
_PLURAL = {"adolescent": "adolescents", "adult": "adults", "child": "children"}


def _group_of(patient: str, info: Mapping[str, Any] | None = None) -> str:
    if info and info.get("group"):
        return str(info["group"])
    return patient.split("#")[0]


@dataclass
class TrialRun:
    """A trial or HIL output directory, read back."""

    directory: Path
    summary: dict[str, Any]
    traces: dict[str, Trace] = field(default_factory=dict)
    missing_traces: list[str] = field(default_factory=list)
    label: str = ""

    @property
    def patients(self) -> list[str]:
        return list(self.summary.get("patients", {}))

    def groups(self) -> list[str]:
        present = {_group_of(p, self.summary["patients"][p]) for p in self.patients}
        return [g for g in GROUP_ORDER if g in present] + sorted(present - set(GROUP_ORDER))

    def patients_in(self, group: str) -> list[str]:
        return [p for p in self.patients if _group_of(p, self.summary["patients"][p]) == group]

    def metrics(self, patient: str, kind: str = "bg") -> dict[str, float]:
        """The patient's metrics from summary.json; computed from the trace if absent."""
        found = self.summary["patients"][patient].get(kind)
        if isinstance(found, dict) and "in_range_70_180" in found:
            return found
        trace = self.traces.get(patient)
        if trace is None:
            return glucose_metrics(np.array([]))
        return glucose_metrics(trace.bg_mg_dl if kind == "bg" else trace.cgm_mg_dl)

    def group_metrics(self, group: str | None, kind: str = "bg") -> dict[str, float]:
        """Mean over the group's patients (None: the cohort), as summary.json's group rows."""
        agg = self.summary.get("cohort") if group is None else self.summary.get("groups", {}).get(group)
        if isinstance(agg, dict) and isinstance(agg.get(kind), dict) and "in_range_70_180" in agg[kind]:
            return agg[kind]
        names = self.patients if group is None else self.patients_in(group)
        return mean_metrics([self.metrics(p, kind) for p in names])

    def mean_of(self, key: str, group: str | None = None) -> float:
        names = self.patients if group is None else self.patients_in(group)
        vals = [float(self.summary["patients"][p].get(key, float("nan"))) for p in names]
        return float(np.mean(vals)) if vals else float("nan")


def _run_label(summary: Mapping[str, Any]) -> str:
    controller = str(summary.get("controller", "?"))
    short = controller.split(" ")[0]
    if "HIL" in controller:
        short += "-HIL"
    arm = str(summary.get("protocol", {}).get("arm", "")).upper()
    return f"{short} {arm}".strip()


def load_trial_run(directory: str | Path) -> TrialRun:
    """Read ``summary.json`` and the trace CSVs of a trial or HIL output directory."""
    directory = Path(directory)
    path = directory / "summary.json"
    try:
        with open(path, encoding="utf-8") as handle:
            summary = json.load(handle)
    except FileNotFoundError:
        raise ReportError(f"{directory}: no summary.json (not a trial or HIL output directory)") from None
    except OSError as exc:
        raise ReportError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(summary, dict) or not isinstance(summary.get("patients"), dict) or not summary["patients"]:
        raise ReportError(f"{path}: not a glucotwin trial summary (no patients)")
    run = TrialRun(directory=directory, summary=summary, label=_run_label(summary))
    for patient in summary["patients"]:
        trace_path = directory / trace_filename(patient)
        try:
            run.traces[patient] = read_trace_csv(trace_path, patient=patient)
        except (OSError, ValueError, IndexError):
            run.missing_traces.append(patient)
    return run
