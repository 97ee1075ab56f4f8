"""Pump -> host replies: :class:`Ack`, :class:`Nak`, :class:`PumpStatus` with its :class:`RingEntry` ring.

HISTORY_REPLY is in :mod:`.history`; :func:`.decode.decode_reply` decodes any reply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import BadField
from .fields import MILLI_PER_U, U16_MAX, U32_MAX, U64_MAX, _check_uint, check_device_id
from .header import (
    ACK_PAYLOAD,
    NAK_DETAIL_BYTES,
    NAK_PAYLOAD,
    RING_ENTRY,
    RING_SIZE,
    STATUS_FIXED,
    Header,
    _open,
    _seal,
)
from .message_types import _NAK_CODES, DOSE_TYPES, KNOWN_FLAGS, OUTCOME_EXECUTED, MsgType, NakReason, PumpFlags
from .tags import TAG_BYTES, TAG_PREFIX_BYTES


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


def _build(cls: type, header: Header, **fields_: object):  # type: ignore[no-untyped-def]
    if header.expires_at_ms != 0:
        raise BadField("replies must carry expires_at_ms = 0")
    try:
        return cls(device_id=header.device_id, seq=header.seq, pump_time_ms=header.issued_at_ms, **fields_)
    except ValueError as exc:
        raise BadField(str(exc)) from None
