"""The meal bolus: the calculator's dose, cut only where the twin's robust forecast goes low."""

from dataclasses import replace
from datetime import datetime, timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.meal_bolus import MealBolusSettings, calculator_bolus_u, decide_meal_bolus
from controller.mpc import ZoneMPC
from sim.trial.cohort import clinical_profile
from sim.trial.priors import population_prior
from twin.estimator import TwinEstimator
from twin.personalize import personalize

T0 = datetime(2025, 1, 1, 12, 0)


@pytest.fixture(scope="module")
def twin():
    return personalize(clinical_profile("adult#005"), population_prior(exclude="adult#005"))


def _estimator(twin, glucose, slope_per_min=0.0, n=12):
    est = TwinEstimator(twin, T0)
    for i in range(n):
        est.update(T0 + timedelta(minutes=5 * i), glucose + slope_per_min * 5 * (i - n + 1))
    return est


def _decide(twin, est, carbs, glucose, iob=0.0, s=None, carb_ratio=None):
    p = twin.profile
    est.add_carbs(carbs)
    return decide_meal_bolus(est, carbs, glucose, iob, p.target_mg_dl, carb_ratio or p.carb_ratio_g_per_u,
                             p.correction_factor_mg_dl_per_u, p.basal_u_per_h_at(720), s)


def test_the_calculator_adds_a_correction_less_insulin_on_board_but_never_takes_from_the_meal():
    assert calculator_bolus_u(60, 110, 0, 110, 10, 40) == pytest.approx(6.0)
    assert calculator_bolus_u(60, 190, 0, 110, 10, 40) == pytest.approx(8.0)
    assert calculator_bolus_u(60, 190, 1.5, 110, 10, 40) == pytest.approx(6.5)
    assert calculator_bolus_u(60, 190, 5.0, 110, 10, 40) == pytest.approx(6.0)  # IOB never cuts the meal part
    assert calculator_bolus_u(60, 80, 0, 110, 10, 40) == pytest.approx(6.0)
    assert calculator_bolus_u(60, 190, 0, 110, 10, 40, include_correction=False) == pytest.approx(6.0)


def test_a_meal_in_range_gets_the_calculators_dose(twin):
    g = twin.profile.target_mg_dl + 20
    meal = _decide(twin, _estimator(twin, g), 50.0, g)
    calc = calculator_bolus_u(50.0, g, 0.0, twin.profile.target_mg_dl, twin.profile.carb_ratio_g_per_u,
                              twin.profile.correction_factor_mg_dl_per_u)
    assert meal.calculator_u == pytest.approx(calc)
    assert meal.bolus_u == pytest.approx(calc)
    assert meal.forecast_min_mg_dl >= 80.0 and "calculator's dose" in meal.reason


def test_an_over_dosing_carb_ratio_is_cut_where_the_twin_forecasts_a_low(twin):
    g = 100.0
    meal = _decide(twin, _estimator(twin, g, slope_per_min=-0.5), 50.0, g, carb_ratio=twin.profile.carb_ratio_g_per_u / 3)
    assert 0.0 <= meal.bolus_u < meal.calculator_u
    assert "more would take the twin's forecast below 80" in meal.reason or "withheld" in meal.reason


def test_a_stricter_scenario_never_gives_more(twin):
    g = 120.0
    doses = [_decide(twin, _estimator(twin, g), 70.0, g, s=MealBolusSettings(robust_sensitivity=k)).bolus_u
             for k in (1.0, 1.5, 2.5)]
    assert doses[0] >= doses[1] >= doses[2]
    assert doses[0] > doses[2]
    by_carbs = [_decide(twin, _estimator(twin, g), 70.0, g, s=MealBolusSettings(robust_carbs=c)).bolus_u
                for c in (1.0, 0.7, 0.4)]
    assert by_carbs[0] >= by_carbs[1] >= by_carbs[2] and by_carbs[0] > by_carbs[2]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(glucose=st.floats(60, 350), slope=st.floats(-3, 3), carbs=st.floats(1, 150), iob=st.floats(0, 10),
       floor=st.floats(60, 120), robust=st.floats(1.0, 2.0), eaten=st.floats(0.3, 1.0))
