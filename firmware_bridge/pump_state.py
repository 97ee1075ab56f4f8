"""The reference pump's persisted state: a fresh one, and a restored one checked (and migrated).

The state is plain JSON data so that a process can write it atomically before
it answers (firmware_bridge.pump_device). Versions:

1. seqs, ring, clock, temp basal, reservoir and totals;
2. + the delivery history (``history``, ``log_start_ms``): a pump updated from 1
   has a log that begins at the update;
3. + the cumulative-limit ledger (``ledger``, ``limit_hold``): a pump updated
   from 2 rebuilds it from the boluses of its history; basal delivered before
   the update is not in it (under a day of it, at most the scheduled basal's
   share, can be charged twice: once before and once after the update).
"""

from __future__ import annotations

from typing import Any

from .insulin_caps import DAILY, HOURLY, check_ledger, ledger_from_boluses
from .protocol import RING_SIZE, MsgType, RingEntry, milli_floor
from .protocol.history import HistoryEntry
from .pump_settings import PumpSettings

STATE_VERSION = 3
HISTORY_KEEP_MS = 24 * 3_600_000
"""Delivery history kept: a day (the host's insulin-action window is 10 h)."""
HISTORY_MAX_ENTRIES = 2048
"""At most this many entries (a loop commanding every 5 min makes about 300 a day)."""

_RING_KEYS = {"seq", "msg_type", "outcome", "bolus_milli_u", "rate_milli_u_per_h", "duration_min", "tag_prefix",
              "sha256", "reply"}


def fresh_state(settings: PumpSettings) -> dict[str, Any]:
    return {
        "state_version": STATE_VERSION,
        "device_id": settings.device_id,
        "clock_ms": None,
        "last_seq": 0,
        "suspended": False,
        "temp_rate_milli_u_per_h": 0,
        "temp_end_ms": None,
        "reservoir_milli_u": milli_floor(settings.reservoir_u),
        "bolus_total_milli_u": 0,
        "basal_total_milli_u": 0,
        "basal_residual": 0,
        "bolus_since_report_milli_u": 0,
        "ring": [],
        "history": [],
        "log_start_ms": None,
        "ledger": [],
        "limit_hold": None,
    }


def _migrated(state: dict[str, Any]) -> dict[str, Any]:
    if state.get("state_version") == 1:  # a pump updated in the field: its log begins now
        state = {**state, "state_version": 2, "history": [], "log_start_ms": state.get("clock_ms") or 0}
    if state.get("state_version") == 2:
        history = state.get("history")
        boluses = [(raw[1], raw[3]) for raw in history if isinstance(raw, list) and len(raw) == 9
                   and raw[2] == "bolus" and isinstance(raw[1], int) and isinstance(raw[3], int) and raw[3] > 0] \
            if isinstance(history, list) else []
        clock = state.get("clock_ms") if isinstance(state.get("clock_ms"), int) else 0
        state = {**state, "state_version": 3, "ledger": ledger_from_boluses(boluses, clock), "limit_hold": None}
    return state


def checked_state(state: dict[str, Any], settings: PumpSettings) -> dict[str, Any]:
    """Validate (and migrate) a restored state; ValueError with the reason when it is not usable."""
    if not isinstance(state, dict):
        raise ValueError("pump state must be a dict")
    state = _migrated(state)
    expected = fresh_state(settings)
    if set(state) != set(expected):
        raise ValueError(f"pump state keys differ: missing {sorted(set(expected) - set(state))}, "
                         f"unexpected {sorted(set(state) - set(expected))}")
    if state["state_version"] != STATE_VERSION:
        raise ValueError(f"pump state version {state['state_version']!r}, expected {STATE_VERSION}")
    if state["device_id"] != settings.device_id:
        raise ValueError(f"pump state is for device {state['device_id']!r}, not {settings.device_id!r}")

    def is_uint(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    for key in ("last_seq", "temp_rate_milli_u_per_h", "reservoir_milli_u", "bolus_total_milli_u",
                "basal_total_milli_u", "basal_residual", "bolus_since_report_milli_u"):
        if not is_uint(state[key]):
            raise ValueError(f"pump state {key} must be a non-negative integer, got {state[key]!r}")
    for key in ("clock_ms", "temp_end_ms", "log_start_ms"):
        if state[key] is not None and not is_uint(state[key]):
            raise ValueError(f"pump state {key} must be null or a non-negative integer, got {state[key]!r}")
    if not isinstance(state["suspended"], bool):
        raise ValueError("pump state suspended must be a boolean")
    if state["limit_hold"] not in (None, HOURLY, DAILY):
        raise ValueError(f"pump state limit_hold must be null, {HOURLY!r} or {DAILY!r}")
    copy = dict(state)
    copy["ring"] = _checked_ring(state["ring"], state["last_seq"])
    copy["history"] = _checked_history(state["history"])
    copy["ledger"] = check_ledger(state["ledger"])
    return copy


def _checked_ring(ring: Any, last_seq: int) -> list[dict[str, Any]]:
    if not isinstance(ring, list) or len(ring) > RING_SIZE:
        raise ValueError(f"pump state ring must be a list of at most {RING_SIZE} entries")
    for entry in ring:
        if not isinstance(entry, dict) or set(entry) != _RING_KEYS:
            raise ValueError(f"pump state ring entry must have keys {sorted(_RING_KEYS)}")
        try:
            RingEntry(entry["seq"], MsgType(entry["msg_type"]), entry["outcome"], entry["bolus_milli_u"],
                      entry["rate_milli_u_per_h"], entry["duration_min"], bytes.fromhex(entry["tag_prefix"]))
            bytes.fromhex(entry["reply"])
            if len(bytes.fromhex(entry["sha256"])) != 32:
                raise ValueError("sha256 must be 32 bytes")
        except (ValueError, TypeError) as exc:
            raise ValueError(f"pump state ring entry {entry.get('seq')!r}: {exc}") from None
        if entry["seq"] > last_seq:
            raise ValueError("pump state ring holds a seq above last_seq")
    return [dict(entry) for entry in ring]


def _checked_history(history: Any) -> list[list[Any]]:
    if not isinstance(history, list) or len(history) > HISTORY_MAX_ENTRIES:
        raise ValueError(f"pump state history must be a list of at most {HISTORY_MAX_ENTRIES} entries")
    for raw in history:
        try:
            HistoryEntry(*raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"pump state history entry {raw!r}: {exc}") from None
    return [list(raw) for raw in history]
