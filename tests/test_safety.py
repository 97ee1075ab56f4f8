"""Safety invariants of DESIGN.md as properties over random states, histories and proposals."""

from datetime import datetime, timedelta

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from controller.insulin_math import Delivery, fraction_remaining, insulin_on_board_u
from controller.policy import Dose
from controller.safety import SafetyLimits, SafetySupervisor
from twin.profile import BasalSegment, PatientProfile

NOW = datetime(2025, 3, 1, 12, 0)


@st.composite
def profiles(draw):
    rates = draw(st.lists(st.floats(0.05, 3.0), min_size=1, max_size=4))
    starts = sorted(draw(st.lists(st.integers(1, 1439), min_size=len(rates) - 1, max_size=len(rates) - 1, unique=True)))
    schedule = tuple(BasalSegment(s, r) for s, r in zip([0] + starts, rates))
    return PatientProfile(
        name="p", weight_kg=draw(st.floats(15, 150)), total_daily_insulin_u=draw(st.floats(8, 120)),
        carb_ratio_g_per_u=draw(st.floats(3, 40)), correction_factor_mg_dl_per_u=draw(st.floats(5, 120)),
        age_years=draw(st.floats(3, 90)), basal_schedule=schedule,
    )


@st.composite
def situations(draw):
    profile = draw(profiles())
    sup = SafetySupervisor(profile)
    # readings: minutes before now (strictly decreasing ages), values anywhere the sensor could report
    n = draw(st.integers(0, 8))
    ages = sorted(draw(st.lists(st.floats(0, 40), min_size=n, max_size=n, unique=True)), reverse=True)
    for age in ages:
        sup.observe(NOW - timedelta(minutes=age), draw(st.floats(20, 650)))
    for _ in range(draw(st.integers(0, 6))):
        minutes_ago = draw(st.floats(1, 400))
        t = NOW - timedelta(minutes=minutes_ago)
        sup.delivered(t, draw(st.floats(0, 10)), draw(st.sampled_from([3.0, 5.0])), draw(st.floats(0, 8)))
    if draw(st.booleans()):
        sup.announce_carbs(NOW - timedelta(minutes=draw(st.floats(0, 200))), draw(st.floats(0, 120)))
    proposal = Dose(draw(st.floats(0, 60)), draw(st.floats(0, 40)), "proposal")
    cycle = draw(st.sampled_from([1.0, 3.0, 5.0]))
    return profile, sup, proposal, cycle


def _scheduled(profile):
    return profile.basal_u_per_h_at(NOW.hour * 60 + NOW.minute)


@given(situations())
@settings(max_examples=400)
def test_never_above_max_basal_max_bolus_or_max_iob(case):
    profile, sup, proposal, cycle = case
    safe = sup.bound(proposal, NOW, cycle)
    lim = sup.limits
    scheduled = _scheduled(profile)
    assert safe.dose.basal_u_per_h <= min(lim.max_basal_u_per_h, lim.max_basal_multiple * scheduled) + 1e-9 \
        or not safe.automatic
    assert safe.dose.bolus_u <= lim.max_bolus_u + 1e-9
    if safe.automatic:
        # corrections: the configured maximum, and never more than the latest glucose calls for;
        # meals: never more than the largest share of the bolus calculator the learner may reach
        glucose = sup.readings[-1][1]
        correction = min(lim.max_iob_u, max(glucose - profile.target_mg_dl, 0.0) / profile.correction_factor_mg_dl_per_u)
        limit = max(correction, lim.meal_insulin_fraction_max * sup.carbs_on_board_g(NOW) / profile.carb_ratio_g_per_u)
        added = safe.dose.bolus_u + max(safe.dose.basal_u_per_h - scheduled, 0.0) * cycle / 60
        # insulin withheld earlier (negative IOB) is never given back on top of the limit
        assert added <= max(limit - max(safe.iob_u, 0.0), 0.0) + 1e-9


@given(situations())
@settings(max_examples=400)
def test_low_or_forecast_low_means_zero_and_below_threshold_means_no_more_than_scheduled(case):
    profile, sup, proposal, cycle = case
    safe = sup.bound(proposal, NOW, cycle)
    if not safe.automatic or not sup.readings:
        return
    glucose = sup.readings[-1][1]
    lim = sup.limits
    if glucose <= lim.low_mg_dl or glucose + 30 * sup.trend_mg_dl_per_min() < lim.suspend_forecast_mg_dl:
        assert safe.dose.basal_u_per_h == 0.0 and safe.dose.bolus_u == 0.0
        assert any(a.rule.endswith("suspend") for a in safe.adjustments) or (
            proposal.basal_u_per_h == 0 and proposal.bolus_u == 0)
    elif glucose < lim.correction_threshold_mg_dl:
        assert safe.dose.basal_u_per_h <= _scheduled(profile) + 1e-12 and safe.dose.bolus_u == 0.0


