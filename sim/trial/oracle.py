"""An upper-bound reference: glucotwin's controller with a twin that *is* the virtual patient.

**Not a fair controller.** It breaks the honesty rules on purpose (DESIGN.md):
its twin is built from the patient's simulator parameters and initial state,
which a real controller never knows. Everything else (estimator, MPC, safety
supervisor and its learning) is the shipped controller, unchanged.

It answers one research question: how much of the time out of range comes from
the twin being wrong (model error), and how much from the control problem
itself (insulin slower than carbohydrates, the supervisor's limits, meals the
controller is not told about)? ``glucotwin trial --controller mpc-oracle``
runs it; reports show it under that name. It is never a default.
"""

from __future__ import annotations

from typing import Any

from controller.twin_policy import TwinMPCPolicy
from sim.trial.cohort import simulator_parameters
from sim.trial.controllers import SimglucoseController
from twin.model_params import ModelParams, initial_state_from_mapping
from twin.personalize import Twin, insulin_drop_mg_dl
from twin.profile import PatientProfile


def oracle_twin(profile: PatientProfile) -> Twin:
    """The twin of ``profile.name`` with the simulator's own parameters and initial state."""
    row: dict[str, Any] = simulator_parameters(profile.name).to_dict()
    params = ModelParams.from_mappings(row)
    x0 = initial_state_from_mapping(row)
    drop = float(insulin_drop_mg_dl(params, x0[None, :])[0])
    return Twin(profile, params, x0, float(row["Gb"]), 1.0, drop, "oracle")


class OracleMPCController(SimglucoseController):
    """:class:`SimglucoseController` whose twin is the virtual patient itself (see the module docstring)."""

    def _build(self, profile: PatientProfile) -> TwinMPCPolicy:
        self._policy_for = profile.name
        return TwinMPCPolicy(oracle_twin(profile), self._settings)


def oracle_mpc_controller(patient_name: str, arm: str) -> OracleMPCController:
    """Factory for ``glucotwin trial --controller mpc-oracle``."""
    return OracleMPCController(meal_announcement=arm == "hcl")
