"""The host <-> pump message protocol: fixed binary layouts, big-endian, HMAC-SHA256 tagged.

Every message (command or reply) is::

    offset size field
         0    1 version          u8   = 1
         1    1 msg_type         u8   (MsgType)
         2    4 seq              u32  (commands: >= 1; replies: the answered command's seq, 0 if unknown)
         6   16 device_id        16 bytes ASCII [A-Za-z0-9._-], NUL-padded
        22    8 issued_at_ms     u64  epoch ms (replies: the pump's clock)
        30    8 expires_at_ms    u64  epoch ms (replies: 0)
        38    n payload          per msg_type, fixed length
      38+n   32 tag              HMAC-SHA256(key, bytes[0 : 38+n]), key per device

``PROTOCOL.md`` documents every payload with offsets, the NAK reason codes and
the at-most-once semantics. This module only encodes and decodes; it reads no
clock and does no I/O. Amounts on the wire are integers in milli-units
(0.001 U) and milli-units per hour; the dataclasses keep those integers and
offer float ``_u`` / ``_u_per_h`` views.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import struct
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from pathlib import Path
from typing import ClassVar, Union

VERSION = 1
DEVICE_ID_BYTES = 16
TAG_BYTES = 32
MIN_KEY_BYTES = 16
RING_SIZE = 8
NAK_DETAIL_BYTES = 31

HEADER = struct.Struct(">BBI16sQQ")
TEMP_BASAL_PAYLOAD = struct.Struct(">IH")
BOLUS_PAYLOAD = struct.Struct(">I")
ACK_PAYLOAD = struct.Struct(">IIHB")
NAK_PAYLOAD = struct.Struct(f">B{NAK_DETAIL_BYTES}s")
STATUS_FIXED = struct.Struct(">IBIIHIIIB")
RING_ENTRY = struct.Struct(">IBBIIH4s")
TAG_PREFIX_BYTES = 4

U32_MAX = 0xFFFF_FFFF
U16_MAX = 0xFFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
MILLI_PER_U = 1000

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,16}")


class MsgType(IntEnum):
    TEMP_BASAL = 0x01
    BOLUS = 0x02
    SUSPEND = 0x03
    RESUME = 0x04
    STATUS = 0x05
    HISTORY = 0x06
    ACK = 0x81
    NAK = 0x82
    STATUS_REPLY = 0x83
    HISTORY_REPLY = 0x84


COMMAND_TYPES = frozenset({MsgType.TEMP_BASAL, MsgType.BOLUS, MsgType.SUSPEND, MsgType.RESUME, MsgType.STATUS})
DOSE_TYPES = frozenset({MsgType.TEMP_BASAL, MsgType.BOLUS, MsgType.SUSPEND, MsgType.RESUME})
REPLY_TYPES = frozenset({MsgType.ACK, MsgType.NAK, MsgType.STATUS_REPLY, MsgType.HISTORY_REPLY})
HOST_TYPES = COMMAND_TYPES | {MsgType.HISTORY}
"""Everything a host may send; HISTORY's codec lives in :mod:`firmware_bridge.history`."""


class NakReason(IntEnum):
    """NAK reason codes (u8). 0 is reserved for "executed" in the status ring's outcome field."""

    BAD_TAG = 1
    EXPIRED = 2
    REPLAYED = 3
    OVER_LIMIT = 4
    RESERVOIR_EMPTY = 5
    SUSPENDED = 6
    MALFORMED = 7
    WRONG_DEVICE = 8


OUTCOME_EXECUTED = 0
_NAK_CODES = frozenset(int(r) for r in NakReason)
"""Ring entry outcome code for an executed command; other outcomes are NakReason values."""


class PumpFlags(IntFlag):
    SUSPENDED = 0x01
    TEMP_BASAL_ACTIVE = 0x02
    RESERVOIR_EMPTY = 0x04
    LIMIT_HOLD = 0x08  # basal held back by the pump's hourly or daily insulin limit


KNOWN_FLAGS = int(PumpFlags.SUSPENDED | PumpFlags.TEMP_BASAL_ACTIVE | PumpFlags.RESERVOIR_EMPTY
                  | PumpFlags.LIMIT_HOLD)

