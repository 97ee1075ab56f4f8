"""The supervisor's learned share of meal insulin: bounded, and moved only by what CGM showed."""

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.share_learning import ShareLearner, ShareLearningSettings
from controller.policy import Dose
from controller.safety import SafetyLimits, SafetySupervisor
from twin.profile import BasalSegment, PatientProfile

T0 = datetime(2025, 1, 1, 7, 0)
DOWN = ShareLearningSettings().step_down
LOWS = ShareLearningSettings().low_readings  # readings in a row that make a low episode


def feed(learner, minutes_and_glucose, meals=()):
    """Feed readings (minute, mg/dL) and meals (minute, g) in time order."""
    events = [(m, 0, g) for m, g in meals] + [(m, 1, g) for m, g in minutes_and_glucose]
    for minute, kind, value in sorted(events):
        t = T0 + timedelta(minutes=minute)
        if kind == 0:
            learner.announce(t, value)
        else:
            learner.observe(t, value)


def test_a_low_after_a_meal_lowers_the_share_once_per_episode():
    learner = ShareLearner()
    readings = [(m, 100.0) for m in range(0, 240, 5)] + [(m, 65.0) for m in range(240, 300, 5)]
    feed(learner, readings, meals=[(0, 60.0)])
    assert learner.share == pytest.approx(0.8 * DOWN)
    assert len(learner.changes) == 1 and "after an announced meal" in learner.changes[0].reason
    # back above the re-arm level, then low again: a second episode
    feed(learner, [(m, 120.0) for m in range(300, 330, 5)] + [(330, 90.0)] + [(335 + 5 * i, 60.0) for i in range(LOWS)])
    assert learner.share == pytest.approx(0.8 * DOWN ** 2)


def test_a_low_long_after_any_meal_changes_nothing():
    learner = ShareLearner()
    feed(learner, [(m, 65.0) for m in range(600, 640, 5)], meals=[(0, 60.0)])
    assert learner.share == 0.8 and not learner.changes


def test_one_low_reading_is_not_an_episode():
    learner = ShareLearner()
    feed(learner, [(0, 90.0), (5, 60.0), (10, 90.0)], meals=[(0, 50.0)])
    assert learner.share == 0.8


def test_a_meal_that_stayed_high_raises_the_share_up_to_the_bolus_calculator():
    learner = ShareLearner()
    for day in range(10):
        start = day * 400
        feed(learner, [(start + m, 240.0) for m in range(0, 380, 5)], meals=[(start, 60.0)])
        if start + 380 < 1440 + 480:  # no raise before a whole day of CGM and the 8-h wait after the meal
            assert learner.share == 0.8
    assert learner.share == 1.0
    assert all(c.after > c.before for c in learner.changes)
    assert "above 180 mg/dL" in learner.changes[0].reason


def test_a_high_meal_with_a_low_in_it_does_not_raise():
    learner = ShareLearner()
    readings = [(m, 250.0) for m in range(0, 300, 5)] + [(300, 85.0)] + [(m, 200.0) for m in range(305, 380, 5)]
    feed(learner, readings, meals=[(0, 60.0)])
    assert learner.share == 0.8


def test_state_round_trips():
    learner = ShareLearner()
    feed(learner, [(m, 200.0) for m in range(0, 100, 5)], meals=[(0, 60.0)])
    again = ShareLearner.from_dict(learner.to_dict(), learner.settings)
    assert again.to_dict() == learner.to_dict()


def test_settings_refuse_more_than_the_bolus_calculator():
    with pytest.raises(ValueError):
        ShareLearningSettings(windows="weekly")
    with pytest.raises(ValueError):
        SafetyLimits(max_basal_u_per_h=4, max_bolus_u=5, max_iob_u=3, meal_insulin_fraction_max=1.5)


events = st.lists(st.tuples(st.floats(0, 60), st.one_of(st.floats(20, 600), st.none()),
                            st.one_of(st.none(), st.floats(1, 150))), max_size=200)


def play(learner, steps):
    """Feed random (gap, reading, carbs) steps; yields after each step."""
    t = T0
    for gap, glucose, carbs in steps:
        t += timedelta(minutes=gap)
        if carbs is not None:
            learner.announce(t, carbs)
        learner.observe(t, glucose)
        yield t


