"""Baseline policies that glucotwin's controllers are compared against.

simglucose's own basal-bolus controller is used as-is for the ``bb``
baseline (see ``sim.trial.baselines``); what is here is written in pump units.
"""

from __future__ import annotations

from controller.policy import ControlInput, Dose
from twin.profile import PatientProfile


class BasalOnly:
    """Programmed basal and nothing else: the fully-closed-loop floor."""

    def __init__(self, profile: PatientProfile) -> None:
        self.profile = profile

    def decide(self, inp: ControlInput) -> Dose:
        minute = self.profile.minute_of_day(inp.time) + inp.time.second / 60.0
        rate = self.profile.basal_u_per_h_at(minute)
        return Dose(basal_u_per_h=rate, bolus_u=0.0, reason="programmed basal")

    def reset(self) -> None:
        pass
