"""Message bodies over a serial byte stream (UART or pseudo-terminal), framed by ``framing``.

Used on both ends: the host's :class:`~firmware_bridge.pump_link.PumpLink` and
the pump process. The port is opened lazily and reopened with exponential
backoff when it fails or disappears (a USB adapter unplugged, socat
restarted): ``send_frame`` then raises :class:`TransportError` and
``receive_frame`` returns None until the port is back. Each frame is preceded
by an extra 0x00 so that a receiver drops any partial garbage before it.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque

import serial

from .framing import DELIMITER, FrameReader, encode_frame
from .transport import TransportError

log = logging.getLogger(__name__)

DEFAULT_POLL_S = 0.02


class SerialTransport:
    """``send_frame(body)`` / ``receive_frame(timeout_s) -> body | None`` over a serial port.

    Attributes
    ----------
    errors: failures by kind ("open", "read", "write").
    opens: how many times the port was (re)opened.
    reader: the :class:`FrameReader`, whose ``dropped`` counts bad frames by reason.
    """

    def __init__(self, port: str, baudrate: int = 115200, *, min_backoff_s: float = 0.05,
                 max_backoff_s: float = 2.0, write_timeout_s: float = 1.0, poll_s: float = DEFAULT_POLL_S) -> None:
        if not port:
            raise ValueError("port must be a device path")
        if not isinstance(baudrate, int) or baudrate <= 0:
            raise ValueError(f"baudrate must be a positive integer, got {baudrate!r}")
        if not 0 < min_backoff_s <= max_backoff_s:
            raise ValueError("need 0 < min_backoff_s <= max_backoff_s")
        if not 0 < poll_s <= 1.0:
            raise ValueError(f"poll_s must be in (0, 1], got {poll_s}")
        self.poll_s = poll_s
        self.port = port
        self.baudrate = baudrate
        self.min_backoff_s = min_backoff_s
        self.max_backoff_s = max_backoff_s
        self.write_timeout_s = write_timeout_s
        self.reader = FrameReader()
        self.errors: Counter[str] = Counter()
        self.opens = 0
        self._serial: serial.Serial | None = None
        self._pending: deque[bytes] = deque()
        self._backoff_s = min_backoff_s
        self._next_open_at = 0.0
        self._open_failures = 0
        self._ensure_open()

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def _ensure_open(self) -> bool:
        if self._serial is not None:
            return True
        now = time.monotonic()
        if now < self._next_open_at:
            return False
        try:
            self._serial = serial.Serial(self.port, self.baudrate, timeout=self.poll_s,
                                         write_timeout=self.write_timeout_s)
        except (serial.SerialException, OSError, ValueError) as exc:
            self.errors["open"] += 1
            self._open_failures += 1
            self._schedule_reopen(now)
            (log.warning if self._open_failures == 1 else log.debug)(
                "cannot open %s: %s (retrying with backoff up to %.1f s)", self.port, exc, self.max_backoff_s)
            return False
        self.opens += 1
        self._open_failures = 0
        self._backoff_s = self.min_backoff_s
        self.reader.reset()
        if self.opens > 1:
            log.info("reopened %s", self.port)
        return True

    def _schedule_reopen(self, now: float) -> None:
        self._next_open_at = now + self._backoff_s
        self._backoff_s = min(2 * self._backoff_s, self.max_backoff_s)

    def _fail(self, kind: str, exc: BaseException) -> None:
        self.errors[kind] += 1
        log.warning("serial %s on %s failed: %s; reopening", kind, self.port, exc)
        self._close_port()
        self._schedule_reopen(time.monotonic())

    def _close_port(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def send_frame(self, body: bytes) -> None:
        frame = DELIMITER + encode_frame(body)
        if not self._ensure_open():
            raise TransportError(f"serial port {self.port} is not open")
        assert self._serial is not None
        try:
            self._serial.write(frame)
            self._serial.flush()
        except (serial.SerialException, OSError) as exc:
            self._fail("write", exc)
            raise TransportError(f"write to {self.port} failed: {exc}") from exc

    def receive_frame(self, timeout_s: float) -> bytes | None:
        """The next complete, CRC-valid body, or None after ``timeout_s`` seconds."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            if self._pending:
                return self._pending.popleft()
            now = time.monotonic()
            if now >= deadline:
                return None
            if not self._ensure_open():
                time.sleep(max(0.0, min(deadline - now, self._next_open_at - now, 0.1)))
                continue
            assert self._serial is not None
            try:
                data = self._serial.read(max(1, self._serial.in_waiting))
            except (serial.SerialException, OSError) as exc:
                self._fail("read", exc)
                continue
            if data:
                self._pending.extend(self.reader.feed(data))

    def close(self) -> None:
        self._close_port()
        self._pending.clear()

    def __enter__(self) -> "SerialTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