@given(situations())
@settings(max_examples=400)
def test_stale_or_implausible_cgm_falls_back_to_programmed_basal_with_a_reason(case):
    profile, sup, proposal, cycle = case
    safe = sup.bound(proposal, NOW, cycle)
    lim = sup.limits
    stale = not sup.readings or (NOW - sup.readings[-1][0]) > timedelta(minutes=lim.stale_after_min)
    if stale or (sup.readings and sup.readings[-1][1] >= lim.sensor_max_mg_dl):
        assert not safe.automatic
        assert safe.dose.basal_u_per_h == _scheduled(profile) and safe.dose.bolus_u == 0.0
        assert safe.adjustments and safe.adjustments[0].rule == "cgm_fallback"


@given(situations())
@settings(max_examples=300)
def test_every_change_has_a_reason(case):
    profile, sup, proposal, cycle = case
    safe = sup.bound(proposal, NOW, cycle)
    changed = (safe.dose.basal_u_per_h, safe.dose.bolus_u) != (proposal.basal_u_per_h, proposal.bolus_u)
    if changed:
        assert safe.adjustments and all(a.detail for a in safe.adjustments)
        assert safe.reason and safe.reason != proposal.reason
    for a in safe.adjustments:
        assert a.basal_after_u_per_h >= 0 and a.bolus_after_u >= 0


@given(st.floats(0, 400), st.floats(0, 400))
def test_insulin_on_board_decays_monotonically(t1, t2):
    early, late = sorted((t1, t2))
    assert 0.0 <= fraction_remaining(late) <= fraction_remaining(early) <= 1.0


def test_iob_by_hand():
    assert fraction_remaining(0) == 1.0 and fraction_remaining(360) == 0.0
    assert 0.4 < fraction_remaining(120) < 0.8
    deliveries = [Delivery(NOW - timedelta(minutes=60), 2.0), Delivery(NOW + timedelta(minutes=5), 9.0)]
    assert insulin_on_board_u(deliveries, NOW) == pytest.approx(2.0 * fraction_remaining(60))


def test_sensor_low_limit_suspends_rather_than_basal():
    profile = PatientProfile("p", 70, 40, 10, 40, 30, (BasalSegment(0, 1.0),))
    sup = SafetySupervisor(profile)
    sup.observe(NOW - timedelta(minutes=5), 60.0)
    sup.observe(NOW, 39.0)
    safe = sup.bound(Dose(2.0, 1.0, "x"), NOW, 5.0)
    assert safe.dose.basal_u_per_h == 0.0 and safe.dose.bolus_u == 0.0
    assert safe.adjustments[0].rule == "low_suspend"


def test_limits_validation():
    with pytest.raises(ValueError):
        SafetyLimits(max_basal_u_per_h=-1, max_bolus_u=1, max_iob_u=1)
    with pytest.raises(ValueError):
        SafetyLimits(max_basal_u_per_h=1, max_bolus_u=1, max_iob_u=1, low_mg_dl=100, correction_threshold_mg_dl=90)


def test_corrections_stop_at_what_the_glucose_calls_for():
    """At 160 mg/dL, target 120, CF 40: at most 1 U of correction insulin on board, whatever the proposal."""
    profile = PatientProfile("p", 70.0, 40.0, 10.0, 40.0, 40.0, (BasalSegment(0, 1.0),), target_mg_dl=120.0)
    sup = SafetySupervisor(profile)
    for minutes in (10, 5, 0):
        sup.observe(NOW - timedelta(minutes=minutes), 160.0)
    safe = sup.bound(Dose(1.0, 3.0, "proposal"), NOW, 5.0)
    assert safe.dose.bolus_u == pytest.approx(1.0)
    assert any(a.rule == "max_iob" and "1.00 U corrects 160 mg/dL" in a.detail for a in safe.adjustments)
    sup.delivered(NOW, 1.0, 5.0, safe.dose.bolus_u)
    later = NOW + timedelta(minutes=5)
    sup.observe(later, 160.0)
    assert sup.bound(Dose(1.0, 3.0, "proposal"), later, 5.0).dose.bolus_u < 0.05  # the 1 U is still on board