def test_the_bolus_never_exceeds_the_calculator_and_its_robust_forecast_holds_the_floor(twin, glucose, slope, carbs,
                                                                                       iob, floor, robust, eaten):
    s = MealBolusSettings(floor_mg_dl=floor, robust_sensitivity=robust, robust_carbs=eaten)
    est = _estimator(twin, glucose, slope)
    meal = _decide(twin, est, carbs, glucose, iob, s)
    assert 0.0 <= meal.bolus_u <= meal.calculator_u + 1e-9
    if meal.bolus_u > 0:
        steps = int(s.horizon_min / s.step_min)
        plan = np.full((1, steps), twin.profile.basal_u_per_h_at(720) / 60.0)
        plan[0, 0] += meal.bolus_u / s.step_min
        forecast = est.plan_glucose(plan, s.step_min, sensitivity_scale=robust, new_carbs_scale=eaten)[0]
        assert forecast[1:].min() >= floor - 1e-6


def test_the_mpc_starts_from_the_meal_bolus_and_may_still_lower_the_basal(twin):
    est = _estimator(twin, 110.0, slope_per_min=-1.0)
    est.add_carbs(40.0)
    scheduled = twin.profile.basal_u_per_h_at(720)
    result = ZoneMPC(twin.profile.target_mg_dl).solve(est, 5.0, scheduled, 4 * scheduled, 10.0, min_bolus_u=3.0)
    assert result.bolus_u >= 3.0
    assert 0.0 <= result.basal_u_per_h <= 4 * scheduled
    free = ZoneMPC(twin.profile.target_mg_dl).solve(est, 5.0, scheduled, 4 * scheduled, 10.0)
    assert result.bolus_u >= free.bolus_u


def test_settings_are_validated():
    for bad in (dict(robust_sensitivity=0.9), dict(floor_mg_dl=10.0), dict(horizon_min=362.0), dict(candidates=1),
                dict(robust_carbs=1.2), dict(robust_carbs=0.1)):
        with pytest.raises(ValueError):
            replace(MealBolusSettings(), **bad)


def test_the_control_cycle_gives_the_meal_bolus_and_says_why(twin):
    from controller.policy import ControlInput
    from controller.twin_policy import ControlSettings, TwinMPCPolicy

    doses = {}
    for name, settings in (("redesign", ControlSettings()), ("previous", ControlSettings(meal_bolus=None))):
        policy = TwinMPCPolicy(twin, settings)
        for i in range(12):
            policy.decide(ControlInput(T0 + timedelta(minutes=5 * i), 130.0, 0.0, 5.0))
        doses[name] = policy.decide(ControlInput(T0 + timedelta(minutes=60), 130.0, 60.0, 5.0))
    calc = 60.0 / twin.profile.carb_ratio_g_per_u
    new, old = doses["redesign"], doses["previous"]
    assert new.diagnostics["meal_bolus_reason"].startswith("meal bolus")
    correction = (130.0 - twin.profile.target_mg_dl) / twin.profile.correction_factor_mg_dl_per_u
    assert calc <= new.diagnostics["meal_bolus_u"] <= calc + correction  # less IOB from the first hour
    # the supervisor still bounds the sum: its meal share of the calculator's dose, less insulin on board
    share = new.diagnostics["meal_share"]
    given = new.bolus_u + (new.basal_u_per_h - twin.profile.basal_u_per_h_at(780)) / 12
    assert share * calc - new.diagnostics["iob_u"] - 1e-3 <= given <= share * calc + 1e-6
    assert old.diagnostics["meal_bolus_u"] is None
    assert new.bolus_u > old.bolus_u


def test_bench_times_the_cycle_of_both_designs_in_one_run():
    from sim.bench.figures import cycle_timing

    out = cycle_timing(["adult#001"], days=0.1)
    assert out["cycle_count"] == out["cycle_count_previous"] > 0
    assert 0 < out["cycle_ms_p50"] <= out["cycle_ms_p99"]
    assert out["cycle_p50_ratio_to_previous"] == pytest.approx(out["cycle_ms_p50"] / out["cycle_ms_p50_previous"])


def test_in_fcl_the_redesign_decides_exactly_as_the_previous_design():
    """No announcement, no meal bolus: FCL results of the previous design stand for the redesign."""
    from sim.trial.protocol import TrialProtocol
    from sim.trial.runner import run_patients

    protocol = TrialProtocol(arm="fcl", days=0.6)
    new, old = (run_patients(["child#002"], name, protocol, workers=1, progress=False)[0]
                for name in ("mpc", "mpc-previous"))
    assert np.nansum(new.trace.insulin_u) > 0
    np.testing.assert_array_equal(new.trace.insulin_u, old.trace.insulin_u)
    np.testing.assert_array_equal(new.trace.bg_mg_dl, old.trace.bg_mg_dl)
