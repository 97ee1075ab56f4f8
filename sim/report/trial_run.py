"""A trial or HIL output directory read back (TrialRun, load_trial_run), and its patients' groups."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.report.errors import ReportError
from sim.trial.metrics import METRIC_NAMES, glucose_metrics, mean_metrics, minutes_since_midnight
from sim.trial.trace import Trace, read_trace_csv, trace_filename

GROUP_ORDER = ("adolescent", "adult", "child")
_PLURAL = {"adolescent": "adolescents", "adult": "adults", "child": "children"}


def _group_of(patient: str, info: Mapping[str, Any] | None = None) -> str:
    if info and info.get("group"):
        return str(info["group"])
    return patient.split("#")[0]


def _floats(metrics: Any) -> dict[str, float]:
    """A summary's metrics as floats: null (a metric the data did not allow) is NaN; not a dict: {}."""
    if not isinstance(metrics, dict):
        return {}
    return {k: float("nan") if v is None else v for k, v in metrics.items()}


@dataclass
class TrialRun:
    """A trial or HIL output directory, read back."""

    directory: Path
    summary: dict[str, Any]
    traces: dict[str, Trace] = field(default_factory=dict)
    missing_traces: list[str] = field(default_factory=list)
    label: str = ""
    _computed: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict, repr=False)

    @property
    def patients(self) -> list[str]:
        return list(self.summary.get("patients", {}))

    def groups(self) -> list[str]:
        present = {_group_of(p, self.summary["patients"][p]) for p in self.patients}
        return [g for g in GROUP_ORDER if g in present] + sorted(present - set(GROUP_ORDER))

    def patients_in(self, group: str) -> list[str]:
        return [p for p in self.patients if _group_of(p, self.summary["patients"][p]) == group]

    def metrics(self, patient: str, kind: str = "bg") -> dict[str, float]:
        """The patient's metrics from summary.json; those it lacks (a summary written before them)
        computed from the trace, NaN without one."""
        found = _floats(self.summary["patients"][patient].get(kind))
        if all(name in found for name in METRIC_NAMES):
            return found
        if (patient, kind) not in self._computed:
            trace = self.traces.get(patient)
            if trace is None:
                computed = glucose_metrics(np.array([]))
            else:
                g = trace.bg_mg_dl if kind == "bg" else trace.cgm_mg_dl
                computed = glucose_metrics(g, minutes_since_midnight(trace.time))
            self._computed[(patient, kind)] = {**computed, **found}
        return self._computed[(patient, kind)]

    def group_metrics(self, group: str | None, kind: str = "bg") -> dict[str, float]:
        """Mean over the group's patients (None: the cohort), as summary.json's group rows."""
        agg = self.summary.get("cohort") if group is None else self.summary.get("groups", {}).get(group)
        found = _floats(agg.get(kind) if isinstance(agg, dict) else None)
        if all(n in found for n in METRIC_NAMES):
            return found
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
