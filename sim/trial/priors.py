"""Population priors for the twin, from simglucose's 30 virtual patients.

For a trial of patient P the prior leaves P out (DESIGN.md honesty rules):
the typical parameters of P's age group and the sensitivity regression are
computed from the other 29 patients only. The prior shipped for real people
(``twin/data/population_prior.json``) uses all 30; regenerate it with
``python -m sim.trial.priors``.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path

import numpy as np

from sim.trial.cohort import PATIENTS, clinical_profile, group_of, simulator_parameters
from twin.model_params import ModelParams, initial_states_from_mappings
from twin.personalize import DERIVED, GroupPrior, PopulationPrior, insulin_drop_mg_dl

_SHIPPED = Path(__file__).resolve().parent.parent / "twin" / "data" / "population_prior.json"


@functools.lru_cache(maxsize=1)
def _cohort() -> tuple[list[dict], np.ndarray]:
    """Simulator rows and true 1-U nadir drops (mg/dL) of the 30 patients."""
    rows = [simulator_parameters(p).to_dict() for p in PATIENTS]
    params = ModelParams.from_mappings(rows)
    drops = insulin_drop_mg_dl(params, initial_states_from_mappings(rows))
    return rows, drops


def population_prior(exclude: str | None = None) -> PopulationPrior:
    """Prior from the cohort without ``exclude`` (None: all 30 patients)."""
    rows, drops = _cohort()
    keep = [i for i, p in enumerate(PATIENTS) if p != exclude]
    groups = {}
    intercept_columns = {}
    for group in ("child", "adolescent", "adult"):
        members = [i for i in keep if group_of(PATIENTS[i]) == group]
        params = {
            name: float(np.median([rows[i][name] for i in members]))
            for name in ModelParams.__dataclass_fields__
            if name not in DERIVED
        }
        groups[group] = dict(
            params=params,
            basal_glucose_mg_dl=float(np.median([rows[i]["Gb"] for i in members])),
            basal_egp_mg_per_kg_min=float(np.median([rows[i]["EGPb"] for i in members])),
        )
        intercept_columns[group] = members
    # ln(drop) = a_group + b ln(CF) + c ln(TDI), least squares over the kept patients
    design, target = [], []
    for i in keep:
        profile = clinical_profile(PATIENTS[i])
        onehot = [1.0 if i in intercept_columns[g] else 0.0 for g in ("child", "adolescent", "adult")]
        design.append(onehot + [math.log(profile.correction_factor_mg_dl_per_u), math.log(profile.total_daily_insulin_u)])
        target.append(math.log(drops[i]))
    coef, *_ = np.linalg.lstsq(np.array(design), np.array(target), rcond=None)
    return PopulationPrior(
        source="simglucose 0.2.11 virtual cohort (UVA/Padova 2008), medians by age group"
        + (f", leaving out {exclude}" if exclude else ", all 30 patients"),
        groups={
            g: GroupPrior(log_drop_intercept=float(coef[k]), **groups[g])
            for k, g in enumerate(("child", "adolescent", "adult"))
        },
        log_cf=float(coef[3]),
        log_tdi=float(coef[4]),
        excluded=(exclude,) if exclude else (),
    )


def main(argv: list[str] | None = None) -> int:
    out = Path(argv[0]) if argv else _SHIPPED
    out.write_text(json.dumps(population_prior().to_dict(), indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
