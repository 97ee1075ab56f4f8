"""Message types, NAK reasons, ring outcomes and pump flags: the codes on the wire.

The bottom of :mod:`firmware_bridge.protocol`: imports nothing from it.
"""

from __future__ import annotations

from enum import IntEnum, IntFlag


class MsgType(IntEnum):
    TEMP_BASAL = 0x01
    BOLUS = 0x02
    SUSPEND = 0x03
    RESUME = 0x04
    STATUS = 0x05
    HISTORY = 0x06
    ACK = 0x81
    NAK = 0x82
    STATUS_REPLY = 0x83
    HISTORY_REPLY = 0x84


COMMAND_TYPES = frozenset({MsgType.TEMP_BASAL, MsgType.BOLUS, MsgType.SUSPEND, MsgType.RESUME, MsgType.STATUS})
DOSE_TYPES = frozenset({MsgType.TEMP_BASAL, MsgType.BOLUS, MsgType.SUSPEND, MsgType.RESUME})
REPLY_TYPES = frozenset({MsgType.ACK, MsgType.NAK, MsgType.STATUS_REPLY, MsgType.HISTORY_REPLY})
HOST_TYPES = COMMAND_TYPES | {MsgType.HISTORY}
"""Everything a host may send; HISTORY's codec lives in :mod:`firmware_bridge.protocol.history`."""


class NakReason(IntEnum):
    """NAK reason codes (u8). 0 is reserved for "executed" in the status ring's outcome field."""

    BAD_TAG = 1
    EXPIRED = 2
    REPLAYED = 3
    OVER_LIMIT = 4
    RESERVOIR_EMPTY = 5
    SUSPENDED = 6
    MALFORMED = 7
    WRONG_DEVICE = 8


OUTCOME_EXECUTED = 0
_NAK_CODES = frozenset(int(r) for r in NakReason)
"""Ring entry outcome code for an executed command; other outcomes are NakReason values."""


class PumpFlags(IntFlag):
    SUSPENDED = 0x01
    TEMP_BASAL_ACTIVE = 0x02
    RESERVOIR_EMPTY = 0x04
    LIMIT_HOLD = 0x08  # basal held back by the pump's hourly or daily insulin limit


KNOWN_FLAGS = int(PumpFlags.SUSPENDED | PumpFlags.TEMP_BASAL_ACTIVE | PumpFlags.RESERVOIR_EMPTY
                  | PumpFlags.LIMIT_HOLD)
