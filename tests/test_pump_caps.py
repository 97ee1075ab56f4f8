"""The reference pump's own cumulative insulin limits (issue 15 item 3): per hour and per day, persisted.

The pump is the last line of defence, independent of the host: whatever the
host sends, no 60 min of pump time hold more than the hourly limit and no 24 h
more than the daily one, across restarts from its state file.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from firmware_bridge.insulin_caps import DAY_BUCKETS, InsulinLedger, check_ledger
from firmware_bridge.protocol import Ack, Command, MsgType, Nak, NakReason, PumpFlags, decode_reply
from firmware_bridge.virtual_pump import STATE_VERSION, PumpSettings, VirtualPump

KEY = bytes(range(32))
DEV = "pump-caps"
T0 = 1_700_000_000_000  # not on a minute boundary of any special kind: 1.7e12 ms is a whole minute
MIN = 60_000
HOUR = 60 * MIN


def caps_settings(**overrides: object) -> PumpSettings:
    base = dict(device_id=DEV, max_rate_u_per_h=5.0, max_bolus_u=10.0, reservoir_u=300.0,
                scheduled_basal_u_per_h=1.0, max_insulin_per_hour_u=25.0, max_insulin_per_day_u=60.0)
    return PumpSettings(**{**base, **overrides})  # type: ignore[arg-type]


def new_pump(state: dict | None = None, **overrides: object) -> VirtualPump:
    pump = VirtualPump(caps_settings(**overrides), KEY, state)
    pump.power_on(T0)
    return pump


def send(pump: VirtualPump, command: Command, now: int) -> Ack | Nak:
    answer = decode_reply(pump.handle(command.encode(KEY), now), KEY)
    assert isinstance(answer, (Ack, Nak))
    return answer


class Host:
    """Numbers seqs and signs commands at the pump's time."""

    def __init__(self) -> None:
        self.seq = 0

    def bolus(self, units: float, now: int) -> Command:
        self.seq += 1
        return Command.bolus(self.seq, DEV, units, now, now + 60_000)

    def temp(self, rate: float, minutes: int, now: int) -> Command:
        self.seq += 1
        return Command.temp_basal(self.seq, DEV, rate, minutes, now, now + 60_000)


def delivered_milli_u(pump: VirtualPump) -> int:
    status = pump.status()
    return status.bolus_delivered_total_milli_u + status.basal_delivered_total_milli_u


# --------------------------------------------------------------------------- settings


def test_derived_limits_and_explicit_ones() -> None:
    derived = PumpSettings(DEV, max_rate_u_per_h=5.0, max_bolus_u=10.0, reservoir_u=300.0,
                           scheduled_basal_u_per_h=1.0)
    assert derived.caps_derived
    assert derived.hour_cap_milli_u == 2 * 10_000 + 5_083  # two max boluses and 61 min of max rate
    assert derived.day_cap_milli_u == 3 * 10_000 + 48_033  # three max boluses and twice the basal of 1441 min
    explicit = caps_settings()
    assert not explicit.caps_derived
    assert (explicit.hour_cap_milli_u, explicit.day_cap_milli_u) == (25_000, 60_000)


def test_limits_that_would_stop_the_programmed_basal_are_refused() -> None:
    with pytest.raises(ValueError, match=r"max_insulin_per_hour_u must be >= 11\.017 U"):
        caps_settings(max_insulin_per_hour_u=11.0)
    with pytest.raises(ValueError, match="max_insulin_per_day_u must be >= 34.017 U"):
        caps_settings(max_insulin_per_day_u=34.0)
    with pytest.raises(ValueError, match="max_insulin_per_day_u must be >= 25.000 U"):
        caps_settings(scheduled_basal_u_per_h=0.0, max_insulin_per_day_u=20.0)
    with pytest.raises(ValueError, match="max_insulin_per_hour_u must be a finite number > 0"):
        caps_settings(max_insulin_per_hour_u=float("nan"))
    with pytest.raises(ValueError, match="max_insulin_per_day_u must be a finite number > 0"):
        caps_settings(max_insulin_per_day_u=-1.0)


# --------------------------------------------------------------------------- ledger


def test_ledger_counts_61_and_1441_minute_buckets() -> None:
    ledger = InsulinLedger([], hour_cap_milli_u=1_000, day_cap_milli_u=2_000)
    ledger.add(100, 400)
    ledger.add(100, 100)
    ledger.add(130, 300)
    assert ledger.entries == [[100, 500], [130, 300]]
    assert ledger.hour_milli_u(160) == 800 and ledger.hour_milli_u(161) == 300
    room = ledger.room(160)
    assert (room.milli_u, room.binding) == (200, "hourly")
    ledger.add(200, 1_000)
    assert ledger.day_milli_u(1_540) == 1_800 and ledger.hour_milli_u(1_540) == 0
    room = ledger.room(1_540)  # minute 100 is still in the day's 1441 buckets
    assert (room.milli_u, room.binding) == (200, "daily")
    room = ledger.room(1_541)  # and now it is not: it is dropped from the state
    assert (room.milli_u, room.binding) == (700, "daily")
    assert ledger.entries == [[130, 300], [200, 1_000]]


