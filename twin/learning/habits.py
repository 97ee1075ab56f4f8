"""A person's usual meals, from the carbs they recorded: a prior for meals they do not announce.

Recorded carbs (entries within 30 minutes make one meal; meals of at least
:data:`MIN_MEAL_G` g) are grouped by time of day: the peaks of the circular
kernel density of meal times (Gaussian, :data:`BANDWIDTH_MIN` = 40 min; peaks
of at least a fifth of the highest) are the usual times, and each meal joins
the nearest peak. Each group with meals on at least a third of the days is a habit:
its median time, the spread of its times (interquartile range), its median
size and how often it happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.learning.history import MINUTES_PER_DAY, History

MIN_MEAL_G = 5.0
BANDWIDTH_MIN = 40.0
PEAK_SHARE = 0.2
MIN_SHARE_OF_DAYS = 1.0 / 3.0


@dataclass(frozen=True)
class MealHabit:
    minute_of_day: float
    spread_min: float
    grams: float
    per_day: float

    def to_dict(self) -> dict[str, float | str]:
        h, m = divmod(int(round(self.minute_of_day)) % MINUTES_PER_DAY, 60)
        return {"time": f"{h:02d}:{m:02d}", "minute_of_day": round(self.minute_of_day, 1),
                "spread_min": round(self.spread_min, 1), "grams": round(self.grams, 1),
                "per_day": round(self.per_day, 2)}


MERGE_MIN = 30.0
"""Carbs recorded within 30 minutes of the previous entry belong to the same meal (a meal eaten over minutes)."""


def _meals(history: History) -> tuple[np.ndarray, np.ndarray]:
    """(grid index of each meal's first entry, its grams), meals of at least MIN_MEAL_G g."""
    k = np.flatnonzero(history.carbs_g > 0)
    if k.size == 0:
        return k, np.empty(0)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(k) * history.step_min > MERGE_MIN) + 1])
    grams = np.add.reduceat(history.carbs_g[k], starts)
    keep = grams >= MIN_MEAL_G
    return k[starts][keep], grams[keep]


def _density_peaks(minutes: np.ndarray) -> np.ndarray:
    """Times of day (min) where the circular kernel density of meal times peaks."""
    grid = np.arange(0.0, MINUTES_PER_DAY, 5.0)
    d = (grid[:, None] - minutes[None, :] + MINUTES_PER_DAY / 2) % MINUTES_PER_DAY - MINUTES_PER_DAY / 2
    density = np.exp(-0.5 * (d / BANDWIDTH_MIN) ** 2).sum(axis=1)
    left, right = np.roll(density, 1), np.roll(density, -1)
    peak = (density >= left) & (density > right) & (density >= PEAK_SHARE * density.max())
    return grid[peak]


def meal_habits(history: History) -> list[MealHabit]:
    """The usual meals of ``history`` (module docstring); empty without carb records."""
    if not history.carbs_recorded or history.days < 1.0:
        return []
    k, grams = _meals(history)
    if k.size == 0:
        return []
    minutes = history.minute_of_day(k)
    peaks = _density_peaks(minutes)
    offset = (minutes[:, None] - peaks[None, :] + MINUTES_PER_DAY / 2) % MINUTES_PER_DAY - MINUTES_PER_DAY / 2
    nearest = np.argmin(np.abs(offset), axis=1)
    habits = []
    for j, peak in enumerate(peaks):
        mine = nearest == j
        per_day = int(mine.sum()) / history.days
        if per_day < MIN_SHARE_OF_DAYS:
            continue
        times = peak + offset[mine, j]
        q1, q3 = np.percentile(times, [25, 75])
        habits.append(MealHabit(float(np.median(times)) % MINUTES_PER_DAY, float(q3 - q1),
                                float(np.median(grams[mine])), per_day))
    return sorted(habits, key=lambda h: h.minute_of_day)
