"""What a trial tells the controller about meals (simglucose's ``meal`` information).

simglucose passes the carbohydrates eaten during each sample as a rate,
``info['meal']`` in g/min. Under the protocol's arm and off-protocol options
the controller is told:

- FCL: nothing;
- HCL: the meal at meal time, times ``carb_announcement_factor`` (carbs
  mis-counted), and ``meal_delay_min`` minutes late when that is set (a meal
  announced late, or the best a perfect meal detector could do).
"""

from __future__ import annotations

from datetime import datetime, timedelta


class MealInformation:
    """Turns the simulator's meal rate into the announced one, sample by sample."""

    def __init__(self, announce: bool, factor: float = 1.0, delay_min: float = 0.0) -> None:
        if not delay_min >= 0.0:
            raise ValueError(f"meal delay must be >= 0 minutes, got {delay_min!r}")
        self.announce = announce
        self.factor = factor
        self.delay = timedelta(minutes=delay_min)
        self._pending: list[tuple[datetime, float]] = []  # (when to announce, grams)

    def announced_g_per_min(self, time: datetime, meal_g_per_min: float, sample_min: float) -> float:
        """The meal rate (g/min) to pass the controller for the sample starting at ``time``."""
        if not self.announce:
            return 0.0
        told = float(meal_g_per_min or 0.0) * self.factor
        if not self.delay:
            return told
        if told > 0.0:
            self._pending.append((time + self.delay, told * sample_min))
        due = sum(grams for when, grams in self._pending if when <= time)
        self._pending = [(when, grams) for when, grams in self._pending if when > time]
        return due / sample_min
