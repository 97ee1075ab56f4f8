"""The 38-byte header, the fixed payload layouts, the length table, sealing and opening a message.

``peek_header`` checks each type's total length, so the payload layouts (and
their sizes in :data:`PAYLOAD_BYTES`) live here too; the HISTORY layouts are
in :mod:`.history`, which asserts that its sizes match this table.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import BadLength, BadType, BadVersion
from .fields import _pack_device_id, _unpack_device_id
from .message_types import MsgType
from .tags import TAG_BYTES, check_key, compute_tag, verify_tag

VERSION = 1
RING_SIZE = 8
NAK_DETAIL_BYTES = 31

HEADER = struct.Struct(">BBI16sQQ")
TEMP_BASAL_PAYLOAD = struct.Struct(">IH")
BOLUS_PAYLOAD = struct.Struct(">I")
ACK_PAYLOAD = struct.Struct(">IIHB")
NAK_PAYLOAD = struct.Struct(f">B{NAK_DETAIL_BYTES}s")
STATUS_FIXED = struct.Struct(">IBIIHIIIB")
RING_ENTRY = struct.Struct(">IBBIIH4s")

PAYLOAD_BYTES: dict[MsgType, int] = {
    MsgType.TEMP_BASAL: TEMP_BASAL_PAYLOAD.size,
    MsgType.BOLUS: BOLUS_PAYLOAD.size,
    MsgType.SUSPEND: 0,
    MsgType.RESUME: 0,
    MsgType.STATUS: 0,
    MsgType.ACK: ACK_PAYLOAD.size,
    MsgType.NAK: NAK_PAYLOAD.size,
    MsgType.STATUS_REPLY: STATUS_FIXED.size + RING_SIZE * RING_ENTRY.size,
    MsgType.HISTORY: 12,  # firmware_bridge.protocol.history.QUERY_PAYLOAD
    MsgType.HISTORY_REPLY: 342,  # firmware_bridge.protocol.history.REPLY_FIXED + HISTORY_PAGE_SIZE entries
}


def message_bytes(msg_type: MsgType) -> int:
    """Total length of a message of ``msg_type``: header + payload + tag."""
    return HEADER.size + PAYLOAD_BYTES[msg_type] + TAG_BYTES


@dataclass(frozen=True)
class Header:
    """The 38-byte header, parsed WITHOUT checking the tag (see :func:`peek_header`)."""

    version: int
    msg_type: MsgType
    seq: int
    device_id: str
    issued_at_ms: int
    expires_at_ms: int


def peek_header(body: bytes) -> Header:
    """Parse and check header and length, NOT the tag. Raises a :class:`ProtocolError` subclass.

    Checks, in order: length >= header + tag (BadLength), version (BadVersion),
    msg_type (BadType), total length for that type (BadLength), device_id (BadField).
    """
    if len(body) < HEADER.size + TAG_BYTES:
        raise BadLength(f"message of {len(body)} bytes is shorter than header + tag ({HEADER.size + TAG_BYTES})")
    version, raw_type, seq, raw_device, issued_at_ms, expires_at_ms = HEADER.unpack_from(body, 0)
    if version != VERSION:
        raise BadVersion(f"protocol version {version}, expected {VERSION}")
    try:
        msg_type = MsgType(raw_type)
    except ValueError:
        raise BadType(f"unknown msg_type 0x{raw_type:02x}") from None
    if len(body) != message_bytes(msg_type):
        raise BadLength(f"{msg_type.name} must be {message_bytes(msg_type)} bytes, got {len(body)}")
    return Header(version, msg_type, seq, _unpack_device_id(raw_device), issued_at_ms, expires_at_ms)


def _seal(key: bytes, msg_type: MsgType, seq: int, device_id: str, issued_at_ms: int, expires_at_ms: int,
          payload: bytes) -> bytes:
    key = check_key(key)
    unsigned = HEADER.pack(VERSION, int(msg_type), seq, _pack_device_id(device_id), issued_at_ms,
                           expires_at_ms) + payload
    return unsigned + compute_tag(key, unsigned)


def _open(body: bytes, key: bytes, allowed: frozenset[MsgType]) -> tuple[Header, bytes]:
    header = peek_header(body)
    if header.msg_type not in allowed:
        raise BadType(f"{header.msg_type.name} is not expected here")
    verify_tag(body, check_key(key))
    return header, body[HEADER.size:-TAG_BYTES]
