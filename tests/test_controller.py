"""The MPC and the control cycle in clinical situations, and the simglucose-facing controller."""

from datetime import datetime, timedelta

import numpy as np
import pytest

from controller.mpc import MPCSettings, ZoneMPC
from controller.policy import ControlInput
from controller.twin_policy import TwinMPCPolicy, floor_to_increment
from sim.trial.cohort import clinical_profile
from sim.trial.priors import population_prior
from twin.estimator import TwinEstimator
from twin.personalize import personalize

T0 = datetime(2025, 1, 1, 6, 0)


@pytest.fixture(scope="module")
def twin():
    return personalize(clinical_profile("adult#005"), population_prior(exclude="adult#005"))


def _estimator_at(twin, glucose, slope_per_min=0.0, n=12):
    est = TwinEstimator(twin, T0)
    for i in range(n):
        est.update(T0 + timedelta(minutes=5 * i), glucose + slope_per_min * 5 * (i - n + 1))
    return est


def _solve(twin, est):
    scheduled = twin.profile.basal_u_per_h_at(0)
    return ZoneMPC(twin.profile.target_mg_dl).solve(est, 5.0, scheduled, 4 * scheduled, 5.0), scheduled


def test_in_range_and_flat_keeps_about_the_scheduled_basal(twin):
    result, scheduled = _solve(twin, _estimator_at(twin, twin.profile.target_mg_dl))
    assert result.status == "optimal"
    assert result.bolus_u == 0.0
    assert result.basal_u_per_h == pytest.approx(scheduled, rel=0.5)


def test_high_and_steady_gives_more_insulin(twin):
    result, scheduled = _solve(twin, _estimator_at(twin, 250.0))
    assert result.basal_u_per_h + result.bolus_u * 12 > scheduled * 1.5
    assert result.predicted_mg_dl[-1] < result.nominal_mg_dl[-1]


def test_falling_toward_low_gives_less_than_scheduled(twin):
    result, scheduled = _solve(twin, _estimator_at(twin, 95.0, slope_per_min=-1.5))
    assert result.basal_u_per_h < scheduled and result.bolus_u == 0.0


def test_announced_meal_gets_a_bolus(twin):
    est = _estimator_at(twin, 130.0)
    est.add_carbs(60.0)
    result, _ = _solve(twin, est)
    assert result.bolus_u > 0.5


def test_prediction_failure_falls_back_to_scheduled_basal(twin):
    class Broken:
        def plan_glucose(self, plans, step_min):
            raise ValueError("boom")

    result = ZoneMPC(120.0).solve(Broken(), 5.0, 1.0, 4.0, 5.0)
    assert result.basal_u_per_h == 1.0 and result.bolus_u == 0.0
    assert result.status.startswith("fallback") and "boom" in result.status


def test_settings_are_validated():
    with pytest.raises(ValueError, match="horizon"):
        MPCSettings(horizon_min=60)


def test_control_cycle_explains_every_dose_and_feeds_back(twin):
    policy = TwinMPCPolicy(twin)
    doses = []
    for i in range(30):
        g = 180.0 if i < 20 else 60.0  # a sudden low: supervisor must suspend
        doses.append(policy.decide(ControlInput(T0 + timedelta(minutes=5 * i), g, 0.0, 5.0)))
    assert all(d.reason for d in doses)
    assert doses[-1].basal_u_per_h == 0.0 and doses[-1].bolus_u == 0.0 and "suspend" in doses[-1].reason
    assert all(np.isfinite(d.diagnostics["cycle_ms"]) for d in doses)
    # a missing reading for 20 minutes falls back to the programmed basal
    late = policy.decide(ControlInput(T0 + timedelta(minutes=5 * 29 + 20), None, 0.0, 5.0))
    # the programmed basal, at the pump's resolution (never rounded up)
    assert late.basal_u_per_h == floor_to_increment(twin.profile.basal_u_per_h_at(0), 0.001) and "stale" in late.reason
    assert 0 <= twin.profile.basal_u_per_h_at(0) - late.basal_u_per_h < 0.001


def test_simglucose_controller_personalizes_itself_in_simglucose_engine():
    from simglucose.actuator.pump import InsulinPump
    from simglucose.patient.t1dpatient import T1DPatient
    from simglucose.sensor.cgm import CGMSensor
    from simglucose.simulation.env import T1DSimEnv
    from simglucose.simulation.scenario_gen import RandomScenario
    from simglucose.simulation.sim_engine import SimObj

    from sim import SimglucoseController

    env = T1DSimEnv(T1DPatient.withName("adolescent#003"), CGMSensor.withName("Dexcom", seed=3),
                    InsulinPump.withName("Insulet"), RandomScenario(start_time=datetime(2025, 1, 1), seed=3))
    ctrl = SimglucoseController()
    SimObj(env, ctrl, timedelta(hours=10), animate=False).simulate()
    bg = np.array(env.BG_hist)
    assert ctrl._policy_for == "adolescent#003"
    assert bg.min() > 70 and np.mean((bg >= 70) & (bg <= 180)) > 0.7
    assert ctrl.last_dose is not None and ctrl.last_dose.reason


def test_layering_imports_point_down():
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parent.parent
    allowed = {
        "twin": {"twin"},
        "sensors": {"sensors"},
        "firmware_bridge": {"firmware_bridge"},
        "controller": {"controller", "twin"},
    }
    project = {"twin", "sensors", "firmware_bridge", "controller", "sim"}
    for package, ok in allowed.items():
        for path in (root / package).glob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for name in names:
                    top = name.split(".")[0]
                    assert top not in project or top in ok, f"{path.name} imports {name}"
                    assert top not in {"simglucose", "pandas", "matplotlib"}, f"{path.name} imports {name}"


def test_decision_record_round_trips_json_to_the_same_decision(twin):
    import json

    from controller.decision_replay import replay

    policy = TwinMPCPolicy(twin, record_decisions=True)
    for i, g in enumerate([150, 160, 175, 190, 210, 230, 240, 245]):
        carbs = 45.0 if i == 3 else 0.0
        dose = policy.decide(ControlInput(T0 + timedelta(minutes=5 * i), float(g), carbs, 5.0))
        record = json.loads(json.dumps(policy.last_record))
        again = replay(record)
        assert again.basal_u_per_h == pytest.approx(dose.basal_u_per_h, abs=1e-9)
        assert again.bolus_u == pytest.approx(dose.bolus_u, abs=1e-9)
        assert again.reason == dose.reason
        assert record["output"]["reason"] == dose.reason
        assert set(record["output"]["forecast"]) >= {"insulin_effect_mg_dl", "carb_effect_mg_dl", "disturbance_effect_mg_dl"}
