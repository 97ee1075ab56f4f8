"""The host <-> pump message protocol: fixed binary layouts, big-endian, HMAC-SHA256 tagged.

Every message (command or reply) is::

    offset size field
         0    1 version          u8   = 1
         1    1 msg_type         u8   (MsgType)
         2    4 seq              u32  (commands: >= 1; replies: the answered command's seq, 0 if unknown)
         6   16 device_id        16 bytes ASCII [A-Za-z0-9._-], NUL-padded
        22    8 issued_at_ms     u64  epoch ms (replies: the pump's clock)
        30    8 expires_at_ms    u64  epoch ms (replies: 0)
        38    n payload          per msg_type, fixed length
      38+n   32 tag              HMAC-SHA256(key, bytes[0 : 38+n]), key per device

``PROTOCOL.md`` documents every payload with offsets, the NAK reason codes and
the at-most-once semantics. This package only encodes and decodes; it reads no
clock and does no I/O. Amounts on the wire are integers in milli-units
(0.001 U) and milli-units per hour; the dataclasses keep those integers and
offer float ``_u`` / ``_u_per_h`` views.

Modules, each importing only those listed above it
-------------------------------------------------
message_types  ``MsgType`` and its command/dose/reply sets, ``NakReason``, ``PumpFlags``
errors         ``ProtocolError`` and its subclasses (each names the NAK reason)
fields         integer limits, ``milli_floor``, ``check_device_id``, the device id field
tags           the HMAC-SHA256 tag, ``check_key``, ``load_key_file``
header         ``Header``, ``peek_header``, the payload layouts and length table, sealing
commands       ``Command`` (TEMP_BASAL, BOLUS, SUSPEND, RESUME, STATUS)
replies        ``Ack``, ``Nak``, ``PumpStatus`` and its ``RingEntry`` ring
history        HISTORY / HISTORY_REPLY (``HistoryQuery``, ``HistoryPage``) and the host's ``PumpHistory``
decode         ``decode_reply``: any reply, HISTORY_REPLY included

This package re-exports the names of all but ``history``; import those from
``firmware_bridge.protocol.history``.
"""

from __future__ import annotations

from .commands import Command
from .decode import Reply, decode_reply
from .errors import BadField, BadLength, BadTag, BadType, BadVersion, ProtocolError
from .fields import (
    DEVICE_ID_BYTES,
    DEVICE_ID_RE,
    MILLI_PER_U,
    U16_MAX,
    U32_MAX,
    U64_MAX,
    check_device_id,
    milli_floor,
)
from .header import (
    ACK_PAYLOAD,
    BOLUS_PAYLOAD,
    HEADER,
    NAK_DETAIL_BYTES,
    NAK_PAYLOAD,
    PAYLOAD_BYTES,
    RING_ENTRY,
    RING_SIZE,
    STATUS_FIXED,
    TEMP_BASAL_PAYLOAD,
    VERSION,
    Header,
    message_bytes,
    peek_header,
)
from .message_types import (
    COMMAND_TYPES,
    DOSE_TYPES,
    HOST_TYPES,
    KNOWN_FLAGS,
    OUTCOME_EXECUTED,
    REPLY_TYPES,
    MsgType,
    NakReason,
    PumpFlags,
)
from .replies import Ack, Nak, PumpStatus, RingEntry
from .tags import MIN_KEY_BYTES, TAG_BYTES, TAG_PREFIX_BYTES, check_key, compute_tag, load_key_file, verify_tag

__all__ = [
    "ACK_PAYLOAD", "BOLUS_PAYLOAD", "COMMAND_TYPES", "DEVICE_ID_BYTES", "DEVICE_ID_RE", "DOSE_TYPES", "HEADER",
    "HOST_TYPES", "KNOWN_FLAGS", "MILLI_PER_U", "MIN_KEY_BYTES", "NAK_DETAIL_BYTES", "NAK_PAYLOAD",
    "OUTCOME_EXECUTED", "PAYLOAD_BYTES", "REPLY_TYPES", "RING_ENTRY", "RING_SIZE", "STATUS_FIXED", "TAG_BYTES",
    "TAG_PREFIX_BYTES", "TEMP_BASAL_PAYLOAD", "U16_MAX", "U32_MAX", "U64_MAX", "VERSION",
    "Ack", "BadField", "BadLength", "BadTag", "BadType", "BadVersion", "Command", "Header", "MsgType", "Nak",
    "NakReason", "ProtocolError", "PumpFlags", "PumpStatus", "Reply", "RingEntry",
    "check_device_id", "check_key", "compute_tag", "decode_reply", "load_key_file", "message_bytes", "milli_floor",
    "peek_header", "verify_tag",
]
