"""Virtual populations: seeded generation, consistent physiology and profiles, the closed loop on the batch twin."""

import csv
import json
from datetime import timedelta

import numpy as np
import pytest

from controller.policy import ControlInput
from sim.cli import main
from sim.trial.cohort import clinical_profile, simulator_parameters
from sim.population import (
    PLANT,
    VARIATIONS,
    PopulationSpec,
    ProfileBasalBolus,
    base_patient,
    format_population_tables,
    generate_population,
    make_policy,
    meal_schedule,
    plant_substeps,
    pump_u_per_min,
    run_population,
    sensor_noise,
    virtual_patient,
)
from sim.trial.protocol import BENCHMARK_START
from twin.model import basal_insulin_u_per_min, derivatives, simulate
from twin.model_params import ModelParams


def test_generation_is_seeded_and_independent_of_population_size():
    a = generate_population(12, seed=5)
    b = generate_population(12, seed=5)
    for x, y in zip(a, b):
        assert x.factors == y.factors and x.params == y.params and x.profile == y.profile
        np.testing.assert_array_equal(x.x0, y.x0)
    assert generate_population(4, seed=5)[3].params == a[3].params  # patient j does not depend on the size
    assert generate_population(4, seed=6)[3].params != a[3].params
    assert [p.base for p in a[:4]] == ["adolescent#001", "adult#001", "child#001", "adolescent#002"]
    assert {base_patient(j) for j in range(30)} == {base_patient(j) for j in range(30, 60)}
    assert len({base_patient(j) for j in range(30)}) == 30
    assert a[7].name == "vp00007" and a[7].seed == 5 * 1_000_000 + 8


def test_parameters_within_documented_bounds():
    vps = generate_population(300, seed=1)
    for v in VARIATIONS:
        low, high = v.bounds
        values = np.array([vp.factors[v.name] for vp in vps])
        assert values.min() >= low - 1e-12 and values.max() <= high + 1e-12
        assert values.min() < 0.8 and values.max() > 1.2  # they do vary
        assert abs(np.median(np.log(values))) < 0.1
    for vp in vps[:30]:
        base = simulator_parameters(vp.base)
        f = vp.factors
        assert vp.params["kabs"] == pytest.approx(base["kabs"] * f["meal_absorption"])
        assert vp.params["Vmx"] == pytest.approx(base["Vmx"] * f["insulin_sensitivity"] * f["hepatic_share"])
        assert vp.params["kp3"] == pytest.approx(base["kp3"] * f["insulin_sensitivity"] / f["hepatic_share"])
        assert vp.params["BW"] == pytest.approx(base["BW"] * f["body_weight"])
        assert vp.params["kp1"] == base["kp1"] and vp.params["Vm0"] == base["Vm0"]  # production/uptake kept
    assert plant_substeps() == 1  # RK4 at 1 min is stable for every patient within the bounds


def test_profile_is_consistent_with_the_physiology():
    for vp in generate_population(30, seed=2):
        p, base = vp.profile, clinical_profile(vp.base)
        f = vp.factors
        basal_u_per_min = vp.params["u2ss"] * vp.params["BW"] / 6000.0
        assert p.basal_u_per_h_at(0) == pytest.approx(60 * basal_u_per_min)
        ratio = p.basal_u_per_h_at(0) / base.basal_u_per_h_at(0)
        assert p.total_daily_insulin_u == pytest.approx(base.total_daily_insulin_u * ratio)
        assert p.carb_ratio_g_per_u == pytest.approx(base.carb_ratio_g_per_u * f["insulin_sensitivity"])
        assert p.correction_factor_mg_dl_per_u == pytest.approx(
            base.correction_factor_mg_dl_per_u * f["insulin_sensitivity"] / f["body_weight"])
        assert p.weight_kg == vp.params["BW"] and p.age_years == base.age_years


def test_programmed_basal_holds_the_steady_state_without_meals():
    vps = generate_population(60, seed=3)
    params = ModelParams.from_mappings([vp.params for vp in vps])
    x0 = np.stack([vp.x0 for vp in vps])
    basal = np.array([vp.profile.basal_u_per_h_at(0) / 60.0 for vp in vps])
    assert np.abs(derivatives(x0, 0.0, basal, 0.0, params)).max() < 1e-8
    # through the pump (simglucose Insulet rounding), 4 hours
    delivered = pump_u_per_min(basal, "basal")
    trajectory = simulate(params, x0, 0.0, np.repeat(delivered[:, None], 240, axis=1))
    drift = np.abs(trajectory.glucose_mg_dl - trajectory.glucose_mg_dl[:, :1]).max(axis=1)
    assert drift.max() < 0.5
    np.testing.assert_allclose(basal, basal_insulin_u_per_min(params), rtol=1e-12)


def test_meals_and_cgm_noise_are_simglucose_models():
    from simglucose.sensor.cgm import CGMSensor
    from simglucose.sensor.noise_gen import CGMNoise
    from simglucose.simulation.scenario_gen import RandomScenario

    scenario = RandomScenario(start_time=BENCHMARK_START, seed=11)
    minutes = 2 * 24 * 60
    expected = [scenario.get_action(BENCHMARK_START + timedelta(minutes=m)).meal for m in range(minutes)]
    np.testing.assert_array_equal(meal_schedule(11, minutes), expected)
    for sensor in ("Dexcom", "GuardianRT"):
        params = CGMSensor.withName(sensor)._params
        reference = [[next(g) for _ in range(130)] for g in (CGMNoise(params, seed=s) for s in (7, 3000001))]
        np.testing.assert_allclose(sensor_noise(sensor, [7, 3000001], 130), reference, rtol=0, atol=1e-9)