@given(events, st.floats(0.1, 1.0), st.floats(0.1, 1.0))
@settings(max_examples=300)
def test_share_always_within_its_bounds(steps, a, b):
    lowest, highest = sorted((a, b))
    learner = ShareLearner(ShareLearningSettings(initial=highest, lowest=lowest, highest=highest))
    for _ in play(learner, steps):
        assert lowest <= learner.share <= highest
    for c in learner.changes:
        assert c.reason and lowest <= c.after <= highest


@given(events)
@settings(max_examples=200)
def test_lows_never_raise_and_highs_never_lower(steps):
    learner = ShareLearner()
    for _ in play(learner, steps):
        pass
    for c in learner.changes:
        assert (c.after < c.before) == c.reason.startswith("low")


def _profile():
    return PatientProfile(name="p", weight_kg=40, total_daily_insulin_u=30, carb_ratio_g_per_u=10,
                          correction_factor_mg_dl_per_u=50, age_years=12, basal_schedule=(BasalSegment(0, 0.6),))


def test_supervisor_meal_limit_follows_the_learned_share():
    sup = SafetySupervisor(_profile())
    meal_time = T0
    sup.announce_carbs(meal_time, 60.0)
    for m in range(0, 240, 5):
        sup.observe(meal_time + timedelta(minutes=m), 100.0)
    for m in range(240, 260, 5):
        sup.observe(meal_time + timedelta(minutes=m), 65.0)
    share = 0.8 * DOWN
    assert sup.meal_learner.share == pytest.approx(share)
    now = meal_time + timedelta(minutes=300)
    sup.observe(now - timedelta(minutes=5), 130.0)
    sup.observe(now, 130.0)
    sup.announce_carbs(now, 50.0)
    safe = sup.bound(Dose(0.6, 20.0, "proposal"), now, 5.0)
    # share x 50 g / 10 g/U; the earlier meal's carbs are off board after 180 min
    assert safe.dose.bolus_u == pytest.approx(share * 5.0, abs=1e-9)
    assert f"{share:.2f} of the bolus calculator" in safe.reason


def test_no_raise_within_a_day_of_a_low():
    """A slow absorber peaks high and falls low hours later: the peak must not raise the share."""
    learner = ShareLearner()
    # meal 1: high for 3 h, then low 5 h after the meal
    readings = [(m, 250.0) for m in range(0, 180, 5)] + [(m, 250.0 - (m - 175) * 1.4) for m in range(180, 300, 5)]
    readings += [(m, 62.0) for m in range(300, 325, 5)] + [(m, 130.0) for m in range(325, 360, 5)]
    # meal 2 at 360 min: high throughout its window, no low in it
    readings += [(m, 240.0) for m in range(360, 740, 5)]
    feed(learner, readings, meals=[(0, 60.0), (360, 60.0)])
    assert learner.share == pytest.approx(0.8 * DOWN)
    assert [c.reason.startswith("low") for c in learner.changes] == [True]


def clock_learner(**kw):
    return ShareLearner(ShareLearningSettings(initial=1.0, lowest=0.5, highest=2.0, windows="clock", **kw))


def test_clock_windows_raise_after_a_quiet_day_of_highs():
    learner = clock_learner()
    feed(learner, [(m, 230.0) for m in range(0, 1440, 5)])
    assert learner.share == 1.0  # the first day is never quiet
    feed(learner, [(m, 230.0) for m in range(1440, 2 * 1440, 5)])
    assert learner.share > 1.0
    assert all("above 180 mg/dL in the 6 h from" in c.reason for c in learner.changes)


def test_clock_windows_count_every_low_and_ignore_meals():
    learner = clock_learner()
    lows = [(600 + 5 * i, 64.0) for i in range(LOWS)]
    feed(learner, [(m, 100.0) for m in range(0, 600, 5)] + lows, meals=[(0, 80.0)])
    assert learner.share == pytest.approx(DOWN)
    assert learner.changes[-1].reason == "low 64 mg/dL"
    learner2 = clock_learner()
    feed(learner2, [(m, 100.0) for m in range(0, 900, 5)] + [(900 + 5 * i, 64.0) for i in range(LOWS)])
    assert learner2.share == pytest.approx(DOWN)  # no meal needed


