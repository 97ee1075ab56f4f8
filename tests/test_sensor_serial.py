"""Serial CGM: the COBS/CRC frame codec, text lines, and SerialCgmSource on real pseudo-terminals.

The pty tests use ``os.openpty()`` (the test writes to the master, the source
opens the slave's path) and, for disconnects, a ``socat`` pty pair whose link
paths survive a restart of socat, like a USB device unplugged and plugged back.
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
import tty
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensors.reading import MG_DL_PER_MMOL_L, GlucoseReading, Rejected
from sensors.serial.frames import (
    GLUCOSE_BODY_BYTES,
    TREND_CODES,
    FrameStreamDecoder,
    GlucoseFrame,
    TextLineDecoder,
    cobs_decode,
    cobs_encode,
    crc16_ccitt_false,
    decode_frame,
    encode_frame,
    encode_reading_frame,
    parse_text_line,
)
from sensors.serial.source import SerialCgmSource
from skip_reasons import skip_reason

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 11, 23, 10, 7, 30, tzinfo=UTC)
FRAME_PHRASES = FrameStreamDecoder.PHRASES
LINE_PHRASES = TextLineDecoder.PHRASES


def clock() -> datetime:
    return NOW


def reading(minutes: float = 0, glucose: float = 123.4, trend: str | None = "Flat", clipped: bool = False):
    return GlucoseReading(T0 + timedelta(minutes=minutes), glucose, "serial", trend=trend, clipped=clipped)


def body_of(frame: bytes) -> bytes:
    return cobs_decode(frame[:-1])


def reframe(body: bytes) -> bytes:
    return cobs_encode(body) + b"\x00"


# --- COBS and CRC -------------------------------------------------------------------------------

COBS_VECTORS = [  # from the COBS paper / Wikipedia's examples
    (b"\x00", b"\x01\x01"),
    (b"\x00\x00", b"\x01\x01\x01"),
    (b"\x00\x11\x00", b"\x01\x02\x11\x01"),
    (b"\x11\x22\x00\x33", b"\x03\x11\x22\x02\x33"),
    (b"\x11\x22\x33\x44", b"\x05\x11\x22\x33\x44"),
    (b"\x11\x00\x00\x00", b"\x02\x11\x01\x01\x01"),
    (bytes(range(1, 255)), b"\xff" + bytes(range(1, 255)) + b"\x01"),
    (bytes(range(0, 255)), b"\x01\xff" + bytes(range(1, 255)) + b"\x01"),
    (bytes(range(1, 256)), b"\xff" + bytes(range(1, 255)) + b"\x02\xff"),
]


@pytest.mark.parametrize("raw, encoded", COBS_VECTORS)
def test_cobs_known_vectors(raw, encoded):
    assert cobs_encode(raw) == encoded
    assert cobs_decode(encoded) == raw


@settings(max_examples=200)
@given(st.binary(max_size=700))
def test_cobs_round_trip_and_no_zero_bytes(data):
    encoded = cobs_encode(data)
    assert 0 not in encoded
    assert len(encoded) <= len(data) + len(data) // 254 + 1
    assert cobs_decode(encoded) == data


@pytest.mark.parametrize("bad", [b"", b"\x00", b"\x05\x11", b"\x02\x00", b"\x03\x11\x00"])
def test_cobs_decode_refuses_invalid_blocks(bad):
    with pytest.raises(ValueError, match="malformed frame"):
        cobs_decode(bad)


def test_crc_is_ccitt_false():
    assert crc16_ccitt_false(b"123456789") == 0x29B1  # the catalogue check value
    assert crc16_ccitt_false(b"") == 0xFFFF


# --- frames -------------------------------------------------------------------------------------


def test_frame_layout_is_as_documented():
    frame = encode_reading_frame(reading(glucose=123.4, trend="FortyFiveUp", clipped=False), seq=0x0102)
    assert frame.endswith(b"\x00") and 0 not in frame[:-1]
    body = body_of(frame)
    assert len(body) == GLUCOSE_BODY_BYTES == 18
    version, seq, msg_type, time_ms, x10, trend, flags, crc = struct.unpack(">BHBQHbBH", body)
    assert (version, seq, msg_type) == (1, 0x0102, 0x01)
    assert time_ms == int(T0.timestamp() * 1000)
    assert (x10, trend, flags) == (1234, 3, 0)
    assert crc == crc16_ccitt_false(body[:-2])


def test_frame_round_trip():
    r = reading(glucose=40.0, trend="DoubleDown", clipped=True)
    f = decode_frame(encode_reading_frame(r, seq=65535))
    assert f == GlucoseFrame(seq=65535, time_ms=int(T0.timestamp() * 1000), glucose_mg_dl=40.0,
                             trend="DoubleDown", clipped=True, trend_code=7)
    assert decode_frame(encode_reading_frame(r, seq=1)[:-1]).seq == 1  # without the delimiter too


def test_trend_table_matches_nightscout_codes():
    assert TREND_CODES[1] == "DoubleUp" and TREND_CODES[4] == "Flat" and TREND_CODES[7] == "DoubleDown"
    for code, name in TREND_CODES.items():
        if name is not None:
            assert decode_frame(encode_frame(1, 1, 100.0, name)).trend_code == code


def test_encode_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match="seq"):
        encode_reading_frame(reading(), seq=65536)
    with pytest.raises(ValueError, match="does not fit"):
        encode_reading_frame(reading(glucose=7000.0), seq=1)
    with pytest.raises(ValueError, match="trend"):
        encode_reading_frame(reading(trend="Sideways"), seq=1)
    with pytest.raises(ValueError, match="1970"):
        encode_reading_frame(GlucoseReading(datetime(1960, 1, 1, tzinfo=UTC), 100.0, "x"), seq=1)


def _with_crc(body_without_crc: bytes) -> bytes:
    return reframe(body_without_crc + struct.pack(">H", crc16_ccitt_false(body_without_crc)))


@pytest.mark.parametrize("make, phrase", [
    (lambda b: reframe(b[:5] + bytes([b[5] ^ 0x01]) + b[6:]), "bad crc"),
    (lambda b: reframe(b[:-1] + bytes([b[-1] ^ 0x80])), "bad crc"),
    (lambda b: _with_crc(bytes([2]) + b[1:-2]), "unsupported frame version"),
    (lambda b: _with_crc(b[:3] + bytes([0x7F]) + b[4:-2]), "unknown message type"),
    (lambda b: _with_crc(b[:-3]), "malformed frame"),
    (lambda b: _with_crc(b[:-2] + b"\x00"), "malformed frame"),
    (lambda b: reframe(b"\x01"), "malformed frame"),
    (lambda b: b"\x05\x01\x00", "malformed frame"),
])
def test_decode_frame_errors(make, phrase):
    body = body_of(encode_reading_frame(reading(), seq=9))
    with pytest.raises(ValueError) as err:
        decode_frame(make(body))
    assert str(err.value).startswith(phrase)


def test_stream_decoder_time_zero_is_stamped_with_the_clock_and_duplicates_rejected():
    d = FrameStreamDecoder(clock, source="serial:board", subject="p1")
    f1 = encode_reading_frame(reading(), seq=1, with_time=False)
    f2 = encode_reading_frame(reading(5, 130.0), seq=2)
    items = d.feed(b"\x00\x00" + f1 + f1 + f2)
    assert [type(i) for i in items] == [GlucoseReading, Rejected, GlucoseReading]
    assert items[0].time == NOW and items[0].source == "serial:board" and items[0].subject == "p1"
    assert items[1].reason == "duplicate frame (seq 1)"
    assert items[2].time == T0 + timedelta(minutes=5) and items[2].glucose_mg_dl == 130.0
    # The same seq with a different body: the board restarted its counter; accepted.
    again = d.feed(encode_reading_frame(reading(10, 140.0), seq=1))
    assert isinstance(again[0], GlucoseReading)
    assert d.counts["duplicate frame"] == 1 and d.counts["frames"] == 4


def test_stream_decoder_handles_split_writes_and_oversize_garbage():
    d = FrameStreamDecoder(clock)
    frame = encode_reading_frame(reading(), seq=3)
    items = []
    for i in range(len(frame)):
        items += d.feed(frame[i:i + 1])
    assert len(items) == 1 and isinstance(items[0], GlucoseReading)
    out = d.feed(b"\x01" * 1000 + b"\x00" + encode_reading_frame(reading(5), seq=4))
    assert [type(i) for i in out] == [Rejected, GlucoseReading]
    assert out[0].reason.startswith("malformed frame: longer than")


def test_stream_decoder_rejects_implausible_contents():
    d = FrameStreamDecoder(clock)
    out = d.feed(encode_frame(1, 2**64 - 1, 100.0) + encode_frame(2, 1, 100.0) + encode_frame(3, 0, 5000.0))
    assert [i.reason.split(" ")[0] for i in out] == ["implausible", "implausible", "glucose"]
    assert d.bad_frames == 3


_item_ok_frames = lambda i: isinstance(i, GlucoseReading) or (  # noqa: E731
    isinstance(i, Rejected) and any(i.reason.startswith(p) for p in FRAME_PHRASES))


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300) | st.sampled_from([b"\x00", b"\x00\x00"]), max_size=12))
def test_random_bytes_never_raise_out_of_the_frame_decoder(chunks):
    d = FrameStreamDecoder(clock)
    for chunk in chunks:
        for item in d.feed(chunk):
            assert _item_ok_frames(item)


@settings(max_examples=300)
@given(st.integers(0, 65535), st.integers(1, 2**40), st.integers(1, 65535), st.sampled_from(list(TREND_CODES)),
       st.booleans(), st.data())
def test_a_corrupted_frame_is_rejected_never_misread(seq, time_ms, x10, code, clipped, data):
    trend = TREND_CODES[code]
    frame = encode_frame(seq, time_ms, x10 / 10, trend, clipped)
    index = data.draw(st.integers(0, len(frame) - 2), label="index")
    new = data.draw(st.integers(1, 255).filter(lambda b: b != frame[index]), label="byte")
    corrupted = frame[:index] + bytes([new]) + frame[index + 1:]
    with pytest.raises(ValueError):
        decode_frame(corrupted)
    d = FrameStreamDecoder(clock)
    items = d.feed(corrupted)
    assert items and all(isinstance(i, Rejected) for i in items)
    assert all(_item_ok_frames(i) for i in items)


# --- text lines ---------------------------------------------------------------------------------


@pytest.mark.parametrize("line, time, glucose, clipped", [
    ("120", NOW, 120.0, False),
    ("  sgv=120 ", NOW, 120.0, False),
    ("SGV = 98.5", NOW, 98.5, False),
    ("mmol=6.7", NOW, 6.7 * MG_DL_PER_MMOL_L, False),
    ("2026-11-23T10:00:00Z,120", T0, 120.0, False),
    ("2026-11-23T11:00:00+01:00,mmol=5.5", T0, 5.5 * MG_DL_PER_MMOL_L, False),
    ("LOW", NOW, 40.0, True),
    ("sgv=high", NOW, 400.0, True),
])
def test_text_lines(line, time, glucose, clipped):
    r = parse_text_line(line, NOW, "serial")
    assert isinstance(r, GlucoseReading)
    assert (r.time, r.clipped) == (time, clipped)
    assert r.glucose_mg_dl == pytest.approx(glucose)


@pytest.mark.parametrize("line, phrase", [
    ("abc", "non-numeric glucose"),
    ("sgv=", "malformed line"),
    ("temp=21", "malformed line"),
    ("nan", "non-numeric glucose"),
    ("5", "glucose out of range"),
    ("mmol=120", "glucose out of range"),
    ("2026-11-23T10:00:00,120", "unparseable time"),
    ("yesterday,120", "unparseable time"),
    ("1980-01-01T00:00:00Z,120", "implausible time"),
])
def test_text_lines_rejected(line, phrase):
    outcome = parse_text_line(line, NOW, "serial")
    assert isinstance(outcome, str) and outcome.startswith(phrase)


def test_text_decoder_skips_blank_lines_and_handles_crlf_and_long_lines():
    d = TextLineDecoder(clock)
    items = d.feed(b"120\r\n\r\n\n  \nsgv=1" + b"30\n" + b"9" * 1000 + b"\n\xff\xfe\n")
    assert [type(i) for i in items] == [GlucoseReading, GlucoseReading, Rejected, Rejected]
    assert items[1].glucose_mg_dl == 130.0
    assert items[2].reason.startswith("malformed line: longer than")
    assert items[3].reason.startswith("non-numeric glucose")
    assert d.counts["lines"] == 3 and d.bad_lines == 2


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=120) | st.text(max_size=60).map(str.encode), max_size=10))
def test_random_bytes_never_raise_out_of_the_text_decoder(chunks):
    d = TextLineDecoder(clock)
    for chunk in chunks:
        for item in d.feed(chunk + b"\n"):
            assert isinstance(item, GlucoseReading) or any(item.reason.startswith(p) for p in LINE_PHRASES)


# --- the source on real pseudo-terminals ------------------------------------------------------


class Pty:
    """A pseudo-terminal: the test writes to the master, the source opens ``path`` (the slave)."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def pty():
    p = Pty()
    yield p
    p.close()


