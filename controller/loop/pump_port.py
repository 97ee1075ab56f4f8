"""The pump link of ``firmware_bridge`` as the loop's :class:`~controller.loop.ports.PumpPort`.

Orders in pump units (U/h, U) become authenticated commands with their
validity window; the pump's ACK/NAK becomes a :class:`PumpOutcome`; its
HISTORY log becomes a :class:`PumpHistory` in the loop's clock.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from controller.loop.config.live_config import LiveConfig
from controller.loop.ports import (
    PumpHistory,
    PumpHistoryEntry,
    PumpHistoryUnavailable,
    PumpOrder,
    PumpOutcome,
)

MS_PER_S = 1000.0
PUMP_EVENT_KINDS = ("bolus", "temp_basal", "temp_cancel", "suspend", "resume")


def to_ms(t: datetime) -> int:
    """A time as the protocol's epoch milliseconds."""
    return int(round(t.timestamp() * MS_PER_S))


def from_ms(ms: int) -> datetime:
    """The protocol's epoch milliseconds as a UTC time."""
    return datetime.fromtimestamp(ms / MS_PER_S, UTC)


class PumpLinkPort:
    """``firmware_bridge.PumpLink`` as the controller's :class:`~controller.loop.ports.PumpPort`."""

    def __init__(self, link: Any, device_id: str) -> None:
        self.link = link
        self.device_id = device_id
        self.pump_time: datetime | None = None  # the pump's clock at the last sync

    def allocate_seq(self) -> int:
        return int(self.link.allocate_seq())

    def _command(self, order: PumpOrder) -> Any:
        from firmware_bridge.protocol import Command

        issued, expires = to_ms(order.issued_at), to_ms(order.expires_at)
        if order.kind == "temp_basal":
            return Command.temp_basal(order.seq, self.device_id, order.rate_u_per_h, int(round(order.duration_min)),
                                      issued, expires)
        return Command.bolus(order.seq, self.device_id, order.bolus_u, issued, expires)

    def execute(self, order: PumpOrder) -> PumpOutcome:
        return self._outcome(order, self.link.send(self._command(order)))

    def resolve(self, order: PumpOrder) -> PumpOutcome:
        return self._outcome(order, self.link.resolve(self._command(order)))

    def sync(self) -> bool:
        """Move the seq counter above the pump's ``last_seq`` (one STATUS query); False if the pump
        does not answer now. Needed at start: the STATUS queries the link sends to settle lost
        replies spend seqs that the journal does not hold, and a command with a seq at or below
        ``last_seq`` is refused as replayed (glucotwin faults found it)."""
        from firmware_bridge.pump_link import PumpLinkError

        try:
            status = self.link.sync()
        except PumpLinkError:
            return False
        pump_ms = getattr(status, "pump_time_ms", None)
        self.pump_time = from_ms(pump_ms) if isinstance(pump_ms, int) and pump_ms > 0 else None
        return True

    def history(self, since: datetime) -> PumpHistory:
        """The pump's own delivery log since ``since`` (its authenticated HISTORY query), times in
        the pump's clock (the same epoch as the loop's: UTC, or the HIL lockstep time)."""
        from firmware_bridge.pump_link import PumpLinkError

        query = getattr(self.link, "query_history", None)
        if query is None:
            raise PumpHistoryUnavailable("this pump link has no history query")
        try:
            got = query(to_ms(since))
        except PumpLinkError as exc:
            raise PumpHistoryUnavailable(str(exc)) from None
        entries = tuple(PumpHistoryEntry(int(e.seq), from_ms(e.time_ms), e.kind, float(e.bolus_u),
                                         float(e.rate_u_per_h), float(e.duration_min)) for e in got.entries
                        if e.kind in PUMP_EVENT_KINDS)  # the pump's own entries (log start, ...) dose nothing
        return PumpHistory(from_ms(got.pump_time_ms), bool(got.covers_since), entries)

    @staticmethod
    def _outcome(order: PumpOrder, outcome: Any) -> PumpOutcome:
        if outcome.status == "ack" and outcome.ack is not None:
            ack = outcome.ack
            return PumpOutcome(order.seq, "ack", ack.bolus_milli_u / 1000.0, ack.rate_milli_u_per_h / 1000.0,
                               outcome.detail)
        if outcome.status == "nak" and outcome.nak is not None:
            return PumpOutcome(order.seq, "nak", reason=f"{outcome.nak.reason.name.lower()}: {outcome.detail}")
        return PumpOutcome(order.seq, outcome.status, reason=outcome.detail)


def build_pump(config: LiveConfig, first_seq: int) -> PumpLinkPort:
    from firmware_bridge.pump_link import PumpLink

    p = config.pump
    if p.transport == "serial":
        from firmware_bridge.serial_transport import SerialTransport

        transport: Any = SerialTransport(p.port, p.baudrate)
    else:
        from firmware_bridge.mqtt_transport import MqttTransport

        m = config.mqtt
        transport = MqttTransport.from_url(f"mqtt://{m.host}:{m.port}", p.device_id,
                                           prefix=f"{m.topic_prefix}/{m.subject}",
                                           username=m.username or None, password=m.password() or None,
                                           tls_ca_file=m.tls_ca_file or None, tls_cert_file=m.tls_cert_file or None,
                                           tls_key_file=m.tls_key_file or None)
    link = PumpLink(transport, p.device_id, p.key(), reply_timeout_s=p.reply_timeout_s, retries=p.retries,
                    next_seq=first_seq)
    return PumpLinkPort(link, p.device_id)