def test_the_supervisor_remembers_insulin_for_ten_hours():
    """Its IOB account has a 10-hour tail: a bolus 7 h ago still counts, one 10 h ago no longer does."""
    profile = PatientProfile("p", 70.0, 40.0, 10.0, 40.0, 40.0, (BasalSegment(0, 1.0),))
    sup = SafetySupervisor(profile)
    sup.delivered(NOW - timedelta(hours=10, minutes=5), 1.0, 5.0, 1.0)
    sup.delivered(NOW - timedelta(hours=7), 1.0, 5.0, 2.0)
    assert sup.iob_u(NOW) == pytest.approx(2.0 * fraction_remaining(7 * 60, 600.0, 100.0))  # the older adds 0
    assert sup.iob_u(NOW) > 0.05 and fraction_remaining(7 * 60) == 0.0  # Loop's 6-h curve has forgotten it


def test_insulin_withheld_during_a_suspension_is_not_given_back():
    """Two hours suspended (net IOB negative), then 160 mg/dL: at most the 1 U that 160 calls for, not 1 U plus
    the withheld basal (a sensor recovering from a low often reads high)."""
    profile = PatientProfile("p", 70.0, 40.0, 10.0, 40.0, 40.0, (BasalSegment(0, 1.0),), target_mg_dl=120.0)
    sup = SafetySupervisor(profile)
    for k in range(24):
        sup.delivered(NOW - timedelta(minutes=120 - 5 * k), 0.0, 5.0, 0.0)
    assert sup.iob_u(NOW) < -0.5
    for minutes in (10, 5, 0):
        sup.observe(NOW - timedelta(minutes=minutes), 160.0)
    safe = sup.bound(Dose(1.0, 3.0, "proposal"), NOW, 5.0)
    assert safe.dose.bolus_u == pytest.approx(1.0)


@given(situations(), st.floats(20, 70), st.floats(0.5, 15.0))
@settings(max_examples=300)
def test_a_fresh_low_suspends_whatever_came_before_it(case, low, age_min):
    """Issue 15, item 10: a fall to LOW (even one that looks like a jump) suspends; it never
    falls back to the programmed basal."""
    profile, sup, proposal, cycle = case
    t = NOW - timedelta(minutes=min(age_min, sup.limits.stale_after_min - 0.1))
    assume(not sup.readings or t > sup.readings[-1][0])
    sup.observe(t, low)
    safe = sup.bound(proposal, NOW, cycle)
    assert safe.dose.basal_u_per_h == 0.0 and safe.dose.bolus_u == 0.0
    assert safe.automatic and any(a.rule == "low_suspend" for a in safe.adjustments) or (
        proposal.basal_u_per_h == 0 and proposal.bolus_u == 0)


@given(situations(), st.floats(1.0, 600.0))
@settings(max_examples=300)
def test_conservative_mode_gives_no_bolus_and_no_basal_above_scheduled(case, minutes_left):
    """Issue 15, item 2: insulin already given unknown -> never above the programmed basal."""
    profile, sup, proposal, cycle = case
    sup.restrict(NOW + timedelta(minutes=minutes_left), "insulin already given unknown: test")
    safe = sup.bound(proposal, NOW, cycle)
    assert safe.dose.bolus_u == 0.0
    assert safe.dose.basal_u_per_h <= _scheduled(profile) + 1e-12
    if proposal.bolus_u > 0 or proposal.basal_u_per_h > _scheduled(profile):
        assert safe.adjustments  # and every change has its reason


def test_conservative_mode_ends_at_its_time():
    profile = PatientProfile("p", 70, 40, 12, 45, 35, (BasalSegment(0, 0.8),))
    sup = SafetySupervisor(profile)
    for k in range(3):
        sup.observe(NOW - timedelta(minutes=10 - 5 * k), 250.0 + 5 * k)
    sup.restrict(NOW + timedelta(minutes=30), "test")
    held = sup.bound(Dose(2.0, 1.0, "p"), NOW, 5.0)
    assert held.dose.bolus_u == 0.0 and held.dose.basal_u_per_h == 0.8
    assert "insulin_history_unknown" in [a.rule for a in held.adjustments]
    later = NOW + timedelta(minutes=31)
    sup.observe(later - timedelta(minutes=1), 265.0)
    free = sup.bound(Dose(2.0, 1.0, "p"), later, 5.0)
    assert free.dose.bolus_u > 0
