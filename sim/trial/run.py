"""A whole in-silico trial: run, write traces and ``summary.json``."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.trial.baselines import ControllerFactory
from sim.trial.protocol import TrialProtocol
from sim.engine import Engine, resolve_engine
from sim.trial.runner import PatientRun, check_writable, run_patients
from sim.trial.summary import build_summary
from sim.trial.trace import trace_filename, write_trace_csv


@dataclass
class TrialResult:
    summary: dict[str, Any]
    runs: list[PatientRun]
    out_dir: Path | None


def run_trial(
    controller: str | ControllerFactory,
    patients: list[str],
    protocol: TrialProtocol,
    out_dir: Path | None = None,
    workers: int | None = None,
    progress: bool = True,
    controller_label: str | None = None,
    engine: str | Engine | None = None,
) -> TrialResult:
    """Run ``controller`` on ``patients`` and, with ``out_dir``, write the results there.

    Writes one trace CSV per patient (named after the patient) and
    ``summary.json``. The ``run`` section of the summary (wall time, workers)
    is the only part that changes between identical runs. ``engine`` runs the
    patients (``"local"``, the default, or ``"dask"``; see :func:`sim.trial.runner.run_patients`).
    """
    if out_dir is not None:
        check_writable(out_dir)
    label = controller_label or (controller if isinstance(controller, str) else getattr(controller, "__name__", "custom"))
    tic = time.perf_counter()
    runner = resolve_engine(engine, workers)
    runs = run_patients(patients, controller, protocol, workers=workers, progress=progress, engine=runner)
    wall_s = time.perf_counter() - tic
    summary = build_summary(label, protocol, runs)
    summary["run"] = {
        "wall_s": round(wall_s, 3),
        "workers": runner.describe()["workers"],
        "engine": runner.describe(),
        "patient_wall_s": {r.patient: round(r.wall_s, 3) for r in runs},
    }
    if out_dir is not None:
        for run in runs:
            write_trace_csv(run.trace, out_dir / trace_filename(run.patient))
        with open(out_dir / "summary.json", "w") as handle:
            json.dump(summary, handle, indent=2)
            handle.write("\n")
    return TrialResult(summary=summary, runs=runs, out_dir=out_dir)
