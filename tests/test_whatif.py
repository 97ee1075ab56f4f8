"""What-if on the live twin (issue 19): open loop, closed loop, and that asking never doses.

Real components: the twin personalized for a simglucose patient's clinical
profile, the real estimator, MPC, meal bolus and safety supervisor.
"""

from __future__ import annotations

import ast
import copy
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.policy import ControlInput
from controller.twin_policy import TwinMPCPolicy
from controller.whatif import closed_loop
from sim.trial.cohort import clinical_profile
from sim.trial.priors import population_prior
from twin.personalize import personalize
from twin.whatif import Bolus, Exercise, Meal, NotModelled, TempBasal, branch_inputs, open_loop

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2025, 1, 1, 6, 0, tzinfo=timezone.utc)


def _settled_policy(name: str = "adult#003", glucose: float | None = None) -> TwinMPCPolicy:
    profile = clinical_profile(name)
    twin = personalize(profile, population_prior(exclude=name))
    policy = TwinMPCPolicy(twin)
    level = twin.basal_glucose_mg_dl if glucose is None else glucose
    for k in range(36):  # 3 h at a steady reading
        policy.decide(ControlInput(time=T0 + timedelta(minutes=5 * k), cgm_mg_dl=level, announced_carbs_g=0.0,
                                   cycle_min=5.0))
    return policy


@pytest.fixture(scope="module")
def policy() -> TwinMPCPolicy:
    return _settled_policy()


def test_open_loop_meal_raises_bolus_lowers_suspension_raises(policy):
    est = policy.estimator
    without, meal = open_loop(est, [Meal(60)])
    _, bolus = open_loop(est, [Bolus(2)])
    _, suspend = open_loop(est, [TempBasal(0.0, 120)])
    assert meal.glucose_mg_dl.max() > without.glucose_mg_dl.max() + 40
    assert meal.minutes_above() > without.minutes_above()
    assert bolus.glucose_mg_dl.min() < without.glucose_mg_dl.min() - 10
    assert suspend.at(180) > without.at(180) + 5
    assert bolus.insulin_u == pytest.approx(without.insulin_u + 2.0, abs=1e-9)
    for b in (without, meal, bolus, suspend):
        assert np.all(b.lower_mg_dl <= b.glucose_mg_dl) and np.all(b.glucose_mg_dl <= b.upper_mg_dl)


def test_one_unit_from_steady_state_drops_by_the_twins_own_one_unit_drop():
    """At the basal steady state the open-loop effect of 1 U is the twin's 1-U nadir drop (personalize)."""
    from twin.estimator import TwinEstimator

    profile = clinical_profile("adult#003")
    twin = personalize(profile, population_prior(exclude=profile.name))
    est = TwinEstimator(twin, T0, glucose_mg_dl=twin.basal_glucose_mg_dl)  # at the basal steady state
    without, bolus = open_loop(est, [Bolus(1.0)], horizon_min=480)
    assert np.ptp(without.glucose_mg_dl) < 1.0  # steady: nothing moves without the bolus
    effect = bolus.glucose_mg_dl - without.glucose_mg_dl
    assert -effect.min() == pytest.approx(twin.drop_mg_dl_per_u, rel=0.05)


def test_fast_carbs_peak_earlier_and_higher_than_slow(policy):
    _, fast = open_loop(policy.estimator, [Meal(40, absorption="fast")])
    _, slow = open_loop(policy.estimator, [Meal(40, absorption="slow")])
    assert fast.glucose_mg_dl.max() > slow.glucose_mg_dl.max()
    assert np.argmax(fast.glucose_mg_dl) < np.argmax(slow.glucose_mg_dl)


def test_exercise_and_bad_actions_are_refused_with_the_reason():
    with pytest.raises(NotModelled, match="no exercise term"):
        Exercise("moderate", 45)
    with pytest.raises(ValueError, match="absorption"):
        Meal(30, absorption="instant")
    with pytest.raises(ValueError, match="carbs_g"):
        Meal(float("nan"))
    with pytest.raises(ValueError, match="units_u"):
        Bolus(-1)


