"""A whole in-silico trial: run, write traces, simglucose's result CSVs and ``summary.json``."""

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
from sim.trial.simglucose_csv import write_simglucose_csv
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

    Writes one trace CSV per patient (named after the patient), the same run in
    simglucose's results layout (``simglucose/<patient>.csv``, :mod:`sim.trial.simglucose_csv`)
    and ``summary.json``. ``controller`` may be a built-in name, a user's ``module:attr``
    (:class:`~sim.trial.controllers.UserControllerFactory`: labelled as running without
    glucotwin's safety supervisor, described in the ``user_controller`` section) or a factory.
    The ``run`` section of the summary (wall time, workers)
    is the only part that changes between identical runs. ``engine`` runs the
    patients (``"local"``, the default, or ``"dask"``; see :func:`sim.trial.runner.run_patients`).
    """
    from sim.trial.controllers import UserControllerFactory, is_user_spec

    if isinstance(controller, str) and is_user_spec(controller):
        controller = UserControllerFactory(controller)  # imported here, from this process's directory
    if out_dir is not None:
        check_writable(out_dir)
    user = controller if isinstance(controller, UserControllerFactory) else None
    if controller_label:
        label = controller_label
    elif user is not None:
        label = user.label
    else:
        label = controller if isinstance(controller, str) else getattr(controller, "__name__", "custom")
    tic = time.perf_counter()
    runner = resolve_engine(engine, workers)
    runs = run_patients(patients, controller, protocol, workers=workers, progress=progress, engine=runner)
    wall_s = time.perf_counter() - tic
    summary = build_summary(label, protocol, runs)
    if user is not None:
        summary["user_controller"] = user.describe()
    summary["run"] = {
        "wall_s": round(wall_s, 3),
        "workers": runner.describe()["workers"],
        "engine": runner.describe(),
        "patient_wall_s": {r.patient: round(r.wall_s, 3) for r in runs},
    }
    if out_dir is not None:
        for run in runs:
            write_trace_csv(run.trace, out_dir / trace_filename(run.patient))
            if run.simglucose_history is not None:
                write_simglucose_csv(run.simglucose_history, out_dir, run.patient)
        with open(out_dir / "summary.json", "w") as handle:
            json.dump(summary, handle, indent=2)
            handle.write("\n")
    return TrialResult(summary=summary, runs=runs, out_dir=out_dir)