def test_restored_ledgers_are_checked() -> None:
    assert check_ledger([[1, 5], [3, 7]]) == [[1, 5], [3, 7]]
    for bad, reason in (([[3, 5], [1, 7]], "increase"), ([[1, 0]], "milli_u > 0"), ([[1, -2]], "milli_u > 0"),
                        ([[0, 1], [DAY_BUCKETS, 1]], "more than a day"), ("x", "list"), ([[1, True]], "milli_u")):
        with pytest.raises(ValueError, match=reason):
            check_ledger(bad)


# --------------------------------------------------------------------------- pump behaviour


def test_boluses_past_the_hourly_limit_are_refused_with_the_reason() -> None:
    pump, host = new_pump(), Host()
    answers = [send(pump, host.bolus(10.0, T0 + i * 1000), T0 + i * 1000) for i in range(29)]
    executed = [a for a in answers if isinstance(a, Ack)]
    refused = [a for a in answers if isinstance(a, Nak)]
    assert [a.bolus_milli_u for a in executed] == [10_000, 10_000]
    assert {(a.reason, a.detail) for a in refused} == {(NakReason.OVER_LIMIT, "hourly insulin limit")}
    assert len(refused) == 27 and delivered_milli_u(pump) <= 25_000
    room_u, binding = pump.insulin_room_u()
    assert binding == "hourly" and 4.9 < room_u <= 5.0
    small = send(pump, host.bolus(4.0, T0 + 30_000), T0 + 30_000)  # what still fits is given
    assert isinstance(small, Ack) and small.bolus_milli_u == 4_000
    later = T0 + 62 * MIN  # the first boluses' minute has left the hour
    assert isinstance(send(pump, host.bolus(10.0, later), later), Ack)


def test_boluses_past_the_daily_limit_are_refused_across_hours() -> None:
    pump, host = new_pump(), Host()
    outcomes = []
    for hour in range(8):
        now = T0 + hour * 2 * HOUR
        outcomes.append(send(pump, host.bolus(10.0, now), now))
    reasons = [(a.reason, a.detail) if isinstance(a, Nak) else "ack" for a in outcomes]
    assert reasons[:5] == ["ack"] * 5  # at 8 h: 40 U of bolus and 8 U of basal, so 10 U more fits in 60
    assert set(reasons[5:]) == {(NakReason.OVER_LIMIT, "daily insulin limit")}
    assert pump.insulin_room_u()[1] == "daily"


def test_basal_is_held_at_the_limit_and_resumes_without_catching_up() -> None:
    pump, host = new_pump(max_rate_u_per_h=30.0, max_insulin_per_hour_u=12.0), Host()
    assert isinstance(send(pump, host.bolus(10.0, T0), T0), Ack)
    temp = send(pump, host.temp(30.0, 60, T0), T0)
    assert isinstance(temp, Ack) and temp.rate_milli_u_per_h == 30_000  # accepted: the limit caps delivery
    pump.advance(T0 + 30 * MIN)
    status = pump.status()
    assert status.basal_delivered_total_milli_u <= 2_000 and status.flags & PumpFlags.LIMIT_HOLD
    assert delivered_milli_u(pump) <= 12_000
    pump.advance(T0 + 2 * HOUR)  # the temp ended; the scheduled 1 U/h runs with room again
    status = pump.status()
    assert not status.flags & PumpFlags.LIMIT_HOLD
    basal_then = status.basal_delivered_total_milli_u
    pump.advance(T0 + 3 * HOUR)
    assert pump.status().basal_delivered_total_milli_u - basal_then == 1_000  # no catch-up of the held basal
    # the delivery history says so (PROTOCOL.md 3.5): one hold with its cause, one release, no flicker
    own = [(e.kind, e.cause) for e in pump.history_entries() if e.seq == 0]
    assert own == [("basal_hold", "hourly_limit"), ("basal_release", "")]
    hold = next(e for e in pump.history_entries() if e.kind == "basal_hold")
    assert hold.basal_now_milli_u_per_h == 30_000  # an upper bound on what ran: a host never under-counts


