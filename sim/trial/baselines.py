"""Controllers usable by name in ``glucotwin trial``.

A controller factory takes a patient name and the arm and returns a
simglucose ``Controller``. Factories are module-level functions so that
worker processes can build controllers themselves.
"""

from __future__ import annotations

from typing import Callable

from simglucose.controller.base import Controller

from controller.baselines import BasalOnly
from sim.trial.adapter import PolicyController
from sim.trial.cohort import clinical_profile

ControllerFactory = Callable[[str, str], Controller]


def basal_bolus(patient_name: str, arm: str) -> Controller:
    """simglucose's own ``BBController`` (target 140 mg/dL), unchanged: the HCL reference."""
    from simglucose.controller.basal_bolus_ctrller import BBController

    return BBController()


def basal_only(patient_name: str, arm: str) -> Controller:
    """The programmed basal from the clinical profile, nothing else."""
    return PolicyController(BasalOnly(clinical_profile(patient_name)), meal_announcement=arm == "hcl")


def twin_mpc(patient_name: str, arm: str) -> Controller:
    """glucotwin: twin estimator + MPC + safety supervisor, personalized from the clinical profile."""
    from sim.trial.controllers import mpc_controller

    return mpc_controller(patient_name, arm)


def twin_mpc_previous(patient_name: str, arm: str) -> Controller:
    """glucotwin's controller before issue 17's redesign (eac2684), for comparisons."""
    from sim.trial.controllers import previous_mpc_controller

    return previous_mpc_controller(patient_name, arm)


def twin_mpc_oracle(patient_name: str, arm: str) -> Controller:
    """NOT a fair controller: glucotwin's with the simulator's own parameters as its twin (upper bound)."""
    from sim.trial.oracle import oracle_mpc_controller

    return oracle_mpc_controller(patient_name, arm)


def ceiling_causal(patient_name: str, arm: str) -> Controller:
    """NOT a fair controller: nonlinear MPC on the true model and true state (a ceiling)."""
    from sim.trial.ceiling import ceiling_causal_controller

    return ceiling_causal_controller(patient_name, arm)


def ceiling_clairvoyant(patient_name: str, arm: str) -> Controller:
    """NOT a fair controller: ceiling-causal that also knows every future meal (a ceiling)."""
    from sim.trial.ceiling import ceiling_clairvoyant_controller

    return ceiling_clairvoyant_controller(patient_name, arm)


CONTROLLERS: dict[str, tuple[ControllerFactory, str]] = {
    "mpc": (twin_mpc, "glucotwin: twin estimator + zone MPC + independent safety supervisor"),
    "mpc-previous": (twin_mpc_previous, "glucotwin's controller before the meal bolus (eac2684): the MPC "
                                        "alone decides meal insulin"),
    "bb": (basal_bolus, "simglucose BBController: programmed basal + meal bolus (CR) + correction above 150 mg/dL"),
    "basal": (basal_only, "programmed basal only (clinical profile), no boluses"),
    "mpc-oracle": (twin_mpc_oracle, "NOT a fair controller: mpc with the simulator's own patient parameters as "
                                    "its twin; an upper-bound reference for research (breaks the honesty rules)"),
    "ceiling-causal": (ceiling_causal, "NOT a fair controller: nonlinear MPC on the simulator's true model and "
                                       "true state each sample, meals known once they start (HCL) or only once in "
                                       "the gut (FCL); a ceiling for research (breaks the honesty rules)"),
    "ceiling-clairvoyant": (ceiling_clairvoyant, "NOT a fair controller: ceiling-causal that also knows every "
                                                 "meal of the run in advance (time and grams); the clairvoyant "
                                                 "ceiling for research (breaks the honesty rules)"),
}

DEFAULT_CONTROLLER = "mpc"


def controller_factory(name: str) -> ControllerFactory:
    try:
        return CONTROLLERS[name][0]
    except KeyError:
        raise ValueError(f"unknown controller {name!r}; available: {', '.join(sorted(CONTROLLERS))}") from None


