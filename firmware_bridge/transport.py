"""What the pump link needs from a transport (no I/O library imported here)."""

from __future__ import annotations

from typing import Protocol


class TransportError(OSError):
    """The transport cannot send now (port closed, broker disconnected)."""


class Transport(Protocol):
    """Carries whole message bodies (header + payload + tag) in both directions.

    ``receive_frame`` returns the next received body, or None after ``timeout_s``;
    framing (COBS/CRC on a byte stream) is the transport's business.
    ``send_frame`` raises :class:`TransportError` when it cannot send.
    """

    def send_frame(self, body: bytes) -> None: ...

    def receive_frame(self, timeout_s: float) -> bytes | None: ...
