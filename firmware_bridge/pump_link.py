"""Host side of the pump link: send a command, learn exactly what the pump did with it.

:meth:`PumpLink.send` sends a command and retries with the SAME bytes (same
seq) when no valid reply comes. When all attempts fail it asks the pump for
its STATUS with a NEW seq, drawn from the same counter. A STATUS with a seq
above the pump's ``last_seq`` is a fence: after it the pump will never execute
any command with a smaller seq, so the answer is final, and the status ring
says whether the command executed and what it delivered. The link never sends
a dose again under a new seq.

Sequence numbers: one counter per pump, shared by dose commands and STATUS
queries. Take every command's seq from :meth:`PumpLink.allocate_seq`; the link
draws its own STATUS seqs from the same counter. Across host restarts seqs
must keep increasing: construct the link with ``next_seq`` from your journal
(and persist :attr:`PumpLink.next_seq` after each exchange), or call
:meth:`PumpLink.sync`, which asks the pump's ``last_seq`` (a STATUS is answered
whatever its seq) and moves the counter above it.

Outcome.status:

- ``"ack"``: executed; ``ack`` holds what was delivered (from the ACK, or from
  the status ring when ``resolved_by_status``).
- ``"nak"``: refused; ``nak.reason`` says why. Nothing was delivered.
- ``"not_executed"``: no reply, and the pump's status proves the command was
  not executed and never will be.
- ``"unknown"``: the pump could not be reached, or its status cannot settle
  the question. The caller must treat the dose as possibly delivered (for
  insulin on board) and must NOT send it again.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Literal

from .protocol import (
    DOSE_TYPES,
    Ack,
    Command,
    Nak,
    NakReason,
    ProtocolError,
    PumpStatus,
    check_device_id,
    check_key,
    decode_reply,
)
from .protocol.history import HistoryPage, HistoryQuery, PumpHistory
from .transport import Transport, TransportError

log = logging.getLogger(__name__)

OutcomeStatus = Literal["ack", "nak", "not_executed", "unknown"]

FRAME_LEVEL_REASONS = frozenset({NakReason.BAD_TAG, NakReason.MALFORMED, NakReason.WRONG_DEVICE})
"""NAKs about the frame, not the command: our bytes were damaged on the way (or
someone injected a frame with our seq). The command may still arrive intact,
so these are never final; the link resends."""


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Outcome:
    """What became of one command. See the module docstring for ``status``.

    Attributes
    ----------
    seq: the command's seq.
    attempts: how many times the command's bytes were sent.
    ack / nak: the reply (or the one rebuilt from the status ring).
    resolved_by_status: the result comes from a STATUS query, not a direct reply.
    status_seq: the seq of that STATUS query (None when not needed).
    detail: a human-readable explanation.
    """

    status: OutcomeStatus
    seq: int
    attempts: int
    ack: Ack | None = None
    nak: Nak | None = None
    resolved_by_status: bool = False
    status_seq: int | None = None
    detail: str = ""

    @property
    def delivered_bolus_u(self) -> float:
        return self.ack.bolus_u if self.ack is not None else 0.0


class PumpLinkError(RuntimeError):
    """query_status got no usable answer; ``nak`` is set when the pump refused it."""

    def __init__(self, message: str, nak: Nak | None = None) -> None:
        super().__init__(message)
        self.nak = nak


class PumpLink:
    """Send commands to one pump over a :class:`~firmware_bridge.transport.Transport`.

    ``retries``: how many times a command is resent after the first try
    (so at most ``1 + retries`` sends), each waiting ``reply_timeout_s``.
    ``clock_ms`` stamps the STATUS queries the link issues itself (valid for
    ``status_validity_s``); the pump answers a STATUS whatever its timestamps,
    so a wall clock is fine even against a HIL pump on simulation time.
    Not thread-safe: one exchange at a time.
    """

    def __init__(self, transport: Transport, device_id: str, key: bytes, *, reply_timeout_s: float = 1.0,
                 retries: int = 3, next_seq: int = 1, clock_ms: Callable[[], int] | None = None,
                 status_validity_s: float = 30.0) -> None:
        if not reply_timeout_s > 0:
            raise ValueError(f"reply_timeout_s must be > 0, got {reply_timeout_s}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer >= 0, got {retries!r}")
        if not isinstance(next_seq, int) or not 1 <= next_seq <= 0xFFFF_FFFF:
            raise ValueError(f"next_seq must be in 1..2**32-1, got {next_seq!r}")
        if not status_validity_s > 0:
            raise ValueError(f"status_validity_s must be > 0, got {status_validity_s}")
        self.transport = transport
        self.device_id = check_device_id(device_id)
        self._key = check_key(key)
        self.reply_timeout_s = reply_timeout_s
        self.retries = retries
        self.clock_ms = clock_ms or wall_clock_ms
        self.status_validity_ms = int(status_validity_s * 1000)
        self._next_seq = next_seq
        self.counters: Counter[str] = Counter()

    # ------------------------------------------------------------------ seqs
    @property
    def next_seq(self) -> int:
        """The seq the next :meth:`allocate_seq` returns (persist it to survive a host restart)."""
        return self._next_seq

    def allocate_seq(self) -> int:
        seq = self._next_seq
        if seq > 0xFFFF_FFFF:
            raise RuntimeError("seq space exhausted for this device; re-key the pump")
        self._next_seq += 1
        return seq

    def _observe_seq(self, seq: int) -> None:
        self._next_seq = max(self._next_seq, seq + 1)

    # ------------------------------------------------------------------ commands
    def send(self, command: Command) -> Outcome:
        """Deliver a dose command (TEMP_BASAL, BOLUS, SUSPEND, RESUME) and settle its outcome."""
        if command.msg_type not in DOSE_TYPES:
            raise ValueError(f"send() takes dose commands; use query_status() for {command.msg_type.name}")
        if command.device_id != self.device_id:
            raise ValueError(f"command is for {command.device_id!r}, this link talks to {self.device_id!r}")
        self._observe_seq(command.seq)
        body = command.encode(self._key)
        attempts = 0
        for attempt in range(1 + self.retries):
            attempts += 1
            reply = self._attempt(body, command.seq)
            if isinstance(reply, Ack):
                return Outcome("ack", command.seq, attempts, ack=reply, detail="acknowledged")
            if isinstance(reply, Nak):
                if reply.reason in FRAME_LEVEL_REASONS:
                    continue
                if reply.reason == NakReason.REPLAYED and attempt > 0:
                    # An earlier attempt may have been consumed; only the status ring can tell.
                    break
                return Outcome("nak", command.seq, attempts, nak=reply, detail=f"refused: {reply.reason.name.lower()}")
        return self._resolve(command, body, attempts)

    def resolve(self, command: Command) -> Outcome:
        """Settle a command sent earlier whose reply was lost (e.g. before a host restart), WITHOUT sending it.

        Asks STATUS with a new seq (a fence) and reads the ring, as :meth:`send` does
        after its retries; ``attempts`` is 0 in the outcome.
        """
        if command.msg_type not in DOSE_TYPES:
            raise ValueError(f"resolve() takes dose commands, not {command.msg_type.name}")
        if command.device_id != self.device_id:
            raise ValueError(f"command is for {command.device_id!r}, this link talks to {self.device_id!r}")
        self._observe_seq(command.seq)
        return self._resolve(command, command.encode(self._key), 0)

    def _resolve(self, command: Command, body: bytes, attempts: int) -> Outcome:
        self.counters["resolutions"] += 1
        status_seq = self.allocate_seq()
        try:
            status = self.query_status(status_seq)
        except PumpLinkError as exc:
            return Outcome("unknown", command.seq, attempts, status_seq=status_seq,
                           detail=f"no reply to the command, and no status: {exc}")
        entry = status.ring_entry(command.seq)
        if entry is not None:
            if not entry.matches(body) or entry.msg_type != command.msg_type:
                return Outcome("not_executed", command.seq, attempts, resolved_by_status=True, status_seq=status_seq,
                               detail="the pump decided a different command with this seq; ours can never run")
            if entry.executed:
                ack = Ack(self.device_id, command.seq, status.pump_time_ms, entry.bolus_milli_u,
                          entry.rate_milli_u_per_h, entry.duration_min, status.flags)
                return Outcome("ack", command.seq, attempts, ack=ack, resolved_by_status=True, status_seq=status_seq,
                               detail="reply lost; the status ring shows it executed")
            nak = Nak(self.device_id, command.seq, status.pump_time_ms, NakReason(entry.outcome), "from status ring")
            return Outcome("nak", command.seq, attempts, nak=nak, resolved_by_status=True, status_seq=status_seq,
                           detail=f"reply lost; the status ring shows it refused: {nak.reason.name.lower()}")
        if status.ring_covers(command.seq) and (status.last_seq >= command.seq
                                                or status.pump_time_ms > command.expires_at_ms):
            why = "seq is behind the pump's last_seq" if status.last_seq >= command.seq else "it has expired"
            return Outcome("not_executed", command.seq, attempts, resolved_by_status=True, status_seq=status_seq,
                           detail=f"the pump never executed it and never will ({why})")
        return Outcome("unknown", command.seq, attempts, resolved_by_status=True, status_seq=status_seq,
                       detail="the pump's status cannot settle it (ring overwritten or the command may still arrive)")

    def query_status(self, seq: int | None = None, *, now_ms: int | None = None) -> PumpStatus:
        """Ask the pump's status with ``seq`` (default: the next from the counter).

        Resent (same bytes) up to ``retries`` times; raises :class:`PumpLinkError`
        when there is no valid STATUS_REPLY.
        """
        if seq is None:
            seq = self.allocate_seq()
        self._observe_seq(seq)
        now = self.clock_ms() if now_ms is None else now_ms
        body = Command.status(seq, self.device_id, now, now + self.status_validity_ms).encode(self._key)
        last_nak: Nak | None = None
        for _ in range(1 + self.retries):
            reply = self._attempt(body, seq)
            if isinstance(reply, PumpStatus):
                return reply
            if isinstance(reply, Nak):
                last_nak = reply
                if reply.reason not in FRAME_LEVEL_REASONS:
                    break
        if last_nak is not None:
            raise PumpLinkError(f"STATUS refused: {last_nak.reason.name.lower()} ({last_nak.detail})", last_nak)
        raise PumpLinkError(f"no STATUS reply after {1 + self.retries} attempts")

    def query_history(self, since_ms: int, *, now_ms: int | None = None) -> "PumpHistory":
        """The pump's delivery history since pump time ``since_ms``, all pages.

        Each page is a HISTORY query with a fresh seq (a fence, like STATUS), resent up to
        ``retries`` times; raises :class:`PumpLinkError` when a page gets no valid reply
        (the caller then knows nothing: the loop starts conservative).
        """
        entries: list[Any] = []
        page: HistoryPage | None = None
        start = 0
        for _ in range(1 + 65536 // 8):  # bounded: the pump keeps at most a few thousand entries
            seq = self.allocate_seq()
            now = self.clock_ms() if now_ms is None else now_ms
            body = HistoryQuery(seq, self.device_id, now, now + self.status_validity_ms, max(int(since_ms), 0),
                                start).encode(self._key)
            page = None
            last_nak: Nak | None = None
            for _attempt in range(1 + self.retries):
                reply = self._attempt(body, seq)
                if isinstance(reply, HistoryPage):
                    page = reply
                    break
                if isinstance(reply, Nak):
                    last_nak = reply
                    if reply.reason not in FRAME_LEVEL_REASONS:
                        break
            if page is None:
                why = f"refused: {last_nak.reason.name.lower()}" if last_nak is not None else "no reply"
                raise PumpLinkError(f"HISTORY {why} after {1 + self.retries} attempts", last_nak)
            entries.extend(page.entries)
            start += len(page.entries)
            if not page.entries or start >= page.total:
                break
        if page is None:  # pragma: no cover - the loop above runs at least once
            raise PumpLinkError("HISTORY: no page")
        return PumpHistory(page.pump_time_ms, int(since_ms), page.covers_since, page.scheduled_rate_milli_u_per_h,
                           tuple(entries))

    def sync(self, now_ms: int | None = None) -> PumpStatus:
        """Query the status and move :attr:`next_seq` above the pump's ``last_seq``."""
        status = self.query_status(now_ms=now_ms)
        self._observe_seq(status.last_seq)
        return status

    # ------------------------------------------------------------------ one exchange
    def _attempt(self, body: bytes, seq: int) -> Ack | Nak | PumpStatus | None:
        """Send ``body`` once and wait for a valid reply to ``seq``; None on timeout."""
        try:
            self.transport.send_frame(body)
        except TransportError as exc:
            self.counters["send_failed"] += 1
            log.warning("send of seq %d failed: %s", seq, exc)
        deadline = time.monotonic() + self.reply_timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                raw = self.transport.receive_frame(remaining)
            except TransportError as exc:
                self.counters["receive_failed"] += 1
                log.warning("receive failed: %s", exc)
                time.sleep(min(remaining, 0.05))
                continue
            if raw is None:
                break
            try:
                reply = decode_reply(raw, self._key)
            except ProtocolError as exc:
                self.counters[f"dropped_{type(exc).__name__}"] += 1
                continue
            if reply.device_id != self.device_id:
                self.counters["dropped_other_device"] += 1
            elif reply.seq != seq:
                self.counters["dropped_other_seq"] += 1
            else:
                return reply
        self.counters["timeouts"] += 1
        return None
