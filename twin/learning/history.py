"""A person's history on a regular time grid: what the learner fits the twin to.

A history is the CGM the person saw, the insulin the pump delivered and the
carbohydrates the person recorded, put on a grid of ``step_min`` (5) minutes:

- ``cgm_mg_dl[k]``: mean of the CGM readings within half a step of the grid
  time ``k`` (NaN where there was none);
- ``insulin_u[k]``, ``carbs_g[k]``: insulin delivered (U) and carbohydrates
  recorded (g) during step ``k`` (from grid time ``k`` to ``k + 1``).

Where insulin was not recorded (a CGM-only export), ``insulin_recorded`` is
False and the grid holds the profile's programmed basal; where carbs were not
recorded, ``carbs_recorded`` is False. The learner then fits only what CGM
alone can tell (:mod:`twin.learning.fit`).

Pure numpy; readers of journals, traces and exports live in ``sim/learn``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from twin.profile import PatientProfile

STEP_MIN = 5.0
MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class History:
    """Grid-aligned CGM, insulin and carbs of one person (see the module docstring).

    ``start`` is the (timezone-aware) time of grid point 0; there are
    ``len(insulin_u)`` steps and ``len(cgm_mg_dl) == steps + 1`` grid times.
    """

    start: datetime
    step_min: float
    cgm_mg_dl: np.ndarray
    insulin_u: np.ndarray
    carbs_g: np.ndarray
    insulin_recorded: bool = True
    carbs_recorded: bool = True

    def __post_init__(self) -> None:
        if self.start.tzinfo is None:
            raise ValueError("history start must be timezone-aware")
        steps = len(self.insulin_u)
        if len(self.carbs_g) != steps or len(self.cgm_mg_dl) != steps + 1:
            raise ValueError("history arrays: need len(cgm) == len(insulin) + 1 == len(carbs) + 1")
        if steps < 1:
            raise ValueError("history needs at least one step")
        if np.any(~np.isfinite(self.insulin_u)) or np.any(self.insulin_u < 0):
            raise ValueError("insulin must be finite and non-negative")
        if np.any(~np.isfinite(self.carbs_g)) or np.any(self.carbs_g < 0):
            raise ValueError("carbs must be finite and non-negative")

    @property
    def steps(self) -> int:
        return len(self.insulin_u)

    @property
    def days(self) -> float:
        return self.steps * self.step_min / MINUTES_PER_DAY

    @property
    def readings(self) -> int:
        return int(np.count_nonzero(np.isfinite(self.cgm_mg_dl)))

    def minute_of_day(self, k: np.ndarray | int) -> np.ndarray:
        """Local-clock minute of day of grid time(s) ``k`` (the start's UTC offset)."""
        start = self.start.hour * 60 + self.start.minute + self.start.second / 60.0
        return (start + np.asarray(k, dtype=float) * self.step_min) % MINUTES_PER_DAY

    def time_at(self, k: int) -> datetime:
        return self.start + timedelta(minutes=k * self.step_min)

    def window(self, first_step: int, last_step: int) -> "History":
        """The sub-history of steps ``first_step .. last_step - 1``."""
        return History(self.time_at(first_step), self.step_min, self.cgm_mg_dl[first_step:last_step + 1].copy(),
                       self.insulin_u[first_step:last_step].copy(), self.carbs_g[first_step:last_step].copy(),
                       self.insulin_recorded, self.carbs_recorded)

    def last_days(self, days: float) -> "History":
        steps = int(round(days * MINUTES_PER_DAY / self.step_min))
        return self if steps >= self.steps else self.window(self.steps - steps, self.steps)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def build_history(
    cgm: Iterable[tuple[datetime, float]],
    insulin: Iterable[tuple[datetime, float]] | None = None,
    carbs: Iterable[tuple[datetime, float]] | None = None,
    *,
    profile: PatientProfile | None = None,
    step_min: float = STEP_MIN,
) -> History:
    """A :class:`History` from timed events.

    ``cgm``: (time, mg/dL) readings. ``insulin``: (time, U) deliveries (a
    basal rate delivered over an interval given as many small amounts, a
    bolus as one); ``None`` when not recorded: the grid then holds the
    ``profile``'s programmed basal (required in that case). ``carbs``:
    (time, g), ``None`` when not recorded. Naive times are taken as UTC.
    """
    readings = sorted((_aware(t), float(g)) for t, g in cgm if g is not None and math.isfinite(float(g)) and g > 0)
    if len(readings) < 2:
        raise ValueError("history needs at least two CGM readings")
    first, last = readings[0][0], readings[-1][0]
    start = first.replace(second=0, microsecond=0)
    start -= timedelta(minutes=start.minute % int(step_min))
    steps = max(1, int(math.ceil((last - start).total_seconds() / 60.0 / step_min)))
    sums = np.zeros(steps + 1)
    counts = np.zeros(steps + 1)
    for t, g in readings:
        k = int(round((t - start).total_seconds() / 60.0 / step_min))
        if 0 <= k <= steps:
            sums[k] += g
            counts[k] += 1
    cgm_grid = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    insulin_grid = _binned(insulin, start, steps, step_min)
    if insulin_grid is None:
        if profile is None:
            raise ValueError("without insulin records the history needs the profile's programmed basal")
        minutes = (start.hour * 60 + start.minute + np.arange(steps) * step_min) % MINUTES_PER_DAY
        insulin_grid = np.array([profile.basal_u_per_h_at(m) for m in minutes]) * step_min / 60.0
    carbs_grid = _binned(carbs, start, steps, step_min)
    return History(start, float(step_min), cgm_grid, insulin_grid,
                   carbs_grid if carbs_grid is not None else np.zeros(steps),
                   insulin_recorded=insulin is not None, carbs_recorded=carbs is not None)


def _binned(events: Iterable[tuple[datetime, float]] | None, start: datetime, steps: int,
            step_min: float) -> np.ndarray | None:
    if events is None:
        return None
    grid = np.zeros(steps)
    for t, amount in events:
        amount = float(amount)
        if not (math.isfinite(amount) and amount > 0):
            continue
        k = int(math.floor((_aware(t) - start).total_seconds() / 60.0 / step_min))
        if 0 <= k < steps:
            grid[k] += amount
    return grid

