"""Glucose interpolated onto a day-by-day time grid, as iglu's ``CGMS2DayByDay`` does.

MODD, CONGA and MAGE compare glucose at fixed time offsets, so they need
values on an even grid. This module reproduces iglu 4.3.0's
``CGMS2DayByDay`` (irinagain/iglu, R/utils.R at commit 33d72695):

1. Non-finite samples are dropped; samples are sorted by time; of samples at
   exactly the same time only the last is kept.
2. The grid step ``dt_min`` is, unless given, the median interval between
   samples rounded to whole minutes. If 1440 is not a multiple of it, a step
   above 20 min becomes 20 min and a smaller one is rounded to a multiple of
   5 min. A step above ``inter_gap_min`` is refused (``ValueError``).
3. The grid starts ``dt_min`` after the midnight that opens the first
   sample's day and spans ``ndays = ceil(span in days + 1)`` whole days, so
   row ``d`` of the result holds day ``d`` and column ``j`` the time of day
   ``(j + 1) * dt_min``.
4. Glucose is interpolated linearly between samples; grid points before the
   first or after the last sample are NaN (no extrapolation), and so are the
   points strictly inside any interval between samples longer than
   ``inter_gap_min`` (default 45 min): gaps are left empty, never bridged.

Times are minutes since a local midnight (see :func:`minutes_since_midnight`):
iglu places the grid at multiples of ``dt_min`` from local midnight, so the
time of day matters only modulo the grid step. Across a daylight-saving change
the grid follows elapsed time, as iglu's does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

MIN_PER_DAY = 1440.0
INTER_GAP_MIN = 45.0
"""iglu's default longest interval (minutes) that is interpolated across."""


def minutes_since_midnight(times: Sequence[datetime]) -> np.ndarray:
    """Minutes from the midnight that opens the first time's day to each time.

    Naive times are read as local wall-clock times; aware times are compared
    as instants, from midnight in the first time's own zone (convert them to
    the zone whose days you mean first).
    """
    if len(times) == 0:
        return np.array([], dtype=float)
    first = times[0]
    midnight = first.replace(hour=0, minute=0, second=0, microsecond=0)
    return np.array([(t - midnight).total_seconds() / 60.0 for t in times], dtype=float)


@dataclass(frozen=True)
class DayGrid:
    """Glucose on an even grid: ``glucose_mg_dl[day, j]`` at ``day_start_min + day * 1440 + (j + 1) * dt_min``."""

    glucose_mg_dl: np.ndarray
    dt_min: float
    day_start_min: float

    @property
    def time_min(self) -> np.ndarray:
        """The grid times (minutes, on the input's clock), same shape as ``glucose_mg_dl``."""
        days, per_day = self.glucose_mg_dl.shape
        flat = self.day_start_min + self.dt_min * np.arange(1, days * per_day + 1)
        return flat.reshape(days, per_day)


def _clean(time_min: np.ndarray, glucose_mg_dl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite samples in time order, the last of any samples at the same time."""
    t = np.asarray(time_min, dtype=float)
    g = np.asarray(glucose_mg_dl, dtype=float)
    if t.shape != g.shape:
        raise ValueError(f"time_min and glucose_mg_dl differ in shape: {t.shape} and {g.shape}")
    ok = np.isfinite(t) & np.isfinite(g)
    t, g = t[ok], g[ok]
    order = np.argsort(t, kind="stable")
    t, g = t[order], g[order]
    if t.size > 1:
        keep = np.append(np.diff(t) != 0, True)  # of equal times, keep the last
        t, g = t[keep], g[keep]
    return t, g


def grid_step_min(intervals_min: np.ndarray) -> float:
    """iglu's grid step for these sampling intervals: their median rounded, then fitted to whole days."""
    dt = float(np.round(np.median(intervals_min)))  # R's round: half to even, as numpy's
    if dt <= 0:
        raise ValueError("samples less than 30 s apart: no grid step in whole minutes")
    if MIN_PER_DAY % dt != 0:
        if dt > 20:
            dt = 20.0
        else:
            remainder = dt % 5
            dt = dt + 5 - remainder if remainder > 2 else dt - remainder
    return dt


def day_grid(time_min: np.ndarray, glucose_mg_dl: np.ndarray, dt_min: float | None = None,
             inter_gap_min: float = INTER_GAP_MIN) -> DayGrid:
    """Interpolate glucose (mg/dL) sampled at ``time_min`` onto iglu's day-by-day grid.

    Raises ``ValueError`` with fewer than two finite samples or when the grid
    step exceeds ``inter_gap_min``.
    """
    t, g = _clean(time_min, glucose_mg_dl)
    if t.size < 2:
        raise ValueError(f"{t.size} finite sample(s): at least 2 are needed for a time grid")
    intervals = np.diff(t)
    dt = float(dt_min) if dt_min is not None else grid_step_min(intervals)
    if not dt > 0 or MIN_PER_DAY % dt != 0:
        raise ValueError(f"grid step must divide a day (1440 min), got {dt_min!r}")
    if dt > inter_gap_min:
        raise ValueError(f"measurement interval {dt:g} min is above the longest interpolated gap, {inter_gap_min:g} min")
    days = math.ceil((t[-1] - t[0]) / MIN_PER_DAY + 1)
    per_day = int(round(MIN_PER_DAY / dt))
    day_start = math.floor(t[0] / MIN_PER_DAY) * MIN_PER_DAY
    grid_t = day_start + dt * np.arange(1, days * per_day + 1)
    values = np.interp(grid_t, t, g, left=np.nan, right=np.nan)
    for i in np.nonzero(intervals > inter_gap_min)[0]:
        values[(grid_t > t[i]) & (grid_t < t[i + 1])] = np.nan
    return DayGrid(values.reshape(days, per_day), dt, day_start)
