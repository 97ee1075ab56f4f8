"""Pump wire protocol, framing and the reference pump state machine (safety invariant 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from firmware_bridge.framing import (
    FrameReader,
    FramingError,
    cobs_decode,
    cobs_encode,
    crc16_ccitt_false,
    decode_frame,
    encode_frame,
)
from firmware_bridge.protocol import (
    HEADER,
    RING_SIZE,
    Ack,
    BadField,
    BadLength,
    BadTag,
    BadType,
    BadVersion,
    Command,
    MsgType,
    Nak,
    NakReason,
    ProtocolError,
    PumpFlags,
    PumpStatus,
    RingEntry,
    decode_reply,
    message_bytes,
)
from firmware_bridge.virtual_pump import PumpSettings, VirtualPump

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
DEV = "pump-0001"
T0 = 1_700_000_000_000
SETTINGS = PumpSettings(DEV, max_rate_u_per_h=5.0, max_bolus_u=10.0, reservoir_u=300.0, scheduled_basal_u_per_h=1.0)


def new_pump(**overrides: object) -> VirtualPump:
    pump = VirtualPump(PumpSettings(**{**SETTINGS.__dict__, **overrides}), KEY)
    pump.power_on(T0)
    return pump


def bolus(seq: int, units: float, t: int = T0, validity_ms: int = 60_000, device: str = DEV) -> bytes:
    return Command.bolus(seq, device, units, t, t + validity_ms).encode(KEY)


def reply(pump: VirtualPump, body: bytes, now: int = T0) -> Ack | Nak | PumpStatus:
    return decode_reply(pump.handle(body, now), KEY)


# --------------------------------------------------------------------------- framing


def test_crc16_ccitt_false_check_value() -> None:
    assert crc16_ccitt_false(b"123456789") == 0x29B1


@pytest.mark.parametrize("raw, encoded", [
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255)) + b"\x01"),
])
def test_cobs_known_vectors(raw: bytes, encoded: bytes) -> None:
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


@given(st.binary(max_size=700))
def test_cobs_round_trip_has_no_zero(data: bytes) -> None:
    encoded = cobs_encode(data)
    assert 0 not in encoded
    assert cobs_decode(encoded) == data


@given(st.binary(max_size=300))
def test_decode_frame_never_raises_anything_but_framing_error(data: bytes) -> None:
    try:
        decode_frame(data)
    except FramingError:
        pass


def test_frame_reader_byte_by_byte_and_resync_after_garbage() -> None:
    bodies = [bolus(1, 1.0), b"\x00\x00\x01", bytes(200)]
    stream = b"garbage\x01\x02" + b"\x00" + b"".join(encode_frame(b) for b in bodies)
    reader = FrameReader()
    got = [frame for i in range(len(stream)) for frame in reader.feed(stream[i:i + 1])]
    assert got == bodies
    assert sum(reader.dropped.values()) == 1


def test_frame_reader_drops_oversize_and_bad_crc_with_reasons() -> None:
    reader = FrameReader(max_frame_bytes=64)
    good = encode_frame(b"hello")
    corrupt = bytearray(encode_frame(b"world"))
    corrupt[2] ^= 0x40
    got = reader.feed(b"\x07" * 500 + b"\x00" + bytes(corrupt) + good)
    assert got == [b"hello"]
    assert reader.dropped["oversize"] == 1
    assert reader.dropped["crc"] == 1


@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(min_size=1, max_size=300)), max_size=8))
def test_frame_reader_recovers_every_frame_after_arbitrary_garbage(parts: list[tuple[bytes, bytes]]) -> None:
    reader = FrameReader()
    got: list[bytes] = []
    for garbage, body in parts:
        got += [b for b in reader.feed(garbage + b"\x00") if b not in {p[1] for p in parts}]
        got += reader.feed(encode_frame(body))
    assert [b for b in got if b in {p[1] for p in parts}] == [p[1] for p in parts]


# --------------------------------------------------------------------------- message codec

seqs = st.integers(1, 2**32 - 1)
times = st.integers(0, 2**62)
u32 = st.integers(0, 2**32 - 1)
u16 = st.integers(0, 2**16 - 1)
device_ids = st.from_regex(r"[A-Za-z0-9._-]{1,16}", fullmatch=True)


@st.composite
def commands(draw: st.DrawFn) -> Command:
    kind = draw(st.sampled_from([MsgType.TEMP_BASAL, MsgType.BOLUS, MsgType.SUSPEND, MsgType.RESUME, MsgType.STATUS]))
    issued = draw(times)
    expires = issued + draw(st.integers(0, 10**9))
    rate = duration = bolus_ = 0
    if kind == MsgType.TEMP_BASAL:
        duration = draw(u16)
        rate = draw(u32) if duration else 0
    elif kind == MsgType.BOLUS:
        bolus_ = draw(u32)
    return Command(kind, draw(seqs), draw(device_ids), issued, expires, rate, duration, bolus_)


@given(commands())
def test_command_round_trip(command: Command) -> None:
    body = command.encode(KEY)
    assert len(body) == message_bytes(command.msg_type)
    assert Command.decode(body, KEY) == command
    with pytest.raises(BadTag):
        Command.decode(body, OTHER_KEY)


@given(device_ids, st.integers(0, 2**32 - 1), times, u32, u32, u16, st.sampled_from([0, 1, 2, 3, 5, 7]))
def test_ack_round_trip(device: str, seq: int, t: int, b: int, r: int, d: int, flags: int) -> None:
    ack = Ack(device, seq, t, b, r, d, flags)
    assert decode_reply(ack.encode(KEY), KEY) == ack


@given(device_ids, st.integers(0, 2**32 - 1), times, st.sampled_from(list(NakReason)),
       st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=31))
def test_nak_round_trip(device: str, seq: int, t: int, reason: NakReason, detail: str) -> None:
    nak = Nak(device, seq, t, reason, detail.rstrip("\x00"))
    assert decode_reply(nak.encode(KEY), KEY) == nak


ring_entries = st.builds(RingEntry, seqs, st.sampled_from([MsgType.TEMP_BASAL, MsgType.BOLUS, MsgType.SUSPEND,
                                                           MsgType.RESUME]),
                         st.sampled_from([0, *[int(r) for r in NakReason]]), u32, u32, u16, st.binary(min_size=4,
                                                                                                       max_size=4))


@given(device_ids, st.integers(0, 2**32 - 1), times, u32, st.sampled_from([0, 1, 2, 4, 7]), u32, u32, u16, u32, u32,
       u32, st.lists(ring_entries, max_size=RING_SIZE))
def test_status_round_trip(device: str, seq: int, t: int, last: int, flags: int, run: int, sched: int, rem: int,
                           res: int, bt: int, bb: int, ring: list[RingEntry]) -> None:
    status = PumpStatus(device, seq, t, last, flags, run, sched, rem, res, bt, bb, tuple(ring))
    assert decode_reply(status.encode(KEY), KEY) == status


def test_decode_errors_are_specific() -> None:
    body = bytearray(bolus(5, 1.0))
    with pytest.raises(BadLength):
        Command.decode(bytes(body[:-1]), KEY)
    with pytest.raises(BadLength):
        Command.decode(b"\x01\x02", KEY)
    wrong_version = bytearray(body)
    wrong_version[0] = 2
    with pytest.raises(BadVersion):
        Command.decode(bytes(wrong_version), KEY)
    wrong_type = bytearray(body)
    wrong_type[1] = 0x42
    with pytest.raises(BadType):
        Command.decode(bytes(wrong_type), KEY)
    with pytest.raises(BadType):
        Ack.decode(bytes(body), KEY)
    flipped = bytearray(body)
    flipped[HEADER.size] ^= 1
    with pytest.raises(BadTag):
        Command.decode(bytes(flipped), KEY)
    bad_device = bytearray(body)
    bad_device[6] = ord("/")
    with pytest.raises(BadField):
        Command.decode(bytes(bad_device), KEY)
    for error in (BadLength, BadVersion, BadType, BadField):
        assert error.reason == NakReason.MALFORMED and issubclass(error, ProtocolError)
    assert BadTag.reason == NakReason.BAD_TAG


def test_command_validation_is_clear() -> None:
    with pytest.raises(ValueError, match="seq"):
        Command.bolus(0, DEV, 1.0, T0, T0 + 1)
    with pytest.raises(ValueError, match="expires_at_ms"):
        Command.bolus(1, DEV, 1.0, T0, T0 - 1)
    with pytest.raises(ValueError, match="device_id"):
        Command.bolus(1, "pump/1", 1.0, T0, T0 + 1)
    with pytest.raises(ValueError, match="rate must be 0"):
        Command.temp_basal(1, DEV, 1.0, 0, T0, T0 + 1)
    with pytest.raises(ValueError, match="amount"):
        Command.bolus(1, DEV, float("nan"), T0, T0 + 1)
    assert Command.bolus(1, DEV, 0.3, T0, T0).bolus_milli_u == 300
    assert Command.bolus(1, DEV, 0.0019, T0, T0).bolus_milli_u == 1  # rounded down


def test_settings_validation_is_clear() -> None:
    with pytest.raises(ValueError, match="max_rate_u_per_h"):
        PumpSettings(DEV, 0.0, 10.0, 300.0, 0.0)
    with pytest.raises(ValueError, match="scheduled_basal"):
        PumpSettings(DEV, 1.0, 10.0, 300.0, 2.0)
    with pytest.raises(ValueError, match="multiple of 0.001"):
        PumpSettings(DEV, 5.0, 10.0, 300.0, 1.0, bolus_increment_u=0.0005)
    with pytest.raises(ValueError, match="device_id"):
        PumpSettings("", 5.0, 10.0, 300.0, 1.0)


# --------------------------------------------------------------------------- pump behaviour


def test_bolus_ack_rounds_down_and_delivers_once_on_exact_retry() -> None:
    pump = new_pump()
    body = bolus(1, 2.345)
    first = pump.handle(body, T0)
    ack = decode_reply(first, KEY)
    assert isinstance(ack, Ack) and ack.bolus_milli_u == 2340 and ack.seq == 1
    assert pump.handle(body, T0 + 5_000) == first  # exact retry: the cached reply, byte for byte
    assert pump.handle(body, T0 + 10**9) == first  # even after expiry: it reports, it does not execute
    assert pump.bolus_delivered_total_u == pytest.approx(2.34)
    assert pump.counters["executed"] == 1 and pump.counters["exact_retry"] == 2


def test_forged_tag_is_refused_and_delivers_nothing() -> None:
    pump = new_pump()
    forged = Command.bolus(1, DEV, 5.0, T0, T0 + 60_000).encode(OTHER_KEY)
    nak = reply(pump, forged)
    assert isinstance(nak, Nak) and nak.reason == NakReason.BAD_TAG and nak.seq == 1
    assert pump.bolus_delivered_total_u == 0 and pump.last_seq == 0
    # the genuine command with the same seq still works afterwards
    assert isinstance(reply(pump, bolus(1, 1.0)), Ack)


def test_replayed_seq_is_refused_and_delivers_nothing() -> None:
    pump = new_pump()
    assert isinstance(reply(pump, bolus(7, 1.0)), Ack)
    for body in (bolus(7, 2.0), bolus(3, 1.0), Command.suspend(7, DEV, T0, T0 + 1000).encode(KEY)):
        nak = reply(pump, body)
        assert isinstance(nak, Nak) and nak.reason == NakReason.REPLAYED
    assert pump.bolus_delivered_total_u == pytest.approx(1.0)


def test_expired_and_overlong_validity_are_refused() -> None:
    pump = new_pump()
    expired = reply(pump, bolus(1, 1.0, t=T0 - 120_000), now=T0)
    assert isinstance(expired, Nak) and expired.reason == NakReason.EXPIRED
    too_long = reply(pump, bolus(2, 1.0, validity_ms=SETTINGS.max_validity_ms + 1))
    assert isinstance(too_long, Nak) and too_long.reason == NakReason.EXPIRED
    far_future = reply(pump, bolus(3, 1.0, t=T0 + 3_600_000))
    assert isinstance(far_future, Nak) and far_future.reason == NakReason.EXPIRED
    at_expiry = reply(pump, bolus(4, 1.0, t=T0 - 60_000), now=T0)  # now == expires_at_ms is still valid
    assert isinstance(at_expiry, Ack)
    assert pump.bolus_delivered_total_u == pytest.approx(1.0)


def test_wrong_device_and_malformed() -> None:
    pump = new_pump()
    other = Command.bolus(1, "pump-0002", 1.0, T0, T0 + 1000).encode(KEY)
    assert reply(pump, other).reason == NakReason.WRONG_DEVICE
    for junk in (b"", b"\x01", bytes(200), bolus(1, 1.0)[:-1]):
        nak = reply(pump, junk)
        assert isinstance(nak, Nak) and nak.reason == NakReason.MALFORMED and nak.seq == 0
    assert pump.bolus_delivered_total_u == 0 and pump.last_seq == 0


def test_over_limit_is_refused_not_clipped() -> None:
    pump = new_pump()
    assert reply(pump, bolus(1, 10.001)).reason == NakReason.OVER_LIMIT
    rate = Command.temp_basal(2, DEV, 5.5, 30, T0, T0 + 1000).encode(KEY)
    assert reply(pump, rate).reason == NakReason.OVER_LIMIT
    long = Command.temp_basal(3, DEV, 1.0, 1441, T0, T0 + 1000).encode(KEY)
    assert reply(pump, long).reason == NakReason.OVER_LIMIT
    assert isinstance(reply(pump, bolus(4, 10.0)), Ack)
    status = pump.status()
    assert [(e.seq, e.outcome) for e in status.ring] == [(4, 0), (3, 4), (2, 4), (1, 4)]


def test_suspend_resume_and_reservoir() -> None:
    pump = new_pump(reservoir_u=3.0)
    assert reply(pump, Command.suspend(1, DEV, T0, T0 + 1000).encode(KEY)).flags & PumpFlags.SUSPENDED
    assert reply(pump, bolus(2, 1.0)).reason == NakReason.SUSPENDED
    assert reply(pump, Command.temp_basal(3, DEV, 2.0, 30, T0, T0 + 1000).encode(KEY)).reason == NakReason.SUSPENDED
    pump.advance(T0 + 3_600_000)
    assert pump.basal_delivered_total_u == 0  # nothing while suspended
    t1 = T0 + 3_600_000
    resumed = reply(pump, Command.resume(4, DEV, t1, t1 + 1000).encode(KEY), now=t1)
    assert isinstance(resumed, Ack) and resumed.rate_milli_u_per_h == 1000
    assert reply(pump, bolus(5, 3.5, t=t1), now=t1).reason == NakReason.RESERVOIR_EMPTY
    assert isinstance(reply(pump, bolus(6, 2.5, t=t1), now=t1), Ack)
    pump.advance(t1 + 10 * 3_600_000)  # basal empties the reservoir and stops
    assert pump.reservoir_u == 0 and pump.basal_delivered_total_u == pytest.approx(0.5)
    assert pump.status().flags & PumpFlags.RESERVOIR_EMPTY and pump.running_rate_u_per_h == 0


def test_temp_basal_integrates_then_returns_to_scheduled() -> None:
    pump = new_pump()
    ack = reply(pump, Command.temp_basal(1, DEV, 2.509, 30, T0, T0 + 1000).encode(KEY))
    assert isinstance(ack, Ack) and ack.rate_milli_u_per_h == 2500 and ack.duration_min == 30  # rounded down
    pump.advance(T0 + 10 * 60_000)
    assert pump.status().temp_remaining_min == 20
    pump.advance(T0 + 90 * 60_000)
    assert pump.basal_delivered_total_u == pytest.approx(2.5 * 0.5 + 1.0 * 1.0)
    assert not pump.status().flags & PumpFlags.TEMP_BASAL_ACTIVE and pump.running_rate_u_per_h == 1.0
    pump.advance(T0)  # the clock never goes back
    assert pump.counters["clock_backwards"] == 1
    # duration 0 cancels a temp basal
    t = T0 + 90 * 60_000
    reply(pump, Command.temp_basal(2, DEV, 0.0, 60, t, t + 1000).encode(KEY), now=t)
    assert pump.running_rate_u_per_h == 0.0
    cancel = reply(pump, Command.temp_basal(3, DEV, 0.0, 0, t, t + 1000).encode(KEY), now=t)
    assert isinstance(cancel, Ack) and cancel.rate_milli_u_per_h == 1000 and cancel.duration_min == 0


def test_status_is_answered_for_any_seq_and_fences_newer_ones() -> None:
    pump = new_pump()
    reply(pump, bolus(5, 1.0))
    old = reply(pump, Command.status(2, DEV, T0, T0 + 1000).encode(KEY))
    assert isinstance(old, PumpStatus) and old.seq == 2 and old.last_seq == 5
    fence = reply(pump, Command.status(9, DEV, T0, T0 + 1000).encode(KEY))
    assert isinstance(fence, PumpStatus) and pump.last_seq == 9
    # a command with a seq below the fence can never execute now
    assert reply(pump, bolus(8, 1.0)).reason == NakReason.REPLAYED
    assert fence.ring[0].seq == 5 and fence.ring[0].bolus_milli_u == 1000 and fence.ring_covers(6)


def test_status_is_answered_whatever_its_timestamps() -> None:
    pump = new_pump()
    for issued, expires in ((0, 0), (T0 + 10**10, T0 + 10**10 + 5), (T0 - 10**9, T0 + 10**9)):
        answer = reply(pump, Command.status(1, DEV, issued, expires).encode(KEY))
        assert isinstance(answer, PumpStatus) and answer.pump_time_ms == T0
    assert reply(pump, Command.status(1, "pump-0002", T0, T0).encode(KEY)).reason == NakReason.WRONG_DEVICE
    assert reply(pump, Command.status(1, DEV, T0, T0).encode(OTHER_KEY)).reason == NakReason.BAD_TAG


def test_state_round_trips_through_json_and_keeps_at_most_once() -> None:
    pump = new_pump()
    body = bolus(1, 1.0)
    first = pump.handle(body, T0)
    reply(pump, Command.temp_basal(2, DEV, 2.0, 60, T0, T0 + 1000).encode(KEY))
    restored = VirtualPump(SETTINGS, KEY, json.loads(json.dumps(pump.state)))
    assert restored.handle(body, T0 + 1000) == first
    assert reply(restored, bolus(1, 3.0), now=T0 + 1000).reason == NakReason.REPLAYED
    assert restored.bolus_delivered_total_u == pytest.approx(1.0)
    assert restored.status().ring == pump.status().ring and restored.last_seq == pump.last_seq == 2
    bad = pump.state
    bad["device_id"] = "pump-0002"
    with pytest.raises(ValueError, match="device"):
        VirtualPump(SETTINGS, KEY, bad)
    bad = pump.state
    bad["last_seq"] = -1
    with pytest.raises(ValueError, match="last_seq"):
        VirtualPump(SETTINGS, KEY, bad)


def test_delivery_since_last_report() -> None:
    pump = new_pump()
    reply(pump, bolus(1, 1.5))
    reply(pump, bolus(2, 0.5))
    assert pump.delivery_since_last_report() == (2.0, 1.0)
    assert pump.delivery_since_last_report() == (0.0, 1.0)


# --------------------------------------------------------------------------- fuzz


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_never_execute(data: bytes) -> None:
    pump = new_pump()
    answer = decode_reply(pump.handle(data, T0), KEY)
    assert isinstance(answer, Nak)
    assert pump.revision == 0 and pump.last_seq == 0 and pump.bolus_delivered_total_u == 0


@settings(max_examples=300)
@given(st.integers(0, 4), st.data())
def test_bit_flips_never_execute(which: int, data: st.DataObject) -> None:
    bodies = [bolus(1, 1.0), Command.temp_basal(1, DEV, 2.0, 30, T0, T0 + 1000).encode(KEY),
              Command.suspend(1, DEV, T0, T0 + 1000).encode(KEY), Command.resume(1, DEV, T0, T0 + 1000).encode(KEY),
              Command.status(1, DEV, T0, T0 + 1000).encode(KEY)]
    body = bytearray(bodies[which])
    flips = data.draw(st.lists(st.integers(0, len(body) * 8 - 1), min_size=1, max_size=4, unique=True))
    for bit in flips:
        body[bit // 8] ^= 1 << (bit % 8)
    pump = new_pump()
    answer = decode_reply(pump.handle(bytes(body), T0), KEY)
    assert isinstance(answer, Nak) and answer.reason in (NakReason.BAD_TAG, NakReason.MALFORMED,
                                                          NakReason.WRONG_DEVICE)
    assert pump.revision == 0 and pump.bolus_delivered_total_u == 0


def _sealed(msg_type: int, seq: int, device: bytes, issued: int, expires: int, payload: bytes,
            key: bytes = KEY) -> bytes:
    import hashlib
    import hmac

    unsigned = HEADER.pack(1, msg_type, seq, device, issued, expires) + payload
    return unsigned + hmac.new(key, unsigned, hashlib.sha256).digest()


@settings(max_examples=400)
@given(st.sampled_from([0x01, 0x02, 0x03, 0x04, 0x05]), st.integers(0, 2**32 - 1),
       st.sampled_from([DEV.encode().ljust(16, b"\0"), b"pump-0001\0\0\0\0\0\0x", bytes(16)]),
       st.integers(T0 - 400_000, T0 + 400_000), st.integers(-1, 400_000), st.data())
def test_authentic_but_arbitrary_commands_never_raise_nor_break_limits(
        msg_type: int, seq: int, device: bytes, issued: int, window: int, data: st.DataObject) -> None:
    """Fields the pump reads only after the tag verified are fuzzed too (a buggy or hostile key holder)."""
    from firmware_bridge.protocol import PAYLOAD_BYTES

    payload = data.draw(st.binary(min_size=PAYLOAD_BYTES[MsgType(msg_type)], max_size=PAYLOAD_BYTES[MsgType(msg_type)]))
    pump = new_pump()
    answer = decode_reply(pump.handle(_sealed(msg_type, seq, device, issued, max(0, issued + window), payload), T0),
                          KEY)
    status = pump.status()
    if isinstance(answer, Ack):
        assert answer.bolus_milli_u <= 10_000 and answer.rate_milli_u_per_h <= 5_000
        assert T0 <= issued + window  # never after expiry (issued a little ahead of the pump is fine)
    assert status.bolus_delivered_total_milli_u <= 10_000
    assert status.reservoir_milli_u + status.bolus_delivered_total_milli_u == 300_000


@settings(max_examples=300)
@given(st.sampled_from([0x81, 0x82, 0x83, 0x01, 0x7F]), st.data())
def test_host_decoding_of_authentic_but_arbitrary_replies_raises_only_protocol_errors(
        msg_type: int, data: st.DataObject) -> None:
    size = {0x81: 11, 0x82: 32, 0x83: 188}.get(msg_type, 4)
    payload = data.draw(st.binary(min_size=size, max_size=size))
    if msg_type == 0x83 and data.draw(st.booleans()):
        payload = payload[:27] + b"\x02" + payload[28:68] + bytes(size - 68)  # plausible ring count and padding
    body = _sealed(msg_type, data.draw(st.integers(0, 2**32 - 1)), DEV.encode().ljust(16, b"\0"),
                   data.draw(times), data.draw(st.sampled_from([0, 1])), payload)
    try:
        decode_reply(body, KEY)
    except ProtocolError:
        pass


@given(st.binary(max_size=2000))
def test_frame_reader_never_raises(data: bytes) -> None:
    reader = FrameReader()
    for i in range(0, len(data), 37):
        reader.feed(data[i:i + 37])


# --------------------------------------------------------------------------- property: at most once

ops = st.one_of(
    st.tuples(st.just("new"), st.sampled_from(["bolus", "temp", "suspend", "resume", "status"]),
              st.floats(0, 6, allow_nan=False), st.integers(0, 200),
              st.one_of(st.integers(1_000, 120_000), st.integers(-1_000, 400_000))),
    st.tuples(st.just("retry"), st.integers(0, 10**6)),
    st.tuples(st.just("reuse"), st.integers(0, 10**6), st.floats(0, 5, allow_nan=False)),
    st.tuples(st.just("flip"), st.integers(0, 10**6), st.integers(0, 10**6)),
    st.tuples(st.just("advance"), st.integers(0, 3_600_000)),
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=3, max_size=40))
def test_each_seq_executes_at_most_once_and_within_limits(program: list[tuple]) -> None:
    pump = new_pump(reservoir_u=8.0, max_bolus_u=5.0, max_rate_u_per_h=3.0)
    initial_milli = 8_000
    now = T0
    next_seq = 1
    sent: list[tuple[bytes, int]] = []  # (body, expires_at_ms)
    genuine: list[bytes] = []
    first_ack: dict[int, bytes] = {}
    for op in program:
        body: bytes | None = None
        expires = 0
        if op[0] == "new":
            _, kind, amount, duration, validity = op
            issued, expires = now, max(now, now + validity)
            if validity < 0:
                issued, expires = now + validity - 1000, now + validity
            if kind == "bolus":
                command = Command.bolus(next_seq, DEV, amount, issued, expires)
            elif kind == "temp":
                command = Command.temp_basal(next_seq, DEV, amount if duration else 0.0, duration, issued, expires)
            else:
                msg_type = {"suspend": MsgType.SUSPEND, "resume": MsgType.RESUME, "status": MsgType.STATUS}[kind]
                command = Command(msg_type, next_seq, DEV, issued, expires)
            body = command.encode(KEY)
            genuine.append(body)
            next_seq += 1
        elif op[0] == "retry" and sent:
            body, expires = sent[op[1] % len(sent)]
        elif op[0] == "reuse" and genuine:
            old = Command.decode(genuine[op[1] % len(genuine)], KEY)
            expires = now + 1000
            body = Command.bolus(old.seq, DEV, op[2], now, expires).encode(KEY)
        elif op[0] == "flip" and sent:
            raw = bytearray(sent[op[1] % len(sent)][0])
            raw[op[2] % len(raw)] ^= 1 << (op[2] % 8)
            body = bytes(raw)
        elif op[0] == "advance":
            now += op[1]
            pump.advance(now)
        if body is None:
            continue
        sent.append((body, expires))
        answer_bytes = pump.handle(body, now)
        answer = decode_reply(answer_bytes, KEY)
        if isinstance(answer, Ack):
            if answer.seq in first_ack:
                assert first_ack[answer.seq] == answer_bytes, "a seq was acknowledged twice with different results"
            else:
                assert now <= expires, "executed after expiry"
                first_ack[answer.seq] = answer_bytes
            assert answer.bolus_milli_u <= 5_000 and answer.rate_milli_u_per_h <= 3_000
        status = pump.status()
        assert pump.counters["executed"] == len(first_ack), "a seq executed more than once"
        acked_bolus = sum(decode_reply(b, KEY).bolus_milli_u for b in first_ack.values())
        assert status.bolus_delivered_total_milli_u == acked_bolus
        assert status.reservoir_milli_u >= 0
        assert (status.reservoir_milli_u + status.bolus_delivered_total_milli_u
                + status.basal_delivered_total_milli_u) == initial_milli
    for name in ("executed", "exact_retry", "nak_replayed", "nak_expired", "nak_over_limit", "nak_reservoir_empty",
                 "nak_suspended", "nak_bad_tag"):
        if pump.counters[name]:
            event(name)


# --------------------------------------------------------------------------- documentation


def test_protocol_md_shows_the_current_example_bytes() -> None:
    from firmware_bridge.examples import example_messages

    doc = (Path(__file__).resolve().parents[1] / "firmware_bridge" / "PROTOCOL.md").read_text()
    flat = "".join(doc.split())
    for title, body in example_messages():
        assert body.hex() in flat, f"PROTOCOL.md example out of date: {title}"
        assert encode_frame(body).hex() in flat, f"PROTOCOL.md frame example out of date: {title}"


def test_package_import_is_light() -> None:
    import subprocess
    import sys

    code = ("import sys, firmware_bridge, firmware_bridge.protocol, firmware_bridge.virtual_pump, "
            "firmware_bridge.pump_link, firmware_bridge.framing\n"
            "bad = [m for m in ('paho', 'serial', 'numpy', 'twin', 'controller', 'sensors', 'sim')\n"
            "       if m in sys.modules]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_firmware_bridge_is_a_leaf() -> None:
    import ast

    root = Path(__file__).resolve().parents[1] / "firmware_bridge"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
            for name in names:
                assert name.split(".")[0] not in {"twin", "controller", "sensors", "sim"}, f"{path.name} imports {name}"
