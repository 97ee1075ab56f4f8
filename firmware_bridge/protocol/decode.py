"""Decode any reply: the one module that knows every reply type, HISTORY_REPLY included.

It sits above :mod:`.replies` and :mod:`.history`, so neither needs the other.
"""

from __future__ import annotations

from typing import Union

from .errors import BadType
from .header import peek_header
from .history import HistoryPage
from .message_types import MsgType
from .replies import Ack, Nak, PumpStatus

Reply = Union[Ack, Nak, PumpStatus]
_REPLY_CLASSES: dict[MsgType, type[Ack] | type[Nak] | type[PumpStatus]] = {
    MsgType.ACK: Ack, MsgType.NAK: Nak, MsgType.STATUS_REPLY: PumpStatus}


def decode_reply(body: bytes, key: bytes) -> Reply:
    """Decode any reply (ACK, NAK, STATUS_REPLY, HISTORY_REPLY); raises a :class:`ProtocolError` subclass."""
    header = peek_header(body)
    if header.msg_type == MsgType.HISTORY_REPLY:
        return HistoryPage.decode(body, key)  # type: ignore[return-value]
    cls = _REPLY_CLASSES.get(header.msg_type)
    if cls is None:
        raise BadType(f"{header.msg_type.name} is not a reply")
    return cls.decode(body, key)