def test_limits_survive_a_restart_from_the_state_file() -> None:
    pump, host = new_pump(), Host()
    for i in range(2):
        assert isinstance(send(pump, host.bolus(10.0, T0 + i * 1000), T0 + i * 1000), Ack)
    state = json.loads(json.dumps(pump.state))
    assert state["state_version"] == STATE_VERSION and state["ledger"]
    restarted = new_pump(state)
    restarted.power_on(T0 + 5 * MIN)
    refused = send(restarted, host.bolus(10.0, T0 + 5 * MIN), T0 + 5 * MIN)
    assert isinstance(refused, Nak) and refused.detail == "hourly insulin limit"
    # a fresh state (a lost state file) would have forgotten: which is why the device persists before it answers
    forgetful = new_pump()
    assert isinstance(send(forgetful, Host().bolus(10.0, T0 + 5 * MIN), T0 + 5 * MIN), Ack)


def test_a_version_2_state_is_migrated_with_its_boluses_in_the_ledger() -> None:
    pump, host = new_pump(), Host()
    for i in range(2):
        assert isinstance(send(pump, host.bolus(10.0, T0 + i * 1000), T0 + i * 1000), Ack)
    old = json.loads(json.dumps(pump.state))
    del old["ledger"], old["limit_hold"]
    old["state_version"] = 2
    migrated = new_pump(old)
    assert migrated.state["ledger"] == [[T0 // MIN, 20_000]]  # the boluses; basal before the update is not known
    refused = send(migrated, host.bolus(10.0, T0 + 2 * MIN), T0 + 2 * MIN)
    assert isinstance(refused, Nak) and refused.reason == NakReason.OVER_LIMIT


# --------------------------------------------------------------------------- property

cap_ops = st.one_of(
    st.tuples(st.just("bolus"), st.floats(0, 6, allow_nan=False)),
    st.tuples(st.just("bolus"), st.floats(4, 6, allow_nan=False)),
    st.tuples(st.just("temp"), st.one_of(st.just(12.0), st.floats(0, 12, allow_nan=False)), st.integers(0, 600)),
    st.tuples(st.just("suspend")),
    st.tuples(st.just("resume")),
    st.tuples(st.just("advance"), st.integers(0, 3 * HOUR)),
    st.tuples(st.just("advance"), st.integers(0, 20 * MIN)),
    st.tuples(st.just("restart"), st.integers(0, 20 * MIN)),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, MIN - 1), st.lists(cap_ops, min_size=3, max_size=40))
def test_no_60_min_or_24_h_of_pump_time_exceeds_the_limits(offset_ms: int, program: list[tuple]) -> None:
    """Whatever is sent, and across restarts from the persisted state, the delivered totals rise by at
    most the hourly limit over any 60 min and the daily one over any 24 h; nothing is lost on the way."""
    options = dict(max_rate_u_per_h=12.0, max_bolus_u=6.0, reservoir_u=400.0, scheduled_basal_u_per_h=1.5,
                   max_insulin_per_hour_u=9.0, max_insulin_per_day_u=45.0)
    pump, host = VirtualPump(caps_settings(**options), KEY), Host()
    now = T0 + offset_ms
    pump.power_on(now)
    samples = [(now, delivered_milli_u(pump))]
    for op in program:
        if op[0] == "bolus":
            answer = send(pump, host.bolus(op[1], now), now)
            if isinstance(answer, Nak) and "insulin limit" in answer.detail:
                event("bolus refused at a limit")
        elif op[0] == "temp":
            send(pump, host.temp(op[1] if op[2] else 0.0, op[2], now), now)
        elif op[0] in ("suspend", "resume"):
            host.seq += 1
            kind = MsgType.SUSPEND if op[0] == "suspend" else MsgType.RESUME
            send(pump, Command(kind, host.seq, DEV, now, now + 60_000), now)
        elif op[0] == "advance":
            now += op[1]
            pump.advance(now)
        else:  # the process is killed and restarted from its state file; the pump was off meanwhile
            pump = VirtualPump(caps_settings(**options), KEY, json.loads(json.dumps(pump.state)))
            now += op[1]
            pump.power_on(now)
        if pump.status().flags & PumpFlags.LIMIT_HOLD:
            event("basal held at a limit")
        samples.append((now, delivered_milli_u(pump)))
        status = pump.status()
        assert status.reservoir_milli_u + status.bolus_delivered_total_milli_u \
            + status.basal_delivered_total_milli_u == 400_000
    for i, (t_i, d_i) in enumerate(samples):
        for t_j, d_j in samples[i + 1:]:
            if t_j - t_i <= HOUR:
                assert d_j - d_i <= 9_000, f"{d_j - d_i} milli-U in {t_j - t_i} ms"
            if t_j - t_i <= 24 * HOUR:
                assert d_j - d_i <= 45_000, f"{d_j - d_i} milli-U in {t_j - t_i} ms"
