"""Insulin on board from delivered doses: pure functions, independent of the twin.

The safety supervisor needs its own account of active insulin, one that does
not depend on the model it is guarding. This is Loop's exponential insulin
activity curve (LoopKit ``ExponentialInsulinModel``, after Dragan Maksimovic),
with the duration of insulin action and the peak time as parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from datetime import datetime
from typing import Iterable

DEFAULT_ACTION_DURATION_MIN = 360.0
DEFAULT_PEAK_MIN = 75.0


@dataclass(frozen=True)
class Delivery:
    """Insulin delivered at ``time``: an amount in U (a bolus, or a basal segment's amount)."""

    time: datetime
    amount_u: float


@lru_cache(maxsize=32)
def _curve(action_duration_min: float, peak_min: float) -> tuple[float, float, float]:
    """The exponential curve's constants (tau, a, S) for a duration and peak: computed once, not per dose."""
    td, tp = action_duration_min, peak_min
    tau = tp * (1 - tp / td) / (1 - 2 * tp / td)
    a = 2 * tau / td
    s = 1 / (1 - a + (1 + a) * math.exp(-td / tau))
    return tau, a, s


def fraction_remaining(minutes_since: float, action_duration_min: float = DEFAULT_ACTION_DURATION_MIN,
                       peak_min: float = DEFAULT_PEAK_MIN) -> float:
    """Fraction (0..1) of a dose still to act ``minutes_since`` after it was given (Loop's exponential curve)."""
    if minutes_since <= 0:
        return 1.0
    td, t = action_duration_min, minutes_since
    if t >= td:
        return 0.0
    tau, a, s = _curve(action_duration_min, peak_min)
    return 1 - s * (1 - a) * ((t * t / (tau * td * (1 - a)) - t / tau - 1) * math.exp(-t / tau) + 1)


def insulin_on_board_u(deliveries: Iterable[Delivery], now: datetime,
                       action_duration_min: float = DEFAULT_ACTION_DURATION_MIN,
                       peak_min: float = DEFAULT_PEAK_MIN) -> float:
    """Sum of the remaining fractions of the deliveries up to ``now`` (U)."""
    total = 0.0
    for d in deliveries:
        minutes = (now - d.time).total_seconds() / 60.0
        if minutes >= 0:
            total += d.amount_u * fraction_remaining(minutes, action_duration_min, peak_min)
    return total
