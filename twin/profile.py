"""The clinical profile of a person: what a diabetes clinic knows.

This is the only patient information a controller may use (DESIGN.md,
honesty rules). Mapping a profile to model parameters (population priors,
personalization) lives beside the model, not here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from twin.schedule import Schedule, check_schedule, schedule_from_list, schedule_to_list, value_at

MINUTES_PER_DAY = 24 * 60


@dataclass(frozen=True)
class BasalSegment:
    """A programmed basal rate starting at ``start_min`` minutes after midnight."""

    start_min: int
    rate_u_per_h: float

    def __post_init__(self) -> None:
        if not (0 <= self.start_min < MINUTES_PER_DAY):
            raise ValueError(f"basal segment start_min must be in [0, 1440), got {self.start_min}")
        if not (math.isfinite(self.rate_u_per_h) and 0.0 <= self.rate_u_per_h <= 35.0):
            raise ValueError(f"basal rate must be within 0..35 U/h, got {self.rate_u_per_h}")


@dataclass(frozen=True)
class PatientProfile:
    """Clinical settings of one person with type 1 diabetes.

    Attributes
    ----------
    name: identifier (for simglucose patients, e.g. ``adult#001``).
    weight_kg: body weight.
    total_daily_insulin_u: total daily insulin (basal + bolus), U/day.
    carb_ratio_g_per_u: grams of carbohydrate covered by 1 U.
    correction_factor_mg_dl_per_u: glucose drop per 1 U of correction insulin.
    age_years: age.
    basal_schedule: programmed basal segments, first one starting at 0 min.
    target_mg_dl: glucose target of the controller.
    carb_ratio_schedule, correction_factor_schedule, target_schedule: the same settings by time of
        day (:mod:`twin.schedule`), as pumps and Nightscout hold them; empty: the single value all
        day. The single values stay the day's reference (the twin is personalized from them); the
        loop doses with the schedule's value at each time (:meth:`carb_ratio_at` and the like).
    timezone: the IANA zone of the schedules' clock (``"Europe/Paris"``), as the pump and Nightscout
        keep it; every schedule is read at the local time of day of a timezone-aware time. Empty:
        a time's own clock (simulations, whose clock is the patient's day).
    """

    name: str
    weight_kg: float
    total_daily_insulin_u: float
    carb_ratio_g_per_u: float
    correction_factor_mg_dl_per_u: float
    age_years: float
    basal_schedule: tuple[BasalSegment, ...] = field(default_factory=tuple)
    target_mg_dl: float = 120.0
    carb_ratio_schedule: Schedule = ()
    correction_factor_schedule: Schedule = ()
    target_schedule: Schedule = ()
    timezone: str = ""

    def __post_init__(self) -> None:
        if self.timezone:
            _zone(self.timezone)  # ValueError for an unknown zone
        checks = [
            ("weight_kg", self.weight_kg, 5.0, 300.0),
            ("total_daily_insulin_u", self.total_daily_insulin_u, 1.0, 300.0),
            ("carb_ratio_g_per_u", self.carb_ratio_g_per_u, 1.0, 150.0),
            ("correction_factor_mg_dl_per_u", self.correction_factor_mg_dl_per_u, 2.0, 500.0),
            ("age_years", self.age_years, 0.0, 120.0),
            ("target_mg_dl", self.target_mg_dl, 80.0, 200.0),
        ]
        for label, value, low, high in checks:
            if not (isinstance(value, (int, float)) and math.isfinite(value) and low <= value <= high):
                raise ValueError(f"{label} must be a number in [{low}, {high}], got {value!r}")
        if not self.basal_schedule:
            raise ValueError("basal_schedule needs at least one segment")
        starts = [s.start_min for s in self.basal_schedule]
        if starts[0] != 0:
            raise ValueError("basal_schedule must start at minute 0 (midnight)")
        if any(b <= a for a, b in zip(starts, starts[1:])):
            raise ValueError("basal_schedule segments must be in strictly increasing start order")
        check_schedule(self.carb_ratio_schedule, "carb_ratio_schedule", 1.0, 150.0)
        check_schedule(self.correction_factor_schedule, "correction_factor_schedule", 2.0, 500.0)
        check_schedule(self.target_schedule, "target_schedule", 80.0, 200.0)

    def minute_of_day(self, time: datetime) -> int:
        """The minute of the schedules' day at ``time`` (in :attr:`timezone` when both are set)."""
        if self.timezone and time.tzinfo is not None:
            time = time.astimezone(_zone(self.timezone))
        return time.hour * 60 + time.minute

    def carb_ratio_at(self, when: float | datetime) -> float:
        """Grams covered by 1 U at a time, or a minute of the day (g/U)."""
        return value_at(self.carb_ratio_schedule, self._minute(when), self.carb_ratio_g_per_u)

    def correction_factor_at(self, when: float | datetime) -> float:
        """Glucose drop per unit at a time, or a minute of the day (mg/dL/U)."""
        return value_at(self.correction_factor_schedule, self._minute(when), self.correction_factor_mg_dl_per_u)

    def target_at(self, when: float | datetime) -> float:
        """The scheduled glucose target at a time, or a minute of the day (mg/dL), before any temporary target."""
        return value_at(self.target_schedule, self._minute(when), self.target_mg_dl)

    def _minute(self, when: float | datetime) -> float:
        return self.minute_of_day(when) if isinstance(when, datetime) else when

    @property
    def has_schedules(self) -> bool:
        return bool(self.carb_ratio_schedule or self.correction_factor_schedule or self.target_schedule)

    def basal_u_per_h_at(self, when: float | datetime) -> float:
        """Programmed basal rate (U/h) at a time (:meth:`minute_of_day`), or a minute of the day."""
        minute = self._minute(when) % MINUTES_PER_DAY
        rate = self.basal_schedule[0].rate_u_per_h
        for segment in self.basal_schedule:
            if segment.start_min <= minute:
                rate = segment.rate_u_per_h
            else:
                break
        return rate

    @property
    def daily_basal_u(self) -> float:
        """Insulin the basal schedule delivers in 24 h (U)."""
        total = 0.0
        bounds = [s.start_min for s in self.basal_schedule] + [MINUTES_PER_DAY]
        for segment, end in zip(self.basal_schedule, bounds[1:]):
            total += segment.rate_u_per_h * (end - segment.start_min) / 60.0
        return total

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weight_kg": self.weight_kg,
            "total_daily_insulin_u": self.total_daily_insulin_u,
            "carb_ratio_g_per_u": self.carb_ratio_g_per_u,
            "correction_factor_mg_dl_per_u": self.correction_factor_mg_dl_per_u,
            "age_years": self.age_years,
            "basal_schedule": [
                {"start_min": s.start_min, "rate_u_per_h": s.rate_u_per_h} for s in self.basal_schedule
            ],
            "target_mg_dl": self.target_mg_dl,
            **{name: schedule_to_list(getattr(self, name)) for name in _SCHEDULES if getattr(self, name)},
            **({"timezone": self.timezone} if self.timezone else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PatientProfile":
        try:
            schedule = tuple(
                BasalSegment(int(s["start_min"]), float(s["rate_u_per_h"])) for s in data["basal_schedule"]
            )
            return cls(
                name=str(data["name"]),
                weight_kg=float(data["weight_kg"]),
                total_daily_insulin_u=float(data["total_daily_insulin_u"]),
                carb_ratio_g_per_u=float(data["carb_ratio_g_per_u"]),
                correction_factor_mg_dl_per_u=float(data["correction_factor_mg_dl_per_u"]),
                age_years=float(data["age_years"]),
                basal_schedule=schedule,
                target_mg_dl=float(data.get("target_mg_dl", 120.0)),
                **{name: schedule_from_list(data.get(name)) for name in _SCHEDULES},
                timezone=str(data.get("timezone", "") or ""),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"incomplete patient profile: {exc}") from exc


@lru_cache(maxsize=16)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone {name!r} is not an IANA time zone (e.g. \"Europe/Paris\", \"UTC\")") from None


_SCHEDULES = ("carb_ratio_schedule", "correction_factor_schedule", "target_schedule")


def flat_basal(rate_u_per_h: float) -> tuple[BasalSegment, ...]:
    """A one-segment basal schedule."""
    return (BasalSegment(0, rate_u_per_h),)
