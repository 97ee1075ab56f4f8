"""The reference pump's own configuration and hard limits (independent of the host's)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .protocol import MILLI_PER_U, U32_MAX, check_device_id, milli_floor


def _positive(label: str, value: float, maximum: float | None = None) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{label} must be a finite number > 0, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{label} must be <= {maximum}, got {value!r}")


def _whole_milli(label: str, value: float) -> int:
    milli = value * MILLI_PER_U
    if abs(milli - round(milli)) > 1e-6:
        raise ValueError(f"{label} must be a multiple of 0.001, got {value!r}")
    return round(milli)


def round_down(amount: int, increment: int) -> int:
    return amount - amount % increment


@dataclass(frozen=True)
class PumpSettings:
    """The pump's own configuration and hard limits (independent of the host's).

    Attributes
    ----------
    device_id: 1-16 characters of [A-Za-z0-9._-].
    max_rate_u_per_h: a TEMP_BASAL above this is refused (over_limit), never clipped.
    max_bolus_u: a BOLUS above this is refused (over_limit).
    reservoir_u: insulin in a fresh pump's reservoir.
    scheduled_basal_u_per_h: the programmed basal (rounded down to ``rate_increment_u_per_h``).
    bolus_increment_u, rate_increment_u_per_h: delivery resolution; commanded
        amounts are rounded DOWN to it (never more than commanded). Multiples of 0.001.
    max_validity_s: the longest validity window accepted, both expires - issued
        and expires - the pump's now.
    max_temp_duration_min: the longest temp basal accepted.
    max_insulin_per_hour_u, max_insulin_per_day_u: the most insulin (bolus and
        basal) delivered in any 60 min and any 24 h (firmware_bridge.insulin_caps).
        A bolus that would break one is refused (over_limit, "hourly insulin
        limit" / "daily insulin limit"); basal is held at the limit (LIMIT_HOLD).
        None derives them: per hour two max boluses and an hour of max rate,
        per day three max boluses and twice the scheduled basal. Each must leave
        room for one max bolus on top of the scheduled basal (ValueError), so
        the limits cannot be set to stop the programmed basal.
    """

    device_id: str
    max_rate_u_per_h: float
    max_bolus_u: float
    reservoir_u: float
    scheduled_basal_u_per_h: float
    bolus_increment_u: float = 0.01
    rate_increment_u_per_h: float = 0.01
    max_validity_s: float = 300.0
    max_temp_duration_min: int = 1440
    max_insulin_per_hour_u: float | None = None
    max_insulin_per_day_u: float | None = None

    def __post_init__(self) -> None:
        check_device_id(self.device_id)
        limit_u = U32_MAX / MILLI_PER_U
        _positive("max_rate_u_per_h", self.max_rate_u_per_h, limit_u)
        _positive("max_bolus_u", self.max_bolus_u, limit_u)
        if not (isinstance(self.reservoir_u, (int, float)) and math.isfinite(self.reservoir_u)
                and 0 <= self.reservoir_u <= limit_u):
            raise ValueError(f"reservoir_u must be in [0, {limit_u}], got {self.reservoir_u!r}")
        if not (isinstance(self.scheduled_basal_u_per_h, (int, float)) and math.isfinite(self.scheduled_basal_u_per_h)
                and 0 <= self.scheduled_basal_u_per_h <= self.max_rate_u_per_h):
            raise ValueError(f"scheduled_basal_u_per_h must be in [0, max_rate_u_per_h={self.max_rate_u_per_h}], "
                             f"got {self.scheduled_basal_u_per_h!r}")
        _positive("bolus_increment_u", self.bolus_increment_u, self.max_bolus_u)
        _positive("rate_increment_u_per_h", self.rate_increment_u_per_h, self.max_rate_u_per_h)
        _whole_milli("bolus_increment_u", self.bolus_increment_u)
        _whole_milli("rate_increment_u_per_h", self.rate_increment_u_per_h)
        _positive("max_validity_s", self.max_validity_s)
        if not isinstance(self.max_temp_duration_min, int) or not 1 <= self.max_temp_duration_min <= 0xFFFF:
            raise ValueError("max_temp_duration_min must be an integer in [1, 65535], "
                             f"got {self.max_temp_duration_min!r}")
        self._check_cap("max_insulin_per_hour_u", self.max_insulin_per_hour_u,
                        self.max_bolus_u + self.scheduled_basal_u_per_h * 61 / 60, "")
        self._check_cap("max_insulin_per_day_u", self.max_insulin_per_day_u,
                        max(self.hour_cap_milli_u / MILLI_PER_U,
                            self.max_bolus_u + self.scheduled_basal_u_per_h * 1441 / 60), ", and the hourly limit")

    @staticmethod
    def _check_cap(label: str, value: float | None, floor_u: float, also: str) -> None:
        if value is None:
            return
        _positive(label, value, U32_MAX / MILLI_PER_U)
        if value < floor_u - 1e-9:
            raise ValueError(f"{label} must be >= {floor_u:.3f} U (one max bolus on top of the scheduled basal"
                             f"{also}), got {value!r}")

    @property
    def max_rate_milli_u_per_h(self) -> int:
        return milli_floor(self.max_rate_u_per_h)

    @property
    def max_bolus_milli_u(self) -> int:
        return milli_floor(self.max_bolus_u)

    @property
    def bolus_increment_milli_u(self) -> int:
        return _whole_milli("bolus_increment_u", self.bolus_increment_u)

    @property
    def rate_increment_milli_u_per_h(self) -> int:
        return _whole_milli("rate_increment_u_per_h", self.rate_increment_u_per_h)

    @property
    def scheduled_rate_milli_u_per_h(self) -> int:
        return round_down(milli_floor(self.scheduled_basal_u_per_h), self.rate_increment_milli_u_per_h)

    @property
    def max_validity_ms(self) -> int:
        return int(self.max_validity_s * 1000)

    @property
    def caps_derived(self) -> bool:
        """True when either insulin limit was left to its derived default."""
        return self.max_insulin_per_hour_u is None or self.max_insulin_per_day_u is None

    @property
    def hour_cap_milli_u(self) -> int:
        if self.max_insulin_per_hour_u is not None:
            return milli_floor(self.max_insulin_per_hour_u)
        return milli_floor(2 * self.max_bolus_u + self.max_rate_u_per_h * 61 / 60)

    @property
    def day_cap_milli_u(self) -> int:
        if self.max_insulin_per_day_u is not None:
            return milli_floor(self.max_insulin_per_day_u)
        return max(self.hour_cap_milli_u,
                   milli_floor(3 * self.max_bolus_u + 2 * self.scheduled_basal_u_per_h * 1441 / 60))
