"""What a dosing policy sees and what it answers, in pump units.

One serializable input per control cycle and one explained output (STYLE.md).
Policies never see simglucose's U/min actions: ``sim.trial.adapter`` converts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol


@dataclass(frozen=True)
class ControlInput:
    """Everything a policy may use in one cycle.

    Attributes
    ----------
    time: the cycle's clock time (timezone-aware or naive, as the clock gives).
    cgm_mg_dl: latest CGM reading, or None when there is none this cycle.
    announced_carbs_g: carbohydrates announced since the previous cycle (HCL);
        always 0 in fully closed loop.
    cycle_min: minutes until the next cycle (the CGM sample period).
    """

    time: datetime
    cgm_mg_dl: float | None
    announced_carbs_g: float = 0.0
    cycle_min: float = 5.0

    def __post_init__(self) -> None:
        if self.cgm_mg_dl is not None and not math.isfinite(self.cgm_mg_dl):
            raise ValueError(f"cgm_mg_dl must be finite or None, got {self.cgm_mg_dl}")
        if not (math.isfinite(self.announced_carbs_g) and self.announced_carbs_g >= 0):
            raise ValueError(f"announced_carbs_g must be >= 0, got {self.announced_carbs_g}")
        if not (math.isfinite(self.cycle_min) and self.cycle_min > 0):
            raise ValueError(f"cycle_min must be > 0, got {self.cycle_min}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "time": self.time.isoformat(),
            "cgm_mg_dl": self.cgm_mg_dl,
            "announced_carbs_g": self.announced_carbs_g,
            "cycle_min": self.cycle_min,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ControlInput":
        return cls(
            time=datetime.fromisoformat(data["time"]),
            cgm_mg_dl=None if data.get("cgm_mg_dl") is None else float(data["cgm_mg_dl"]),
            announced_carbs_g=float(data.get("announced_carbs_g", 0.0)),
            cycle_min=float(data.get("cycle_min", 5.0)),
        )


@dataclass(frozen=True)
class Dose:
    """A dosing decision in pump units, with the reason for it.

    ``basal_u_per_h`` runs until the next cycle; ``bolus_u`` is given now.
    """

    basal_u_per_h: float
    bolus_u: float = 0.0
    reason: str = ""
    diagnostics: dict[str, float] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for label, value in (("basal_u_per_h", self.basal_u_per_h), ("bolus_u", self.bolus_u)):
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{label} must be finite and >= 0, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "basal_u_per_h": self.basal_u_per_h,
            "bolus_u": self.bolus_u,
            "reason": self.reason,
            "diagnostics": dict(self.diagnostics),
        }


class Policy(Protocol):
    """A dosing policy: one call per control cycle."""

    def decide(self, inp: ControlInput) -> Dose: ...

    def reset(self) -> None: ...
