"""Therapy settings as people have them: carb ratio, correction factor and target by time of day, and
temporary targets (issue 20, deliver 2)."""

from __future__ import annotations

import tomllib
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.loop.config.live_config import ConfigError, parse_config, profile_to_toml
from controller.policy import ControlInput
from controller.temp_target import PRESETS, TempTarget, from_nightscout, from_preset
from controller.twin_policy import TwinMPCPolicy
from twin.personalize import default_prior, personalize
from twin.profile import PatientProfile, flat_basal
from twin.schedule import ScheduleSegment, parse_clock, time_weighted_mean, value_at

T0 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
PUMP = {"port": "/dev/ttyUSB0", "key_file": "k"}


def base_profile(**schedules) -> PatientProfile:
    return PatientProfile("me", 70.0, 40.0, 12.0, 45.0, 30.0, flat_basal(0.8), **schedules)


def profile_table(**extra) -> dict:
    return {"name": "me", "weight_kg": 70, "total_daily_insulin_u": 40, "carb_ratio_g_per_u": 12,
            "correction_factor_mg_dl_per_u": 45, "age_years": 30, "basal": [{"start": "00:00", "rate_u_per_h": 0.8}],
            **extra}


def run_policy(policy: TwinMPCPolicy, glucose: list[float], carbs_at: int | None = None, carbs_g: float = 0.0,
               start: datetime = T0) -> list:
    doses = []
    for i, g in enumerate(glucose):
        inp = ControlInput(time=start + timedelta(minutes=5 * i), cgm_mg_dl=g,
                           announced_carbs_g=carbs_g if i == carbs_at else 0.0, cycle_min=5.0)
        doses.append(policy.decide(inp))
    return doses


def test_a_schedule_gives_each_time_its_value_and_an_empty_one_the_constant():
    cr = (ScheduleSegment(0, 12.0), ScheduleSegment(6 * 60, 9.0), ScheduleSegment(11 * 60, 14.0))
    assert [value_at(cr, m, 99.0) for m in (0, 359, 360, 659, 660, 1439, 1440 + 400)] == [12, 12, 9, 9, 14, 14, 9]
    assert value_at((), 500, 12.5) == 12.5
    assert time_weighted_mean(cr) == pytest.approx((12 * 6 + 9 * 5 + 14 * 13) / 24)
    assert parse_clock("06:30") == 390 and parse_clock("23:59:00") == 1439
    with pytest.raises(ValueError):
        parse_clock("24:00")
    with pytest.raises(ValueError, match="start at minute 0"):
        base_profile(carb_ratio_schedule=(ScheduleSegment(60, 10.0),))
    with pytest.raises(ValueError, match="target_schedule value at 07:00"):
        base_profile(target_schedule=(ScheduleSegment(0, 120.0), ScheduleSegment(420, 60.0)))


schedules = st.lists(st.tuples(st.integers(0, 1439), st.integers(50, 400)), min_size=1, max_size=6).map(
    lambda pairs: tuple(ScheduleSegment(m, v / 10.0) for m, v in
                        sorted({0: pairs[0][1], **{m: v for m, v in pairs[1:]}}.items())))


@settings(max_examples=40, deadline=None)
@given(cr=schedules, target=st.lists(st.integers(90, 180), min_size=1, max_size=4))
def test_schedules_round_trip_through_the_config_and_the_profile_document(cr, target):
    tgt = tuple(ScheduleSegment(i * 300, float(v)) for i, v in enumerate(target))
    profile = base_profile(carb_ratio_schedule=cr, target_schedule=tgt)
    assert PatientProfile.from_dict(profile.to_dict()) == profile
    text = profile_to_toml(profile)
    try:
        loaded = parse_config({"profile": tomllib.loads(text)["profile"], "pump": PUMP})
    except ConfigError as exc:  # a ratio outside the hard range for this TDI (2.5..62.5 g/U) must be the reason
        assert "carb_ratio_schedule" in str(exc) and any(not 2.5 <= s.value <= 62.5 for s in cr)
        return
    assert loaded.profile == profile