def test_a_suspension_does_not_cancel_a_bolus_in_the_same_step():
    inputs = branch_inputs([TempBasal(0.0, 30), Bolus(1.0)], np.full(12, 1.2), 5.0)
    assert inputs.insulin_u_per_min[0] == pytest.approx(1.0 / 5.0)
    assert np.all(inputs.insulin_u_per_min[1:6] == 0.0) and inputs.insulin_u_per_min[6] == pytest.approx(1.2 / 60)


def test_the_closed_loop_answers_a_meal_with_insulin_and_a_bolus_with_less(policy):
    meal = closed_loop(policy, [Meal(60)])
    assert meal.loop_with.loop_bolus_u > 1.0 and meal.loop_extra_insulin_u > 1.0
    # the loop's answer keeps the meal lower than the open loop (programmed basal) does
    assert meal.loop_with.branch.glucose_mg_dl.max() < meal.open_with.glucose_mg_dl.max()
    bolus = closed_loop(policy, [Bolus(2.0)])
    assert bolus.loop_extra_insulin_u < 0.0  # the person's 2 U: the loop takes basal back
    assert bolus.loop_with.branch.glucose_mg_dl.min() > bolus.open_with.glucose_mg_dl.min()
    unannounced = closed_loop(policy, [Meal(60, announced=False)])
    assert unannounced.loop_with.loop_bolus_u < meal.loop_with.loop_bolus_u
    data = meal.to_dict()
    assert data["format"] == "glucotwin.whatif/1" and data["question"] == "eat 60 g (medium) now"
    assert len(data["closed_loop"]["with"]["glucose_mg_dl"]) == 73


def test_a_twin_without_readings_is_not_asked():
    profile = clinical_profile("adult#003")
    policy = TwinMPCPolicy(personalize(profile, population_prior(exclude=profile.name)))
    with pytest.raises(ValueError, match="no accepted CGM reading"):
        closed_loop(policy, [Meal(30)])


def _state(policy: TwinMPCPolicy) -> tuple:
    est, sup = policy.estimator, policy.supervisor
    return (est.time, est.x.tobytes(), est.z.tobytes(), est.P.tobytes(), est.basal_u_per_h, est.pending_carbs_g,
            tuple(sup.deliveries), tuple(sup.announced), sup.meal_learner.share)


actions = st.one_of(
    st.builds(Meal, st.floats(0, 120), st.sampled_from([0.0, 30.0, 90.0]), st.sampled_from(["fast", "medium", "slow"]),
              st.booleans()),
    st.builds(Bolus, st.floats(0, 8), st.sampled_from([0.0, 60.0])),
    st.builds(TempBasal, st.floats(0, 4), st.floats(5, 180), st.sampled_from([0.0, 20.0])),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(actions, min_size=1, max_size=3), st.sampled_from([90.0, 160.0, 260.0]))
def test_asking_never_changes_the_live_loop_or_its_next_dose(acts, glucose):
    """Property: a what-if runs on copies; the live policy's state and its next dose are as if never asked."""
    asked = _settled_policy("child#004", glucose)
    untouched = copy.deepcopy(asked)
    before = _state(asked)
    answer = closed_loop(asked, acts, horizon_min=120.0)
    assert _state(asked) == before
    assert np.all(np.isfinite(answer.loop_with.branch.glucose_mg_dl))
    nxt = ControlInput(time=asked.estimator.time + timedelta(minutes=5), cgm_mg_dl=glucose, announced_carbs_g=0.0,
                       cycle_min=5.0)
    a, b = asked.decide(nxt), untouched.decide(nxt)
    assert (a.basal_u_per_h, a.bolus_u) == (b.basal_u_per_h, b.bolus_u)


def test_the_whatif_modules_cannot_reach_the_pump():
    """No what-if module imports the pump bridge, the live loop's ports or a transport."""
    for rel in ("twin/whatif.py", "controller/whatif.py", "controller/loop/whatif_service.py"):
        tree = ast.parse((ROOT / rel).read_text())
        names = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        assert not any(m.startswith(("firmware_bridge", "controller.loop", "paho", "serial")) for m in names), rel
