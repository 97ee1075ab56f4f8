"""What one control cycle and one restart report: the status line, MQTT, dashboards, HIL."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from controller.policy import Dose
from controller.loop.ports import PumpOutcome


@dataclass(frozen=True)
class CycleResult:
    """One cycle as the status line and the HIL harness see it."""

    cycle: int
    time: datetime
    glucose_mg_dl: float | None
    trend_mg_dl_per_min: float
    forecast_30_mg_dl: float | None
    forecast_60_mg_dl: float | None
    dose: Dose
    delivered_basal_u_per_h: float
    delivered_bolus_u: float
    outcomes: tuple[PumpOutcome, ...]
    iob_u: float
    forecast: Any = field(default=None, compare=False, repr=False)  # the cycle's twin Forecast, or None
    degraded: str = ""  # "DEGRADED: ..." / "CONSERVATIVE ...": why it doses at most the programmed basal now

    def status_line(self) -> str:
        g = "---" if self.glucose_mg_dl is None else f"{self.glucose_mg_dl:5.0f}"
        f30 = "---" if self.forecast_30_mg_dl is None else f"{self.forecast_30_mg_dl:.0f}"
        f60 = "---" if self.forecast_60_mg_dl is None else f"{self.forecast_60_mg_dl:.0f}"
        pump = ",".join(o.status for o in self.outcomes) or "-"
        return (f"{self.time:%Y-%m-%d %H:%M} #{self.cycle:<5d} BG {g} mg/dL {self.trend_mg_dl_per_min:+5.1f}/min "
                f"fc30 {f30} fc60 {f60} | basal {self.delivered_basal_u_per_h:5.2f} U/h "
                f"bolus {self.delivered_bolus_u:4.2f} U IOB {self.iob_u:5.2f} U pump {pump} | "
                + (f"{self.degraded} | " if self.degraded else "") + self.dose.reason + self._advice_note())

    def _advice_note(self) -> str:
        """The advice standing this cycle (:mod:`controller.advice`), for the person reading the line."""
        advice = self.dose.diagnostics.get("advice")
        if not isinstance(advice, dict) or not advice.get("kind"):
            return ""
        return f" | ADVICE{' (new)' if advice.get('new') else ''}: {advice.get('message', '')}"

    def to_dict(self) -> dict[str, Any]:
        return {"cycle": self.cycle, "time": self.time.isoformat(), "glucose_mg_dl": self.glucose_mg_dl,
                "trend_mg_dl_per_min": self.trend_mg_dl_per_min, "forecast_30_mg_dl": self.forecast_30_mg_dl,
                "forecast_60_mg_dl": self.forecast_60_mg_dl, "dose": self.dose.to_dict(),
                "delivered_basal_u_per_h": self.delivered_basal_u_per_h,
                "delivered_bolus_u": self.delivered_bolus_u, "outcomes": [o.to_dict() for o in self.outcomes],
                "iob_u": self.iob_u, "degraded": self.degraded}


@dataclass
class RestoreReport:
    cycles_replayed: int = 0
    orders_resolved: list[PumpOutcome] = field(default_factory=list)
    iob_u: float = 0.0
    pump_history: str = ""  # what the pump's history gave (or why it gave nothing)
    conservative_until: datetime | None = None  # conservative mode: insulin already given unknown