def poll_until(source: SerialCgmSource, n: int, timeout_s: float = 5.0) -> list:
    items: list = []
    deadline = time.monotonic() + timeout_s
    while len(items) < n and time.monotonic() < deadline:
        items += source.poll(0.2)
    return items


def test_source_arguments_are_validated():
    for kwargs, match in [({"mode": "json"}, "mode"), ({"baudrate": 0}, "baudrate"),
                          ({"reopen_min_delay_s": 0}, "reopen"), ({"clock": None}, "clock")]:
        with pytest.raises(ValueError, match=match):
            SerialCgmSource("/dev/null", **{"clock": clock, **kwargs})


def test_frames_through_a_pty(pty):
    with SerialCgmSource(pty.path, mode="frames", clock=clock, subject="p1") as source:
        assert source.poll(0.05) == [] and source.connected
        pty.write(encode_reading_frame(reading(0, 110.0), seq=1))
        frame2 = encode_reading_frame(reading(5, 115.0), seq=2)
        pty.write(frame2[:7])
        time.sleep(0.05)
        pty.write(frame2[7:] + frame2 + b"garbage\x00" + encode_reading_frame(reading(glucose=99), 3, False))
        items = poll_until(source, 5)
    assert [type(i).__name__ for i in items] == [
        "GlucoseReading", "GlucoseReading", "Rejected", "Rejected", "GlucoseReading"]
    assert [r.glucose_mg_dl for r in items if isinstance(r, GlucoseReading)] == [110.0, 115.0, 99.0]
    assert items[2].reason == "duplicate frame (seq 2)"
    assert items[3].reason.startswith("malformed frame")
    assert items[4].time == NOW and items[0].subject == "p1"
    assert source.bad_frames == 2 and source.counts["frames"] == 4 and source.reopens == 0


