"""Temporary targets: the person moves the loop's glucose target for a while ("eating soon", "exercise").

As in oref0 / AndroidAPS and Nightscout's ``Temporary Target`` treatment, a temporary target replaces the
scheduled target (:meth:`twin.profile.PatientProfile.target_at`) from its start for its duration; a new
one replaces the one running; a duration of 0 cancels. The target is the middle of the range a Nightscout
treatment gives (``targetBottom``..``targetTop``, as oref0 takes the average of min_bg and max_bg).

Only the controller's target moves (the MPC's zone and the meal bolus's correction). The safety supervisor
keeps judging against the profile's scheduled target, so a low temporary target cannot raise its limits,
and every temporary target is bounded to the profile's hard target range (80..200 mg/dL).

Presets (AndroidAPS's defaults): ``eating_soon`` 90 mg/dL for 45 min, ``exercise`` ("activity") 140 mg/dL
for 90 min, ``hypo`` 160 mg/dL for 60 min.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from twin.profile_import import NIGHTSCOUT_MG_DL_PER_MMOL_L  # Nightscout's own factor

MIN_TARGET_MG_DL = 80.0
MAX_TARGET_MG_DL = 200.0
MAX_DURATION_MIN = 24 * 60.0


@dataclass(frozen=True)
class Preset:
    target_mg_dl: float
    duration_min: float
    reason: str


PRESETS: dict[str, Preset] = {
    "eating_soon": Preset(90.0, 45.0, "Eating Soon"),
    "exercise": Preset(140.0, 90.0, "Activity"),
    "hypo": Preset(160.0, 60.0, "Hypo"),
}


@dataclass(frozen=True)
class TempTarget:
    """A target of ``target_mg_dl`` from ``start`` for ``duration_min`` minutes (0: a cancellation)."""

    start: datetime
    duration_min: float
    target_mg_dl: float
    reason: str = ""
    source: str = ""  # who set it: "mqtt", "nightscout", "cli", "trial"

    def __post_init__(self) -> None:
        if not (isinstance(self.duration_min, (int, float)) and math.isfinite(self.duration_min)
                and 0.0 <= self.duration_min <= MAX_DURATION_MIN):
            raise ValueError(f"temporary target duration must be 0..{MAX_DURATION_MIN:g} min, got {self.duration_min!r}")
        if self.duration_min > 0 and not (isinstance(self.target_mg_dl, (int, float))
                                          and MIN_TARGET_MG_DL <= self.target_mg_dl <= MAX_TARGET_MG_DL):
            raise ValueError(f"temporary target must be {MIN_TARGET_MG_DL:g}..{MAX_TARGET_MG_DL:g} mg/dL, "
                             f"got {self.target_mg_dl!r}")
        if self.start.tzinfo is None:
            raise ValueError("temporary target start must be timezone-aware")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.duration_min)

    @property
    def cancels(self) -> bool:
        return self.duration_min == 0

    def active_at(self, time: datetime) -> bool:
        return not self.cancels and self.start <= time < self.end

    def describe(self) -> str:
        what = self.reason or "temporary target"
        return f"{what} {self.target_mg_dl:.0f} mg/dL until {self.end:%H:%M}"

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "duration_min": self.duration_min,
                "target_mg_dl": None if self.cancels else self.target_mg_dl, "reason": self.reason,
                "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TempTarget":
        target = data.get("target_mg_dl")
        return cls(datetime.fromisoformat(data["start"]), float(data["duration_min"]),
                   float("nan") if target is None else float(target), str(data.get("reason", "")),
                   str(data.get("source", "")))


def from_preset(name: str, start: datetime, duration_min: float | None = None, source: str = "") -> TempTarget:
    """A preset's temporary target (its default duration unless one is given)."""
    try:
        p = PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown temporary target preset {name!r}; known: {', '.join(PRESETS)}") from None
    return TempTarget(start, p.duration_min if duration_min is None else duration_min, p.target_mg_dl, p.reason, source)


def from_nightscout(doc: dict[str, Any], start: datetime | None = None, source: str = "nightscout") -> TempTarget:
    """A Nightscout ``Temporary Target`` treatment (``created_at``, ``duration`` min, ``targetBottom`` /
    ``targetTop`` in the document's ``units``, ``reason``); ``duration`` 0 is a cancellation. ``start``
    overrides ``created_at`` (a source that already parsed the treatment's time)."""
    if not isinstance(doc, dict) or doc.get("eventType") != "Temporary Target":
        what = doc.get("eventType") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"not a Temporary Target treatment: eventType {what!r}")
    try:
        if start is None:
            start = datetime.fromisoformat(str(doc["created_at"]).replace("Z", "+00:00"))
        duration = float(doc.get("duration", 0) or 0)
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"Temporary Target treatment: {exc}") from None
    if not math.isfinite(duration):
        raise ValueError(f"Temporary Target treatment: duration {duration!r}")
    if duration == 0:
        return TempTarget(start, 0.0, float("nan"), str(doc.get("reason", "") or "cancel"), source)
    try:
        low, high = float(doc["targetBottom"]), float(doc["targetTop"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("Temporary Target treatment needs targetBottom and targetTop") from None
    if str(doc.get("units", "mg/dl")).lower().startswith("mmol") or max(low, high) < 30:
        low, high = low * NIGHTSCOUT_MG_DL_PER_MMOL_L, high * NIGHTSCOUT_MG_DL_PER_MMOL_L
    if not (math.isfinite(low) and math.isfinite(high)) or low > high:
        raise ValueError(f"Temporary Target treatment: targetBottom {low:g} above targetTop {high:g}")
    return TempTarget(start, duration, round((low + high) / 2.0, 1), str(doc.get("reason", "") or ""), source)


class TempTargets:
    """The temporary targets set so far; at any time the one that started last (at or before it) rules."""

    KEEP = 32  # the most recent ones kept (a day of changes is a handful)

    def __init__(self) -> None:
        self.entries: list[TempTarget] = []

    def set(self, tt: TempTarget) -> None:
        self.entries.append(tt)
        self.entries.sort(key=lambda t: t.start)
        del self.entries[:-self.KEEP]

    def active(self, time: datetime) -> TempTarget | None:
        started = [t for t in self.entries if t.start <= time]
        return started[-1] if started and started[-1].active_at(time) else None