PAYLOAD_BYTES: dict[MsgType, int] = {
    MsgType.TEMP_BASAL: TEMP_BASAL_PAYLOAD.size,
    MsgType.BOLUS: BOLUS_PAYLOAD.size,
    MsgType.SUSPEND: 0,
    MsgType.RESUME: 0,
    MsgType.STATUS: 0,
    MsgType.ACK: ACK_PAYLOAD.size,
    MsgType.NAK: NAK_PAYLOAD.size,
    MsgType.STATUS_REPLY: STATUS_FIXED.size + RING_SIZE * RING_ENTRY.size,
    MsgType.HISTORY: 12,  # firmware_bridge.history.QUERY_PAYLOAD
    MsgType.HISTORY_REPLY: 342,  # firmware_bridge.history.REPLY_FIXED + HISTORY_PAGE_SIZE entries
}


def message_bytes(msg_type: MsgType) -> int:
    """Total length of a message of ``msg_type``: header + payload + tag."""
    return HEADER.size + PAYLOAD_BYTES[msg_type] + TAG_BYTES


# --------------------------------------------------------------------------- errors


class ProtocolError(ValueError):
    """A message that cannot be decoded. ``reason`` is the NAK reason a pump would answer."""

    reason: ClassVar[NakReason] = NakReason.MALFORMED


class BadLength(ProtocolError):
    pass


class BadVersion(ProtocolError):
    pass


class BadType(ProtocolError):
    pass


class BadField(ProtocolError):
    pass


class BadTag(ProtocolError):
    reason = NakReason.BAD_TAG


# --------------------------------------------------------------------------- helpers


def milli_floor(amount: float) -> int:
    """Units (or U/h) -> integer milli-units, rounded DOWN (never more than asked).

    The value is first rounded to 6 decimals so that 0.3 U gives 300, not 299.
    """
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"amount must be finite and >= 0, got {amount}")
    return math.floor(round(amount * MILLI_PER_U, 6))


def check_device_id(device_id: str) -> str:
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
        raise ValueError(f"device_id must be 1-16 characters of [A-Za-z0-9._-], got {device_id!r}")
    return device_id


