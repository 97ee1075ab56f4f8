"""The population specification: what determines a run's results, the run's constants, per-patient seeds."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from sim.population.simglucose_models import MIN_PER_DAY, sensor_parameters
from sim.trial.protocol import ARMS, SENSORS

PLANT = "glucotwin batch twin (UVA/Padova 2008), not simglucose"
SUMMARY_FORMAT = "glucotwin.population-summary/1"
CONTROLLER_NAMES = ("mpc", "bb", "basal")
CONTROLLER_DESCRIPTIONS = {
    "mpc": "glucotwin: twin estimator + zone MPC + independent safety supervisor, personalized from the "
           "virtual patient's clinical profile (population prior leaving its base patient out)",
    "bb": "simglucose BBController rule on the clinical profile: programmed basal + meal bolus carbs/CR "
          "+ correction (CGM - 140)/CF above 150 mg/dL",
    "basal": "programmed basal only (clinical profile), no boluses",
}
MAX_SIZE = 1_000_000
MAX_SEED = 4000  # scenario and sensor seeds S * 1e6 + j + 1 stay below 2**32


@dataclass(frozen=True)
class PopulationSpec:
    """Everything that determines a population run's results (written to summary.json)."""

    size: int = 100
    seed: int = 0
    days: float = 1.0
    controller: str = "mpc"
    arm: str = "hcl"
    sensor: str = "Dexcom"

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and 1 <= self.size <= MAX_SIZE):
            raise ValueError(f"population size must be a whole number in 1..{MAX_SIZE}, got {self.size!r}")
        if not (isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED):
            raise ValueError(f"population seed must be a whole number in 0..{MAX_SEED}, got {self.seed!r}")
        if not (isinstance(self.days, (int, float)) and math.isfinite(self.days) and 0 < self.days <= 366):
            raise ValueError(f"days must be a number in (0, 366], got {self.days!r}")
        if self.controller not in CONTROLLER_NAMES:
            raise ValueError(f"unknown controller {self.controller!r}; available: {', '.join(CONTROLLER_NAMES)}")
        if self.arm not in ARMS:
            raise ValueError(f"arm must be one of {', '.join(ARMS)}, got {self.arm!r}")
        if self.sensor not in SENSORS:
            raise ValueError(f"sensor must be one of {', '.join(SENSORS)}, got {self.sensor!r}")

    @property
    def sample_min(self) -> int:
        return int(sensor_parameters(self.sensor)["sample_time"])

    @property
    def steps(self) -> int:
        """Control cycles (CGM samples after the first): the run covers ``days``, as a trial does."""
        return int(math.ceil(self.days * MIN_PER_DAY / self.sample_min - 1e-9))

    @property
    def patient_days(self) -> float:
        return self.size * self.days

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def scenario_seed(population_seed: int, index: int) -> int:
    """Seed of the meal scenario and of the CGM noise of virtual patient ``index``."""
    return population_seed * MAX_SIZE + index + 1
