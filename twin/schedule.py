"""Time-of-day schedules of a therapy setting (carb ratio, correction factor, target), as pumps hold them.

A schedule is a tuple of :class:`ScheduleSegment`, the first starting at midnight, each running until the
next one starts (Nightscout, oref0, Loop and every pump work this way). The empty schedule means "one value
all day": :func:`value_at` then returns the caller's constant. The basal schedule keeps its own segment
type (:class:`twin.profile.BasalSegment`) because its values are rates that integrate to a daily dose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class ScheduleSegment:
    """A value in force from ``start_min`` minutes after midnight until the next segment starts."""

    start_min: int
    value: float

    def __post_init__(self) -> None:
        if not (isinstance(self.start_min, int) and 0 <= self.start_min < MINUTES_PER_DAY):
            raise ValueError(f"schedule segment start_min must be an integer in [0, 1440), got {self.start_min!r}")
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)) or not math.isfinite(self.value):
            raise ValueError(f"schedule value must be a finite number, got {self.value!r}")


Schedule = tuple[ScheduleSegment, ...]


def check_schedule(schedule: Sequence[ScheduleSegment], label: str, low: float, high: float) -> None:
    """Raise ValueError unless ``schedule`` is empty or starts at 00:00, increases, and every value is in [low, high]."""
    if not schedule:
        return
    if schedule[0].start_min != 0:
        raise ValueError(f"{label} must start at minute 0 (midnight)")
    starts = [s.start_min for s in schedule]
    if any(b <= a for a, b in zip(starts, starts[1:])):
        raise ValueError(f"{label} segments must be in strictly increasing start order")
    for s in schedule:
        if not (low <= s.value <= high):
            raise ValueError(f"{label} value at {format_clock(s.start_min)} must be in [{low:g}, {high:g}], "
                             f"got {s.value!r}")


def value_at(schedule: Sequence[ScheduleSegment], minute_of_day: float, constant: float) -> float:
    """The schedule's value at a minute of the day; ``constant`` when the schedule is empty."""
    if not schedule:
        return constant
    minute = minute_of_day % MINUTES_PER_DAY
    value = schedule[0].value
    for segment in schedule:
        if segment.start_min <= minute:
            value = segment.value
        else:
            break
    return float(value)


def time_weighted_mean(schedule: Sequence[ScheduleSegment]) -> float:
    """The value averaged over the day (each segment weighted by how long it runs)."""
    if not schedule:
        raise ValueError("an empty schedule has no mean")
    bounds = [s.start_min for s in schedule] + [MINUTES_PER_DAY]
    return sum(s.value * (end - s.start_min) for s, end in zip(schedule, bounds[1:])) / MINUTES_PER_DAY


def format_clock(minute_of_day: int) -> str:
    """``HH:MM`` of a minute of the day."""
    return f"{minute_of_day // 60:02d}:{minute_of_day % 60:02d}"


def parse_clock(text: str) -> int:
    """Minutes after midnight of ``HH:MM`` (or ``HH:MM:SS``, seconds dropped, as Nightscout writes them)."""
    parts = text.strip().split(":") if isinstance(text, str) else []
    try:
        if len(parts) not in (2, 3):
            raise ValueError
        hh, mm = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(f"expected a clock time HH:MM, got {text!r}") from None
    if not (0 <= hh < 24 and 0 <= mm < 60):
        raise ValueError(f"expected a clock time 00:00..23:59, got {text!r}")
    return hh * 60 + mm


def schedule_to_list(schedule: Sequence[ScheduleSegment]) -> list[dict[str, float]]:
    return [{"start_min": s.start_min, "value": s.value} for s in schedule]


def schedule_from_list(items: Sequence[dict[str, float]] | None) -> Schedule:
    return tuple(ScheduleSegment(int(s["start_min"]), float(s["value"])) for s in (items or ()))
