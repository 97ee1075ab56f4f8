"""The reference pump firmware as a pure state machine (no clock reads, no I/O).

:class:`VirtualPump` answers each command body with a reply body; the caller
passes the pump's clock. Accounting is in integers (milli-units, and basal in
milli-unit*ms/h with an exact remainder), as a C firmware would do it.

Decision order for one received body (the first failing check answers):

1. header/length/version/type  -> NAK malformed (seq 0 if the header is unreadable)
2. device_id is not this pump -> NAK wrong_device
3. HMAC tag                   -> NAK bad_tag
4. payload fields             -> NAK malformed
5. exact retry (seq in the ring and identical bytes) -> the cached reply, byte for byte
6. STATUS -> STATUS_REPLY, HISTORY -> HISTORY_REPLY, for any seq and whatever
   their timestamps (they are read-only); if seq > last_seq, last_seq = seq: a fence
7. dose command with seq <= last_seq -> NAK replayed
8. now > expires_at_ms, or a validity window longer than max_validity_s
   (expires - issued, or expires - now)              -> NAK expired
9. dose checks: over_limit (max bolus, max rate, max duration, then the hourly and
   daily insulin limits), suspended, reservoir_empty -> NAK (consumed: recorded in the ring)
10. execute -> ACK (recorded in the ring and in the delivery history, last_seq = seq)

The delivery history (persisted with the rest of the state) holds every executed
bolus, temp basal, cancel, suspend and resume of the last :data:`HISTORY_KEEP_MS`
(at least; at most :data:`HISTORY_MAX_ENTRIES` entries), in pump time, with the
command's seq and the basal that runs after it: what a host that lost its
journal asks for (``HISTORY``, PROTOCOL.md 3.5). ``log_start_ms`` is when the log
began: None for a pump that has kept it since it was new (it covers any time);
the migration time for a pump updated from a version-1 state file, or the time
of the oldest kept entry once older ones were dropped.

The cumulative limits (PumpSettings.max_insulin_per_hour_u / _per_day_u, kept by
:mod:`firmware_bridge.insulin_caps` in the persisted ``ledger``) count bolus and
basal alike. A bolus that would break one is refused; basal is delivered up to
the limit and then held (``limit_hold``, flag LIMIT_HOLD) until room returns,
without catching up. A temp basal is accepted within max rate: the limits cap
its delivery, not the command.

Steps 1-5, 7 and 8 change nothing; steps 9-10 consume the seq. Hence each seq
executes at most once, never after its expiry, never unauthenticated.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Any

from .insulin_caps import InsulinLedger
from .protocol import (
    HOST_TYPES,
    MILLI_PER_U,
    OUTCOME_EXECUTED,
    RING_SIZE,
    TAG_BYTES,
    TAG_PREFIX_BYTES,
    U32_MAX,
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
    check_device_id,
    check_key,
    milli_floor,
    peek_header,
    verify_tag,
)
from .protocol.history import HISTORY_PAGE_SIZE, HistoryEntry, HistoryPage, HistoryQuery
from .pump_settings import PumpSettings, round_down
from .pump_state import HISTORY_KEEP_MS, HISTORY_MAX_ENTRIES, STATE_VERSION, checked_state, fresh_state

__all__ = ["HISTORY_KEEP_MS", "HISTORY_MAX_ENTRIES", "STATE_VERSION", "PumpSettings", "VirtualPump"]

MS_PER_MIN = 60_000
MS_PER_H = 3_600_000


_DETAIL = {BadLength: "bad length", BadVersion: "bad version", BadType: "unknown msg_type",
           BadField: "bad field", BadTag: "tag does not verify"}


def _detail(exc: ProtocolError) -> str:
    return _DETAIL.get(type(exc), "malformed")


class VirtualPump:
    """The pump firmware. ``handle`` answers one message body; ``advance`` runs the clock.

    ``state`` is a JSON-serializable dict; ``VirtualPump(settings, key, state)``
    restores it (ValueError if it is not a valid state for this device).
    ``revision`` increases whenever a command changed the state that must be
    durable before its reply is sent (a process persists when it changes).
    ``counters`` counts outcomes by name (not persisted).
    """

    def __init__(self, settings: PumpSettings, key: bytes, state: dict[str, Any] | None = None) -> None:
        if not isinstance(settings, PumpSettings):
            raise TypeError("settings must be PumpSettings")
        self.settings = settings
        self._key = check_key(key)
        self._s = fresh_state(settings) if state is None else checked_state(state, settings)
        self._ledger = InsulinLedger(self._s["ledger"], settings.hour_cap_milli_u, settings.day_cap_milli_u)
        self.revision = 0
        self.counters: Counter[str] = Counter()

    # ------------------------------------------------------------------ clock
    @property
    def clock_ms(self) -> int | None:
        """The pump's clock: the latest time it was given, None before the first."""
        return self._s["clock_ms"]

    def power_on(self, now_ms: int) -> None:
        """Set the clock after a restart WITHOUT delivering basal for the time the pump was off."""
        clock = self._s["clock_ms"]
        self._s["clock_ms"] = now_ms if clock is None else max(clock, now_ms)
        self._expire_temp()

    def advance(self, now_ms: int) -> None:
        """Run the pump up to ``now_ms``: deliver basal, end an expired temp basal.

        The clock never goes back: an earlier ``now_ms`` is ignored (counted).
        The first time ever given only sets the clock.
        """
        s = self._s
        if s["clock_ms"] is None:
            s["clock_ms"] = now_ms
            return
        if now_ms < s["clock_ms"]:
            self.counters["clock_backwards"] += 1
            return
        t = s["clock_ms"]
        while t < now_ms:
            end = now_ms
            if s["temp_end_ms"] is not None and s["temp_end_ms"] > t:
                end = min(end, s["temp_end_ms"])
            rate = self._running_rate()
            if rate:  # a span inside one minute: the insulin limits are kept per minute (insulin_caps)
                end = min(end, (t // MS_PER_MIN + 1) * MS_PER_MIN)
                self._deliver_basal(t // MS_PER_MIN, rate * (end - t))
            t = end
            s["clock_ms"] = t
            self._expire_temp()
        s["clock_ms"] = now_ms

    def _expire_temp(self) -> None:
        s = self._s
        if s["temp_end_ms"] is not None and s["clock_ms"] >= s["temp_end_ms"]:
            s["temp_end_ms"] = None
            s["temp_rate_milli_u_per_h"] = 0

    def _deliver_basal(self, minute: int, milli_u_ms_per_h: int) -> None:
        """Basal of one span inside ``minute``: held at the reservoir and at the insulin limits, never caught up."""
        s = self._s
        s["basal_residual"] += milli_u_ms_per_h
        milli_u, s["basal_residual"] = divmod(s["basal_residual"], MS_PER_H)
        room = self._ledger.room(minute)
        if room.milli_u == 0 or milli_u > room.milli_u:
            milli_u, s["basal_residual"] = room.milli_u, 0
            if s["limit_hold"] is None:
                s["limit_hold"] = room.binding
                self._log_pump_event("basal_hold", f"{room.binding}_limit")
        elif s["limit_hold"] is not None and room.milli_u >= min(self._running_rate(),
                                                                 self.settings.hour_cap_milli_u // 2):
            s["limit_hold"] = None  # released once an hour of this basal (or half the hourly limit) fits again
            self._log_pump_event("basal_release")
        if milli_u >= s["reservoir_milli_u"]:
            milli_u = s["reservoir_milli_u"]
            s["basal_residual"] = 0
        s["reservoir_milli_u"] -= milli_u
        s["basal_total_milli_u"] += milli_u
        self._ledger.add(minute, milli_u)

    # ------------------------------------------------------------------ views
    def _temp_active(self) -> bool:
        s = self._s
        return s["temp_end_ms"] is not None and s["clock_ms"] is not None and s["clock_ms"] < s["temp_end_ms"]

    def _running_rate(self) -> int:
        s = self._s
        if s["suspended"] or s["reservoir_milli_u"] == 0:
            return 0
        if self._temp_active():
            return s["temp_rate_milli_u_per_h"]
        return self.settings.scheduled_rate_milli_u_per_h

    def _temp_remaining_min(self) -> int:
        if not self._temp_active():
            return 0
        return -(-(self._s["temp_end_ms"] - self._s["clock_ms"]) // MS_PER_MIN)

    def _flags(self) -> int:
        flags = PumpFlags(0)
        if self._s["suspended"]:
            flags |= PumpFlags.SUSPENDED
        if self._temp_active():
            flags |= PumpFlags.TEMP_BASAL_ACTIVE
        if self._s["reservoir_milli_u"] == 0:
            flags |= PumpFlags.RESERVOIR_EMPTY
        if self._s["limit_hold"] is not None and self._running_rate():
            flags |= PumpFlags.LIMIT_HOLD
        return int(flags)

    @property
    def last_seq(self) -> int:
        return self._s["last_seq"]

    @property
    def running_rate_u_per_h(self) -> float:
        return self._running_rate() / MILLI_PER_U

    @property
    def reservoir_u(self) -> float:
        return self._s["reservoir_milli_u"] / MILLI_PER_U

    @property
    def bolus_delivered_total_u(self) -> float:
        return self._s["bolus_total_milli_u"] / MILLI_PER_U

    @property
    def basal_delivered_total_u(self) -> float:
        return self._s["basal_total_milli_u"] / MILLI_PER_U

    @property
    def state(self) -> dict[str, Any]:
        """A deep copy of the state as JSON-serializable plain data."""
        copy = dict(self._s)
        copy["ring"] = [dict(entry) for entry in self._s["ring"]]
        copy["history"] = [list(raw) for raw in self._s["history"]]
        copy["ledger"] = [list(raw) for raw in self._s["ledger"]]
        return copy

    def insulin_room_u(self) -> tuple[float, str]:
        """(insulin that may still be delivered this minute, "hourly" or "daily": the limit that binds first)."""
        room = self._ledger.room((self._s["clock_ms"] or 0) // MS_PER_MIN)
        return room.milli_u / MILLI_PER_U, room.binding

    def status(self, seq: int = 0) -> PumpStatus:
        s = self._s
        ring = tuple(RingEntry(e["seq"], MsgType(e["msg_type"]), e["outcome"], e["bolus_milli_u"],
                               e["rate_milli_u_per_h"], e["duration_min"], bytes.fromhex(e["tag_prefix"]))
                     for e in reversed(s["ring"]))
        return PumpStatus(self.settings.device_id, seq, s["clock_ms"] or 0, s["last_seq"], self._flags(),
                          self._running_rate(), self.settings.scheduled_rate_milli_u_per_h,
                          self._temp_remaining_min(), s["reservoir_milli_u"], s["bolus_total_milli_u"],
                          s["basal_total_milli_u"], ring)

    def delivery_since_last_report(self) -> tuple[float, float]:
        """(bolus_u delivered since the previous call, basal rate running now in U/h); resets the bolus sum."""
        bolus_milli_u, self._s["bolus_since_report_milli_u"] = self._s["bolus_since_report_milli_u"], 0
        return bolus_milli_u / MILLI_PER_U, self._running_rate() / MILLI_PER_U

    # ------------------------------------------------------------------ commands
    def handle(self, frame_body: bytes, now_ms: int) -> bytes:
        """Answer one received message body at the pump's time ``now_ms``; never raises on input."""
        self.advance(now_ms)
        now = self._s["clock_ms"]
        self.counters["received"] += 1
        try:
            header = peek_header(frame_body)
        except ProtocolError as exc:
            return self._nak(0, NakReason.MALFORMED, _detail(exc))
        if header.msg_type not in HOST_TYPES:
            return self._nak(header.seq, NakReason.MALFORMED, "not a command")
        if header.device_id != self.settings.device_id:
            return self._nak(header.seq, NakReason.WRONG_DEVICE, "wrong device_id")
        try:
            verify_tag(frame_body, self._key)
        except BadTag as exc:
            return self._nak(header.seq, NakReason.BAD_TAG, _detail(exc))
        if header.msg_type == MsgType.HISTORY:
            return self._history(frame_body)
        try:
            command = Command.decode(frame_body, self._key)
        except ProtocolError as exc:
            return self._nak(header.seq, NakReason.MALFORMED, _detail(exc))

        digest = hashlib.sha256(frame_body).hexdigest()
        for entry in self._s["ring"]:
            if entry["seq"] == command.seq and entry["sha256"] == digest:
                self.counters["exact_retry"] += 1
                return bytes.fromhex(entry["reply"])

        if command.msg_type == MsgType.STATUS:
            if command.seq > self._s["last_seq"]:
                self._s["last_seq"] = command.seq
                self.revision += 1
            self.counters["status"] += 1
            return self.status(command.seq).encode(self._key)
        if command.seq <= self._s["last_seq"]:
            return self._nak(command.seq, NakReason.REPLAYED, f"seq <= last_seq {self._s['last_seq']}"[:31])
        if now > command.expires_at_ms:
            return self._nak(command.seq, NakReason.EXPIRED, "now > expires_at_ms")
        max_validity_ms = self.settings.max_validity_ms
        if command.expires_at_ms - command.issued_at_ms > max_validity_ms:
            return self._nak(command.seq, NakReason.EXPIRED, "validity window too long")
        if command.expires_at_ms - now > max_validity_ms:
            return self._nak(command.seq, NakReason.EXPIRED, "expiry too far ahead of pump")
        return self._execute(command, frame_body)

    def _execute(self, command: Command, body: bytes) -> bytes:
        s, settings = self._s, self.settings
        bolus = rate = duration = 0
        refusal: tuple[NakReason, str] | None = None
        if command.msg_type == MsgType.BOLUS:
            bolus = round_down(command.bolus_milli_u, settings.bolus_increment_milli_u)
            room = self._ledger.room(s["clock_ms"] // MS_PER_MIN)
            if command.bolus_milli_u > settings.max_bolus_milli_u:
                refusal = NakReason.OVER_LIMIT, "bolus above pump max"
            elif bolus > room.milli_u:
                refusal = NakReason.OVER_LIMIT, f"{room.binding} insulin limit"
            elif s["suspended"]:
                refusal = NakReason.SUSPENDED, "pump suspended"
            elif bolus > s["reservoir_milli_u"]:
                refusal = NakReason.RESERVOIR_EMPTY, "bolus exceeds reservoir"
        elif command.msg_type == MsgType.TEMP_BASAL and command.duration_min > 0:
            if command.rate_milli_u_per_h > settings.max_rate_milli_u_per_h:
                refusal = NakReason.OVER_LIMIT, "rate above pump max"
            elif command.duration_min > settings.max_temp_duration_min:
                refusal = NakReason.OVER_LIMIT, "duration above pump max"
            elif s["suspended"]:
                refusal = NakReason.SUSPENDED, "pump suspended"
            elif s["reservoir_milli_u"] == 0:
                refusal = NakReason.RESERVOIR_EMPTY, "reservoir empty"

        if refusal is not None:
            reply = self._nak(command.seq, *refusal)
            self._record(command, refusal[0], 0, 0, 0, body, reply)
            return reply

        if command.msg_type == MsgType.BOLUS:
            s["reservoir_milli_u"] -= bolus
            s["bolus_total_milli_u"] += bolus
            s["bolus_since_report_milli_u"] += bolus
            self._ledger.add(s["clock_ms"] // MS_PER_MIN, bolus)
        elif command.msg_type == MsgType.TEMP_BASAL:
            if command.duration_min == 0:
                s["temp_end_ms"], s["temp_rate_milli_u_per_h"] = None, 0
            else:
                s["temp_rate_milli_u_per_h"] = round_down(command.rate_milli_u_per_h,
                                                           settings.rate_increment_milli_u_per_h)
                s["temp_end_ms"] = s["clock_ms"] + command.duration_min * MS_PER_MIN
        elif command.msg_type == MsgType.SUSPEND:
            s["suspended"] = True
            s["temp_end_ms"], s["temp_rate_milli_u_per_h"] = None, 0
        elif command.msg_type == MsgType.RESUME:
            s["suspended"] = False
        self._log(command, bolus)
        rate, duration = self._running_rate(), self._temp_remaining_min()
        ack = Ack(settings.device_id, command.seq, s["clock_ms"], bolus, rate, duration, self._flags())
        reply = ack.encode(self._key)
        self.counters["executed"] += 1
        self._record(command, OUTCOME_EXECUTED, bolus, rate, duration, body, reply)
        return reply

    # ------------------------------------------------------------------ history
    def _log(self, command: Command, bolus_milli_u: int) -> None:
        """One executed command in the delivery history, with the basal that runs after it."""
        kind = {MsgType.BOLUS: "bolus", MsgType.SUSPEND: "suspend", MsgType.RESUME: "resume"}.get(
            command.msg_type, "temp_basal" if command.duration_min > 0 else "temp_cancel")
        rate = self._s["temp_rate_milli_u_per_h"] if kind == "temp_basal" else 0
        duration = command.duration_min if kind == "temp_basal" else 0
        self._append_history([command.seq, self._s["clock_ms"], kind, bolus_milli_u, rate, duration])

    def _log_pump_event(self, kind: str, cause: str = "") -> None:
        """An entry of the pump's own (seq 0): a basal hold at a limit, or its release."""
        self._append_history([0, self._s["clock_ms"], kind, 0, 0, 0], cause)

    def _append_history(self, head: list[Any], cause: str = "") -> None:
        s = self._s
        until = s["temp_end_ms"] if self._temp_active() else None
        raw = [*head, self._running_rate(), until or 0, 0 if s["suspended"] else self.settings.scheduled_rate_milli_u_per_h]
        s["history"].append([*raw, cause] if cause else raw)
        cut = s["clock_ms"] - HISTORY_KEEP_MS
        drop = 0
        while drop < len(s["history"]) and (s["history"][drop][1] < cut
                                            or len(s["history"]) - drop > HISTORY_MAX_ENTRIES):
            drop += 1
        if drop:
            del s["history"][:drop]
            s["log_start_ms"] = s["history"][0][1]  # nothing before the oldest kept entry is known now

    def history_entries(self) -> list[HistoryEntry]:
        return [HistoryEntry(*raw) for raw in self._s["history"]]

    def _history(self, body: bytes) -> bytes:
        """HISTORY -> one page of the entries at or after ``since_ms`` (read only; a seq fence)."""
        try:
            query = HistoryQuery.decode(body, self._key)
        except ProtocolError as exc:
            return self._nak(peek_header(body).seq, NakReason.MALFORMED, _detail(exc))
        s = self._s
        if query.seq > s["last_seq"]:
            s["last_seq"] = query.seq
            self.revision += 1
        self.counters["history"] += 1
        matching = [e for e in self.history_entries() if e.time_ms >= query.since_ms]
        page = tuple(matching[query.start_index:query.start_index + HISTORY_PAGE_SIZE])
        covers = s["log_start_ms"] is None or s["log_start_ms"] <= query.since_ms
        start = min(query.start_index, len(matching))
        return HistoryPage(self.settings.device_id, query.seq, s["clock_ms"] or 0, query.since_ms, start,
                           len(matching), covers, self.settings.scheduled_rate_milli_u_per_h, page).encode(self._key)

    def _record(self, command: Command, outcome: int, bolus: int, rate: int, duration: int, command_body: bytes,
                reply: bytes) -> None:
        s = self._s
        s["ring"].append({"seq": command.seq, "msg_type": int(command.msg_type), "outcome": int(outcome),
                          "bolus_milli_u": bolus, "rate_milli_u_per_h": rate, "duration_min": duration,
                          "tag_prefix": command_body[-TAG_BYTES:][:TAG_PREFIX_BYTES].hex(),
                          "sha256": hashlib.sha256(command_body).hexdigest(), "reply": reply.hex()})
        del s["ring"][:-RING_SIZE]
        s["last_seq"] = command.seq
        self.revision += 1

    def _nak(self, seq: int, reason: NakReason, detail: str) -> bytes:
        self.counters[f"nak_{reason.name.lower()}"] += 1
        return Nak(self.settings.device_id, seq, self._s["clock_ms"] or 0, reason, detail).encode(self._key)
