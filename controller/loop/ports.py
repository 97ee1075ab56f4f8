"""The ports the loop runtime needs, as ``typing.Protocol`` (DESIGN.md, layering).

``controller/`` never imports ``sensors/`` or ``firmware_bridge/``; it speaks to
them through these shapes, and the composition root (``controller/loop/live.py``) plugs the
real adapters in. The pump port uses two plain records defined here,
:class:`PumpOrder` and :class:`PumpOutcome`, in pump units (U/h, U).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

OrderKind = Literal["temp_basal", "bolus"]
OutcomeStatus = Literal["ack", "nak", "not_executed", "unknown"]


@runtime_checkable
class Reading(Protocol):
    """A CGM reading (``sensors.GlucoseReading`` has this shape)."""

    time: datetime
    glucose_mg_dl: float
    clipped: bool

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class Announcement(Protocol):
    """Carbohydrates the person announced (``sensors.CarbAnnouncement``)."""

    time: datetime
    carbs_g: float

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class TempTargetRequest(Protocol):
    """A temporary target the person set (``sensors.nightscout.entry.TempTargetTreatment``): a Nightscout
    ``Temporary Target`` treatment and its time."""

    time: datetime
    treatment: dict[str, Any]

    def to_dict(self) -> dict[str, Any]: ...


@runtime_checkable
class Rejection(Protocol):
    """Input a source could not use (``sensors.Rejected``)."""

    raw: str
    reason: str

    def to_dict(self) -> dict[str, Any]: ...


class GlucoseSource(Protocol):
    """Where readings and announcements come from (MQTT, serial, a simulated sensor)."""

    def poll(self, timeout_s: float) -> list[Any]:
        """Items received: readings, announcements, rejections. Waits at most ``timeout_s``."""
        ...

    def close(self) -> None: ...


class ReadingValidator(Protocol):
    """Judges each reading against the clock (``sensors.validation.ReadingValidator``)."""

    def check(self, reading: Any, now: datetime) -> Any:
        """The reading when accepted, otherwise a :class:`Rejection`."""
        ...

    def remember(self, payload: dict[str, Any]) -> None:
        """Take a journaled reading (its ``to_dict``) as accepted, unjudged: history after a restart."""
        ...


@dataclass(frozen=True)
class PumpOrder:
    """One command for the pump, as the loop journals it before sending."""

    seq: int
    kind: OrderKind
    issued_at: datetime
    expires_at: datetime
    rate_u_per_h: float = 0.0
    duration_min: float = 0.0
    bolus_u: float = 0.0

    def __post_init__(self) -> None:
        if self.seq < 1:
            raise ValueError(f"seq must be >= 1, got {self.seq}")
        for label in ("rate_u_per_h", "duration_min", "bolus_u"):
            value = getattr(self, label)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{label} must be finite and >= 0, got {value}")
        if self.expires_at <= self.issued_at:
            raise ValueError("expires_at must be after issued_at")

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "issued_at": self.issued_at.isoformat(),
                "expires_at": self.expires_at.isoformat(), "rate_u_per_h": self.rate_u_per_h,
                "duration_min": self.duration_min, "bolus_u": self.bolus_u}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PumpOrder":
        return cls(seq=int(d["seq"]), kind=d["kind"], issued_at=datetime.fromisoformat(d["issued_at"]),
                   expires_at=datetime.fromisoformat(d["expires_at"]), rate_u_per_h=float(d["rate_u_per_h"]),
                   duration_min=float(d["duration_min"]), bolus_u=float(d["bolus_u"]))


@dataclass(frozen=True)
class PumpOutcome:
    """What became of an order: acknowledged (with what was delivered), refused, or not known.

    ``bolus_u`` is the bolus delivered for this order; ``rate_u_per_h`` the basal rate the
    pump runs after it (None when not known). ``not_executed`` means a status query
    showed the pump never executed the order (a lost command, never re-sent).
    """

    seq: int
    status: OutcomeStatus
    bolus_u: float = 0.0
    rate_u_per_h: float | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "status": self.status, "bolus_u": self.bolus_u,
                "rate_u_per_h": self.rate_u_per_h, "reason": self.reason}


class PumpPort(Protocol):
    """The pump, as the loop sees it (``firmware_bridge.PumpLink`` behind an adapter).

    Sequence numbers come from the port (the link also spends some on status
    queries); the composition root starts it above the journal's highest seq.
    """

    def allocate_seq(self) -> int:
        """A fresh sequence number, above every one used with this pump."""
        ...

    def execute(self, order: PumpOrder) -> PumpOutcome:
        """Send the order (retries reuse its seq); ``unknown`` when no reply could be had."""
        ...

    def resolve(self, order: PumpOrder) -> PumpOutcome:
        """Learn by a status query whether an order whose reply was lost was executed."""
        ...


PumpEventKind = Literal["bolus", "temp_basal", "temp_cancel", "suspend", "resume"]


@dataclass(frozen=True)
class PumpHistoryEntry:
    """One delivery event from the pump's own log, in pump units and the loop's time."""

    seq: int
    time: datetime
    kind: PumpEventKind
    bolus_u: float = 0.0
    rate_u_per_h: float = 0.0
    duration_min: float = 0.0


@dataclass(frozen=True)
class PumpHistory:
    """What the pump says it delivered since a time.

    ``covers_since``: the log reaches back to the time asked for (False when older
    entries were dropped, or the log began later, e.g. a pump updated in the field).
    """

    pump_time: datetime
    covers_since: bool
    entries: tuple[PumpHistoryEntry, ...]


class PumpHistoryUnavailable(RuntimeError):
    """The pump could not tell its history now (silent, or a pump without a history)."""


class PumpHistoryPort(Protocol):
    """A pump that can tell what it delivered (the reference firmware's HISTORY query).

    A :class:`PumpPort` without ``history`` is treated as a pump that cannot tell:
    the loop then starts in its conservative mode (:class:`controller.loop.runtime.ClosedLoop`).
    """

    def history(self, since: datetime) -> PumpHistory:
        """The pump's deliveries since ``since``; raises :class:`PumpHistoryUnavailable`."""
        ...
