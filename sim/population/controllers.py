"""Controllers of virtual patients: built from the clinical profile only (DESIGN.md honesty rules)."""

from __future__ import annotations

import functools

from controller.policy import ControlInput, Dose
from sim.population.spec import CONTROLLER_NAMES
from sim.population.virtual_patients import VirtualPatient
from twin.profile import PatientProfile


class ProfileBasalBolus:
    """simglucose's ``BBController`` rule with the clinical profile's basal, CR and CF (target 140)."""

    TARGET_MG_DL = 140.0
    CORRECTION_ABOVE_MG_DL = 150.0

    def __init__(self, profile: PatientProfile) -> None:
        self.profile = profile

    def decide(self, inp: ControlInput) -> Dose:
        minute = self.profile.minute_of_day(inp.time)
        basal = self.profile.basal_u_per_h_at(minute)
        if inp.announced_carbs_g <= 0:
            return Dose(basal, 0.0, "programmed basal")
        bolus = inp.announced_carbs_g / self.profile.carb_ratio_g_per_u
        glucose = inp.cgm_mg_dl if inp.cgm_mg_dl is not None else 0.0
        if glucose > self.CORRECTION_ABOVE_MG_DL:
            bolus += (glucose - self.TARGET_MG_DL) / self.profile.correction_factor_mg_dl_per_u
        return Dose(basal, bolus, "meal bolus")

    def reset(self) -> None:
        pass


@functools.lru_cache(maxsize=None)
def _prior_without(base: str):
    from sim.trial.priors import population_prior

    return population_prior(exclude=base)


def make_policy(controller: str, vp: VirtualPatient):
    """A fresh controller for one virtual patient, built from its clinical profile only."""
    if controller == "basal":
        from controller.baselines import BasalOnly

        return BasalOnly(vp.profile)
    if controller == "bb":
        return ProfileBasalBolus(vp.profile)
    if controller == "mpc":
        from controller.twin_policy import TwinMPCPolicy
        from twin.personalize import personalize

        return TwinMPCPolicy(personalize(vp.profile, _prior_without(vp.base)))
    raise ValueError(f"unknown controller {controller!r}; available: {', '.join(CONTROLLER_NAMES)}")
