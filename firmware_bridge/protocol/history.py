"""The pump's delivery history on the wire: the HISTORY query (0x06) and its reply (0x84).

A host that lost (or never had) its journal asks the pump what it actually
delivered: ``HISTORY(since_ms, start_index)`` is answered with one page of at
most :data:`HISTORY_PAGE_SIZE` log entries, the number of entries that match,
and whether the log covers ``since_ms`` entirely. ``PROTOCOL.md`` section 3.5
gives the layouts with offsets and section 4.2 the exact matching and
coverage rules. Like the rest of :mod:`firmware_bridge.protocol` this module
only encodes and decodes; it reads no clock and does no I/O.

Every entry carries, besides what the event was, the basal programme in
force after it (``basal_now`` until ``basal_until_ms``, then ``basal_then``,
until the next entry), so the basal the pump delivered between two entries
follows from the entries alone: :meth:`PumpHistory.basal_segments`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from fractions import Fraction
from typing import ClassVar

from .commands import Command
from .errors import BadField
from .fields import MILLI_PER_U, U16_MAX, U32_MAX, U64_MAX, _check_uint
from .header import PAYLOAD_BYTES, Header, _open, _seal
from .message_types import MsgType
from .replies import _build, _check_reply_header

HISTORY_PAGE_SIZE = 8
QUERY_PAYLOAD = struct.Struct(">QI")
REPLY_FIXED = struct.Struct(">QIIBBI")
ENTRY = struct.Struct(">IQBBIIHIQI")
MS_PER_H = 3_600_000

assert PAYLOAD_BYTES[MsgType.HISTORY] == QUERY_PAYLOAD.size
assert PAYLOAD_BYTES[MsgType.HISTORY_REPLY] == REPLY_FIXED.size + HISTORY_PAGE_SIZE * ENTRY.size

KINDS: dict[int, str] = {
    1: "bolus",          # a BOLUS executed: bolus_milli_u delivered
    2: "temp_basal",     # a TEMP_BASAL started: rate_milli_u_per_h for duration_min
    3: "temp_cancel",    # a TEMP_BASAL with duration 0 executed
    4: "suspend",        # a SUSPEND executed (also cancels a temp basal)
    5: "resume",         # a RESUME executed
    6: "basal_hold",     # the pump stopped basal by itself (cause: hourly_limit, daily_limit, reservoir_empty)
    7: "basal_release",  # the pump runs basal again after a hold (the cap has room again)
    8: "power_off",      # the pump's last known time before it stopped; nothing was delivered until power_on
    9: "power_on",       # the pump runs again
    10: "log_start",     # the log begins here (a new or migrated pump, or the rest after older entries were dropped)
}
KIND_CODES: dict[str, int] = {name: code for code, name in KINDS.items()}
CAUSES: dict[int, str] = {0: "", 1: "hourly_limit", 2: "daily_limit", 3: "reservoir_empty"}
CAUSE_CODES: dict[str, int] = {name: code for code, name in CAUSES.items()}


@dataclass(frozen=True)
class HistoryQuery:
    """HISTORY: the entries since pump time ``since_ms``, page starting at ``start_index``.

    Authenticated like every command; answered for any seq and whatever its
    timestamps (it is read-only). A seq above the pump's ``last_seq`` raises
    ``last_seq`` (a fence, as STATUS): the history then holds every command
    with a smaller seq that will ever execute.
    """

    seq: int
    device_id: str
    issued_at_ms: int
    expires_at_ms: int
    since_ms: int
    start_index: int = 0

    def __post_init__(self) -> None:
        # the header checks are Command's (seq >= 1, device_id, issued <= expires)
        Command(MsgType.STATUS, self.seq, self.device_id, self.issued_at_ms, self.expires_at_ms)
        _check_uint("since_ms", self.since_ms, U64_MAX)
        _check_uint("start_index", self.start_index, U32_MAX)

    def encode(self, key: bytes) -> bytes:
        return _seal(key, MsgType.HISTORY, self.seq, self.device_id, self.issued_at_ms, self.expires_at_ms,
                     QUERY_PAYLOAD.pack(self.since_ms, self.start_index))

    @classmethod
    def decode(cls, body: bytes, key: bytes) -> "HistoryQuery":
        """Raises a :class:`~firmware_bridge.protocol.ProtocolError` subclass."""
        header, payload = _open(body, key, frozenset({MsgType.HISTORY}))
        if header.seq == 0:
            raise BadField("seq 0 is not a valid command seq")
        if header.expires_at_ms < header.issued_at_ms:
            raise BadField("expires_at_ms is before issued_at_ms")
        since_ms, start_index = QUERY_PAYLOAD.unpack(payload)
        return cls(header.seq, header.device_id, header.issued_at_ms, header.expires_at_ms, since_ms, start_index)


@dataclass(frozen=True)
class HistoryEntry:
    """One thing the pump did, at pump time ``time_ms``.

    Attributes
    ----------
    seq: the command's seq; 0 for the pump's own entries (basal_hold,
        basal_release, power_off, power_on, log_start).
    kind: one of :data:`KINDS`' names. Hosts must accept kinds they do not
        know and still use the ``basal_*`` fields, which say what ran.
    cause: basal_hold only: "hourly_limit", "daily_limit" or "reservoir_empty"; else "".
    bolus_milli_u: bolus delivered (kind bolus; 0 otherwise).
    rate_milli_u_per_h, duration_min: the temp basal started (kind temp_basal; 0 otherwise).
    basal_now_milli_u_per_h, basal_until_ms, basal_then_milli_u_per_h: the basal
        the pump delivers after this entry until the next one: ``basal_now``
        until ``basal_until_ms`` (0: until the next entry), then ``basal_then``.
    """

    seq: int
    time_ms: int
    kind: str
    bolus_milli_u: int = 0
    rate_milli_u_per_h: int = 0
    duration_min: int = 0
    basal_now_milli_u_per_h: int = 0
    basal_until_ms: int = 0
    basal_then_milli_u_per_h: int = 0
    cause: str = ""

    KIND_NAMES: ClassVar[frozenset[str]] = frozenset(KIND_CODES)

    def __post_init__(self) -> None:
        _check_uint("seq", self.seq, U32_MAX)
        _check_uint("time_ms", self.time_ms, U64_MAX)
        if self.kind not in KIND_CODES:
            raise ValueError(f"kind must be one of {sorted(KIND_CODES)}, got {self.kind!r}")
        if self.cause not in CAUSE_CODES:
            raise ValueError(f"cause must be one of {sorted(CAUSE_CODES)}, got {self.cause!r}")
        for label in ("bolus_milli_u", "rate_milli_u_per_h", "basal_now_milli_u_per_h", "basal_then_milli_u_per_h"):
            _check_uint(label, getattr(self, label), U32_MAX)
        _check_uint("duration_min", self.duration_min, U16_MAX)
        _check_uint("basal_until_ms", self.basal_until_ms, U64_MAX)
        if self.basal_until_ms and self.basal_until_ms < self.time_ms:
            raise ValueError("basal_until_ms is before time_ms")

    @property
    def bolus_u(self) -> float:
        return self.bolus_milli_u / MILLI_PER_U

    @property
    def rate_u_per_h(self) -> float:
        return self.rate_milli_u_per_h / MILLI_PER_U

    def pack(self) -> bytes:
        return ENTRY.pack(self.seq, self.time_ms, KIND_CODES[self.kind], CAUSE_CODES[self.cause], self.bolus_milli_u,
                          self.rate_milli_u_per_h, self.duration_min, self.basal_now_milli_u_per_h,
                          self.basal_until_ms, self.basal_then_milli_u_per_h)

    @classmethod
    def unpack(cls, raw: bytes, offset: int) -> "HistoryEntry":
        seq, t, kind, cause, bolus, rate, duration, now_rate, until, then_rate = ENTRY.unpack_from(raw, offset)
        if kind not in KINDS or cause not in CAUSES:
            raise BadField(f"history entry kind {kind} / cause {cause} unknown")
        try:
            return cls(seq, t, KINDS[kind], bolus, rate, duration, now_rate, until, then_rate, CAUSES[cause])
        except ValueError as exc:
            raise BadField(f"history entry: {exc}") from None


@dataclass(frozen=True)
class HistoryPage:
    """HISTORY_REPLY: one page of the entries matching ``since_ms``.

    ``total``: how many entries match (PROTOCOL.md 4.2); ``entries`` are those
    at ``start_index`` .. ``start_index + len(entries) - 1``, oldest first.
    ``covers_since``: the log holds every delivery at or after ``since_ms``
    and the basal in force at ``since_ms``.
    """

    device_id: str
    seq: int
    pump_time_ms: int
    since_ms: int
    start_index: int
    total: int
    covers_since: bool
    scheduled_rate_milli_u_per_h: int
    entries: tuple[HistoryEntry, ...] = field(default=())

    def __post_init__(self) -> None:
        _check_reply_header(self.device_id, self.seq, self.pump_time_ms)
        _check_uint("since_ms", self.since_ms, U64_MAX)
        _check_uint("start_index", self.start_index, U32_MAX)
        _check_uint("total", self.total, U32_MAX)
        _check_uint("scheduled_rate_milli_u_per_h", self.scheduled_rate_milli_u_per_h, U32_MAX)
        if not isinstance(self.covers_since, bool):
            raise ValueError("covers_since must be a bool")
        if len(self.entries) > HISTORY_PAGE_SIZE or not all(isinstance(e, HistoryEntry) for e in self.entries):
            raise ValueError(f"a page holds at most {HISTORY_PAGE_SIZE} HistoryEntry values")
        if self.start_index + len(self.entries) > self.total:
            raise ValueError("page entries beyond total")

    def encode(self, key: bytes) -> bytes:
        fixed = REPLY_FIXED.pack(self.since_ms, self.start_index, self.total, int(self.covers_since),
                                 len(self.entries), self.scheduled_rate_milli_u_per_h)
        entries = b"".join(e.pack() for e in self.entries) + bytes(ENTRY.size * (HISTORY_PAGE_SIZE - len(self.entries)))
        return _seal(key, MsgType.HISTORY_REPLY, self.seq, self.device_id, self.pump_time_ms, 0, fixed + entries)

    @classmethod
    def decode(cls, body: bytes, key: bytes) -> "HistoryPage":
        header, payload = _open(body, key, frozenset({MsgType.HISTORY_REPLY}))
        since_ms, start_index, total, covers, count, scheduled = REPLY_FIXED.unpack_from(payload, 0)
        if covers not in (0, 1):
            raise BadField(f"covers_since byte must be 0 or 1, got {covers}")
        if count > HISTORY_PAGE_SIZE:
            raise BadField(f"history page count {count} > {HISTORY_PAGE_SIZE}")
        entries = []
        for i in range(HISTORY_PAGE_SIZE):
            offset = REPLY_FIXED.size + i * ENTRY.size
            if i >= count:
                if any(payload[offset:offset + ENTRY.size]):
                    raise BadField("unused history entries must be zero")
                continue
            entries.append(HistoryEntry.unpack(payload, offset))
        return _page(header, since_ms=since_ms, start_index=start_index, total=total, covers_since=bool(covers),
                     scheduled_rate_milli_u_per_h=scheduled, entries=tuple(entries))


def _page(header: Header, **fields_: object) -> HistoryPage:
    return _build(HistoryPage, header, **fields_)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- host view


@dataclass(frozen=True)
class BasalSegment:
    """Basal at ``rate_milli_u_per_h`` from ``start_ms`` (inclusive) to ``end_ms`` (exclusive), pump time."""

    start_ms: int
    end_ms: int
    rate_milli_u_per_h: int

    @property
    def rate_u_per_h(self) -> float:
        return self.rate_milli_u_per_h / MILLI_PER_U

    @property
    def delivered_u(self) -> float:
        return self.rate_milli_u_per_h * (self.end_ms - self.start_ms) / MS_PER_H / MILLI_PER_U


@dataclass(frozen=True)
class PumpHistory:
    """What the pump delivered since ``since_ms``, assembled from all pages by ``PumpLink.query_history``.

    Attributes
    ----------
    pump_time_ms: the pump's clock when it answered the last page.
    since_ms: the time asked for.
    covers_since: True when ``entries`` hold every delivery at or after
        ``since_ms`` and the basal in force at ``since_ms`` (PROTOCOL.md 4.2).
        False: older entries were dropped, or the log began after ``since_ms``
        on a pump that had delivered before (e.g. migrated firmware): insulin
        given before the log's first entry is unknown.
    scheduled_rate_milli_u_per_h: the pump's programmed basal.
    entries: oldest first. The first may be older than ``since_ms``: it gives the
        basal in force at ``since_ms``.
    """

    pump_time_ms: int
    since_ms: int
    covers_since: bool
    scheduled_rate_milli_u_per_h: int
    entries: tuple[HistoryEntry, ...]

    def __post_init__(self) -> None:
        times = [e.time_ms for e in self.entries]
        if times != sorted(times):
            raise ValueError("history entries must be in time order")

    @property
    def scheduled_rate_u_per_h(self) -> float:
        return self.scheduled_rate_milli_u_per_h / MILLI_PER_U

    @property
    def boluses(self) -> tuple[HistoryEntry, ...]:
        return tuple(e for e in self.entries if e.kind == "bolus")

    def basal_segments(self) -> tuple[BasalSegment, ...]:
        """The basal the pump ran, from the first entry to ``pump_time_ms`` (zero-rate segments included)."""
        segments: list[BasalSegment] = []
        for i, entry in enumerate(self.entries):
            end = self.entries[i + 1].time_ms if i + 1 < len(self.entries) else max(self.pump_time_ms, entry.time_ms)
            switch = min(entry.basal_until_ms, end) if entry.basal_until_ms else end
            if switch > entry.time_ms:
                segments.append(BasalSegment(entry.time_ms, switch, entry.basal_now_milli_u_per_h))
            if end > switch:
                segments.append(BasalSegment(switch, end, entry.basal_then_milli_u_per_h))
        return tuple(segments)

    def insulin_milli_u(self, start_ms: int, end_ms: int) -> Fraction:
        """Bolus (at ``start_ms <= t < end_ms``) plus basal integrated over [start_ms, end_ms), exact."""
        total = Fraction(sum(e.bolus_milli_u for e in self.boluses if start_ms <= e.time_ms < end_ms))
        for seg in self.basal_segments():
            overlap = min(seg.end_ms, end_ms) - max(seg.start_ms, start_ms)
            if overlap > 0:
                total += Fraction(seg.rate_milli_u_per_h * overlap, MS_PER_H)
        return total

    def insulin_u(self, start_ms: int, end_ms: int) -> float:
        """:meth:`insulin_milli_u` in units."""
        return float(self.insulin_milli_u(start_ms, end_ms)) / MILLI_PER_U
