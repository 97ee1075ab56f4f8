"""``glucotwin learn``'s work: resolve the profile and prior, load, fit, write."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from sim.learn.sources import is_sqlite, is_trace, load_history
from sim.learn.table import format_learned
from twin.learning.fit import TwinBase
from twin.learning.learned import LearnedTwin, learn
from twin.personalize import PopulationPrior, default_prior
from twin.profile import PatientProfile


def _simglucose_patient(path: Path) -> str | None:
    """The simglucose patient a trace is named after (``adult#001.csv``), if any."""
    from sim.trial.cohort import PATIENTS

    return path.stem if path.stem in PATIENTS else None


def profile_and_prior(path: Path, profile_path: Path | None, found: PatientProfile | None
                      ) -> tuple[PatientProfile, PopulationPrior]:
    """The person's profile and the population prior to start from.

    A simglucose patient's trace uses its clinical profile and the prior that
    leaves the patient out (DESIGN.md honesty rules); anyone else the shipped prior.
    """
    patient = _simglucose_patient(path)
    if profile_path is not None:
        from sim.forecast.replay import load_profile

        profile = load_profile(profile_path)
    elif found is not None:
        profile = found
    elif patient is not None:
        from sim.trial.cohort import clinical_profile

        profile = clinical_profile(patient)
    else:
        from sim.forecast.replay import default_profile

        profile = default_profile()  # an assumption, named in the output: "generic adult (assumed)"
    if patient is not None and profile.name == patient:
        from sim.trial.priors import population_prior

        return profile, population_prior(exclude=patient)
    return profile, default_prior()


def learn_path(path: Path, profile_path: Path | None = None, days: float = 14.0, **cgm: Any) -> LearnedTwin:
    """The twin learned from the history at ``path``; ``cgm``: ``cgm_format``, ``tz``, ``cgm_units`` for a CGM file."""
    profile = None
    if profile_path is not None or _simglucose_patient(path) is not None:
        profile, _ = profile_and_prior(path, profile_path, None)
    elif not (path.is_file() and (is_sqlite(path) or is_trace(path))):
        profile, _ = profile_and_prior(path, None, None)  # a CGM file or export: the assumed generic adult
    loaded = load_history(path, profile, **cgm)
    profile, prior = profile_and_prior(path, profile_path, loaded.profile or profile)
    return learn(TwinBase.from_profile(profile, prior), loaded.history.last_days(days))


def learn_one(path: Path, out: Path, profile_path: Path | None, days: float, quiet: bool = False,
              units: str = "mg", **cgm: Any) -> str:
    learned = learn_path(path, profile_path, days, **cgm)
    learned.save(out)
    if quiet:
        return summary_line(learned, out)
    return format_learned(learned, str(path), units) + f"\n\nwrote {out}"


def summary_line(learned: LearnedTwin, out: Path) -> str:
    f, t = learned.fit_stats, learned.therapy
    return (f"{learned.twin.profile.name:15s} sensitivity x{2.718281828 ** learned.theta['sensitivity']:.2f} "
            f"({learned.status['sensitivity']}), 6-h RMSE {f['rmse_6h_profile_mg_dl']:.1f} -> "
            f"{f['rmse_6h_mg_dl']:.1f} mg/dL, basal {t.basal_u_per_h:.2f} U/h, CR {t.cr_g_per_u:.1f} g/U -> {out}")


def _learn_job(job: tuple[Path, Path, float]) -> str:
    path, out, days = job
    return learn_one(path, out, None, days, quiet=True)


def learn_directory(directory: Path, out_dir: Path, days: float, workers: int = 1) -> list[str]:
    """One twin per trace in ``directory`` (files named after simglucose patients)."""
    traces = sorted(p for p in directory.glob("*.csv") if _simglucose_patient(p) is not None)
    if not traces:
        raise ValueError(f"{directory}: no trial traces (files named after simglucose patients)")
    jobs = [(p, out_dir / f"{p.stem}.json", days) for p in traces]
    if workers <= 1:
        return [_learn_job(j) for j in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_learn_job, jobs))
