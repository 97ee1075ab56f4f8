"""systemd's notify protocol (``sd_notify``), in the standard library only.

Under a ``Type=notify`` unit systemd sets ``NOTIFY_SOCKET``; the loop sends
``READY=1`` once it has restored its state from the journal and listens,
``WATCHDOG=1`` from the control loop itself on every iteration (so a hung
cycle, not just a dead process, makes systemd restart the service after
``WatchdogSec``), ``STATUS=...`` with the latest cycle, and ``STOPPING=1``.
Without ``NOTIFY_SOCKET`` (not under systemd) every call does nothing.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    """Sends datagrams to ``$NOTIFY_SOCKET``; rate-limits ``WATCHDOG=1`` to ``min_interval_s``."""

    def __init__(self, address: str | None = None, min_interval_s: float = 1.0) -> None:
        address = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self.address = address or None
        if self.address and self.address.startswith("@"):  # abstract namespace
            self.address = "\0" + self.address[1:]
        self.min_interval_s = min_interval_s
        self._last_watchdog = float("-inf")
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    @staticmethod
    def watchdog_interval_s() -> float | None:
        """Half of systemd's ``WATCHDOG_USEC`` (the recommended ping interval), or None."""
        usec = os.environ.get("WATCHDOG_USEC")
        try:
            return int(usec) / 2e6 if usec else None
        except ValueError:
            return None

    def notify(self, *fields: str) -> bool:
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self.address)
            return True
        except OSError:
            return False  # systemd gone or socket full: never stop the loop for this

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self, status: str = "") -> bool:
        now = time.monotonic()
        if now - self._last_watchdog < self.min_interval_s:
            return False
        self._last_watchdog = now
        return self.notify("WATCHDOG=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