def test_text_lines_through_a_pty(pty):
    with SerialCgmSource(pty.path, mode="text", clock=clock) as source:
        source.poll(0.05)
        pty.write(b"boot: cgm shield v0.3\r\n120\r\nmmol=6.7\r\n2026-11-23T10:00:00Z,sgv=140\r\nLOW\r\n")
        items = poll_until(source, 5)
    assert isinstance(items[0], Rejected) and items[0].raw == "boot: cgm shield v0.3"
    readings = items[1:]
    assert [round(r.glucose_mg_dl, 1) for r in readings] == [120.0, 120.7, 140.0, 40.0]
    assert [r.time for r in readings] == [NOW, NOW, T0, NOW]
    assert readings[-1].clipped


def test_poll_waits_at_most_its_timeout(pty):
    with SerialCgmSource(pty.path, clock=clock) as source:
        start = time.monotonic()
        assert source.poll(0.3) == []
        assert 0.25 <= time.monotonic() - start < 1.5


def test_random_garbage_through_a_pty_never_raises(pty):
    import random
    rng = random.Random(1234)
    with SerialCgmSource(pty.path, mode="frames", clock=clock) as source:
        source.poll(0.05)
        good = encode_reading_frame(reading(), seq=77)
        for _ in range(20):
            pty.write(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))))
        pty.write(b"\x00" + good)
        items = poll_until(source, 1, timeout_s=3)
        deadline = time.monotonic() + 3
        while not any(isinstance(i, GlucoseReading) and i.glucose_mg_dl == 123.4 for i in items) \
                and time.monotonic() < deadline:
            items += source.poll(0.2)
    assert any(isinstance(i, GlucoseReading) and i.glucose_mg_dl == 123.4 for i in items)
    assert all(_item_ok_frames(i) for i in items)


