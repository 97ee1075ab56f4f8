"""The serial CGM wire formats: COBS-framed binary readings, and text lines for hobby boards.

Binary frames
=============

A frame on the wire is ``COBS(body) + b"\\x00"``: the body is encoded with
Consistent Overhead Byte Stuffing, so it contains no zero byte, and a single
zero byte ends it. A receiver that starts mid-stream, or loses bytes, resyncs
at the next zero. The body (all integers big-endian)::

    offset size field
    0      1    version      u8   = 1
    1      2    seq          u16  frame counter, +1 per frame, wraps at 65536
    3      1    msg_type     u8   0x01 = glucose reading
    4      n    payload      (msg_type 0x01: 12 bytes, below)
    4+n    2    crc          u16  CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF,
                                 no reflection, no final xor) over bytes 0..4+n-1

Glucose reading payload (msg_type 0x01)::

    0      8    time_ms      u64  measurement time, ms since 1970-01-01 UTC;
                                  0 = "now by the host clock" (a board without a clock)
    8      2    glucose_x10  u16  glucose in mg/dL x 10 (1234 = 123.4 mg/dL); 0 is invalid
    10     1    trend        i8   trend arrow, Nightscout/Dexcom trend code (below)
    11     1    flags        u8   bit 0: clipped (the sensor read LOW/HIGH; glucose is
                                  the range limit); bits 1-7 reserved, sent as 0

A glucose frame is therefore 18 bytes of body, at most 20 bytes on the wire.

Trend codes (Nightscout's ``trend`` numbers for its ``direction`` names)::

    0 none (no arrow)    3 FortyFiveUp     6 SingleDown        9 RATE OUT OF RANGE
    1 DoubleUp           4 Flat            7 DoubleDown
    2 SingleUp           5 FortyFiveDown   8 NOT COMPUTABLE

Any other code decodes as "no trend" (the glucose value is still used).

Text lines
==========

One reading per line (``\\n`` or ``\\r\\n``), ASCII, surrounding spaces ignored::

    120                          120 mg/dL, measured now (host clock)
    sgv=120                      the same
    mmol=6.7                     6.7 mmol/L (x 18.0182 mg/dL per mmol/L), now
    LOW / HIGH                   the sensor's range limit (40 / 400 mg/dL), clipped, now
    2026-11-23T10:00:00Z,120     a time (ISO 8601 with an offset) then any of the above

Blank lines are skipped; anything else is rejected.

Errors
======

:func:`decode_frame` raises ValueError whose message starts with a fixed
phrase: ``"malformed frame"`` (bad COBS, wrong length), ``"bad crc"``,
``"unsupported frame version"``, ``"unknown message type"``.
:class:`FrameStreamDecoder` and :class:`TextLineDecoder` turn any byte stream
into items and never raise.
"""

from __future__ import annotations

import binascii
import math
import struct
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sensors.files.common import check_time, clip_raw, glucose_reason, parse_number, parse_timestamp
from sensors.reading import MG_DL_PER_MMOL_L, SENSOR_HIGH_MG_DL, SENSOR_LOW_MG_DL, GlucoseReading, Rejected

PROTOCOL_VERSION = 1
MSG_GLUCOSE = 0x01
FLAG_CLIPPED = 0x01
DELIMITER = b"\x00"
MAX_FRAME_BYTES = 256
"""Bytes between two delimiters beyond which a frame is discarded unread."""
MAX_LINE_CHARS = 256

TREND_CODES: dict[int, str | None] = {
    0: None,
    1: "DoubleUp",
    2: "SingleUp",
    3: "FortyFiveUp",
    4: "Flat",
    5: "FortyFiveDown",
    6: "SingleDown",
    7: "DoubleDown",
    8: "NOT COMPUTABLE",
    9: "RATE OUT OF RANGE",
}
"""Trend code (i8 on the wire) -> the reading's ``trend`` (Nightscout ``direction``)."""
TREND_NAMES: dict[str, int] = {name: code for code, name in TREND_CODES.items() if name is not None}

_HEADER = struct.Struct(">BHB")  # version, seq, msg_type
_GLUCOSE = struct.Struct(">QHbB")  # time_ms, glucose_x10, trend, flags
_CRC = struct.Struct(">H")
GLUCOSE_BODY_BYTES = _HEADER.size + _GLUCOSE.size + _CRC.size
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


