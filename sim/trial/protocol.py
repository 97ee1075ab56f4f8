"""The trial protocol: everything needed to rerun a result (BENCHMARK.md)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sim.trial.cohort import patient_index

ARMS = ("hcl", "fcl")
SENSORS = ("Dexcom", "GuardianRT", "Navigator")
PUMPS = ("Insulet", "Cozmo")
BENCHMARK_START = datetime(2025, 1, 1, 0, 0)
# simulator parameters an off-protocol check may perturb (insulin action, absorption, meals)
SCALABLE_PARAMETERS = ("Vmx", "kp3", "kabs", "kmax", "kmin", "ka1", "ka2", "kd", "f", "p2u")


@dataclass(frozen=True)
class TrialProtocol:
    """How a closed-loop trial is run.

    Attributes
    ----------
    arm: ``hcl`` (meal information passed to the controller at meal time) or
        ``fcl`` (no meal information at all).
    days: simulated duration in days (fractions allowed for smoke runs).
    seed_offset: patient k (1..30) uses seed ``k + seed_offset`` for both the
        RandomScenario and the CGM sensor; 0 is the public benchmark.
    sensor: simglucose sensor name (Dexcom: 3-min samples, GuardianRT: 5-min).
    pump: simglucose pump name.
    start: simulation start time (naive, simglucose convention).
    carb_announcement_factor: in HCL the controller is told this many times the
        carbohydrates actually eaten (1.3: carbs over-counted by 30 %).
    meal_delay_min: in HCL the meal information reaches the controller this
        many minutes after the meal starts (0: at meal time, the protocol).
    physiology_scale: multipliers of simulator parameters, e.g.
        ``(("Vmx", 1.4), ("kp3", 1.4))``; the controller's clinical profile is unchanged.
    follow_advice: the virtual patient eats the rescue carbs of each new carbohydrate advice
        when it is given, without telling the controller (:mod:`sim.trial.rescue`).
    """

    arm: str = "hcl"
    days: float = 3.0
    seed_offset: int = 0
    sensor: str = "Dexcom"
    pump: str = "Insulet"
    start: datetime = BENCHMARK_START
    carb_announcement_factor: float = 1.0
    meal_delay_min: float = 0.0
    physiology_scale: tuple[tuple[str, float], ...] = ()
    follow_advice: bool = False

    def __post_init__(self) -> None:
        if not (isinstance(self.carb_announcement_factor, (int, float))
                and math.isfinite(self.carb_announcement_factor) and 0 <= self.carb_announcement_factor <= 3):
            raise ValueError(f"carb announcement factor must be within 0..3, got {self.carb_announcement_factor!r}")
        if not (isinstance(self.meal_delay_min, (int, float)) and math.isfinite(self.meal_delay_min)
                and 0 <= self.meal_delay_min <= 240):
            raise ValueError(f"meal delay must be within 0..240 minutes, got {self.meal_delay_min!r}")
        for item in self.physiology_scale:
            if not (isinstance(item, tuple) and len(item) == 2 and item[0] in SCALABLE_PARAMETERS
                    and isinstance(item[1], (int, float)) and math.isfinite(item[1]) and 0 < item[1] <= 10):
                raise ValueError(f"physiology scale must be (parameter, factor) with a parameter among "
                                 f"{', '.join(SCALABLE_PARAMETERS)} and 0 < factor <= 10, got {item!r}")
        if not isinstance(self.follow_advice, bool):
            raise ValueError(f"follow_advice must be True or False, got {self.follow_advice!r}")
        if self.arm not in ARMS:
            raise ValueError(f"arm must be one of {', '.join(ARMS)}, got {self.arm!r}")
        if not (isinstance(self.days, (int, float)) and math.isfinite(self.days) and 0 < self.days <= 366):
            raise ValueError(f"days must be a number in (0, 366], got {self.days!r}")
        if not isinstance(self.seed_offset, int) or self.seed_offset < 0:
            raise ValueError(f"seed offset must be a non-negative integer, got {self.seed_offset!r}")
        if self.sensor not in SENSORS:
            raise ValueError(f"sensor must be one of {', '.join(SENSORS)}, got {self.sensor!r}")
        if self.pump not in PUMPS:
            raise ValueError(f"pump must be one of {', '.join(PUMPS)}, got {self.pump!r}")

    @property
    def duration(self) -> timedelta:
        return timedelta(days=self.days)

    @property
    def meal_announcement(self) -> bool:
        return self.arm == "hcl"

    def seed_for(self, patient_name: str) -> int:
        return patient_index(patient_name) + self.seed_offset

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["start"] = self.start.isoformat()
        data["physiology_scale"] = {name: factor for name, factor in self.physiology_scale}
        data["scenario"] = "simglucose RandomScenario(start_time=start, seed=k + seed_offset)"
        data["sensor_seed"] = "k + seed_offset"
        return data
