"""The uploader's battery for Nightscout's uploader-battery pill (``devicestatus.uploader``).

Nightscout's ``upbat`` plugin (cgm-remote-monitor ``lib/plugins/upbat.js``)
reads ``uploader.battery`` (percent, a number) or ``uploader.batteryVoltage``
and the top-level ``isCharging``. glucotwin runs on Linux (a Raspberry Pi):
the kernel's power-supply class, ``/sys/class/power_supply/<name>/`` with
``type`` = ``Battery``, gives ``capacity`` (percent) and ``status``
(``Charging``, ``Discharging``, ``Full``, ``Not charging``). A Pi on a mains
adapter has no such entry (nor has this machine): then nothing is sent, and
Nightscout shows no uploader battery rather than a made-up one. With several
batteries the lowest is reported (the one that ends the run first).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

POWER_SUPPLY = Path("/sys/class/power_supply")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def read_battery(root: Path = POWER_SUPPLY) -> dict[str, Any] | None:
    """``{"percent": int, "charging": bool}`` of the lowest battery under ``root``; None when none."""
    try:
        supplies = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return None
    best: dict[str, Any] | None = None
    for supply in supplies:
        if _read(supply / "type") != "Battery":
            continue
        capacity = _read(supply / "capacity")
        if capacity is None or not capacity.isdigit():
            continue
        percent = min(int(capacity), 100)
        status = _read(supply / "status") or ""
        if best is None or percent < best["percent"]:
            best = {"percent": percent, "charging": status == "Charging"}
    return best