def test_config_schedules_are_range_checked_naming_the_segment():
    ok = parse_config({"profile": profile_table(correction_factor_schedule=[
        {"start": "00:00", "mg_dl_per_u": 50}, {"start": "06:00", "mg_dl_per_u": 40}]), "pump": PUMP})
    assert ok.profile.correction_factor_at(7 * 60) == 40.0 and ok.profile.correction_factor_at(60) == 50.0
    for bad, message in [
        ([{"start": "00:00", "mg_dl_per_u": 500}], r"correction_factor_schedule\[0\].mg_dl_per_u = 500"),
        ([{"start": "01:00", "mg_dl_per_u": 45}], "first segment must start"),
        ([{"start": "00:00", "rate": 45}], "unknown key"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_config({"profile": profile_table(correction_factor_schedule=bad), "pump": PUMP})
    # the limits' thresholds must hold for the lowest scheduled target, not only the day's one
    with pytest.raises(ConfigError, match="correction_threshold_mg_dl"):
        parse_config({"profile": profile_table(target_schedule=[{"start": "00:00", "mg_dl": 120},
                                                                {"start": "22:00", "mg_dl": 85}]),
                      "limits": {"correction_threshold_mg_dl": 90}, "pump": PUMP})


def test_the_meal_bolus_uses_the_carb_ratio_of_its_hour():
    prior = default_prior()
    flat = TwinMPCPolicy(personalize(base_profile(), prior))
    breakfast = TwinMPCPolicy(personalize(base_profile(carb_ratio_schedule=(
        ScheduleSegment(0, 12.0), ScheduleSegment(6 * 60, 8.0), ScheduleSegment(10 * 60, 12.0))), prior))
    glucose = [120.0] * 6
    a = run_policy(flat, glucose, carbs_at=5, carbs_g=15)
    b = run_policy(breakfast, glucose, carbs_at=5, carbs_g=15)
    assert [(d.basal_u_per_h, d.bolus_u) for d in a[:5]] == [(d.basal_u_per_h, d.bolus_u) for d in b[:5]]
    # 15 g at 8 g/U asks for more than at 12 g/U
    assert b[5].diagnostics["meal_bolus_u"] > a[5].diagnostics["meal_bolus_u"] > 0
    assert b[5].bolus_u > a[5].bolus_u


@settings(max_examples=10, deadline=None)
@given(glucose=st.lists(st.floats(60, 350), min_size=4, max_size=8), hour=st.integers(0, 23))
def test_a_schedule_that_repeats_the_constant_changes_no_dose(glucose, hour):
    prior = default_prior()
    same = (ScheduleSegment(0, 12.0), ScheduleSegment(hour * 60, 12.0)) if hour else (ScheduleSegment(0, 12.0),)
    a = TwinMPCPolicy(personalize(base_profile(), prior))
    b = TwinMPCPolicy(personalize(base_profile(carb_ratio_schedule=same, target_schedule=(ScheduleSegment(0, 120.0),)),
                                  prior))
    da, db = run_policy(a, glucose, 2, 30.0), run_policy(b, glucose, 2, 30.0)
    assert [(d.basal_u_per_h, d.bolus_u) for d in da] == [(d.basal_u_per_h, d.bolus_u) for d in db]


def test_an_eating_soon_target_doses_more_until_it_ends_and_is_in_the_reason():
    prior = default_prior()
    glucose = [150.0 + 2 * i for i in range(16)]
    plain = TwinMPCPolicy(personalize(base_profile(), prior))
    soon = TwinMPCPolicy(personalize(base_profile(), prior))
    soon.set_temp_target(from_preset("eating_soon", T0, duration_min=30, source="test"))
    a, b = run_policy(plain, glucose), run_policy(soon, glucose)
    insulin = lambda ds: sum(d.basal_u_per_h * 5 / 60 + d.bolus_u for d in ds)  # noqa: E731
    assert insulin(b[:6]) > insulin(a[:6])
    assert b[0].diagnostics["target_mg_dl"] == 90.0 and a[0].diagnostics["target_mg_dl"] == 120.0
    assert "temporary target: Eating Soon 90 mg/dL until 06:30" in b[0].reason
    assert b[0].diagnostics["temp_target"]["source"] == "test"
    assert b[6].diagnostics["target_mg_dl"] == 120.0 and "temp_target" not in b[6].diagnostics  # 06:30: over
    # a cancellation ends it at once
    c = TwinMPCPolicy(personalize(base_profile(), prior))
    c.set_temp_target(from_preset("exercise", T0))
    c.set_temp_target(TempTarget(T0 + timedelta(minutes=10), 0.0, float("nan"), "cancel", "test"))
    d = run_policy(c, glucose[:4])
    assert [x.diagnostics["target_mg_dl"] for x in d] == [140.0, 140.0, 120.0, 120.0]


@settings(max_examples=15, deadline=None)
@given(target=st.floats(80, 200), glucose=st.lists(st.floats(40, 400), min_size=3, max_size=8),
       carbs=st.sampled_from([0.0, 20.0, 90.0]))
def test_no_temporary_target_takes_a_dose_past_the_supervisors_limits(target, glucose, carbs):
    prior = default_prior()
    policy = TwinMPCPolicy(personalize(base_profile(), prior))
    policy.set_temp_target(TempTarget(T0, 600.0, target, "any", "test"))
    lim = policy.limits
    for i, dose in enumerate(run_policy(policy, glucose, 1, carbs)):
        assert dose.bolus_u <= lim.max_bolus_u + 1e-9
        assert dose.basal_u_per_h <= min(lim.max_basal_u_per_h, lim.max_basal_multiple * 0.8) + 1e-9
        if glucose[i] < lim.low_mg_dl:
            assert dose.basal_u_per_h == 0.0 and dose.bolus_u == 0.0


def test_temporary_targets_are_bounded_and_read_from_nightscout_treatments():
    with pytest.raises(ValueError, match="80..200 mg/dL"):
        TempTarget(T0, 60.0, 70.0)
    with pytest.raises(ValueError, match="duration"):
        TempTarget(T0, -5.0, 100.0)
    with pytest.raises(ValueError, match="unknown temporary target preset"):
        from_preset("party", T0)
    assert set(PRESETS) == {"eating_soon", "exercise", "hypo"}
    mgdl = from_nightscout({"eventType": "Temporary Target", "created_at": "2026-12-07T06:00:00.000Z",
                            "duration": 60, "targetBottom": 80, "targetTop": 100, "reason": "Eating Soon",
                            "units": "mg/dl"})
    assert (mgdl.target_mg_dl, mgdl.duration_min, mgdl.start, mgdl.reason) == (90.0, 60.0, T0, "Eating Soon")
    mmol = from_nightscout({"eventType": "Temporary Target", "created_at": "2026-12-07T06:00:00Z",
                            "duration": 90, "targetBottom": 7.5, "targetTop": 8.0, "units": "mmol"})
    assert mmol.target_mg_dl == pytest.approx(7.75 * 18.01559, abs=0.05)  # Nightscout's MMOL_TO_MGDL
    cancel = from_nightscout({"eventType": "Temporary Target", "created_at": "2026-12-07T06:30:00Z", "duration": 0})
    assert cancel.cancels and not cancel.active_at(T0 + timedelta(minutes=30))
    with pytest.raises(ValueError, match="not a Temporary Target"):
        from_nightscout({"eventType": "Meal Bolus", "created_at": "2026-12-07T06:00:00Z"})
    with pytest.raises(ValueError, match="80..200"):
        from_nightscout({"eventType": "Temporary Target", "created_at": "2026-12-07T06:00:00Z", "duration": 30,
                         "targetBottom": 40, "targetTop": 50})


def test_schedules_are_read_in_the_profiles_timezone_across_daylight_saving():
    table = profile_table(timezone="Europe/Paris", basal=[{"start": "00:00", "rate_u_per_h": 0.6},
                                                          {"start": "06:00", "rate_u_per_h": 1.0}],
                          target_schedule=[{"start": "00:00", "mg_dl": 130}, {"start": "06:00", "mg_dl": 110}])
    profile = parse_config({"profile": table, "pump": PUMP}).profile
    assert profile.timezone == "Europe/Paris"
    winter = datetime(2026, 12, 7, 5, 30, tzinfo=UTC)  # 06:30 in Paris (UTC+1)
    summer = datetime(2026, 7, 7, 4, 30, tzinfo=UTC)  # 06:30 in Paris (UTC+2)
    for t in (winter, summer):
        assert profile.minute_of_day(t) == 390 and profile.basal_u_per_h_at(t) == 1.0 and profile.target_at(t) == 110
    assert profile.basal_u_per_h_at(winter - timedelta(hours=1)) == 0.6  # 05:30 in Paris
    # the controller and its supervisor read the same local schedule
    policy = TwinMPCPolicy(personalize(profile, default_prior()))
    dose = run_policy(policy, [115.0, 115.0], start=winter)[-1]
    assert dose.diagnostics["target_mg_dl"] == 110.0
    assert parse_config({"profile": profile_table(), "pump": PUMP}).profile.minute_of_day(winter) == 330  # UTC
    assert PatientProfile.from_dict(profile.to_dict()) == profile
    assert "timezone = \"Europe/Paris\"" in profile_to_toml(profile)
    with pytest.raises(ConfigError, match="timezone"):
        parse_config({"profile": profile_table(timezone="Mars/Olympus"), "pump": PUMP})


def test_the_report_draws_a_moving_target_and_shades_temporary_targets():
    pytest.importorskip("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from sim.report.traces import _draw_target
    from sim.trial.metrics.units import MG_DL
    from sim.trial.trace import Trace

    n = 12
    times = [T0 + timedelta(minutes=5 * i) for i in range(n)]
    flat = Trace("p", 5.0, times, np.full(n, 120.0), np.full(n, 120.0), np.zeros(n), np.zeros(n),
                 {"target_mg_dl": [120.0] * n, "temp_target": [""] * n})
    moved = Trace("p", 5.0, times, np.full(n, 120.0), np.full(n, 120.0), np.zeros(n), np.zeros(n),
                  {"target_mg_dl": [120.0] * 3 + [90.0] * 6 + [120.0] * 3,
                   "temp_target": [""] * 3 + ["Eating Soon 90 mg/dL"] * 6 + [""] * 3})
    hours = np.arange(n) * 5 / 60.0
    fig, (a, b) = plt.subplots(2)
    _draw_target(a, flat, hours, MG_DL)
    _draw_target(b, moved, hours, MG_DL)
    assert not a.lines and not a.patches  # a constant target is the shaded range already
    assert [line.get_label() for line in b.lines] == ["controller target"]
    assert list(b.lines[0].get_ydata()) == [120.0] * 3 + [90.0] * 6 + [120.0] * 3
    spans = [p for p in b.patches if p.get_label() == "temporary target"]
    assert len(spans) == 1 and spans[0].get_x() == pytest.approx(hours[3])
    plt.close(fig)
