"""The person's profile as Nightscout's profile API stores it (``POST /api/v1/profile``).

Nightscout (cgm-remote-monitor ``lib/profilefunctions.js``) reads a profile
record ``{defaultProfile, store: {name: {...}}, startDate}``: the record in
force at a time is the newest whose ``startDate`` is not after it, and in it
``store[defaultProfile]``. Each schedule is a list of ``{time: "HH:MM",
value, timeAsSeconds}`` (seconds after midnight in ``timezone``), read by
``getValueByTime``: ``basal`` (U/h), ``carbratio`` (g/U), ``sens`` (mg/dL per
U), ``target_low`` and ``target_high`` (mg/dL), and ``dia`` (hours), ``units``,
``timezone``. Nightscout's COB and bolus-wizard plugins need ``sens`` and
``carbratio``; its basal plugin draws ``basal``.

glucotwin's values: the ``[profile]`` of the loop's configuration (what the
clinic programmed: basal schedule, carb ratio, correction factor, target, each
by time of day when the profile has schedules), ``dia`` the supervisor's
duration of insulin action (``[limits] iob_action_duration_min`` / 60), and
``timezone`` the zone the schedules are read in (``[profile] timezone``; UTC
when it is not set: the schedules are then read at the hour of the loop's UTC clock). ``target_low`` = ``target_high`` = the
controller's target (it aims at one value, not a range). What the twin learned
(sensitivity, carb effect) is not the profile and is not in it; the OpenAPS
pill's ``sensitivityRatio`` shows the twin's sensitivity.

The document is uploaded when it changes (its content, not its date, compared
with the last one queued; see :meth:`NightscoutUploader.queue_profile`), with
``startDate`` the loop's time of the first cycle that ran with it. Nightscout
does not de-duplicate profiles: each upload is a new record.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from controller.loop.nightscout.devicestatus import iso_z

PROFILE_NAME = "glucotwin"
UNITS = "mg/dl"


def _entry(start_min: int, value: float) -> dict[str, Any]:
    return {"time": f"{start_min // 60:02d}:{start_min % 60:02d}", "value": round(float(value), 3),
            "timeAsSeconds": int(start_min) * 60}


def _schedule(segments: Any, constant: float) -> list[dict[str, Any]]:
    """A schedule of (``start_min``, ``value``) segments, or the constant all day when it is empty."""
    entries = [_entry(int(s.start_min), float(s.value)) for s in (segments or ())]
    return entries or [_entry(0, constant)]


def profile_store(profile: Any, dia_h: float, timezone: str = "UTC") -> dict[str, Any]:
    """One ``store`` entry from a :class:`twin.profile.PatientProfile` (schedules where it has them)."""
    target = _schedule(getattr(profile, "target_schedule", ()), profile.target_mg_dl)
    return {
        "dia": round(float(dia_h), 2),
        "carbratio": _schedule(getattr(profile, "carb_ratio_schedule", ()), profile.carb_ratio_g_per_u),
        "sens": _schedule(getattr(profile, "correction_factor_schedule", ()), profile.correction_factor_mg_dl_per_u),
        "basal": [_entry(int(s.start_min), float(s.rate_u_per_h)) for s in profile.basal_schedule],
        "target_low": target,
        "target_high": [dict(e) for e in target],
        "timezone": timezone,
        "units": UNITS,
    }


def profile_document(store: dict[str, Any], start: datetime, name: str = PROFILE_NAME) -> dict[str, Any]:
    """The profile record, in force from ``start``."""
    stamp = iso_z(start)
    return {"defaultProfile": name, "store": {name: store}, "startDate": stamp, "created_at": stamp,
            "units": UNITS, "enteredBy": "glucotwin"}


def content_hash(store: dict[str, Any], name: str = PROFILE_NAME) -> str:
    """What "the profile changed" compares: the store's content, not its dates."""
    text = json.dumps({"name": name, "store": store}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
