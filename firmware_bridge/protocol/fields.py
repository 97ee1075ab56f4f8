"""Field limits and encoders: integer ranges, milli-units, the device id."""

from __future__ import annotations

import math
import re

from .errors import BadField

DEVICE_ID_BYTES = 16

U32_MAX = 0xFFFF_FFFF
U16_MAX = 0xFFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF
MILLI_PER_U = 1000

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,16}")


def milli_floor(amount: float) -> int:
    """Units (or U/h) -> integer milli-units, rounded DOWN (never more than asked).

    The value is first rounded to 6 decimals so that 0.3 U gives 300, not 299.
    """
    if not math.isfinite(amount) or amount < 0:
        raise ValueError(f"amount must be finite and >= 0, got {amount}")
    return math.floor(round(amount * MILLI_PER_U, 6))


def check_device_id(device_id: str) -> str:
    if not isinstance(device_id, str) or not DEVICE_ID_RE.fullmatch(device_id):
        raise ValueError(f"device_id must be 1-16 characters of [A-Za-z0-9._-], got {device_id!r}")
    return device_id


def _check_uint(label: str, value: int, maximum: int, minimum: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise ValueError(f"{label} must be an integer in [{minimum}, {maximum}], got {value!r}")


def _pack_device_id(device_id: str) -> bytes:
    return device_id.encode("ascii").ljust(DEVICE_ID_BYTES, b"\x00")


def _unpack_device_id(raw: bytes) -> str:
    text = raw.rstrip(b"\x00")
    if b"\x00" in text:
        raise BadField("device_id: bytes after the first NUL must all be NUL")
    try:
        device_id = text.decode("ascii")
    except UnicodeDecodeError as exc:
        raise BadField("device_id is not ASCII") from exc
    if not DEVICE_ID_RE.fullmatch(device_id):
        raise BadField(f"device_id {device_id!r} has characters outside [A-Za-z0-9._-]")
    return device_id
