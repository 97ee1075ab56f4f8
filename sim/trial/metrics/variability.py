"""Glucose variability: MODD and CONGA on iglu's day-by-day grid, and the J-index.

Definitions as iglu 4.3.0 computes them (irinagain/iglu at commit 33d72695,
R/modd.R, R/conga.R, R/j_index.R):

- MODD (Service & Nelson 1980), mg/dL: the mean absolute difference between
  glucose at the same time of day on days ``lag_days`` apart, over every grid
  point where both are known (:mod:`sim.trial.metrics.day_grid`).
- CONGA-n (McDonnell et al. 2005), mg/dL: the standard deviation (n - 1) of
  the differences between grid values ``n_hours`` apart, over every pair where
  both are known. The lag is ``round(60 / dt_min) * n_hours`` grid steps.
  iglu's own default is n = 24 h; glucotwin reports CONGA-1 (n = 1 h), the
  form of the original paper's CONGA1.
- J-index (Wojcicki 1995) = 0.001 × (mean + SD)², mean and SD (n - 1) of the
  samples in mg/dL. It is an index without a unit: its constant is chosen so
  that the mmol/L form (0.324 × (mean + SD)² in mmol/L) gives the same number.

Gaps are handled as iglu handles them: the grid leaves points inside an
interval longer than 45 min between samples empty, and a difference with an
empty end is left out.
"""

from __future__ import annotations

import numpy as np

from sim.trial.metrics.day_grid import DayGrid


def modd_mg_dl(grid: DayGrid, lag_days: int = 1) -> float:
    """Mean of day-to-day differences, mg/dL (iglu ``modd``); NaN when no pair is known."""
    if lag_days < 1:
        raise ValueError(f"lag_days must be >= 1, got {lag_days}")
    g = grid.glucose_mg_dl
    if g.shape[0] <= lag_days:
        return float("nan")
    d = np.abs(g[lag_days:] - g[:-lag_days])
    d = d[np.isfinite(d)]
    return float(np.mean(d)) if d.size else float("nan")


def conga_mg_dl(grid: DayGrid, n_hours: float = 1.0) -> float:
    """SD of differences ``n_hours`` apart, mg/dL (iglu ``conga``); NaN with fewer than two known pairs."""
    if not n_hours > 0:
        raise ValueError(f"n_hours must be positive, got {n_hours}")
    lag = int(round(60.0 / grid.dt_min)) * n_hours
    if lag != int(lag) or lag < 1:
        raise ValueError(f"{n_hours} h is not a whole number of {grid.dt_min:g}-min grid steps")
    lag = int(lag)
    flat = grid.glucose_mg_dl.ravel()
    if flat.size <= lag:
        return float("nan")
    d = flat[lag:] - flat[:-lag]
    d = d[np.isfinite(d)]
    return float(np.std(d, ddof=1)) if d.size > 1 else float("nan")


def j_index(glucose_mg_dl: np.ndarray) -> float:
    """0.001 × (mean + SD)² of the finite samples (mg/dL in, unitless out); NaN with fewer than two."""
    g = np.asarray(glucose_mg_dl, dtype=float)
    g = g[np.isfinite(g)]
    if g.size < 2:
        return float("nan")
    return float(0.001 * (np.mean(g) + np.std(g, ddof=1)) ** 2)
