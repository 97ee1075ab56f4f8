"""Glucose metrics of a trace: the consensus set and the metrics people compare with.

:func:`glucose_metrics` returns one flat dict of floats (:data:`METRIC_NAMES`),
computed on true blood glucose and, separately, on CGM:

- consensus (Battelino et al. 2019; :mod:`.consensus`): ``in_range_70_180``,
  ``below_70``, ``below_54``, ``above_180``, ``above_250`` (% of samples),
  ``mean``, ``SD`` (mg/dL), ``CV``, ``GMI`` (%), ``LBGI``, ``HBGI``; these
  names predate the rule that names carry their unit and are kept, as iglu
  spells them, for every summary already written;
- ``in_tight_range_70_140_pct``: time in tight range, % of samples in 70-140 mg/dL;
- ``gri``, ``gri_hypo_pct``, ``gri_hyper_pct``: the Glycemia Risk Index (a
  0-100 score) and its components (:mod:`.gri`; zone A-E from :func:`gri_zone`);
- ``j_index``: 0.001 × (mean + SD)², a unitless index (:mod:`.variability`);
- ``mage_mg_dl`` (iglu's moving-average MAGE, :mod:`.mage`), ``modd_mg_dl`` and
  ``conga_1h_mg_dl`` (:mod:`.variability`): these need the sample times and are
  computed on iglu's interpolated grid (:mod:`.day_grid`); absent without times.

Every metric is checked against iglu's published values on its example data
(tests/test_metrics_iglu.py). :mod:`.units` converts for presentation only.
"""

from __future__ import annotations

import numpy as np

from sim.trial.metrics.consensus import (
    CONSENSUS_NAMES,
    consensus_metrics,
    finite_samples,
    risk_components,
    risk_f,
    safety_rank_key,
    time_in_tight_range_pct,
)
from sim.trial.metrics.day_grid import DayGrid, day_grid, minutes_since_midnight
from sim.trial.metrics.gri import gri_metrics, gri_zone
from sim.trial.metrics.mage import mage_mg_dl
from sim.trial.metrics.variability import conga_mg_dl, j_index, modd_mg_dl

SAMPLE_NAMES = ("in_tight_range_70_140_pct", "gri", "gri_hypo_pct", "gri_hyper_pct", "j_index")
TIMED_NAMES = ("mage_mg_dl", "modd_mg_dl", "conga_1h_mg_dl")
METRIC_NAMES = CONSENSUS_NAMES + SAMPLE_NAMES + TIMED_NAMES

__all__ = [
    "CONSENSUS_NAMES",
    "METRIC_NAMES",
    "SAMPLE_NAMES",
    "TIMED_NAMES",
    "DayGrid",
    "conga_mg_dl",
    "consensus_metrics",
    "day_grid",
    "finite_samples",
    "glucose_metrics",
    "gri_metrics",
    "gri_zone",
    "j_index",
    "mage_mg_dl",
    "mean_metrics",
    "minutes_since_midnight",
    "modd_mg_dl",
    "risk_components",
    "risk_f",
    "safety_rank_key",
    "time_in_tight_range_pct",
    "timed_metrics",
]


def timed_metrics(glucose_mg_dl: np.ndarray, time_min: np.ndarray) -> dict[str, float]:
    """MAGE, MODD and CONGA-1 (mg/dL) of samples at ``time_min`` (minutes since a local midnight).

    NaN where the data do not allow them: fewer than two samples, sampling
    sparser than 45 min, no two days (MODD), too short for MAGE.
    """
    g = np.asarray(glucose_mg_dl, dtype=float)
    t = np.asarray(time_min, dtype=float)
    if t.shape != g.shape:
        raise ValueError(f"time_min and glucose_mg_dl differ in shape: {t.shape} and {g.shape}")
    out = {name: float("nan") for name in TIMED_NAMES}
    try:
        grid = day_grid(t, g)
    except ValueError:  # too few samples, or too sparse for the grid
        return out
    out["modd_mg_dl"] = modd_mg_dl(grid)
    out["conga_1h_mg_dl"] = conga_mg_dl(grid, n_hours=1)
    out["mage_mg_dl"] = mage_mg_dl(t, g)
    return out


def glucose_metrics(glucose_mg_dl: np.ndarray, time_min: np.ndarray | None = None) -> dict[str, float]:
    """The metrics of a glucose series (mg/dL); non-finite samples are ignored.

    Without ``time_min``: the metrics of the samples alone (consensus set,
    tight range, GRI, J-index). With ``time_min``, the samples' times in
    minutes since a local midnight (:func:`minutes_since_midnight`), same
    length: every metric of :data:`METRIC_NAMES`, the time-gridded ones
    (MAGE, MODD, CONGA) NaN where the data do not allow them.
    """
    out = consensus_metrics(glucose_mg_dl)
    out["in_tight_range_70_140_pct"] = time_in_tight_range_pct(glucose_mg_dl)
    out.update(gri_metrics(out))
    out["j_index"] = j_index(glucose_mg_dl)
    if time_min is not None:
        out.update(timed_metrics(glucose_mg_dl, time_min))
    return out


def mean_metrics(per_patient: list[dict[str, float]]) -> dict[str, float]:
    """Mean of each metric over patients (the cohort and group rows of BENCHMARK.md)."""
    if not per_patient:
        return {name: float("nan") for name in METRIC_NAMES}
    return {name: float(np.mean([m.get(name, float("nan")) for m in per_patient])) for name in per_patient[0]}
