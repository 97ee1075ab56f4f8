"""Live reading validation (sensors.validation): every rejection reason, and properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors.reading import PLAUSIBLE_MAX_MG_DL, PLAUSIBLE_MIN_MG_DL, GlucoseReading, Rejected
from sensors.validation import (
    ACCEPTED,
    DUPLICATE,
    IMPLAUSIBLE_RATE,
    MIN_INTERVAL_FRACTION,
    REASONS,
    ReadingValidator,
    ValidationSettings,
)

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def reading(minutes: float, glucose: float, clipped: bool = False, subject: str = "") -> GlucoseReading:
    return GlucoseReading(T0 + timedelta(minutes=minutes), glucose, "test", subject=subject, clipped=clipped)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def phrase(outcome: GlucoseReading | Rejected) -> str:
    assert isinstance(outcome, Rejected), outcome
    return next(p for p in REASONS if outcome.reason.startswith(p))


# --- settings ------------------------------------------------------------------------------


def test_default_settings():
    s = ValidationSettings()
    assert (s.min_mg_dl, s.max_mg_dl) == (PLAUSIBLE_MIN_MG_DL, PLAUSIBLE_MAX_MG_DL) == (39.0, 501.0)
    assert (s.max_future_s, s.max_age_min, s.max_rate_mg_dl_per_min) == (120.0, 15.0, 10.0)


@pytest.mark.parametrize("kwargs, match", [
    ({"min_mg_dl": 0}, "min_mg_dl < max_mg_dl"),
    ({"min_mg_dl": 500, "max_mg_dl": 400}, "min_mg_dl < max_mg_dl"),
    ({"max_age_min": 0}, "max_age_min"),
    ({"max_future_s": -1}, "max_future_s"),
    ({"max_rate_mg_dl_per_min": float("nan")}, "max_rate_mg_dl_per_min"),
    ({"max_rate_mg_dl_per_min": 0}, "max_rate_mg_dl_per_min"),
    ({"rate_window_min": True}, "rate_window_min"),
    ({"duplicate_memory": 0}, "duplicate_memory"),
    ({"min_interval_s": "5"}, "min_interval_s"),
])
def test_settings_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ValidationSettings(**kwargs)


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        ValidationSettings().max_age_min = 30  # type: ignore[misc]


# --- each rule ----------------------------------------------------------------------------------


def test_a_plausible_reading_is_returned_unchanged_and_counted():
    v = ReadingValidator()
    r = reading(0, 120)
    assert v.check(r, at(1)) is r
    assert v.counts[ACCEPTED] == 1
    assert v.last_accepted() is r
    assert set(v.counts) == {ACCEPTED, *REASONS}


@pytest.mark.parametrize("glucose", [38.9, 501.1, 19.9, 600.0, 1000.0, 5.0])
def test_glucose_out_of_range(glucose):
    v = ReadingValidator()
    out = v.check(reading(0, glucose), at(0))
    assert phrase(out) == "glucose out of range"
    assert out.line is None and "mg/dL" in out.raw
    assert v.counts["glucose out of range"] == 1 and v.counts[ACCEPTED] == 0


def test_low_after_a_steady_fall_is_accepted():
    """A fall of 4 mg/dL/min from 80 ends in LOW: consistent with the rate, so the LOW passes
    through, clipped, and the safety supervisor suspends insulin on it."""
    v = ReadingValidator()
    for minute, g in ((0, 80), (5, 60), (10, 45)):
        assert isinstance(v.check(reading(minute, g), at(minute)), GlucoseReading)
    low = v.check(reading(15, 40, clipped=True), at(15))
    assert isinstance(low, GlucoseReading) and low.clipped and low.glucose_mg_dl == 40.0
    assert isinstance(v.check(reading(20, 40, clipped=True), at(20)), GlucoseReading)  # LOW stays LOW


def test_low_right_after_a_normal_reading_is_implausible():
    """180 mg/dL, then LOW five minutes later: the true value is at most 40, so glucose fell at
    least 140 mg/dL in 5 min (28 mg/dL/min): a sensor fault (a compression low), not a fall."""
    v = ReadingValidator()
    assert isinstance(v.check(reading(0, 180), at(0)), GlucoseReading)
    out = v.check(reading(5, 40, clipped=True), at(5))
    assert phrase(out) == IMPLAUSIBLE_RATE
    assert out.reason == ("implausible rate of change: 180 -> LOW (40) mg/dL in 5.0 min "
                          "(at least 28.0 mg/dL/min > 10)")
    assert v.last_accepted().glucose_mg_dl == 180  # the rejected LOW is not the reference


def test_a_persistent_low_after_a_jump_is_accepted_as_a_level_shift():
    """A LOW that the sensor keeps reporting is accepted on the second reading (the level moved or the
    180 was wrong): the supervisor must not stay blind to a real LOW."""
    v = ReadingValidator()
    v.check(reading(0, 180), at(0))
    assert isinstance(v.check(reading(5, 40, clipped=True), at(5)), Rejected)
    second = v.check(reading(10, 40, clipped=True), at(10))
    assert isinstance(second, GlucoseReading) and second.clipped and v.level_shifts == 1


def test_high_right_after_a_normal_reading_is_implausible():
    v = ReadingValidator()
    v.check(reading(0, 120), at(0))
    out = v.check(reading(5, 400, clipped=True), at(5))
    assert phrase(out) == IMPLAUSIBLE_RATE and "HIGH (400)" in out.reason


def test_high_after_a_steady_rise_is_accepted():
    v = ReadingValidator()
    for minute, g in ((0, 330), (5, 360), (10, 390)):
        assert isinstance(v.check(reading(minute, g), at(minute)), GlucoseReading)
    assert isinstance(v.check(reading(15, 400, clipped=True), at(15)), GlucoseReading)


def test_a_number_right_after_a_low_is_judged_by_the_low_bound():
    """After LOW (at most 40), 200 five minutes later is a rise of at least 160: implausible;
    55 is a plausible recovery."""
    v = ReadingValidator()
    for minute, g in ((0, 60), (5, 45)):
        v.check(reading(minute, g), at(minute))
    assert isinstance(v.check(reading(10, 40, clipped=True), at(10)), GlucoseReading)
    assert phrase(v.check(reading(15, 200), at(15))) == IMPLAUSIBLE_RATE
    assert isinstance(v.check(reading(16, 55), at(16)), GlucoseReading)


def test_a_clipped_value_outside_the_range_is_rejected():
    v = ReadingValidator()
    assert phrase(v.check(reading(0, 10, clipped=True), at(0))) == "glucose out of range"
    assert phrase(v.check(reading(0, 600, clipped=True), at(0))) == "glucose out of range"
    assert isinstance(v.check(reading(0, 40, clipped=True), at(0)), GlucoseReading)


def _true_bounds(r: GlucoseReading) -> tuple[float, float]:
    """What a reading says about the true glucose (written out here, not taken from the module)."""
    if not r.clipped:
        return r.glucose_mg_dl, r.glucose_mg_dl
    if r.glucose_mg_dl < 200:  # a LOW: the true value is at most the limit
        return 0.0, r.glucose_mg_dl
    return r.glucose_mg_dl, float("inf")  # a HIGH


@settings(max_examples=300)
@given(last=st.floats(min_value=39, max_value=501), gap_min=st.floats(min_value=0.5, max_value=29.5),
       limit=st.sampled_from([40.0, 400.0, 500.0]))
def test_a_clipped_reading_is_accepted_exactly_when_its_least_change_is_plausible(last, gap_min, limit):
    s = ValidationSettings()
    v = ReadingValidator(s)
    v.check(reading(0, last), at(0))
    out = v.check(reading(gap_min, limit, clipped=True), at(gap_min))
    low, high = _true_bounds(reading(0, limit, clipped=True))
    least = max(0.0, low - last, last - high)  # the nearest true value to `last` that the flag allows
    allowed = s.rate_noise_mg_dl + s.max_rate_mg_dl_per_min * gap_min
    if least <= allowed - 1e-9:
        assert isinstance(out, GlucoseReading)
    elif least > allowed + 1e-9:
        assert phrase(out) == IMPLAUSIBLE_RATE


def test_reading_in_the_future():
    v = ReadingValidator()
    assert isinstance(v.check(reading(2, 120), at(0)), GlucoseReading)  # exactly 120 s ahead: allowed
    out = v.check(reading(10, 120), at(7.9))
    assert phrase(out) == "reading in the future"


def test_stale_reading():
    v = ReadingValidator()
    assert isinstance(v.check(reading(0, 120), at(15)), GlucoseReading)  # exactly 15 min: allowed
    out = v.check(reading(1, 120), at(16.5))
    assert phrase(out) == "stale reading"
    assert "15.5 min old" in out.reason


def test_duplicate_same_time_same_value_and_different_value():
    v = ReadingValidator()
    v.check(reading(0, 120), at(0))
    assert phrase(v.check(reading(0, 120), at(1))) == "duplicate"
    out = v.check(reading(0, 121), at(1))
    assert phrase(out) == "duplicate" and "different glucose" in out.reason


def test_a_resent_older_reading_is_a_duplicate_not_out_of_order():
    v = ReadingValidator()
    for m in (0, 5, 10):
        v.check(reading(m, 120 + m), at(m))
    assert phrase(v.check(reading(5, 125), at(11))) == "duplicate"
    assert phrase(v.check(reading(7, 125), at(11))) == "out of order"
    assert v.counts["duplicate"] == 1 and v.counts["out of order"] == 1


def test_min_interval_makes_close_readings_duplicates():
    v = ReadingValidator(ValidationSettings(min_interval_s=30))
    v.check(reading(0, 120), at(0))
    out = v.check(reading(0.25, 121), at(0.25))
    assert phrase(out) == "duplicate" and "min interval" in out.reason
    assert isinstance(v.check(reading(0.5, 121), at(0.5)), GlucoseReading)


def test_out_of_order():
    v = ReadingValidator()
    v.check(reading(5, 120), at(5))
    out = v.check(reading(4, 120), at(6))
    assert phrase(out) == "out of order"


def test_implausible_rate_of_change():
    v = ReadingValidator()
    v.check(reading(0, 100), at(0))
    out = v.check(reading(5, 170), at(5))  # 14 mg/dL/min
    assert phrase(out) == "implausible rate of change"
    assert "100 -> 170" in out.reason
    # The rejected reading does not become the reference: 150 is plausible after 100.
    assert isinstance(v.check(reading(10, 150), at(10)), GlucoseReading)


def test_rate_allows_sensor_noise_between_close_readings():
    v = ReadingValidator()
    v.check(reading(0, 100), at(0))
    assert isinstance(v.check(reading(0.5, 108), at(0.5)), GlucoseReading)  # 5 + 10*0.5 = 10 allowed


def test_rate_is_scaled_by_the_gap():
    v = ReadingValidator()
    v.check(reading(0, 100), at(0))
    # 20 minutes later, +150 mg/dL is 7.5 mg/dL/min: fast, but plausible over the gap.
    assert isinstance(v.check(reading(20, 250), at(20)), GlucoseReading)


def test_after_a_long_gap_any_in_range_value_is_accepted():
    v = ReadingValidator()
    v.check(reading(0, 60), at(0))
    # +500 mg/dL in 31 min (16 mg/dL/min) is beyond the rate limit, but the gap exceeds the
    # 30-minute window, so the new value is accepted and re-anchors the stream.
    assert isinstance(v.check(reading(31, 460), at(31)), GlucoseReading)
    v2 = ReadingValidator()
    v2.check(reading(0, 60), at(0))
    assert phrase(v2.check(reading(29, 460), at(29))) == "implausible rate of change"


def test_history_is_per_subject():
    v = ReadingValidator()
    v.check(reading(5, 100, subject="a"), at(5))
    assert isinstance(v.check(reading(0, 300, subject="b"), at(5)), GlucoseReading)
    assert isinstance(v.check(reading(10, 102, subject="a"), at(10)), GlucoseReading)
    assert v.last_accepted("b").glucose_mg_dl == 300


def test_the_injected_clock_is_used_without_now():
    now = [at(0)]
    v = ReadingValidator(clock=lambda: now[0])
    assert isinstance(v.check(reading(0, 120)), GlucoseReading)
    now[0] = at(30)
    assert phrase(v.check(reading(5, 120))) == "stale reading"


def test_programming_errors_raise():
    with pytest.raises(ValueError, match="clock"):
        ReadingValidator().check(reading(0, 120))
    with pytest.raises(ValueError, match="aware"):
        ReadingValidator().check(reading(0, 120), datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="GlucoseReading"):
        ReadingValidator().check({"glucose_mg_dl": 120}, at(0))  # type: ignore[arg-type]


def test_every_reason_has_a_count():
    v = ReadingValidator()
    v.check(reading(0, 100), at(0))
    v.check(reading(1, 5), at(1))             # out of range
    v.check(reading(30, 100), at(1))          # future
    v.check(reading(-30, 100), at(1))         # stale
    v.check(reading(0, 100), at(1))           # duplicate
    v.check(reading(5, 100), at(5))
    v.check(reading(3, 100), at(5))           # out of order
    v.check(reading(6, 200), at(6))           # rate
    assert v.counts == {ACCEPTED: 2, **{p: 1 for p in REASONS}}


# --- properties --------------------------------------------------------------------------------

_times = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC))
_near_minutes = st.floats(min_value=-60, max_value=60, allow_nan=False)
_readings = st.builds(
    GlucoseReading,
    time=_times,
    glucose_mg_dl=st.floats(min_value=1e-300, max_value=1e300, allow_nan=False, allow_infinity=False),
    source=st.just("fuzz"),
    clipped=st.booleans(),
)


@settings(max_examples=150)
@given(st.lists(st.tuples(_readings, _times), max_size=30))
def test_check_never_raises_on_arbitrary_readings_and_times(pairs):
    v = ReadingValidator()
    for r, now in pairs:
        out = v.check(r, now)
        assert out is r or (isinstance(out, Rejected) and any(out.reason.startswith(p) for p in REASONS))
    assert sum(v.counts.values()) == len(pairs)


@settings(max_examples=150)
@given(st.lists(st.tuples(_near_minutes, st.floats(min_value=1, max_value=700, allow_nan=False),
                          st.booleans(), st.floats(min_value=-5, max_value=20, allow_nan=False)),
                max_size=40))
def test_accepted_readings_are_strictly_increasing_and_plausible(steps):
    """A stream near the clock: what passes is in time order, fresh, and moves plausibly."""
    s = ValidationSettings()
    v = ReadingValidator(s)
    clock = T0
    accepted: list[GlucoseReading] = []
    last_rate_rejected: GlucoseReading | None = None

    def plausible(a: GlucoseReading, b: GlucoseReading) -> bool:
        gap_min = (b.time - a.time).total_seconds() / 60
        if gap_min > s.rate_window_min:
            return True
        (low_a, high_a), (low_b, high_b) = _true_bounds(a), _true_bounds(b)
        least = max(0.0, low_b - high_a, low_a - high_b)
        return least <= s.rate_noise_mg_dl + s.max_rate_mg_dl_per_min * gap_min + 1e-9

    for offset_min, glucose, clipped, advance_min in steps:
        clock += timedelta(minutes=max(advance_min, 0))
        r = GlucoseReading(clock + timedelta(minutes=offset_min), glucose, "fuzz", clipped=clipped)
        out = v.check(r, clock)
        if isinstance(out, GlucoseReading):
            assert -s.max_future_s <= (clock - out.time).total_seconds() <= s.max_age_min * 60
            if accepted:
                prev = accepted[-1]
                assert out.time > prev.time
                # plausible against the last accepted reading, or a level shift confirmed by the
                # rate-rejected reading just before it
                assert plausible(prev, out) or (last_rate_rejected is not None
                                                and out.time > last_rate_rejected.time
                                                and plausible(last_rate_rejected, out))
            accepted.append(out)
            last_rate_rejected = None
        elif out.reason.startswith(IMPLAUSIBLE_RATE):
            last_rate_rejected = r
    assert v.counts[ACCEPTED] == len(accepted)


def test_a_confirmed_level_shift_re_anchors_the_stream():
    """A false low that slipped through (compression) must not make every real reading after it
    implausible: two agreeing readings confirm the real level."""
    v = ReadingValidator()
    assert isinstance(v.check(reading(0, 120), at(0)), GlucoseReading)
    assert isinstance(v.check(reading(5, 70), at(5)), GlucoseReading)  # compression low: plausible rate
    first = v.check(reading(8, 125), at(8))  # back to the real level: a jump from the false low
    assert isinstance(first, Rejected) and first.reason.startswith(IMPLAUSIBLE_RATE)
    second = v.check(reading(9, 127), at(9))  # still a jump from 70, but agrees with 125: the level is real
    assert isinstance(second, GlucoseReading) and v.level_shifts == 1
    assert isinstance(v.check(reading(14, 128), at(14)), GlucoseReading)
    # a lone spike is still rejected, and the next normal reading is plausible again
    assert isinstance(v.check(reading(17, 260), at(17)), Rejected)
    assert isinstance(v.check(reading(20, 129), at(20)), GlucoseReading)
    assert v.level_shifts == 1
    never = ReadingValidator(ValidationSettings(confirm_level_shift=0))
    for minute, g in ((0, 120), (5, 70), (8, 125), (9, 127)):
        never.check(reading(minute, g), at(minute))
    assert never.level_shifts == 0 and never.last_accepted().glucose_mg_dl == 70


# --- floods: min_interval_s ------------------------------------------------------------------


def test_for_sample_interval_sets_the_minimum_interval():
    s = ValidationSettings.for_sample_interval(300.0)
    assert s.min_interval_s == MIN_INTERVAL_FRACTION * 300.0 == 240.0
    assert ValidationSettings.for_sample_interval(180.0, max_age_min=10).max_age_min == 10
    with pytest.raises(ValueError, match="sample_interval_s"):
        ValidationSettings.for_sample_interval(0)


def test_a_flood_of_readings_is_cut_to_one_per_interval_per_subject():
    """1000 readings a second with advancing times (a looping uploader) for two subjects: per
    subject, only readings at least min_interval_s apart are accepted."""
    v = ReadingValidator(ValidationSettings.for_sample_interval(300.0))
    accepted = {"a": [], "b": []}
    for i in range(7000):  # 7 s of a 1000 msg/s flood, each message 50 ms of sensor time later
        subject = "ab"[i % 2]
        r = reading(i * 0.05 / 60.0, 120, subject=subject)
        out = v.check(r, r.time)
        if isinstance(out, GlucoseReading):
            accepted[subject].append(out)
    assert [len(accepted["a"]), len(accepted["b"])] == [2, 2]  # sensor time 0 and 240 s of 350 s
    assert v.counts[DUPLICATE] == 7000 - 4


@settings(max_examples=200)
@given(min_interval_s=st.floats(min_value=0, max_value=600),
       steps=st.lists(st.tuples(st.sampled_from(["a", "b", ""]), st.floats(min_value=-120, max_value=400),
                                st.floats(min_value=39, max_value=501), st.booleans()), max_size=60))
def test_accepted_readings_of_a_subject_are_at_least_min_interval_apart(min_interval_s, steps):
    v = ReadingValidator(ValidationSettings(min_interval_s=min_interval_s))
    clock = T0
    last: dict[str, GlucoseReading] = {}
    for subject, advance_s, glucose, clipped in steps:
        clock += timedelta(seconds=max(advance_s, 0.0))
        r = GlucoseReading(clock + timedelta(seconds=min(advance_s, 0.0)), glucose, "flood",
                           subject=subject, clipped=clipped)
        out = v.check(r, clock)
        if isinstance(out, GlucoseReading):
            if subject in last:
                assert (out.time - last[subject].time).total_seconds() >= min_interval_s
            last[subject] = out
