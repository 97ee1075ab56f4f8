"""Host -> pump dose and status commands: :class:`Command`."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import BadField
from .fields import MILLI_PER_U, U16_MAX, U32_MAX, U64_MAX, _check_uint, check_device_id, milli_floor
from .header import BOLUS_PAYLOAD, TEMP_BASAL_PAYLOAD, _open, _seal
from .message_types import COMMAND_TYPES, MsgType


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