def test_a_missing_port_is_retried_until_it_appears(tmp_path):
    link = tmp_path / "ttyCGM"
    source = SerialCgmSource(str(link), clock=clock, reopen_min_delay_s=0.05, reopen_max_delay_s=0.1)
    try:
        assert source.poll(0.3) == []
        assert not source.connected and source.open_failures >= 2 and "ttyCGM" in source.last_error
        p = Pty()
        try:
            link.symlink_to(p.path)
            deadline = time.monotonic() + 3
            while not source.connected and time.monotonic() < deadline:
                source.poll(0.05)
            assert source.connected and source.reopens == 0  # the first successful open
            p.write(encode_reading_frame(reading(), seq=1))
            assert isinstance(poll_until(source, 1)[0], GlucoseReading)
        finally:
            p.close()
    finally:
        source.close()
    assert source.poll(0.1) == []


SOCAT = shutil.which("socat")


class SocatPair:
    """``socat`` joining two ptys at fixed link paths: the source reads ``a``, the test writes ``b``."""

    def __init__(self, directory: Path) -> None:
        self.a, self.b = directory / "cgm", directory / "board"
        self.proc: subprocess.Popen[bytes] | None = None
        self.fd: int | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [SOCAT, "-d", "-d", f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while not (self.a.exists() and self.b.exists()):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError("socat did not create its ptys")
            time.sleep(0.02)
        self.fd = os.open(self.b, os.O_RDWR | os.O_NOCTTY)

    def write(self, data: bytes) -> None:
        assert self.fd is not None
        os.write(self.fd, data)

    def stop(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
            self.proc = None


@pytest.mark.skipif(SOCAT is None, reason=skip_reason("socat"))
def test_disconnect_and_reopen_through_socat(tmp_path):
    pair = SocatPair(tmp_path)
    pair.start()
    source = SerialCgmSource(str(pair.a), mode="frames", clock=clock,
                             reopen_min_delay_s=0.1, reopen_max_delay_s=0.4)
    try:
        source.poll(0.05)
        assert source.connected
        pair.write(encode_reading_frame(reading(0, 110.0), seq=1) + encode_reading_frame(reading(5, 111.0), 2)[:9])
        first = poll_until(source, 1)
        assert [r.glucose_mg_dl for r in first] == [110.0]

        pair.stop()  # the device disappears, mid-frame
        deadline = time.monotonic() + 3
        while source.connected and time.monotonic() < deadline:
            assert source.poll(0.1) == []
        assert not source.connected and source.last_error

        time.sleep(0.3)
        assert source.poll(0.2) == []  # still gone: reopen attempts fail quietly
        pair.start()  # ... and comes back at the same path
        deadline = time.monotonic() + 5
        while not source.connected and time.monotonic() < deadline:
            source.poll(0.1)
        assert source.connected and source.reopens == 1
        # The half frame from before the disconnect was dropped; seq restarts after a board reset.
        pair.write(encode_reading_frame(reading(10, 120.0), seq=1) + encode_reading_frame(reading(15, 121.0), seq=2))
        after = poll_until(source, 2)
        assert [r.glucose_mg_dl for r in after] == [120.0, 121.0]
        assert source.bad_frames == 0
    finally:
        source.close()
        pair.stop()
