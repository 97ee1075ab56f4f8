"""The lockstep HIL clock of ``pump_device --hil-broker``: clock messages in, delivery reports out.

Each ``{hil-prefix}/clock`` message ``{"t_ms": int}`` sets the pump's clock; the
pump answers it on ``{hil-prefix}/pump_report`` (see :mod:`.pump_device`).
paho-mqtt is imported only when a :class:`HilClock` is made.
"""

from __future__ import annotations

import json
import logging
import os
import queue
from typing import Any

log = logging.getLogger("firmware_bridge.pump_device")


def parse_clock_message(payload: bytes) -> int | None:
    """``{"t_ms": int >= 0}`` -> t_ms; None for anything else."""
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    t_ms = message.get("t_ms") if isinstance(message, dict) else None
    if isinstance(t_ms, int) and not isinstance(t_ms, bool) and 0 <= t_ms < 2**63:
        return t_ms
    return None


class HilClock:
    """Subscribes to ``{prefix}/clock`` and publishes ``{prefix}/pump_report`` (MQTT v5, QoS 1)."""

    def __init__(self, config: Any, prefix: str, device_id: str) -> None:
        from .mqtt_transport import MqttSession

        if not prefix or any(c in prefix for c in "+#") or prefix.endswith("/"):
            raise ValueError(f"--hil-prefix must be non-empty, without + # or a trailing /, got {prefix!r}")
        self.clock_topic = f"{prefix}/clock"
        self.report_topic = f"{prefix}/pump_report"
        self._inbox: queue.Queue[bytes] = queue.Queue(maxsize=10_000)
        self.ignored: dict[str, int] = {}
        self.session = MqttSession(config, [self.clock_topic], self._on_message,
                                   client_id=f"glucotwin-pump-{device_id}-hil-{os.getpid()}")

    def start(self) -> "HilClock":
        self.session.start()
        return self

    def _on_message(self, topic: str, payload: bytes) -> None:
        try:
            self._inbox.put_nowait(payload)
        except queue.Full:
            self.ignored["queue_full"] = self.ignored.get("queue_full", 0) + 1

    def drain(self) -> list[int]:
        times: list[int] = []
        while True:
            try:
                payload = self._inbox.get_nowait()
            except queue.Empty:
                return times
            t_ms = parse_clock_message(payload)
            if t_ms is None:
                self.ignored["bad_clock_message"] = self.ignored.get("bad_clock_message", 0) + 1
                log.warning("ignored clock message %r", payload[:80])
            else:
                times.append(t_ms)

    def publish_report(self, text: str) -> None:
        self.session.publish(self.report_topic, text, qos=1)

    def stop(self) -> None:
        self.session.stop()
