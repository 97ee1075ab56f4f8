"""The trial runner against simglucose's own engine, determinism, traces, summary."""

import json
from datetime import datetime, timedelta

import numpy as np
import pytest
from simglucose.actuator.pump import InsulinPump
from simglucose.controller.basal_bolus_ctrller import BBController
from simglucose.patient.t1dpatient import T1DPatient
from simglucose.sensor.cgm import CGMSensor
from simglucose.simulation.env import T1DSimEnv
from simglucose.simulation.scenario_gen import RandomScenario
from simglucose.simulation.sim_engine import SimObj

from sim.trial.cohort import clinical_profile
from sim.trial.protocol import TrialProtocol
from sim.trial.runner import run_patients, simulate_patient
from sim.trial.trace import read_trace_csv
from sim.trial.run import run_trial


def _direct_simglucose_bb(patient: str, seed: int, hours: float) -> T1DSimEnv:
    """simglucose's own engine, stock classes, as its README runs it."""
    start = datetime(2025, 1, 1, 0, 0)
    env = T1DSimEnv(
        T1DPatient.withName(patient),
        CGMSensor.withName("Dexcom", seed=seed),
        InsulinPump.withName("Insulet"),
        RandomScenario(start_time=start, seed=seed),
    )
    SimObj(env, BBController(), timedelta(hours=hours), animate=False, path=None).simulate()
    return env


def test_bb_through_the_runner_equals_simglucose_engine():
    hours = 14  # covers breakfast and lunch of seed 11
    env = _direct_simglucose_bb("adult#001", seed=11, hours=hours)
    run = simulate_patient("adult#001", "bb", TrialProtocol(days=hours / 24))
    assert run.seed == 11
    assert len(run.trace) == len(env.BG_hist) == hours * 20 + 1
    np.testing.assert_allclose(run.trace.bg_mg_dl, env.BG_hist, rtol=0, atol=1e-6)
    np.testing.assert_allclose(run.trace.cgm_mg_dl, env.CGM_hist, rtol=0, atol=1e-6)
    np.testing.assert_allclose(run.trace.insulin_u[:-1], np.array(env.insulin_hist) * 3, rtol=0, atol=1e-9)
    assert run.trace.carbs_g[:-1].sum() == pytest.approx(np.sum(env.CHO_hist) * 3)
    assert run.trace.carbs_g[:-1].sum() > 40  # meals happened in the window


def test_fcl_arm_gives_the_controller_no_meal_information():
    protocol = TrialProtocol(arm="fcl", days=0.6)
    run = simulate_patient("adolescent#003", "bb", protocol)
    basal_u_per_sample = clinical_profile("adolescent#003").basal_u_per_h_at(0) / 20
    assert run.trace.carbs_g[:-1].sum() > 0  # the patient still eats
    # without meal information BB gives only its basal (pump-rounded)
    np.testing.assert_allclose(run.trace.insulin_u[:-1], basal_u_per_sample, atol=0.05 / 6000 * 3 + 1e-12)


def test_serial_and_parallel_runs_are_identical():
    patients = ["child#002", "adult#004", "adolescent#006"]
    protocol = TrialProtocol(days=0.2, seed_offset=5)
    serial = run_patients(patients, "bb", protocol, workers=1, progress=False)
    parallel = run_patients(patients, "bb", protocol, workers=2, progress=False)
    assert [r.patient for r in parallel] == patients
    for a, b in zip(serial, parallel):
        assert a.seed == b.seed == protocol.seed_for(a.patient)
        np.testing.assert_array_equal(a.trace.bg_mg_dl, b.trace.bg_mg_dl)
        np.testing.assert_array_equal(a.trace.insulin_u, b.trace.insulin_u)


def test_seed_offset_changes_the_scenario():
    a = simulate_patient("adult#002", "bb", TrialProtocol(days=0.5, seed_offset=0))
    b = simulate_patient("adult#002", "bb", TrialProtocol(days=0.5, seed_offset=100))
    assert b.seed == a.seed + 100
    assert not np.array_equal(a.trace.bg_mg_dl, b.trace.bg_mg_dl)


def test_guardian_sensor_samples_every_5_minutes():
    run = simulate_patient("adult#002", "basal", TrialProtocol(days=0.25, sensor="GuardianRT"))
    assert run.trace.sample_min == 5
    assert (run.trace.time[1] - run.trace.time[0]) == timedelta(minutes=5)


def test_trial_writes_traces_and_summary(tmp_path):
    patients = ["adult#001", "child#001"]
    result = run_trial("basal", patients, TrialProtocol(arm="fcl", days=0.25), out_dir=tmp_path, workers=1, progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["controller"] == "basal"
    assert summary["protocol"]["arm"] == "fcl" and summary["protocol"]["seed_offset"] == 0
    assert set(summary["patients"]) == set(patients)
    assert summary["patients"]["child#001"]["seed"] == 21
    assert set(summary["groups"]) == {"adult", "child"}
    assert summary["cohort"]["n"] == 2
    assert summary["worst_patient"]["name"] in patients
    assert summary["versions"]["simglucose"] == "0.2.11"
    for p in patients:
        trace = read_trace_csv(tmp_path / f"{p}.csv")
        assert trace.time[0] == datetime(2025, 1, 1)
        np.testing.assert_allclose(trace.bg_mg_dl, result.runs[patients.index(p)].trace.bg_mg_dl, atol=1e-9)
        assert np.isnan(trace.insulin_u[-1]) and np.isnan(trace.carbs_g[-1])
        assert trace.diagnostics["reason"][0] == "programmed basal"
        tir = summary["patients"][p]["bg"]["in_range_70_180"]
        assert tir == pytest.approx(100 * np.mean((trace.bg_mg_dl >= 70) & (trace.bg_mg_dl <= 180)))
    header = (tmp_path / "adult#001.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["time", "bg_mg_dl", "cgm_mg_dl", "carbs_g", "insulin_u"]


class _Recorder:
    def __init__(self):
        self.carbs = 0.0

    def decide(self, inp):
        from controller.policy import Dose

        self.carbs += inp.announced_carbs_g
        return Dose(basal_u_per_h=1.0, reason="fixed")

    def reset(self):
        self.carbs = 0.0


_RECORDERS = {}


def _recording_controller(patient, arm):
    from sim.trial.adapter import PolicyController

    _RECORDERS[patient] = _Recorder()
    return PolicyController(_RECORDERS[patient], meal_announcement=arm == "hcl")


def test_off_protocol_carb_error_and_physiology_scale():
    protocol = TrialProtocol(days=0.6, carb_announcement_factor=1.3)
    run = simulate_patient("adult#006", _recording_controller, protocol)
    eaten = float(np.nansum(run.trace.carbs_g))
    assert eaten > 40
    assert _RECORDERS["adult#006"].carbs == pytest.approx(1.3 * eaten)
    base = simulate_patient("adult#006", "basal", TrialProtocol(arm="fcl", days=0.6))
    sensitive = simulate_patient("adult#006", "basal",
                                 TrialProtocol(arm="fcl", days=0.6, physiology_scale=(("Vmx", 1.4), ("kp3", 1.4))))
    assert sensitive.trace.bg_mg_dl[-1] < base.trace.bg_mg_dl[-1] - 5
    assert TrialProtocol(physiology_scale=(("Vmx", 1.4),)).to_dict()["physiology_scale"] == {"Vmx": 1.4}
    with pytest.raises(ValueError, match="physiology scale"):
        TrialProtocol(physiology_scale=(("BW", 2.0),))
    with pytest.raises(ValueError, match="carb announcement"):
        TrialProtocol(carb_announcement_factor=-0.5)
