"""Unit conversion at the simglucose boundary, and policies inside simglucose's own engine."""

from datetime import datetime, timedelta

import numpy as np
import pytest
from simglucose.actuator.pump import InsulinPump
from simglucose.patient.t1dpatient import T1DPatient
from simglucose.sensor.cgm import CGMSensor
from simglucose.simulation.env import T1DSimEnv
from simglucose.simulation.scenario_gen import RandomScenario
from simglucose.simulation.sim_engine import SimObj

from controller.baselines import BasalOnly
from controller.policy import ControlInput, Dose
from sim.trial.adapter import PolicyController, dose_to_action, rate_per_min_to_amount
from sim.trial.cohort import clinical_profile


def test_dose_to_simglucose_action_units():
    action = dose_to_action(Dose(basal_u_per_h=1.2, bolus_u=3.0), sample_min=3)
    assert action.basal == pytest.approx(0.02)  # U/min
    assert action.bolus == pytest.approx(1.0)  # 3 U spread over a 3-minute step
    assert rate_per_min_to_amount(action.bolus, 3) == pytest.approx(3.0)


def test_dose_rejects_negative_and_non_finite():
    with pytest.raises(ValueError):
        Dose(basal_u_per_h=-0.1)
    with pytest.raises(ValueError):
        Dose(basal_u_per_h=1.0, bolus_u=float("nan"))
    with pytest.raises(ValueError):
        ControlInput(time=datetime(2025, 1, 1), cgm_mg_dl=float("inf"))


def test_control_input_round_trips_json():
    inp = ControlInput(time=datetime(2025, 1, 1, 7, 3), cgm_mg_dl=143.2, announced_carbs_g=45.0, cycle_min=3)
    assert ControlInput.from_dict(inp.to_dict()) == inp


class _RecordingPolicy:
    def __init__(self):
        self.inputs = []

    def decide(self, inp):
        self.inputs.append(inp)
        return Dose(basal_u_per_h=1.0, reason="fixed")

    def reset(self):
        self.inputs.clear()


@pytest.mark.parametrize("announce", [True, False])
def test_policy_controller_in_simglucose_own_engine(announce):
    start = datetime(2025, 1, 1)
    env = T1DSimEnv(T1DPatient.withName("adult#005"), CGMSensor.withName("Dexcom", seed=15),
                    InsulinPump.withName("Insulet"), RandomScenario(start_time=start, seed=15))
    policy = _RecordingPolicy()
    SimObj(env, PolicyController(policy, meal_announcement=announce), timedelta(hours=12), animate=False).simulate()
    carbs = sum(i.announced_carbs_g for i in policy.inputs)
    eaten = float(np.sum(env.CHO_hist) * 3)
    assert eaten > 40
    assert carbs == pytest.approx(eaten if announce else 0.0)
    assert all(i.cycle_min == 3 for i in policy.inputs)
    # 1 U/h delivered: 0.05 U every 3 minutes, after the pump's rounding
    np.testing.assert_allclose(np.array(env.insulin_hist) * 3, 0.05, atol=1e-9)


def test_basal_only_gives_the_programmed_basal():
    profile = clinical_profile("child#003")
    dose = BasalOnly(profile).decide(ControlInput(time=datetime(2025, 1, 1, 13, 0), cgm_mg_dl=250.0))
    assert dose.basal_u_per_h == profile.basal_u_per_h_at(13 * 60)
    assert dose.bolus_u == 0.0 and dose.reason == "programmed basal"