# --- COBS and CRC ---------------------------------------------------------------------------


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: ``data`` without zero bytes (no delimiter appended)."""
    out = bytearray()
    block = bytearray()
    for byte in data:
        if byte == 0:
            out.append(len(block) + 1)
            out += block
            block.clear()
        else:
            block.append(byte)
            if len(block) == 254:
                out.append(255)
                out += block
                block.clear()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of :func:`cobs_encode` (without the delimiter). ValueError on invalid input."""
    out = bytearray()
    i, n = 0, len(data)
    if n == 0:
        raise ValueError("malformed frame: empty COBS block")
    while i < n:
        code = data[i]
        if code == 0:
            raise ValueError(f"malformed frame: zero byte inside COBS data at {i}")
        end = i + code
        if end > n:
            raise ValueError(f"malformed frame: COBS code {code} at {i} runs past the end ({n} bytes)")
        block = data[i + 1:end]
        if 0 in block:
            raise ValueError("malformed frame: zero byte inside COBS data")
        out += block
        i = end
        if code != 255 and i < n:
            out.append(0)
    return bytes(out)


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF); ``crc16_ccitt_false(b"123456789") == 0x29B1``."""
    return binascii.crc_hqx(data, 0xFFFF)


# --- glucose frames ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GlucoseFrame:
    """The fields of one decoded glucose frame.

    ``time_ms`` 0 means the board has no clock (the host stamps the reading);
    ``trend`` is the Nightscout direction name or None.
    """

    seq: int
    time_ms: int
    glucose_mg_dl: float
    trend: str | None
    clipped: bool
    trend_code: int = 0
    version: int = PROTOCOL_VERSION
    msg_type: int = MSG_GLUCOSE


def encode_frame(seq: int, time_ms: int, glucose_mg_dl: float, trend: str | None = None,
                 clipped: bool = False) -> bytes:
    """A glucose frame on the wire (COBS + delimiter). ValueError if a field does not fit."""
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= 0xFFFF:
        raise ValueError(f"seq must be an integer 0..65535, got {seq!r}")
    if isinstance(time_ms, bool) or not isinstance(time_ms, int) or not 0 <= time_ms < 2**64:
        raise ValueError(f"time_ms must be an integer 0..2**64-1, got {time_ms!r}")
    if isinstance(glucose_mg_dl, bool) or not isinstance(glucose_mg_dl, (int, float)) \
            or not math.isfinite(glucose_mg_dl):
        raise ValueError(f"glucose_mg_dl must be a finite number, got {glucose_mg_dl!r}")
    x10 = int(round(glucose_mg_dl * 10))
    if not 1 <= x10 <= 0xFFFF:
        raise ValueError(f"glucose_mg_dl {glucose_mg_dl!r} does not fit the frame (0.1..6553.5 mg/dL)")
    if trend is None:
        code = 0
    elif trend in TREND_NAMES:
        code = TREND_NAMES[trend]
    else:
        raise ValueError(f"trend {trend!r} has no code; known: {', '.join(TREND_NAMES)}")
    body = _HEADER.pack(PROTOCOL_VERSION, seq, MSG_GLUCOSE) + _GLUCOSE.pack(
        time_ms, x10, code, FLAG_CLIPPED if clipped else 0)
    body += _CRC.pack(crc16_ccitt_false(body))
    return cobs_encode(body) + DELIMITER


def encode_reading_frame(reading: GlucoseReading, seq: int, with_time: bool = True) -> bytes:
    """The wire frame for ``reading`` (COBS + delimiter); ``with_time=False`` sends time 0 ("now").

    ValueError if the reading does not fit (time before 1970, glucose above 6553.5
    mg/dL, a trend without a code).
    """
    if not isinstance(reading, GlucoseReading):
        raise ValueError(f"encode_reading_frame needs a GlucoseReading, got {type(reading).__name__}")
    time_ms = 0
    if with_time:
        time_ms = (reading.time - _EPOCH) // _MS
        if time_ms <= 0:
            raise ValueError(f"reading time {reading.time.isoformat()} is not after 1970-01-01")
    return encode_frame(seq, time_ms, reading.glucose_mg_dl, reading.trend, reading.clipped)


def decode_frame(frame: bytes) -> GlucoseFrame:
    """The fields of one wire frame (COBS-encoded; a trailing delimiter is allowed).

    Raises ValueError starting with ``"malformed frame"``, ``"bad crc"``,
    ``"unsupported frame version"`` or ``"unknown message type"``.
    """
    data = bytes(frame)
    if data.endswith(DELIMITER):
        data = data[:-1]
    body = cobs_decode(data)
    if len(body) < _HEADER.size + _CRC.size:
        raise ValueError(f"malformed frame: {len(body)} bytes is shorter than a header and a crc")
    (crc,) = _CRC.unpack_from(body, len(body) - _CRC.size)
    expected = crc16_ccitt_false(body[:-_CRC.size])
    if crc != expected:
        raise ValueError(f"bad crc: frame says 0x{crc:04X}, body gives 0x{expected:04X}")
    version, seq, msg_type = _HEADER.unpack_from(body, 0)
    if version != PROTOCOL_VERSION:
        raise ValueError(f"unsupported frame version {version} (this host speaks {PROTOCOL_VERSION})")
    if msg_type != MSG_GLUCOSE:
        raise ValueError(f"unknown message type 0x{msg_type:02X}")
    if len(body) != GLUCOSE_BODY_BYTES:
        raise ValueError(f"malformed frame: a glucose frame has {GLUCOSE_BODY_BYTES} bytes, got {len(body)}")
    time_ms, x10, code, flags = _GLUCOSE.unpack_from(body, _HEADER.size)
    if x10 == 0:
        raise ValueError("malformed frame: glucose 0")
    return GlucoseFrame(seq=seq, time_ms=time_ms, glucose_mg_dl=x10 / 10.0, trend=TREND_CODES.get(code),
                        clipped=bool(flags & FLAG_CLIPPED), trend_code=code, version=version,
                        msg_type=msg_type)


def frame_reading(frame: GlucoseFrame, now: datetime, source: str, subject: str = "") -> GlucoseReading | str:
    """The reading a decoded frame carries (time 0 -> ``now``), or the reason it is unusable."""
    if frame.time_ms == 0:
        time = now
    else:
        try:
            time = _EPOCH + timedelta(milliseconds=frame.time_ms)
        except OverflowError:
            return f"implausible time ({frame.time_ms} ms since 1970)"
        reason = check_time(time)
        if reason:
            return reason
    reason = glucose_reason(frame.glucose_mg_dl)
    if reason:
        return reason
    return GlucoseReading(time=time, glucose_mg_dl=frame.glucose_mg_dl, source=source, subject=subject,
                          trend=frame.trend, clipped=frame.clipped)


# --- stream decoders ------------------------------------------------------------------------


Item = GlucoseReading | Rejected


class FrameStreamDecoder:
    """Splits a byte stream at zero bytes and turns each frame into a reading or a rejection.

    A frame whose seq and body equal one of the last ``seq_memory`` frames is a
    re-sent frame: ``"duplicate frame"``. The same seq with a different body (the
    board restarted its counter) is accepted. Never raises.

    Attributes
    ----------
    counts: rejections by fixed phrase, plus ``"frames"`` (frames decoded).
    """

    PHRASES = ("malformed frame", "bad crc", "unsupported frame version", "unknown message type",
               "duplicate frame", "glucose out of range", "implausible time")

    def __init__(self, clock: Callable[[], datetime], source: str = "serial", subject: str = "",
                 seq_memory: int = 16) -> None:
        self.clock = clock
        self.source = source
        self.subject = subject
        self.seq_memory = seq_memory
        self._buffer = bytearray()
        self._overflow = False
        self._recent: OrderedDict[int, bytes] = OrderedDict()
        self.counts: dict[str, int] = {"frames": 0, **{p: 0 for p in self.PHRASES}}

    @property
    def bad_frames(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "frames")

    def reset(self) -> None:
        """Drop a partial frame (after a disconnect); the duplicate memory is kept."""
        self._buffer.clear()
        self._overflow = False

    def feed(self, data: bytes) -> list[Item]:
        out: list[Item] = []
        for part in _split_keep(bytes(data), 0):
            if part == 0:  # a delimiter
                if self._overflow:
                    out.append(self._reject(b"", f"malformed frame: longer than {MAX_FRAME_BYTES} bytes"))
                elif self._buffer:
                    out.append(self._frame(bytes(self._buffer)))
                self._buffer.clear()
                self._overflow = False
            elif not self._overflow:
                self._buffer += part
                if len(self._buffer) > MAX_FRAME_BYTES:
                    self._buffer.clear()
                    self._overflow = True
        return out

    def _frame(self, data: bytes) -> Item:
        try:
            frame = decode_frame(data)
        except ValueError as err:
            return self._reject(data, str(err))
        except Exception as err:  # noqa: BLE001 - never let a byte stream raise
            return self._reject(data, f"malformed frame: {type(err).__name__}")
        self.counts["frames"] += 1
        previous = self._recent.get(frame.seq)
        if previous == data:
            return self._reject(data, f"duplicate frame (seq {frame.seq})")
        self._recent.pop(frame.seq, None)
        self._recent[frame.seq] = data
        while len(self._recent) > self.seq_memory:
            self._recent.popitem(last=False)
        now = _now(self.clock)
        try:
            outcome = frame_reading(frame, now, self.source, self.subject)
        except ValueError as err:  # defensive: frame_reading checks what GlucoseReading refuses
            outcome = f"malformed frame: {err}"
        if isinstance(outcome, str):
            return self._reject(data, outcome)
        return outcome

    def _reject(self, data: bytes, reason: str) -> Rejected:
        phrase = next((p for p in self.PHRASES if reason.startswith(p)), "malformed frame")
        self.counts[phrase] += 1
        return Rejected(clip_raw(data.hex(" ")), None, reason)


class TextLineDecoder:
    """Splits a byte stream into lines and turns each into a reading or a rejection. Never raises.

    Attributes
    ----------
    counts: rejections by fixed phrase, plus ``"lines"`` (non-blank lines seen).
    """

    PHRASES = ("malformed line", "non-numeric glucose", "glucose out of range", "missing time",
               "unparseable time", "implausible time")

    def __init__(self, clock: Callable[[], datetime], source: str = "serial", subject: str = "") -> None:
        self.clock = clock
        self.source = source
        self.subject = subject
        self._buffer = bytearray()
        self._overflow = False
        self.counts: dict[str, int] = {"lines": 0, **{p: 0 for p in self.PHRASES}}

    @property
    def bad_lines(self) -> int:
        return sum(v for k, v in self.counts.items() if k != "lines")

    def reset(self) -> None:
        self._buffer.clear()
        self._overflow = False

    def feed(self, data: bytes) -> list[Item]:
        out: list[Item] = []
        for part in _split_keep(bytes(data), 10):
            if part == 10:
                if self._overflow:
                    out.append(self._reject("", f"malformed line: longer than {MAX_LINE_CHARS} characters"))
                else:
                    item = self._line(bytes(self._buffer))
                    if item is not None:
                        out.append(item)
                self._buffer.clear()
                self._overflow = False
            elif not self._overflow:
                self._buffer += part
                if len(self._buffer) > MAX_LINE_CHARS:
                    self._buffer.clear()
                    self._overflow = True
        return out

    def _line(self, data: bytes) -> Item | None:
        text = data.decode("utf-8", errors="replace").strip()
        if not text:
            return None
        self.counts["lines"] += 1
        now = _now(self.clock)
        try:
            outcome = parse_text_line(text, now, self.source, self.subject)
        except Exception as err:  # noqa: BLE001 - never let a byte stream raise
            outcome = f"malformed line: {type(err).__name__}"
        if isinstance(outcome, str):
            return self._reject(text, outcome)
        return outcome

    def _reject(self, text: str, reason: str) -> Rejected:
        phrase = next((p for p in self.PHRASES if reason.startswith(p)), "malformed line")
        self.counts[phrase] += 1
        return Rejected(clip_raw(text), None, reason)


def parse_text_line(line: str, now: datetime, source: str = "serial", subject: str = "") -> GlucoseReading | str:
    """One text line (see the module docstring) to a reading, or the reason it is not one."""
    text = line.strip()
    time = now
    if "," in text:
        stamp, _, text = text.partition(",")
        text = text.strip()
        parsed = parse_timestamp(stamp)
        if isinstance(parsed, str):
            return parsed
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            return f"unparseable time {clip_raw(stamp.strip())!r}: needs a UTC offset such as Z"
        try:
            time = parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            return f"implausible time {clip_raw(stamp.strip())!r}"
        reason = check_time(time)
        if reason:
            return reason
    clipped = False
    key, sep, value = text.partition("=")
    key = key.strip().lower() if sep else "sgv"
    value = value.strip() if sep else text
    if key not in ("sgv", "mgdl", "mg_dl", "mmol"):
        return f"malformed line: unknown key {clip_raw(key)!r} (expected sgv= or mmol=)"
    if not value:
        return "malformed line: no glucose value"
    if value.upper() in ("LOW", "HIGH"):
        glucose = SENSOR_LOW_MG_DL if value.upper() == "LOW" else SENSOR_HIGH_MG_DL
        clipped = True
    else:
        number = parse_number(value)
        if number is None:
            return f"non-numeric glucose {clip_raw(value)!r}"
        glucose = number * MG_DL_PER_MMOL_L if key == "mmol" else number
        reason = glucose_reason(glucose)
        if reason:
            return reason
    return GlucoseReading(time=time, glucose_mg_dl=glucose, source=source, subject=subject, clipped=clipped)


def _now(clock: Callable[[], datetime]) -> datetime:
    now = clock()
    if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
        raise ValueError(f"the clock must return a timezone-aware datetime, got {now!r}")
    return now


def _split_keep(data: bytes, sep: int) -> list[bytes | int]:
    """``data`` split at ``sep`` bytes, each separator kept as the int ``sep``."""
    parts: list[bytes | int] = []
    start = 0
    while True:
        i = data.find(bytes([sep]), start)
        if i < 0:
            if start < len(data):
                parts.append(data[start:])
            return parts
        if i > start:
            parts.append(data[start:i])
        parts.append(sep)
        start = i + 1
