"""The twin's UVA/Padova model against simglucose's own T1DPatient.

Every comparison feeds both models the same per-minute inputs (carbohydrate
announced in g, insulin in U/min) from the simulator's own parameters and
initial state.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from simglucose.patient.t1dpatient import Action, T1DPatient

from sim.trial.cohort import PATIENTS, simulator_parameters
from sim.bench.twin_fidelity import simglucose_glucose, twin_parameters
from twin.model import (
    CLAMPED_STATES,
    EAT_RATE_G_PER_MIN,
    BatchPatient,
    MealState,
    ModelParams,
    State,
    basal_insulin_u_per_min,
    derivatives,
    eat,
    glucose_mg_dl,
    simulate,
)
from twin.model_params import N_STATES, PARAMETER_NAMES, initial_state_from_mapping


def _rmse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)))


@pytest.fixture(scope="module")
def cohort():
    params, x0 = twin_parameters(PATIENTS)
    return params, x0


def test_right_hand_side_is_simglucose_model_term_by_term(cohort):
    """Random states (some negative, to hit the clamps), eating or not, both Dbar branches, all 30 patients."""
    params, x0 = cohort
    rng = np.random.default_rng(7)
    x = x0 * rng.uniform(0.3, 3.0, x0.shape)
    x[:, : State.G_P] = rng.uniform(0.0, 60000.0, (30, 3))  # stomach and gut content, mg
    x[::4, State.G_P] *= -1.0
    x[1::5, State.G_T] *= -1.0
    x[2::6, State.I_SC1] *= -1.0
    x[3::7, State.G_SC] *= -1.0
    x[:10, State.G_P] = 400.0  # above the renal threshold ke2 = 339 mg/kg
    x[:, State.I_D] *= rng.choice([1.0, 40.0], 30)  # drives EGP below zero for some
    eating = rng.choice([0.0, EAT_RATE_G_PER_MIN, 2.0], 30)
    insulin = rng.uniform(0.0, 0.5, 30)
    dbar = rng.choice([0.0, 20000.0, 90000.0], 30)

    ours = derivatives(x, eating, insulin, dbar, params)
    theirs = np.array(
        [
            T1DPatient.model(0.0, x[i], Action(CHO=eating[i], insulin=insulin[i]), simulator_parameters(name), dbar[i], 0.0)
            for i, name in enumerate(PATIENTS)
        ]
    )
    assert np.any(theirs[:, list(CLAMPED_STATES)] == 0.0)  # the clamps were exercised
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["adolescent#002", "adult#006", "child#007"])
def test_six_hours_with_a_meal_and_bolus_match_stock_simglucose(name):
    params, x0 = twin_parameters([name])
    minutes = 6 * 60
    basal = float(basal_insulin_u_per_min(params)[0])
    carbs = np.zeros(minutes)
    insulin = np.full(minutes, basal)
    carbs[30] = 70.0  # eaten over 14 minutes at 5 g/min
    insulin[30] += 5.0  # 5 U bolus over one minute
    carbs[200] = 12.0  # a snack without bolus

    reference = simglucose_glucose(name, carbs, insulin, T1DPatient)
    twin = simulate(params, x0, carbs[None], insulin[None]).glucose_mg_dl[0]

    assert reference.max() - reference[0] > 10.0  # the meal really moves glucose
    assert _rmse(twin, reference) < 0.1  # goal: 0.5 mg/dL over 3 days
    assert np.max(np.abs(twin - reference)) < 0.2


def test_batch_run_equals_one_patient_at_a_time(cohort):
    params, x0 = cohort
    minutes = 5 * 60
    n = len(PATIENTS)
    carbs = np.zeros((n, minutes))
    carbs[np.arange(n), 20 + 3 * np.arange(n)] = 30.0 + 2.0 * np.arange(n)  # a different meal for each
    insulin = np.tile(basal_insulin_u_per_min(params)[:, None], (1, minutes))
    insulin[np.arange(n), 20 + 3 * np.arange(n)] += 4.0

    batch = simulate(params, x0, carbs, insulin)
    for i in range(len(PATIENTS)):
        single = simulate(params.take([i]), x0[i], carbs[i : i + 1], insulin[i : i + 1])
        np.testing.assert_allclose(batch.states[i], single.states[0], rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(batch.glucose_mg_dl[i], single.glucose_mg_dl[0], rtol=1e-12)


def test_stepping_minute_by_minute_equals_one_simulation(cohort):
    params, x0 = cohort
    idx = [0, 10, 20]
    p = params.take(idx)
    minutes = 90
    carbs = np.zeros((3, minutes))
    carbs[:, 5] = [40.0, 60.0, 25.0]
    carbs[1, 9] = 20.0  # announced while still eating the first meal
    insulin = np.tile(basal_insulin_u_per_min(p)[:, None], (1, minutes))
    insulin[:, 5] += 3.0

    whole = simulate(p, x0[idx], carbs, insulin)
    patient = BatchPatient(p, x0[idx])
    for t in range(minutes):
        patient.step(carbs[:, t], insulin[:, t])
    np.testing.assert_allclose(patient.state, whole.final_state, rtol=1e-12)
    np.testing.assert_allclose(patient.glucose_mg_dl, whole.glucose_mg_dl[:, -1], rtol=1e-12)
    assert patient.t_min == minutes


def test_basal_insulin_without_meals_keeps_every_patient_at_steady_state(cohort):
    params, x0 = cohort
    day = 24 * 60
    basal = np.tile(basal_insulin_u_per_min(params)[:, None], (1, day))
    flat = simulate(params, x0, np.zeros((30, day)), basal)
    start = flat.glucose_mg_dl[:, :1]
    assert np.max(np.abs(flat.glucose_mg_dl - start)) < 1e-3  # mg/dL over 24 h
    np.testing.assert_allclose(flat.final_state[:, State.G_P], x0[:, State.G_P], rtol=1e-6)
    np.testing.assert_allclose(flat.final_state[:, State.I_SC1], x0[:, State.I_SC1], rtol=1e-6)

    # the same day without insulin is not flat: every patient rises
    no_insulin = simulate(params, x0, np.zeros((30, day)), 0.0)
    assert np.all(no_insulin.glucose_mg_dl[:, -1] - start[:, 0] > 30.0)


def test_announced_carbs_are_eaten_at_5_g_per_min_with_simglucose_bookkeeping():
    name = "adult#003"
    params, x0 = twin_parameters([name])
    minutes = 60
    carbs = np.zeros(minutes)
    carbs[2] = 42.0  # 8 minutes of 5 g and one of 2 g
    carbs[6] = 10.0  # joins the queue while eating
    carbs[30] = 3.0  # a second meal: Dbar restarts from the stomach content
    insulin = np.full(minutes, float(basal_insulin_u_per_min(params)[0]))

    stock = T1DPatient(simulator_parameters(name))
    twin = BatchPatient(params, x0)
    rates = []
    for t in range(minutes):
        stock.step(Action(CHO=carbs[t], insulin=insulin[t]))
        trajectory = twin.step(carbs[t : t + 1], insulin[t : t + 1])
        rates.append(float(trajectory.eat_rate_g_per_min[0, 0]))
        meal = twin.meal
        assert rates[-1] == stock._last_action.CHO
        assert meal.planned_g[0] == stock.planned_meal
        assert meal.last_foodtaken_g[0] == stock._last_foodtaken
        assert meal.last_qsto_mg[0] == pytest.approx(stock._last_Qsto, rel=1e-4, abs=1e-6)
        assert bool(meal.is_eating[0]) == stock.is_eating

    assert rates[2:13] == [5.0] * 10 + [2.0]
    assert rates[13:30] == [0.0] * 17
    assert rates[30:32] == [3.0, 0.0]
    assert sum(rates) == pytest.approx(55.0)
    assert twin.meal.last_qsto_mg[0] > 1000.0  # the second meal started with food still in the stomach


def test_eating_logic_is_a_pure_function_of_the_queue():
    meal = MealState.initial(np.zeros((2, N_STATES)))
    stomach = np.array([0.0, 12000.0])
    rate, after = eat(meal, np.array([0.0, 12.0]), stomach)
    np.testing.assert_array_equal(rate, [0.0, 5.0])
    np.testing.assert_array_equal(after.planned_g, [0.0, 7.0])
    np.testing.assert_array_equal(after.last_qsto_mg, [0.0, 12000.0])
    np.testing.assert_array_equal(after.dbar_mg, [0.0, 12000.0 + 5000.0])
    np.testing.assert_array_equal(meal.planned_g, [0.0, 0.0])  # input untouched
    # a 5-minute step eats up to 25 g, at 5 g/min
    rate5, after5 = eat(meal, np.array([30.0, 10.0]), stomach, dt_min=5.0)
    np.testing.assert_array_equal(rate5, [5.0, 2.0])
    np.testing.assert_array_equal(after5.last_foodtaken_g, [25.0, 10.0])


def test_overdose_freezes_glucose_below_zero_like_simglucose():
    """simglucose zeroes dG/dt once G < 0: a patient driven to zero stays there, even after a meal."""
    name = "child#001"
    params, x0 = twin_parameters([name])
    minutes = 600
    insulin = np.full(minutes, float(basal_insulin_u_per_min(params)[0]))
    insulin[10] += 30.0
    carbs = np.zeros(minutes)
    carbs[400] = 50.0

    trajectory = simulate(params, x0, carbs[None], insulin[None])
    reference = simglucose_glucose(name, carbs, insulin, T1DPatient)
    g_p = trajectory.state(State.G_P)[0]
    crossed = int(np.argmax(g_p < 0.0))
    assert crossed > 0 and g_p[-1] < 0.0
    assert np.all(g_p[crossed:] == g_p[crossed])  # frozen, meal or not
    for state in CLAMPED_STATES:  # at most one minute's change below zero
        assert trajectory.state(state)[0].min() > -1.0
    assert np.max(np.abs(trajectory.glucose_mg_dl[0] - reference)) < 0.5
    assert abs(trajectory.glucose_mg_dl[0, -1]) < 0.01 and abs(reference[-1]) < 0.01


def test_named_states_parameters_and_initial_state_from_a_simulator_row():
    row = simulator_parameters("adolescent#001").to_dict()
    x0 = initial_state_from_mapping(row)
    assert x0.shape == (N_STATES,) and len(State) == N_STATES
    assert x0[State.G_P] == row["x0_ 4"] and x0[State.G_SC] == row["x0_13"]
    params = ModelParams.from_mappings(row)
    assert params.size == 1 and params.BW[0] == row["BW"] and params.kabs[0] == row["kabs"]
    assert glucose_mg_dl(x0[None], params)[0] == pytest.approx(row["Gb"], rel=1e-6)
    assert set(params.to_dict()) == set(PARAMETER_NAMES)

    with pytest.raises(ValueError, match="kabs"):
        ModelParams.from_mappings({k: v for k, v in row.items() if k != "kabs"})
    with pytest.raises(ValueError, match="BW"):
        params.replace(BW=np.array([-1.0]))
    with pytest.raises(ValueError, match="x0_7"):
        initial_state_from_mapping({k: v for k, v in row.items() if k != "x0_ 7"})
    with pytest.raises(ValueError, match="insulin_u_per_min"):
        simulate(params, x0, np.zeros((1, 5)), np.full((1, 5), -1.0))


def test_twin_package_imports_neither_pandas_nor_simglucose():
    code = "import sys, twin.model; print(sorted(m for m in ('pandas', 'simglucose') if m in sys.modules))"
    repo = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo)
    assert out.stdout.strip() == "[]"


def test_exact_insulin_steps_match_a_fine_reference():
    """5-minute steps with the insulin subsystem advanced exactly (the MPC's predictions)
    stay within 0.05 mg/dL of 1-minute RK4 over 3 hours, for every personalized twin."""
    from sim.trial.cohort import PATIENTS, clinical_profile
    from twin.model import basal_insulin_u_per_min, stable_substeps
    from twin.personalize import default_prior, personalize

    prior = default_prior()
    worst = 0.0
    for name in PATIENTS:
        twin = personalize(clinical_profile(name), prior)
        basal = basal_insulin_u_per_min(twin.params)[0]
        plan = np.full((1, 36), basal)
        plan[0, 0] += 4.0 / 5.0  # a 4 U bolus, then a suspension, then basal
        plan[0, 12:18] = 0.0
        disturbance = np.full((1, 36), 1.0)
        fine = simulate(twin.params, twin.x_basal, np.zeros((1, 180)), np.repeat(plan, 5, axis=1), dt_min=1.0,
                        substeps=4, disturbance_mg_per_kg_per_min=np.repeat(disturbance, 5, axis=1))
        fast = simulate(twin.params, twin.x_basal, np.zeros((1, 36)), plan, dt_min=5.0, exact_insulin=True,
                        disturbance_mg_per_kg_per_min=disturbance)
        assert stable_substeps(twin.params, 5.0, include_insulin=False) == 1
        worst = max(worst, float(np.abs(fast.glucose_mg_dl[0] - fine.glucose_mg_dl[0, ::5]).max()))
    assert worst < 0.05, worst