def check_key(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key must be at least {MIN_KEY_BYTES} bytes")
    return bytes(key)


def load_key_file(path: str | Path) -> bytes:
    """A per-device key file: the key in hex (>= 32 hex digits), surrounding whitespace ignored."""
    text = Path(path).read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError as exc:
        raise ValueError(f"{path}: key file must contain the key in hex") from exc
    return check_key(key)


def _check_uint(label: str, value: int, maximum: int, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise ValueError(f"{label} must be an integer in [{minimum}, {maximum}], got {value!r}")


def compute_tag(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def _pack_device_id(device_id: str) -> bytes:
    return device_id.encode("ascii").ljust(DEVICE_ID_BYTES, b"\x00")


def _unpack_device_id(raw: bytes) -> str:
    text = raw.rstrip(b"\x00")
    if b"\x00" in text:
        raise BadField("device_id: bytes after the first NUL must all be NUL")
    try:
        device_id = text.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BadField("device_id is not ASCII") from exc
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise BadField(f"device_id {device_id!r} has characters outside [A-Za-z0-9._-]")
    return device_id


@dataclass(frozen=True)
class Header:
    """The 38-byte header, parsed WITHOUT checking the tag (see :func:`peek_header`)."""

    version: int
    msg_type: MsgType
    seq: int
    device_id: str
    issued_at_ms: int
    expires_at_ms: int


def peek_header(body: bytes) -> Header:
    """Parse and check header and length, NOT the tag. Raises a :class:`ProtocolError` subclass.

    Checks, in order: length >= header + tag (BadLength), version (BadVersion),
    msg_type (BadType), total length for that type (BadLength), device_id (BadField).
    """
    if len(body) < HEADER.size + TAG_BYTES:
        raise BadLength(f"message of {len(body)} bytes is shorter than header + tag ({HEADER.size + TAG_BYTES})")
    version, raw_type, seq, raw_device, issued_at_ms, expires_at_ms = HEADER.unpack_from(body, 0)
    if version != VERSION:
        raise BadVersion(f"protocol version {version}, expected {VERSION}")
    try:
        msg_type = MsgType(raw_type)
    except ValueError:
        raise BadType(f"unknown msg_type 0x{raw_type:02x}") from None
    if len(body) != message_bytes(msg_type):
        raise BadLength(f"{msg_type.name} must be {message_bytes(msg_type)} bytes, got {len(body)}")
    return Header(version, msg_type, seq, _unpack_device_id(raw_device), issued_at_ms, expires_at_ms)


def verify_tag(body: bytes, key: bytes) -> None:
    """Raise :class:`BadTag` unless the last 32 bytes are HMAC-SHA256(key, the rest)."""
    if len(body) <= TAG_BYTES or not hmac.compare_digest(compute_tag(key, body[:-TAG_BYTES]), body[-TAG_BYTES:]):
        raise BadTag("HMAC-SHA256 tag does not verify")


def _seal(key: bytes, msg_type: MsgType, seq: int, device_id: str, issued_at_ms: int, expires_at_ms: int,
          payload: bytes) -> bytes:
    key = check_key(key)
    unsigned = HEADER.pack(VERSION, int(msg_type), seq, _pack_device_id(device_id), issued_at_ms,
                           expires_at_ms) + payload
    return unsigned + compute_tag(key, unsigned)


def _open(body: bytes, key: bytes, allowed: frozenset[MsgType]) -> tuple[Header, bytes]:
    header = peek_header(body)
    if header.msg_type not in allowed:
        raise BadType(f"{header.msg_type.name} is not expected here")
    verify_tag(body, check_key(key))
    return header, body[HEADER.size:-TAG_BYTES]


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command:
    """A host -> pump command.

    Attributes
    ----------
    msg_type: TEMP_BASAL, BOLUS, SUSPEND, RESUME or STATUS.
    seq: sequence number, 1 .. 2**32-1, unique per device for the host's lifetime.
    device_id: the pump this is for.
    issued_at_ms, expires_at_ms: validity window, epoch ms in the pump's time
        base; the pump never executes after ``expires_at_ms``.
    rate_milli_u_per_h, duration_min: TEMP_BASAL only (duration 0 cancels a
        running temp basal and then the rate must be 0).
    bolus_milli_u: BOLUS only.
    """

    msg_type: MsgType
    seq: int
    device_id: str
    issued_at_ms: int
    expires_at_ms: int
    rate_milli_u_per_h: int = 0
    duration_min: int = 0
    bolus_milli_u: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.msg_type, MsgType) or self.msg_type not in COMMAND_TYPES:
            raise ValueError(f"msg_type must be a command type, got {self.msg_type!r}")
        _check_uint("seq", self.seq, U32_MAX, minimum=1)
        check_device_id(self.device_id)
        _check_uint("issued_at_ms", self.issued_at_ms, U64_MAX)
        _check_uint("expires_at_ms", self.expires_at_ms, U64_MAX)
        if self.expires_at_ms < self.issued_at_ms:
            raise ValueError(f"expires_at_ms {self.expires_at_ms} is before issued_at_ms {self.issued_at_ms}")
        _check_uint("rate_milli_u_per_h", self.rate_milli_u_per_h, U32_MAX)
        _check_uint("duration_min", self.duration_min, U16_MAX)
        _check_uint("bolus_milli_u", self.bolus_milli_u, U32_MAX)
        if self.msg_type != MsgType.TEMP_BASAL and (self.rate_milli_u_per_h or self.duration_min):
            raise ValueError(f"{self.msg_type.name} carries no rate or duration")
        if self.msg_type == MsgType.TEMP_BASAL and self.duration_min == 0 and self.rate_milli_u_per_h:
            raise ValueError("TEMP_BASAL with duration_min 0 cancels the temp basal; its rate must be 0")
        if self.msg_type != MsgType.BOLUS and self.bolus_milli_u:
            raise ValueError(f"{self.msg_type.name} carries no bolus")

    # -- constructors in units ------------------------------------------------
    @classmethod
    def temp_basal(cls, seq: int, device_id: str, rate_u_per_h: float, duration_min: int, issued_at_ms: int,
                   expires_at_ms: int) -> "Command":
        """Rate rounded DOWN to 0.001 U/h. ``duration_min=0`` (with rate 0) cancels a temp basal."""
        return cls(MsgType.TEMP_BASAL, seq, device_id, issued_at_ms, expires_at_ms,
                   rate_milli_u_per_h=milli_floor(rate_u_per_h), duration_min=duration_min)

    @classmethod
    def bolus(cls, seq: int, device_id: str, bolus_u: float, issued_at_ms: int, expires_at_ms: int) -> "Command":
        """Bolus rounded DOWN to 0.001 U."""
        return cls(MsgType.BOLUS, seq, device_id, issued_at_ms, expires_at_ms, bolus_milli_u=milli_floor(bolus_u))

    @classmethod
    def suspend(cls, seq: int, device_id: str, issued_at_ms: int, expires_at_ms: int) -> "Command":
        return cls(MsgType.SUSPEND, seq, device_id, issued_at_ms, expires_at_ms)

    @classmethod
    def resume(cls, seq: int, device_id: str, issued_at_ms: int, expires_at_ms: int) -> "Command":
        return cls(MsgType.RESUME, seq, device_id, issued_at_ms, expires_at_ms)

    @classmethod
    def status(cls, seq: int, device_id: str, issued_at_ms: int, expires_at_ms: int) -> "Command":
        return cls(MsgType.STATUS, seq, device_id, issued_at_ms, expires_at_ms)

    @property
    def rate_u_per_h(self) -> float:
        return self.rate_milli_u_per_h / MILLI_PER_U

    @property
    def bolus_u(self) -> float:
        return self.bolus_milli_u / MILLI_PER_U

    def payload(self) -> bytes:
        if self.msg_type == MsgType.TEMP_BASAL:
            return TEMP_BASAL_PAYLOAD.pack(self.rate_milli_u_per_h, self.duration_min)
        if self.msg_type == MsgType.BOLUS:
            return BOLUS_PAYLOAD.pack(self.bolus_milli_u)
        return b""

    def encode(self, key: bytes) -> bytes:
        return _seal(key, self.msg_type, self.seq, self.device_id, self.issued_at_ms, self.expires_at_ms,
                     self.payload())

    @classmethod
    def decode(cls, body: bytes, key: bytes) -> "Command":
        """Raises a :class:`ProtocolError` subclass on bad version/type/length/field/tag."""
        header, payload = _open(body, key, COMMAND_TYPES)
        if header.seq == 0:
            raise BadField("seq 0 is not a valid command seq")
        if header.expires_at_ms < header.issued_at_ms:
            raise BadField("expires_at_ms is before issued_at_ms")
        rate = duration = bolus = 0
        if header.msg_type == MsgType.TEMP_BASAL:
            rate, duration = TEMP_BASAL_PAYLOAD.unpack(payload)
            if duration == 0 and rate:
                raise BadField("TEMP_BASAL with duration 0 (cancel) must have rate 0")
        elif header.msg_type == MsgType.BOLUS:
            (bolus,) = BOLUS_PAYLOAD.unpack(payload)
        return cls(header.msg_type, header.seq, header.device_id, header.issued_at_ms, header.expires_at_ms,
                   rate_milli_u_per_h=rate, duration_min=duration, bolus_milli_u=bolus)


# --------------------------------------------------------------------------- replies


def _check_reply_header(device_id: str, seq: int, pump_time_ms: int) -> None:
    check_device_id(device_id)
    _check_uint("seq", seq, U32_MAX)
    _check_uint("pump_time_ms", pump_time_ms, U64_MAX)


def _check_flags(flags: int) -> None:
    _check_uint("flags", flags, 0xFF)
    if flags & ~KNOWN_FLAGS:
        raise ValueError(f"unknown flag bits 0x{flags & ~KNOWN_FLAGS:02x}")


@dataclass(frozen=True)
class Ack:
    """The pump executed command ``seq``.

    Attributes
    ----------
    bolus_milli_u: bolus delivered by this command (rounded down to the pump's increment).
    rate_milli_u_per_h: basal rate running after this command.
    duration_min: minutes of temp basal remaining after this command (0: scheduled basal).
    flags: :class:`PumpFlags` after this command.
    pump_time_ms: the pump's clock when it executed the command.
    """

    device_id: str
    seq: int
    pump_time_ms: int
    bolus_milli_u: int
    rate_milli_u_per_h: int
    duration_min: int
    flags: int

    def __post_init__(self) -> None:
        _check_reply_header(self.device_id, self.seq, self.pump_time_ms)
        _check_uint("bolus_milli_u", self.bolus_milli_u, U32_MAX)
        _check_uint("rate_milli_u_per_h", self.rate_milli_u_per_h, U32_MAX)
        _check_uint("duration_min", self.duration_min, U16_MAX)
        _check_flags(self.flags)

    @property
    def bolus_u(self) -> float:
        return self.bolus_milli_u / MILLI_PER_U

    @property
    def rate_u_per_h(self) -> float:
        return self.rate_milli_u_per_h / MILLI_PER_U

    def encode(self, key: bytes) -> bytes:
        payload = ACK_PAYLOAD.pack(self.bolus_milli_u, self.rate_milli_u_per_h, self.duration_min, self.flags)
        return _seal(key, MsgType.ACK, self.seq, self.device_id, self.pump_time_ms, 0, payload)

    @classmethod
    def decode(cls, body: bytes, key: bytes) -> "Ack":
        header, payload = _open(body, key, frozenset({MsgType.ACK}))
        bolus, rate, duration, flags = ACK_PAYLOAD.unpack(payload)
        return _build(cls, header, bolus_milli_u=bolus, rate_milli_u_per_h=rate, duration_min=duration, flags=flags)


@dataclass(frozen=True)
class Nak:
    """The pump refused command ``seq`` (or a frame it could not attribute, then ``seq`` may be 0)."""

    device_id: str
    seq: int
    pump_time_ms: int
    reason: NakReason
    detail: str = ""

    def __post_init__(self) -> None:
        _check_reply_header(self.device_id, self.seq, self.pump_time_ms)
        if not isinstance(self.reason, NakReason):
            raise ValueError(f"reason must be a NakReason, got {self.reason!r}")
        if len(self.detail) > NAK_DETAIL_BYTES or not all(0x20 <= ord(c) < 0x7F for c in self.detail):
            raise ValueError(f"detail must be <= {NAK_DETAIL_BYTES} printable ASCII characters, got {self.detail!r}")

    def encode(self, key: bytes) -> bytes:
        payload = NAK_PAYLOAD.pack(int(self.reason), self.detail.encode("ascii"))
        return _seal(key, MsgType.NAK, self.seq, self.device_id, self.pump_time_ms, 0, payload)

    @classmethod
    def decode(cls, body: bytes, key: bytes) -> "Nak":
        header, payload = _open(body, key, frozenset({MsgType.NAK}))
        raw_reason, raw_detail = NAK_PAYLOAD.unpack(payload)
        try:
            reason = NakReason(raw_reason)
        except ValueError:
            raise BadField(f"unknown NAK reason {raw_reason}") from None
        text = raw_detail.rstrip(b"\x00")
        if b"\x00" in text or any(not 0x20 <= b < 0x7F for b in text):
            raise BadField("NAK detail is not NUL-padded printable ASCII")
        return _build(cls, header, reason=reason, detail=text.decode("ascii"))


@dataclass(frozen=True)
class RingEntry:
    """What the pump decided for one recent dose command (newest first in :class:`PumpStatus`).

    ``outcome`` is :data:`OUTCOME_EXECUTED` (0) or the :class:`NakReason` it was refused with;
    ``bolus_milli_u`` / ``rate_milli_u_per_h`` / ``duration_min`` are the ACK's values (0 if refused).
    ``tag_prefix`` is the first 4 bytes of the decided command's HMAC tag: the host
    compares it with its own command's to be sure the entry is for the same bytes.
    """

    seq: int
    msg_type: MsgType
    outcome: int
    bolus_milli_u: int = 0
    rate_milli_u_per_h: int = 0
    duration_min: int = 0
    tag_prefix: bytes = bytes(TAG_PREFIX_BYTES)

    def __post_init__(self) -> None:
        _check_uint("seq", self.seq, U32_MAX, minimum=1)
        if not isinstance(self.msg_type, MsgType) or self.msg_type not in DOSE_TYPES:
            raise ValueError(f"ring entry msg_type must be a dose command type, got {self.msg_type!r}")
        _check_uint("outcome", self.outcome, 0xFF)
        if self.outcome != OUTCOME_EXECUTED and self.outcome not in _NAK_CODES:
            raise ValueError(f"outcome must be 0 or a NakReason code, got {self.outcome!r}")
        _check_uint("bolus_milli_u", self.bolus_milli_u, U32_MAX)
        _check_uint("rate_milli_u_per_h", self.rate_milli_u_per_h, U32_MAX)
        _check_uint("duration_min", self.duration_min, U16_MAX)
        if not isinstance(self.tag_prefix, bytes) or len(self.tag_prefix) != TAG_PREFIX_BYTES:
            raise ValueError(f"tag_prefix must be {TAG_PREFIX_BYTES} bytes")

    def matches(self, command_body: bytes) -> bool:
        """True when this entry is for exactly ``command_body`` (seq and tag prefix)."""
        return (len(command_body) > TAG_BYTES and command_body[-TAG_BYTES:][:TAG_PREFIX_BYTES] == self.tag_prefix
                and int.from_bytes(command_body[2:6], "big") == self.seq)

    @property
    def executed(self) -> bool:
        return self.outcome == OUTCOME_EXECUTED


@dataclass(frozen=True)
class PumpStatus:
    """STATUS_REPLY: the pump's state at ``pump_time_ms``.

    Attributes
    ----------
    seq: the STATUS command's seq.
    last_seq: the highest seq the pump has consumed (a dose command it executed
        or refused for a dose reason, or a STATUS that was newer). No command
        with ``seq <= last_seq`` will ever execute (except that an exact
        retry gets its cached reply). The issue text calls this "last executed seq".
    flags: :class:`PumpFlags`.
    running_rate_milli_u_per_h: basal being delivered now (0 when suspended or empty).
    scheduled_rate_milli_u_per_h: the programmed basal.
    temp_remaining_min: minutes left of the running temp basal, rounded up (0: none).
    reservoir_milli_u: insulin left.
    bolus_delivered_total_milli_u, basal_delivered_total_milli_u: since the pump's state was created.
    ring: the last up to 8 dose commands the pump decided, newest first.
    """

    device_id: str
    seq: int
    pump_time_ms: int
    last_seq: int
    flags: int
    running_rate_milli_u_per_h: int
    scheduled_rate_milli_u_per_h: int
    temp_remaining_min: int
    reservoir_milli_u: int
    bolus_delivered_total_milli_u: int
    basal_delivered_total_milli_u: int
    ring: tuple[RingEntry, ...] = field(default=())

    def __post_init__(self) -> None:
        _check_reply_header(self.device_id, self.seq, self.pump_time_ms)
        _check_uint("last_seq", self.last_seq, U32_MAX)
        _check_flags(self.flags)
        for label in ("running_rate_milli_u_per_h", "scheduled_rate_milli_u_per_h", "reservoir_milli_u",
                      "bolus_delivered_total_milli_u", "basal_delivered_total_milli_u"):
            _check_uint(label, getattr(self, label), U32_MAX)
        _check_uint("temp_remaining_min", self.temp_remaining_min, U16_MAX)
        if len(self.ring) > RING_SIZE or not all(isinstance(e, RingEntry) for e in self.ring):
            raise ValueError(f"ring must be at most {RING_SIZE} RingEntry values")

    @property
    def suspended(self) -> bool:
        return bool(self.flags & PumpFlags.SUSPENDED)

    @property
    def reservoir_u(self) -> float:
        return self.reservoir_milli_u / MILLI_PER_U

    def ring_entry(self, seq: int) -> RingEntry | None:
        return next((entry for entry in self.ring if entry.seq == seq), None)

    def ring_covers(self, seq: int) -> bool:
        """True when the ring would still hold ``seq`` had the pump decided it.

        The ring keeps every decided dose command until it has 8 entries; after
        that, entries older than the oldest one shown are unknown.
        """
        return len(self.ring) < RING_SIZE or min(entry.seq for entry in self.ring) < seq

    def encode(self, key: bytes) -> bytes:
        fixed = STATUS_FIXED.pack(self.last_seq, self.flags, self.running_rate_milli_u_per_h,
                                  self.scheduled_rate_milli_u_per_h, self.temp_remaining_min, self.reservoir_milli_u,
                                  self.bolus_delivered_total_milli_u, self.basal_delivered_total_milli_u,
                                  len(self.ring))
        entries = b"".join(RING_ENTRY.pack(e.seq, int(e.msg_type), e.outcome, e.bolus_milli_u,
                                           e.rate_milli_u_per_h, e.duration_min, e.tag_prefix) for e in self.ring)
        entries += bytes(RING_ENTRY.size * (RING_SIZE - len(self.ring)))
        return _seal(key, MsgType.STATUS_REPLY, self.seq, self.device_id, self.pump_time_ms, 0, fixed + entries)

    @classmethod
    def decode(cls, body: bytes, key: bytes) -> "PumpStatus":
        header, payload = _open(body, key, frozenset({MsgType.STATUS_REPLY}))
        (last_seq, flags, running, scheduled, remaining, reservoir, bolus_total, basal_total,
         count) = STATUS_FIXED.unpack_from(payload, 0)
        if count > RING_SIZE:
            raise BadField(f"ring count {count} > {RING_SIZE}")
        ring = []
        for i in range(RING_SIZE):
            raw = RING_ENTRY.unpack_from(payload, STATUS_FIXED.size + i * RING_ENTRY.size)
            if i >= count:
                if any(raw[:-1]) or any(raw[-1]):
                    raise BadField("unused ring entries must be zero")
                continue
            seq, raw_type, outcome, bolus, rate, duration, tag_prefix = raw
            try:
                ring.append(RingEntry(seq, MsgType(raw_type), outcome, bolus, rate, duration, tag_prefix))
            except ValueError as exc:
                raise BadField(f"ring entry {i}: {exc}") from None
        return _build(cls, header, last_seq=last_seq, flags=flags, running_rate_milli_u_per_h=running,
                      scheduled_rate_milli_u_per_h=scheduled, temp_remaining_min=remaining,
                      reservoir_milli_u=reservoir, bolus_delivered_total_milli_u=bolus_total,
                      basal_delivered_total_milli_u=basal_total, ring=tuple(ring))


Reply = Union[Ack, Nak, PumpStatus]
_REPLY_CLASSES: dict[MsgType, type[Ack] | type[Nak] | type[PumpStatus]] = {
    MsgType.ACK: Ack, MsgType.NAK: Nak, MsgType.STATUS_REPLY: PumpStatus}


def _build(cls: type, header: Header, **fields_: object):  # type: ignore[no-untyped-def]
    if header.expires_at_ms != 0:
        raise BadField("replies must carry expires_at_ms = 0")
    try:
        return cls(device_id=header.device_id, seq=header.seq, pump_time_ms=header.issued_at_ms, **fields_)
    except ValueError as exc:
        raise BadField(str(exc)) from None


def decode_reply(body: bytes, key: bytes) -> Reply:
    """Decode any reply (ACK, NAK, STATUS_REPLY, HISTORY_REPLY); raises a :class:`ProtocolError` subclass."""
    header = peek_header(body)
    if header.msg_type == MsgType.HISTORY_REPLY:
        from .history import HistoryPage  # the history messages have their own module

        return HistoryPage.decode(body, key)  # type: ignore[return-value]
    cls = _REPLY_CLASSES.get(header.msg_type)
    if cls is None:
        raise BadType(f"{header.msg_type.name} is not a reply")
    return cls.decode(body, key)
