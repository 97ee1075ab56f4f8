"""A CGM on a serial line (USB CDC, UART, a pseudo-terminal): :class:`SerialCgmSource`.

Two wire formats, chosen with ``mode`` (both specified in :mod:`sensors.serial.frames`
and ``sensors/SERIAL.md``):

``"frames"``
    binary frames ``COBS(body) + b"\\x00"``, body = version u8 (1) | seq u16 |
    msg_type u8 (0x01 glucose) | time_ms u64 (0 = now by the host clock) |
    glucose mg/dL x 10 u16 | trend i8 | flags u8 (bit 0 clipped) | CRC-16/CCITT-FALSE u16,
    all big-endian. Re-sent frames (same seq and body) are rejected as ``"duplicate frame"``.
``"text"``
    one reading per line: ``120``, ``sgv=120``, ``mmol=6.7``, ``LOW``/``HIGH``, each
    optionally preceded by ``<ISO 8601 time with offset>,``.

The port is opened on the first :meth:`SerialCgmSource.poll`. When it disappears
(a USB unplug, the board resetting, the other end of a pty closing), the source
closes it, discards the partial frame or line, and tries to reopen the same path
with exponential backoff (``reopen_min_delay_s`` doubling up to
``reopen_max_delay_s``) on later polls; :attr:`reopens` counts successful reopens.
Nothing the device sends raises: bad input becomes a
:class:`~sensors.reading.Rejected` in the items :meth:`poll` returns.

``poll`` uses ``time.monotonic`` for its own timeout and the backoff (I/O waits),
and the injected ``clock`` only to stamp readings that carry no time.
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import serial

from sensors.reading import GlucoseReading, Rejected
from sensors.serial.frames import FrameStreamDecoder, TextLineDecoder

MODES = ("frames", "text")
_READ_SLICE_S = 0.05
_MAX_ITEMS_PER_POLL = 1000


class SerialCgmSource:
    """Readings from a serial device.

    Parameters
    ----------
    port: device path (``/dev/ttyACM0``, a pty link) or a pyserial URL (``socket://host:port``).
    baudrate: line speed (ignored by ptys and USB CDC).
    mode: ``"frames"`` (binary, the default) or ``"text"``.
    clock: returns the current time (aware UTC); stamps readings sent without a time.
    source: the readings' ``source`` (default ``"serial"``).
    subject: the readings' ``subject``.
    reopen_min_delay_s, reopen_max_delay_s: backoff between reopen attempts.

    Attributes
    ----------
    reopens: successful opens after the first.
    open_failures: failed open attempts.
    """

    def __init__(self, port: str, baudrate: int = 115200, mode: str = "frames", *,
                 clock: Callable[[], datetime], source: str = "serial", subject: str = "",
                 reopen_min_delay_s: float = 0.2, reopen_max_delay_s: float = 5.0) -> None:
        if not isinstance(port, str) or not port:
            raise ValueError(f"port must be a non-empty path or URL, got {port!r}")
        if isinstance(baudrate, bool) or not isinstance(baudrate, int) or baudrate <= 0:
            raise ValueError(f"baudrate must be a positive integer, got {baudrate!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not callable(clock):
            raise ValueError("clock must be a callable returning an aware datetime")
        if not isinstance(source, str) or not source:
            raise ValueError(f"source must be a non-empty string, got {source!r}")
        if not (0 < reopen_min_delay_s <= reopen_max_delay_s):
            raise ValueError(
                f"need 0 < reopen_min_delay_s <= reopen_max_delay_s, got {reopen_min_delay_s!r}, "
                f"{reopen_max_delay_s!r}"
            )
        self.port = port
        self.baudrate = baudrate
        self.mode = mode
        self.clock = clock
        self.reopen_min_delay_s = float(reopen_min_delay_s)
        self.reopen_max_delay_s = float(reopen_max_delay_s)
        self.decoder: FrameStreamDecoder | TextLineDecoder = (
            FrameStreamDecoder(clock, source, subject) if mode == "frames" else TextLineDecoder(clock, source, subject)
        )
        self.reopens = 0
        self.open_failures = 0
        self.last_error: str | None = None
        self._serial: Any = None
        self._opened_once = False
        self._closed = False
        self._next_open_at = 0.0
        self._delay_s = self.reopen_min_delay_s
        self._timeout_s: float | None = None

    # --- state ---------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """True while the port is open."""
        return self._serial is not None

    @property
    def counts(self) -> dict[str, int]:
        """Frames (or lines) decoded and rejections by fixed phrase."""
        return dict(self.decoder.counts)

    @property
    def bad_frames(self) -> int:
        """Frames (or lines, in text mode) rejected."""
        d = self.decoder
        return d.bad_frames if isinstance(d, FrameStreamDecoder) else d.bad_lines

    # --- reading -------------------------------------------------------------------------
    def poll(self, timeout_s: float = 0.0) -> list[GlucoseReading | Rejected]:
        """Items received: waits at most ``timeout_s`` for the first, then takes what is already there."""
        if self._closed:
            return []
        deadline = _time.monotonic() + max(0.0, float(timeout_s))
        out: list[GlucoseReading | Rejected] = []
        while len(out) < _MAX_ITEMS_PER_POLL:
            wait = 0.0 if out else max(0.0, deadline - _time.monotonic())
            got_data = self._step(out, wait)
            if out and not got_data:
                break
            if not got_data and _time.monotonic() >= deadline:
                break
        return out

    def _step(self, out: list[GlucoseReading | Rejected], wait_s: float) -> bool:
        """Read once, waiting at most ``wait_s``; True if bytes arrived."""
        if self._serial is None and not self._try_open():
            pause = min(wait_s, max(0.0, self._next_open_at - _time.monotonic()))
            if pause > 0:
                _time.sleep(min(pause, _READ_SLICE_S * 4))
            return False
        try:
            waiting = self._serial.in_waiting
            if waiting:
                self._set_timeout(0.0)
                data = self._serial.read(waiting)
            else:
                self._set_timeout(min(wait_s, _READ_SLICE_S))
                data = self._serial.read(1)
                if data:
                    more = self._serial.in_waiting
                    if more:
                        self._set_timeout(0.0)
                        data += self._serial.read(more)
        except (serial.SerialException, OSError, TypeError, AttributeError) as err:
            # TypeError/AttributeError: pyserial after the fd vanished under it.
            self._lost(err)
            return False
        if not data:
            return False
        out.extend(self.decoder.feed(data))
        return True

    def _set_timeout(self, timeout_s: float) -> None:
        if timeout_s != self._timeout_s:
            self._serial.timeout = timeout_s
            self._timeout_s = timeout_s

    def _try_open(self) -> bool:
        now = _time.monotonic()
        if now < self._next_open_at:
            return False
        try:
            port = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=0.0)
        except (serial.SerialException, OSError, ValueError) as err:
            self.open_failures += 1
            self.last_error = f"open {self.port}: {err}"
            self._next_open_at = now + self._delay_s
            self._delay_s = min(self._delay_s * 2, self.reopen_max_delay_s)
            return False
        self._serial = port
        self._timeout_s = 0.0
        self._delay_s = self.reopen_min_delay_s
        self.decoder.reset()
        if self._opened_once:
            self.reopens += 1
        self._opened_once = True
        return True

    def _lost(self, err: BaseException) -> None:
        self.last_error = f"{self.port}: {err}"
        port, self._serial = self._serial, None
        self.decoder.reset()
        try:
            port.close()
        except Exception:  # noqa: BLE001 - the device is already gone
            pass
        self._next_open_at = _time.monotonic() + self._delay_s
        self._delay_s = min(self._delay_s * 2, self.reopen_max_delay_s)

    def close(self) -> None:
        """Close the port; later polls return nothing."""
        self._closed = True
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except Exception:  # noqa: BLE001
                pass

    def __enter__(self) -> SerialCgmSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
