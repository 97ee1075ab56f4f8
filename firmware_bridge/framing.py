"""Byte-stream framing for the pump link: COBS + CRC-16/CCITT-FALSE + 0x00 delimiter.

On a byte stream (UART, pseudo-terminal) one frame is::

    COBS( body || crc16_be(body) ) || 0x00

``body`` is one protocol message (see the ``protocol`` package). CRC-16/CCITT-FALSE:
polynomial 0x1021, init 0xFFFF, no reflection, no final XOR
(``binascii.crc_hqx(data, 0xFFFF)``; check value for ``b"123456789"`` is 0x29B1).
COBS removes every 0x00 from the encoded bytes, so 0x00 only ever marks the end
of a frame and a receiver resynchronizes at the next 0x00 after any garbage.

Nothing here reads the clock or does I/O; :class:`FrameReader` never raises on
input bytes: what it cannot turn into a frame is dropped and counted by reason.
"""

from __future__ import annotations

import binascii
from collections import Counter

DELIMITER = b"\x00"
CRC_BYTES = 2
MAX_BODY_BYTES = 512
"""Largest message body accepted (the largest protocol message, STATUS_REPLY, is 226 bytes)."""


class FramingError(ValueError):
    """A frame that cannot be decoded; ``reason`` is a short machine-readable label."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def crc16_ccitt_false(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of ``data`` (poly 0x1021, init 0xFFFF, no reflection, xorout 0)."""
    return binascii.crc_hqx(data, 0xFFFF)


def cobs_encode(data: bytes) -> bytes:
    """Consistent Overhead Byte Stuffing: the result contains no 0x00 byte."""
    out = bytearray(b"\x00")
    code_at, code = 0, 1
    for byte in data:
        if byte:
            out.append(byte)
            code += 1
        if not byte or code == 0xFF:
            out[code_at] = code
            code_at, code = len(out), 1
            out.append(0)
    out[code_at] = code
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """Inverse of :func:`cobs_encode`; raises :class:`FramingError` ("cobs") on invalid input."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        end = i + code
        if code == 0 or end > n:
            raise FramingError("cobs", f"invalid COBS code byte {code} at offset {i}")
        block = data[i + 1:end]
        if 0 in block:
            raise FramingError("cobs", "0x00 inside a COBS block")
        out += block
        i = end
        if code < 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode_frame(body: bytes) -> bytes:
    """``COBS(body || crc16_be(body)) || 0x00`` ready to write to a byte stream."""
    if not body:
        raise ValueError("cannot frame an empty body")
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"body of {len(body)} bytes exceeds MAX_BODY_BYTES={MAX_BODY_BYTES}")
    return cobs_encode(body + crc16_ccitt_false(body).to_bytes(2, "big")) + DELIMITER


def decode_frame(encoded: bytes) -> bytes:
    """The body of one frame given WITHOUT its 0x00 delimiter; raises :class:`FramingError`."""
    raw = cobs_decode(encoded)
    if len(raw) <= CRC_BYTES:
        raise FramingError("short", f"frame of {len(raw)} bytes has no body")
    body, crc = raw[:-CRC_BYTES], int.from_bytes(raw[-CRC_BYTES:], "big")
    if crc16_ccitt_false(body) != crc:
        raise FramingError("crc", "CRC-16 mismatch")
    return body


def max_encoded_frame_bytes(max_body_bytes: int = MAX_BODY_BYTES) -> int:
    """Upper bound of the COBS-encoded size (without delimiter) of a body of ``max_body_bytes``."""
    raw = max_body_bytes + CRC_BYTES
    return raw + raw // 254 + 1


class FrameReader:
    """Accumulates stream bytes; :meth:`feed` returns every complete, CRC-valid body.

    Bytes between delimiters that do not form a valid frame are dropped and
    counted in :attr:`dropped` by reason: ``"oversize"`` (more than
    ``max_frame_bytes`` before a delimiter; the reader discards up to the next
    0x00), ``"cobs"``, ``"short"``, ``"crc"``. Empty frames (consecutive 0x00,
    which senders may use to flush a receiver) are ignored silently.
    """

    def __init__(self, max_frame_bytes: int | None = None) -> None:
        self.max_frame_bytes = max_frame_bytes or max_encoded_frame_bytes()
        if self.max_frame_bytes < 4:
            raise ValueError(f"max_frame_bytes must be >= 4, got {self.max_frame_bytes}")
        self.dropped: Counter[str] = Counter()
        self.frames_ok = 0
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes]:
        bodies: list[bytes] = []
        start = 0
        while start <= len(data):
            end = data.find(0, start)
            chunk = data[start:] if end < 0 else data[start:end]
            if not self._discarding:
                self._buffer += chunk
                if len(self._buffer) > self.max_frame_bytes:
                    self.dropped["oversize"] += 1
                    self._buffer.clear()
                    self._discarding = True
            if end < 0:
                break
            if self._discarding:
                self._discarding = False
            elif self._buffer:
                try:
                    bodies.append(decode_frame(bytes(self._buffer)))
                    self.frames_ok += 1
                except FramingError as exc:
                    self.dropped[exc.reason] += 1
            self._buffer.clear()
            start = end + 1
        return bodies

    def reset(self) -> None:
        """Forget any partial frame (e.g. after the port was reopened)."""
        self._buffer.clear()
        self._discarding = False
