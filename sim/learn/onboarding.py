"""The onboarding arm: days under the person's prior therapy, learned, then the trial with the learned twin.

``glucotwin trial --learn-days N`` runs, per patient:

1. **history**: N days under simglucose's basal-bolus controller with the
   clinical profile (the person's therapy before the loop), HCL, meals and
   CGM noise from seeds ``k + seed offset + HISTORY_SEED_OFFSET`` (never the
   trial's own seeds), the trial's sensor and physiology;
2. **learn**: ``glucotwin learn`` on that history (the last N days);
3. **trial**: the trial's protocol with glucotwin on the learned twin.

It writes ``history/`` (the traces), ``twins/`` (one twin.json per patient)
and ``learning.json`` (per patient: the fit, and parameter recovery against
the simulator's true values, validation only) beside the trial's results.
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from sim.trial.protocol import TrialProtocol

HISTORY_SEED_OFFSET = 9000


def history_protocol(protocol: TrialProtocol, days: float) -> TrialProtocol:
    return dataclasses.replace(protocol, arm="hcl", days=days, seed_offset=protocol.seed_offset + HISTORY_SEED_OFFSET,
                               carb_announcement_factor=1.0, meal_delay_min=0.0)


def _learn_patient(job: tuple[str, str, str, float]) -> dict[str, Any]:
    patient, trace, out, days = job
    from sim.learn.recovery import recovery
    from sim.learn.run import learn_path
    from sim.trial.cohort import clinical_profile
    from sim.trial.priors import population_prior
    from twin.personalize import personalize

    learned = learn_path(Path(trace), None, days)
    learned.save(out)
    profile = clinical_profile(patient)
    profile_twin = personalize(profile, population_prior(exclude=patient))
    return {"patient": patient, "fit": learned.fit_stats,
            "parameters": {n: {"factor": round(2.718281828459045 ** v, 3), "sd": round(learned.sd[n], 3),
                               "status": learned.status[n]} for n, v in learned.theta.items()},
            "therapy": {"learned": learned.therapy.to_dict(), "profile": learned.profile_therapy.to_dict()},
            "dosing_factors": {n: round(2.718281828459045 ** v, 3) for n, v in learned.dosing_theta.items()},
            "recovery": recovery(patient, profile_twin, learned.twin, learned.dosing_twin)}


def entry_from_file(patient: str, path: Path) -> dict[str, Any]:
    """A ``learning.json`` entry from a twin.json (no recovery: that needs the simulator's truth)."""
    data = json.loads(path.read_text())
    return {"patient": patient, "fit": data["fit"],
            "parameters": {p["name"]: {"factor": p["factor"], "sd": p["sd"], "status": p["status"]}
                           for p in data["parameters"]},
            "therapy": data["therapy"], "dosing_factors": data.get("dosing", {}).get("factors", {})}


def write_learning_of_twins(out_dir: Path, twin_dir: Path, patients: list[str]) -> None:
    """``learning.json`` for a trial run with ``--twin DIR`` (the report's "Learned twins" section)."""
    with open(out_dir / "learning.json", "w") as handle:
        json.dump({"twin_dir": str(twin_dir),
                   "patients": [entry_from_file(p, twin_dir / f"{p}.json") for p in patients]}, handle, indent=1)
        handle.write("\n")


def learn_histories(patients: list[str], history_dir: Path, twin_dir: Path, days: float,
                    workers: int | None = None) -> list[dict[str, Any]]:
    twin_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(p, str(history_dir / f"{p}.csv"), str(twin_dir / f"{p}.json"), days) for p in patients]
    if (workers or 1) <= 1:
        return [_learn_patient(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_learn_patient, jobs))


def run_onboarding(patients: list[str], protocol: TrialProtocol, days: float, out_dir: Path,
                   workers: int | None = None, progress: bool = True):
    """History, learning and the trial (module docstring); returns the trial's result."""
    from sim.trial.controllers import LearnedTwinMPC
    from sim.trial.run import run_trial

    history_dir, twin_dir = out_dir / "history", out_dir / "twins"
    history_dir.mkdir(parents=True, exist_ok=True)
    run_trial("bb", patients, history_protocol(protocol, days), out_dir=history_dir, workers=workers,
              progress=progress)
    learning = learn_histories(patients, history_dir, twin_dir, days, workers)
    with open(out_dir / "learning.json", "w") as handle:
        json.dump({"history_days": days, "history_seed_offset": protocol.seed_offset + HISTORY_SEED_OFFSET,
                   "history_controller": "bb", "patients": learning}, handle, indent=1)
        handle.write("\n")
    return run_trial(LearnedTwinMPC(str(twin_dir)), patients, protocol, out_dir=out_dir, workers=workers,
                     progress=progress, controller_label="mpc-learned")