def test_basal_bolus_rule_on_the_profile():
    vp = virtual_patient(0, 4)
    policy = ProfileBasalBolus(vp.profile)
    p = vp.profile
    quiet = policy.decide(ControlInput(BENCHMARK_START, 200.0, 0.0, 3.0))
    assert quiet.bolus_u == 0 and quiet.basal_u_per_h == p.basal_u_per_h_at(0)
    meal = policy.decide(ControlInput(BENCHMARK_START, 200.0, 50.0, 3.0))
    assert meal.bolus_u == pytest.approx(50 / p.carb_ratio_g_per_u + 60 / p.correction_factor_mg_dl_per_u)


def test_tiny_population_run_writes_labelled_outputs(tmp_path):
    spec = PopulationSpec(size=8, seed=4, days=0.25, controller="basal", arm="fcl")
    result = run_population(spec, workers=1, out_dir=tmp_path, progress=False, chunk_size=8, traces=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["plant"] == PLANT == "glucotwin batch twin (UVA/Padova 2008), not simglucose"
    for key in ("format", "controller", "spec", "population", "protocol", "versions", "population_results",
                "groups", "worst_patient", "patients", "run"):
        assert key in summary
    assert set(summary["groups"]) == {"adolescent", "adult", "child"}
    assert len(summary["patients"]) == 8 and summary["spec"]["size"] == 8
    dist = summary["population_results"]["bg"]
    for metric in ("in_range_70_180", "below_70", "below_54"):
        assert set(dist[metric]) == {"mean", "sd", "min", "p5", "p25", "median", "p75", "p95", "max"}
    run = summary["run"]
    assert run["patient_days"] == 2.0 and run["workers"] == 1 and run["patient_days_per_s"] > 0
    assert run["engine"]["engine"] == "local" and run["patient_days_per_cpu_s"] > 0
    # no meals before 05:00 and programmed basal: every patient stays at its basal glucose until then
    with np.load(tmp_path / "traces.npz") as traces:
        assert str(traces["plant"]) == PLANT
        bg = traces["bg_mg_dl"]
        assert bg.shape == (8, spec.steps + 1)
        early = bg[:, : 5 * 20]  # 5 h of 3-min samples
        assert np.abs(early - early[:, :1]).max() < 0.5
    with open(tmp_path / "patients.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 8 and all(r["plant"] == PLANT for r in rows)
    assert rows[0]["patient"] == "vp00000" and rows[1]["base"] == "adult#001"
    text = format_population_tables(summary)
    assert text.splitlines()[0] == f"plant: {PLANT}"
    # the chunking does not change any result
    again = run_population(spec, workers=1, progress=False, chunk_size=3)
    assert again.summary["patients"] == result.summary["patients"]


def test_mpc_population_uses_only_the_clinical_profile():
    vp = virtual_patient(9, 2)
    policy = make_policy("mpc", vp)
    assert policy.profile == vp.profile and policy.twin.profile == vp.profile
    spec = PopulationSpec(size=2, seed=9, days=0.04, controller="mpc", arm="hcl")
    result = run_population(spec, workers=1, progress=False)
    patients = result.summary["patients"]
    assert set(patients) == {"vp00000", "vp00001"}
    assert all(60 < p["bg"]["mean"] < 250 for p in patients.values())


def test_population_command(tmp_path, capsys):
    out = tmp_path / "pop"
    code = main(["population", "--size", "3", "--days", "0.05", "--controller", "bb", "--workers", "1",
                 "--quiet", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == f"plant: {PLANT}"
    assert "patient-days/s" in printed
    assert json.loads((out / "summary.json").read_text())["controller"] == "bb"
    assert main(["population", "--size", "3", "--scheduler", "tcp://x:1", "--engine", "local",
                 "--out", str(tmp_path / "no")]) == 2
    assert not (tmp_path / "no").exists()


def test_spec_validation():
    with pytest.raises(ValueError, match="population size"):
        PopulationSpec(size=0)
    with pytest.raises(ValueError, match="unknown controller"):
        PopulationSpec(controller="oref0")
    with pytest.raises(ValueError, match="population seed"):
        PopulationSpec(seed=10**6)


def test_scaling_run_compares_one_and_two_local_workers():
    spec = PopulationSpec(size=4, seed=1, days=0.05, controller="basal", arm="fcl")
    result = run_population(spec, workers=2, progress=False, scaling=True, chunk_size=2)
    scaling = result.summary["run"]["scaling"]
    assert scaling["results_identical"] is True
    assert set(scaling) == {"workers_1", "workers_2", "speedup", "efficiency", "results_identical"}
    assert scaling["speedup"] > 0 and result.summary["run"]["workers"] == 2
    assert "scaling 1 -> 2 workers" in format_population_tables(result.summary)