def test_supervisor_correction_limit_follows_the_learned_share_and_never_exceeds_the_maximum():
    sup = SafetySupervisor(_profile())
    lim = sup.limits
    t = T0
    for _ in range(3):  # three low episodes, no meals
        for glucose in [100.0] * 10 + [64.0] * LOWS + [120.0] * 4:
            t += timedelta(minutes=5)
            sup.observe(t, glucose)
    share = sup.correction_learner.share
    assert share == pytest.approx(DOWN ** 3)
    for _ in range(3 * 288):  # three days high: the share recovers, but never above 1
        t += timedelta(minutes=5)
        sup.observe(t, 400.0)
        assert sup.correction_learner.share <= 1.0
    assert sup.correction_learner.share > share
    share = sup.correction_learner.share
    safe = sup.bound(Dose(0.6, 20.0, "proposal"), t, 5.0)
    # (400 - target) / CF calls for more than the configured maximum, so the scaled maximum binds
    assert safe.dose.bolus_u == pytest.approx(lim.max_iob_u * share, abs=1e-9)
    if share < 1.0:
        assert f"({share:.2f} x {lim.max_iob_u:.2f})" in safe.reason


def test_learned_shares_survive_a_decision_record_round_trip():
    import json

    from controller.decision_record import restore_supervisor, supervisor_state

    sup = SafetySupervisor(_profile())
    sup.announce_carbs(T0, 60.0)
    for m in range(0, 600, 5):
        sup.observe(T0 + timedelta(minutes=m), 95.0 if m < 300 else 60.0)
    assert sup.meal_learner.share < 0.8 and sup.correction_learner.share < 1.0
    state = json.loads(json.dumps(supervisor_state(sup)))
    again = restore_supervisor(sup.profile, sup.limits, state)
    assert again.meal_learner.to_dict() == sup.meal_learner.to_dict()
    assert again.correction_learner.to_dict() == sup.correction_learner.to_dict()
    now = T0 + timedelta(minutes=600)
    for s in (sup, again):
        s.observe(now, 250.0)
    proposal = Dose(2.0, 5.0, "proposal")
    assert again.bound(proposal, now, 5.0) == sup.bound(proposal, now, 5.0)


def test_a_compression_low_is_not_a_low():
    """A sensor pressed under a sleeping body drops 100 mg/dL in minutes; real glucose does not."""
    learner = clock_learner()
    readings = [(m, 140.0) for m in range(0, 600, 5)] + [(m, 45.0) for m in range(600, 640, 5)]
    readings += [(m, 140.0) for m in range(640, 700, 5)]
    feed(learner, readings)
    assert learner.share == 1.0 and not learner.changes
    # the same depth reached at a physiological pace counts
    slow = [(600 + 5 * i, 140.0 - 4.0 * 5 * i) for i in range(5)] + [(m, 45.0) for m in range(625, 660, 5)]
    feed(learner, [(m, 140.0) for m in range(700, 1200, 5)] + [(m + 600, g) for m, g in slow])
    assert learner.share == pytest.approx(DOWN)


def test_restoring_learner_state_clips_shares_and_refuses_garbage():
    profile = PatientProfile("p", 70.0, 40.0, 12.0, 45.0, 35.0, (BasalSegment(0, 0.8),), 120.0)
    sup = SafetySupervisor(profile, SafetyLimits.for_profile(profile))
    state = sup.learner_state()
    state["meal"]["share"], state["correction"]["share"] = 5.0, 0.01  # e.g. the limits were edited since
    other = SafetySupervisor(profile, SafetyLimits.for_profile(profile))
    other.restore_learners(state)
    assert other.meal_learner.share == sup.limits.meal_insulin_fraction_max
    assert other.correction_learner.share == sup.limits.correction_share_min
    for bad in ({}, {"meal": {}, "correction": {}}, {"meal": state["meal"]}, {"meal": 1, "correction": 2}):
        before = other.learner_state()
        with pytest.raises(ValueError, match="not a learner state"):
            other.restore_learners(bad)
        assert other.learner_state() == before
