"""glucotwin's controller as a simglucose ``Controller``.

``SimglucoseController()`` with no arguments personalizes itself from the
``patient_name`` that simglucose passes, using that patient's clinical
profile only and a population prior that leaves the patient out (DESIGN.md
honesty rules). It also accepts an explicit :class:`~twin.profile.PatientProfile`.
``meal_announcement=True`` is hybrid closed loop (announced carbohydrates
from simglucose's meal information), ``False`` fully closed loop.
"""

from __future__ import annotations

from typing import Any

from controller.twin_policy import ControlSettings, TwinMPCPolicy
from sim.trial.adapter import PolicyController
from twin.personalize import PopulationPrior, Twin, default_prior, personalize
from twin.profile import PatientProfile


class SimglucoseController(PolicyController):
    def __init__(self, profile: PatientProfile | None = None, meal_announcement: bool = True,
                 prior: PopulationPrior | None = None, settings: ControlSettings | None = None,
                 twin: Twin | None = None) -> None:
        self._twin = twin
        if twin is not None and profile is None:
            profile = twin.profile
        self._profile = profile
        self._prior = prior
        self._settings = settings
        self._policy_for: str | None = None
        policy = self._build(profile) if profile is not None else None
        super().__init__(policy, meal_announcement=meal_announcement)  # type: ignore[arg-type]

    def _build(self, profile: PatientProfile) -> TwinMPCPolicy:
        if self._twin is not None:
            self._policy_for = profile.name
            return TwinMPCPolicy(self._twin, self._settings)
        if self._prior is not None:
            prior = self._prior
        elif self._profile is None:
            from sim.trial.priors import population_prior  # leave-one-out over the simglucose cohort

            prior = population_prior(exclude=profile.name)
        else:
            prior = default_prior()
        self._policy_for = profile.name
        return TwinMPCPolicy(personalize(profile, prior), self._settings)

    def policy(self, observation: Any, reward: float, done: bool, **info: Any):
        if self._policy is None or (self._profile is None and info.get("patient_name") != self._policy_for):
            from sim.trial.cohort import clinical_profile

            name = info.get("patient_name")
            if name is None:
                raise ValueError("SimglucoseController needs a profile or simglucose's patient_name")
            self._policy = self._build(clinical_profile(name))
        return super().policy(observation, reward, done, **info)

    def reset(self) -> None:
        if self._policy is not None:
            self._policy.reset()
        self.last_input = None
        self.last_dose = None


def mpc_controller(patient_name: str, arm: str) -> SimglucoseController:
    """Factory for ``glucotwin trial --controller mpc``: personalizes itself from simglucose's patient_name."""
    return SimglucoseController(meal_announcement=arm == "hcl")


def previous_mpc_controller(patient_name: str, arm: str) -> SimglucoseController:
    """Factory for ``glucotwin trial --controller mpc-previous``: glucotwin's controller as it was at
    eac2684 (the MPC alone decides the meal insulin, no meal bolus), for comparisons in the same run
    (``glucotwin bench`` times both)."""
    return SimglucoseController(meal_announcement=arm == "hcl", settings=ControlSettings(meal_bolus=None))


class LearnedTwinMPC:
    """Factory for ``glucotwin trial --twin DIR``: glucotwin's controller on the twin learned for each
    patient (``DIR/<patient>.json`` from ``glucotwin learn``). Picklable, so worker processes build it."""

    def __init__(self, twin_dir: str) -> None:
        self.twin_dir = str(twin_dir)
        self.__name__ = "mpc-learned"

    def __call__(self, patient_name: str, arm: str) -> SimglucoseController:
        from pathlib import Path

        from twin.learning.learned import load_learned_twin

        path = Path(self.twin_dir) / f"{patient_name}.json"
        if not path.exists():
            raise FileNotFoundError(f"no learned twin for {patient_name}: {path} (run glucotwin learn first)")
        twin = load_learned_twin(path)
        if twin.profile.name != patient_name:
            raise ValueError(f"{path} is the twin of {twin.profile.name}, not {patient_name}")
        return SimglucoseController(meal_announcement=arm == "hcl", twin=twin)
