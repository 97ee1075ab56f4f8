"""Decode errors; each carries the NAK reason a pump answers it with."""

from __future__ import annotations

from typing import ClassVar

from .message_types import NakReason


class ProtocolError(ValueError):
    """A message that cannot be decoded. ``reason`` is the NAK reason a pump would answer."""

    reason: ClassVar[NakReason] = NakReason.MALFORMED


class BadLength(ProtocolError):
    pass


class BadVersion(ProtocolError):
    pass


class BadType(ProtocolError):
    pass


class BadField(ProtocolError):
    pass


class BadTag(ProtocolError):
    reason = NakReason.BAD_TAG
