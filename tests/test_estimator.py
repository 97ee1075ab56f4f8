"""The twin estimator in clinical situations: steady, noisy, gaps, outliers, meals, doses."""

import json
import math
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from sim.trial.cohort import clinical_profile
from sim.forecast.closed_loop import forecast_accuracy
from sim.trial.priors import population_prior
from twin.estimator import EstimatorSettings, TwinEstimator
from twin.model import simulate
from twin.personalize import default_prior, personalize
from twin.twin_forecaster import twin_forecaster_factory

T0 = datetime(2025, 1, 1, 6, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def twin():
    return personalize(clinical_profile("adult#003"), population_prior(exclude="adult#003"))


def _feed(est, values, start=T0, every_min=5):
    outcomes = []
    for i, g in enumerate(values):
        outcomes.append(est.update(start + timedelta(minutes=every_min * i), g))
    return outcomes


def test_personalized_twin_is_at_steady_state_under_its_basal(twin):
    rate = float(twin.params.u2ss[0] * twin.params.BW[0] / 6000)
    traj = simulate(twin.params, twin.x_basal, 0.0, np.full((1, 144), rate), dt_min=5.0)
    assert np.ptp(traj.glucose_mg_dl) < 0.1
    assert traj.glucose_mg_dl[0, 0] == pytest.approx(twin.basal_glucose_mg_dl)


def test_sensitivity_follows_the_prior_prediction_and_the_prior_leaves_the_patient_out(twin):
    prior = population_prior(exclude="adult#003")
    assert prior.excluded == ("adult#003",)
    predicted = prior.predicted_drop_mg_dl_per_u(clinical_profile("adult#003"))
    assert twin.drop_mg_dl_per_u == pytest.approx(predicted, rel=0.03)
    # more sensitive by the correction factor -> a larger drop per unit
    other = personalize(clinical_profile("adult#004"), population_prior(exclude="adult#004"))
    assert clinical_profile("adult#004").correction_factor_mg_dl_per_u > clinical_profile("adult#003").correction_factor_mg_dl_per_u
    assert other.drop_mg_dl_per_u > twin.drop_mg_dl_per_u


def test_steady_glucose_with_sensor_noise_is_smoothed(twin):
    rng = np.random.default_rng(3)
    truth = 150.0
    readings = truth + rng.normal(0, 7, size=72)
    est = TwinEstimator(twin, T0)
    _feed(est, readings)
    assert abs(est.glucose_mg_dl - truth) < 7
    fc = est.forecast(60)
    assert abs(fc.at(60)[0] - truth) < 15
    estimates = []
    est2 = TwinEstimator(twin, T0)
    for i, g in enumerate(readings):
        est2.update(T0 + timedelta(minutes=5 * i), g)
        estimates.append(est2.glucose_mg_dl)
    tail = slice(24, None)
    assert np.sqrt(np.mean((np.array(estimates)[tail] - truth) ** 2)) < np.sqrt(np.mean((readings[tail] - truth) ** 2))


def test_gap_predicts_only_and_uncertainty_grows(twin):
    est = TwinEstimator(twin, T0)
    _feed(est, [140.0] * 12)
    sd_before = est.glucose_sd_mg_dl
    outcome = est.update(T0 + timedelta(minutes=55 + 45), None)
    assert not outcome.accepted and "predicted only" in outcome.reason
    assert est.glucose_sd_mg_dl > sd_before
    # an irregular interval after the gap is fine
    assert est.update(T0 + timedelta(minutes=100, seconds=37), 142.0).accepted


def test_single_spike_is_rejected_with_a_reason_and_a_real_jump_is_followed(twin):
    est = TwinEstimator(twin, T0)
    _feed(est, [120.0] * 12)
    spike = est.update(T0 + timedelta(minutes=60), 300.0)
    assert not spike.accepted and spike.reason.startswith("outlier") and spike.mahalanobis > 4.5
    assert abs(est.glucose_mg_dl - 120) < 10
    # a compression low that persists is real after max_consecutive_rejections
    outcomes = [est.update(T0 + timedelta(minutes=65 + 5 * i), 45.0) for i in range(4)]
    assert any(o.accepted and "rejections" in o.reason for o in outcomes)
    assert est.glucose_mg_dl < 80


def test_out_of_order_and_implausible_readings_never_raise(twin):
    est = TwinEstimator(twin, T0)
    _feed(est, [130.0] * 4)
    late = est.update(T0 + timedelta(minutes=1), 130.0)
    assert not late.accepted and "out of order" in late.reason
    for bad in (float("nan"), float("inf"), -5.0):
        outcome = est.update(est.time + timedelta(minutes=5), bad)
        assert not outcome.accepted and "implausible" in outcome.reason


def test_forecast_components_add_up_and_point_the_right_way(twin):
    est = TwinEstimator(twin, T0)
    _feed(est, [150.0] * 12)
    est.add_bolus(2.0)
    est.add_carbs(40.0)
    fc = est.forecast(180)
    total = fc.baseline_mg_dl + fc.insulin_effect_mg_dl + fc.carb_effect_mg_dl + fc.disturbance_effect_mg_dl
    np.testing.assert_allclose(total, fc.glucose_mg_dl, atol=1e-9)
    assert fc.insulin_effect_mg_dl[-1] < -10  # 2 U lower glucose
    assert fc.carb_effect_mg_dl[12] > 10  # 40 g raise it within the hour
    assert np.all(fc.lower_mg_dl <= fc.glucose_mg_dl) and np.all(fc.glucose_mg_dl <= fc.upper_mg_dl)
    assert np.all(np.diff(fc.upper_mg_dl - fc.lower_mg_dl) >= -1e-9)  # bands widen
    json.dumps(fc.to_dict())
    json.dumps(est.snapshot())


def test_rising_glucose_is_attributed_to_a_disturbance(twin):
    est = TwinEstimator(twin, T0)
    values = [120.0] * 12 + [120.0 + 3.0 * 5 * i for i in range(1, 13)]  # an unannounced meal: +3 mg/dL/min
    _feed(est, values)
    assert est.disturbance_mg_per_kg_min > 0.5
    assert est.forecast(30).at(30)[0] > values[-1]


def test_settings_are_validated():
    with pytest.raises(ValueError, match="cgm_noise_sd_mg_dl"):
        EstimatorSettings(cgm_noise_sd_mg_dl=-1)
    with pytest.raises(ValueError, match="max_consecutive_rejections"):
        EstimatorSettings(max_consecutive_rejections=-1)


def test_twin_forecaster_protocol_and_shipped_prior():
    make = twin_forecaster_factory(clinical_profile("adolescent#004"), prior=default_prior())
    f = make()
    assert f.forecast([30, 60]) == []
    for i in range(10):
        f.observe(T0 + timedelta(minutes=5 * i), 150.0 + i)
    first = f.forecast([30, 60])
    assert [p.horizon_min for p in first] == [30, 60]
    assert f.forecast([30, 60]) == first  # forecasting changes nothing
    assert all(p.lower_mg_dl <= p.forecast_mg_dl <= p.upper_mg_dl for p in first)


def test_twin_tracks_simglucose_patients_closed_loop():
    result = forecast_accuracy(["adult#002", "child#002"], days=0.5, workers=1)
    for patient, row in result["patients"].items():
        assert math.isfinite(row["rmse_30_mg_dl"]) and row["rmse_30_mg_dl"] < 60, patient
    assert result["pooled"]["n_30"] > 300


def test_replay_cli_compares_the_twin_with_the_baselines(tmp_path, capsys):
    import csv

    from sim.cli import main

    data = __import__("pathlib").Path(__file__).parent / "data" / "nightscout_entries.json"
    out_csv, out_json = tmp_path / "f.csv", tmp_path / "r.json"
    assert main(["replay", str(data), "--forecasts", str(out_csv), "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "twin" in printed and "persistence" in printed
    report = json.loads(out_json.read_text())
    assert "twin" in report["insulin_assumption"] and "basal" in report["insulin_assumption"]["twin"]
    with open(out_csv, newline="") as handle:
        rows = list(csv.DictReader(handle))
    twin_rows = [r for r in rows if r["method"] == "twin"]
    assert twin_rows and {r["horizon_min"] for r in twin_rows} >= {"30", "60"}
    assert all(float(r["lower_mg_dl"]) <= float(r["forecast_mg_dl"]) <= float(r["upper_mg_dl"]) for r in twin_rows)


def test_twin_beats_persistence_and_linear_on_the_real_trace(tmp_path):
    """Regression guard for the issue's replay goal (real iglu trace, tests/data)."""
    from sim.cli import main

    data = __import__("pathlib").Path(__file__).parent / "data" / "cgm_example_1_subject.csv"
    out_json = tmp_path / "r.json"
    assert main(["replay", str(data), "--json", str(out_json)]) == 0
    scores = json.loads(out_json.read_text())["evaluation"]["scores"]
    for h in ("30", "60"):
        twin = scores["twin"][h]["rmse_mg_dl"]
        assert twin < scores["persistence"][h]["rmse_mg_dl"] and twin < scores["linear"][h]["rmse_mg_dl"]
