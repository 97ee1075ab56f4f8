"""The HMAC-SHA256 tag and the per-device key."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

from .errors import BadTag

TAG_BYTES = 32
TAG_PREFIX_BYTES = 4
MIN_KEY_BYTES = 16


def check_key(key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) < MIN_KEY_BYTES:
        raise ValueError(f"key must be at least {MIN_KEY_BYTES} bytes")
    return bytes(key)


def load_key_file(path: str | Path) -> bytes:
    """A per-device key file: the key in hex (>= 32 hex digits), surrounding whitespace ignored."""
    text = Path(path).read_text(encoding="ascii").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError as exc:
        raise ValueError(f"{path}: key file must contain the key in hex") from exc
    return check_key(key)


def compute_tag(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def verify_tag(body: bytes, key: bytes) -> None:
    """Raise :class:`BadTag` unless the last 32 bytes are HMAC-SHA256(key, the rest)."""
    if len(body) <= TAG_BYTES or not hmac.compare_digest(compute_tag(key, body[:-TAG_BYTES]), body[-TAG_BYTES:]):
        raise BadTag("HMAC-SHA256 tag does not verify")
