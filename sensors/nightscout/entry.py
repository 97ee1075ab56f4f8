"""Single Nightscout objects on a live transport: CGM entries and carb treatments.

The MQTT source carries the same JSON objects Nightscout stores, so that any
Nightscout uploader (xDrip+, AndroidAPS, a bridge) can feed glucotwin.

A CGM **entry** (one object per reading)::

    {"type": "sgv", "sgv": 123, "date": 1795428000000,
     "dateString": "2026-11-23T10:00:00.000Z", "direction": "Flat",
     "device": "xDrip-DexcomG6", "noise": 1}

is parsed by :func:`entry_to_reading` with exactly the rules of the Nightscout
file reader (:mod:`sensors.files.nightscout`: ``sgv`` mg/dL, 39 is a clipped
``LOW``, ``date`` epoch ms preferred over ``dateString``), and written by
:func:`reading_to_entry`.

A carb **announcement** is a Nightscout treatment::

    {"eventType": "Meal Bolus", "carbs": 45, "created_at": "2026-11-23T12:00:00Z",
     "date": 1795435200000, "enteredBy": "phone"}

``eventType`` must be ``"Meal Bolus"`` or ``"Carb Correction"``; the time is
``date`` (epoch ms) when usable, else ``created_at`` (ISO 8601; without an
offset it is UTC). :func:`treatment_to_announcement` parses one,
:func:`announcement_to_treatment` writes one.

Parsing never raises on bad input: it returns a :class:`~sensors.reading.Rejected`
whose reason starts with a fixed phrase. Entries use the file reader's phrases;
treatments add ``"malformed treatment"``, ``"not a carb announcement"``,
``"missing carbs"``, ``"non-numeric carbs"`` and ``"carbs out of range"``,
and the time phrases (``"missing time"``, ``"unparseable time"``, ``"implausible time"``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sensors.files.nightscout import (
    DEXCOM_LOW_CODE,
    SOURCE as NIGHTSCOUT_SOURCE,
    nightscout_number,
    nightscout_time,
    parse_nightscout_entry,
    raw_json,
)
from sensors.reading import SENSOR_LOW_MG_DL, GlucoseReading, Rejected, fields_from_dict

CARB_EVENT_TYPES = ("Meal Bolus", "Carb Correction")
"""Nightscout treatment event types that announce carbohydrates."""
ANNOUNCEMENT_EVENT_TYPE = "Meal Bolus"
"""The event type :func:`announcement_to_treatment` writes."""
MAX_ANNOUNCED_CARBS_G = 300.0
"""An announcement above this many grams is rejected as ``"carbs out of range"`` (a typo, not a meal)."""
ENTRY_FIELDS = ("type", "sgv", "date", "dateString", "direction", "device", "noise")
"""The Nightscout fields :func:`reading_to_entry` writes (``direction``, ``noise`` only when known)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def _epoch_ms(t: datetime) -> int:
    return (t - _EPOCH) // _MS


def _iso_z(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _with_transport(source: str, transport: str) -> str:
    """``nightscout:device`` -> ``{transport}:device``."""
    if transport == NIGHTSCOUT_SOURCE:
        return source
    if source == NIGHTSCOUT_SOURCE:
        return transport
    return transport + source[len(NIGHTSCOUT_SOURCE):]


# --- CGM entries ------------------------------------------------------------------------


def entry_to_reading(entry: Any, subject: str = "", transport: str = NIGHTSCOUT_SOURCE) -> GlucoseReading | Rejected:
    """One decoded Nightscout entry object to a reading, or a :class:`Rejected` (``line=None``).

    ``transport`` names where the entry came from; the reading's source is
    ``"{transport}:{device}"`` (``"mqtt:xDrip-DexcomG6"``), or ``transport`` without a device.
    """
    outcome = parse_nightscout_entry(entry, subject=subject)
    if isinstance(outcome, GlucoseReading) and transport != NIGHTSCOUT_SOURCE:
        outcome = replace(outcome, source=_with_transport(outcome.source, transport))
    return outcome


def reading_to_entry(reading: GlucoseReading) -> dict[str, Any]:
    """A Nightscout ``sgv`` entry for ``reading``.

    Lossy where Nightscout is: ``sgv`` is whole mg/dL (rounded); a clipped ``Low``
    is written as 39 (Dexcom's LOW code, read back as a clipped 40); a clipped
    ``High`` is written as its value (400) and reads back unclipped, since
    Nightscout has no HIGH code. ``device`` is the reading's source after its
    first ``":"`` (the whole source when there is none); ``subject`` is not part
    of an entry (the MQTT topic carries it).
    """
    if not isinstance(reading, GlucoseReading):
        raise ValueError(f"reading_to_entry needs a GlucoseReading, got {type(reading).__name__}")
    sgv = int(round(reading.glucose_mg_dl))
    if reading.clipped and reading.glucose_mg_dl <= SENSOR_LOW_MG_DL:
        sgv = int(DEXCOM_LOW_CODE)
    _, sep, device = reading.source.partition(":")
    entry: dict[str, Any] = {
        "type": "sgv",
        "sgv": sgv,
        "date": _epoch_ms(reading.time),
        "dateString": _iso_z(reading.time),
        "device": device if sep and device else reading.source,
    }
    if reading.trend is not None:
        entry["direction"] = reading.trend
    if reading.noise is not None:
        entry["noise"] = reading.noise
    return entry


# --- carb announcements -------------------------------------------------------------------


@dataclass(frozen=True)
class CarbAnnouncement:
    """Carbohydrates the person announced they are eating (or have eaten).

    Attributes
    ----------
    time: when the carbohydrates are eaten; timezone-aware (converted to UTC).
    carbs_g: grams of carbohydrate; finite and > 0.
    source: where the announcement came from (``"mqtt:phone"``, ``"sim"``).
    subject: whose meal it is; ``""`` when the source serves one person.
    """

    time: datetime
    carbs_g: float
    source: str
    subject: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.time, datetime):
            raise ValueError(f"announcement time must be a datetime, got {type(self.time).__name__}")
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise ValueError(f"announcement time must be timezone-aware (UTC), got naive {self.time.isoformat()}")
        if self.time.tzinfo is not UTC:
            object.__setattr__(self, "time", self.time.astimezone(UTC))
        c = self.carbs_g
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or not math.isfinite(float(c)) or float(c) <= 0:
            raise ValueError(f"carbs_g must be a finite positive number, got {c!r}")
        object.__setattr__(self, "carbs_g", float(c))
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"announcement source must be a non-empty string, got {self.source!r}")
        if not isinstance(self.subject, str):
            raise ValueError(f"announcement subject must be a string, got {self.subject!r}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``time`` as ISO 8601 with ``+00:00``."""
        return {"time": self.time.isoformat(), "carbs_g": self.carbs_g, "source": self.source,
                "subject": self.subject}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CarbAnnouncement:
        """Inverse of :meth:`to_dict`. Raises ValueError on missing or unknown keys or bad values."""
        return cls(**fields_from_dict(cls, data, "carb announcement", ("time", "carbs_g", "source")))


TEMP_TARGET_EVENT = "Temporary Target"


@dataclass(frozen=True)
class TempTargetTreatment:
    """A Nightscout ``Temporary Target`` treatment as received; the controller reads its fields
    (:func:`controller.temp_target.from_nightscout`), the source only finds its time."""

    time: datetime
    treatment: dict[str, Any]
    source: str
    subject: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(), "treatment": self.treatment, "source": self.source,
                "subject": self.subject}


def treatment_to_item(treatment: Any, subject: str = "",
                      transport: str = NIGHTSCOUT_SOURCE) -> "CarbAnnouncement | TempTargetTreatment | Rejected":
    """A carb treatment (:func:`treatment_to_announcement`) or a temporary target (kept whole, with its time)."""
    if isinstance(treatment, dict) and treatment.get("eventType") == TEMP_TARGET_EVENT:
        time = nightscout_time(treatment.get("date"), treatment.get("created_at"))
        if isinstance(time, str):
            return Rejected(raw_json(treatment), None, time)
        entered_by = treatment.get("enteredBy")
        source = f"{transport}:{entered_by}" if isinstance(entered_by, str) and entered_by.strip() else transport
        return TempTargetTreatment(time.astimezone(UTC), treatment, source, subject)
    return treatment_to_announcement(treatment, subject, transport)


def treatment_to_announcement(treatment: Any, subject: str = "",
                              transport: str = NIGHTSCOUT_SOURCE) -> CarbAnnouncement | Rejected:
    """One decoded Nightscout treatment object to a :class:`CarbAnnouncement`, or a :class:`Rejected`.

    The source is ``"{transport}:{enteredBy}"`` when the treatment names who entered it.
    """
    try:
        outcome = _parse_treatment(treatment, subject, transport)
    except RecursionError:
        outcome = "malformed treatment: nested too deeply"
    if isinstance(outcome, str):
        return Rejected(raw_json(treatment), None, outcome)
    return outcome


def _parse_treatment(t: Any, subject: str, transport: str) -> CarbAnnouncement | str:
    if not isinstance(t, dict):
        return "malformed treatment: not a JSON object"
    event = t.get("eventType")
    if event not in CARB_EVENT_TYPES:
        shown = raw_json(event) if event is not None else "missing"
        return f"not a carb announcement (eventType {shown}; expected Meal Bolus or Carb Correction)"
    raw_carbs = t.get("carbs")
    if raw_carbs is None or raw_carbs == "":
        return "missing carbs"
    carbs = nightscout_number(raw_carbs)
    if carbs is None:
        return f"non-numeric carbs {raw_json(raw_carbs)}"
    if not 0 < carbs <= MAX_ANNOUNCED_CARBS_G:
        return f"carbs out of range: {carbs:g} g is outside (0, {MAX_ANNOUNCED_CARBS_G:g}]"
    time = nightscout_time(t.get("date"), t.get("created_at"))
    if isinstance(time, str):
        return time
    entered_by = t.get("enteredBy")
    source = f"{transport}:{entered_by}" if isinstance(entered_by, str) and entered_by.strip() else transport
    try:
        return CarbAnnouncement(time=time, carbs_g=carbs, source=source, subject=subject)
    except ValueError as err:  # defensive: the checks above should make this unreachable
        return f"malformed treatment: {err}"


def announcement_to_treatment(announcement: CarbAnnouncement) -> dict[str, Any]:
    """A Nightscout ``Meal Bolus`` treatment (carbs only) for ``announcement``.

    Fields: ``eventType``, ``carbs`` (g), ``created_at`` (ISO 8601 with ``Z``),
    ``date`` (epoch ms) and ``enteredBy`` (the source after its first ``":"``).
    """
    if not isinstance(announcement, CarbAnnouncement):
        raise ValueError(f"announcement_to_treatment needs a CarbAnnouncement, got {type(announcement).__name__}")
    _, sep, who = announcement.source.partition(":")
    return {
        "eventType": ANNOUNCEMENT_EVENT_TYPE,
        "carbs": announcement.carbs_g,
        "created_at": _iso_z(announcement.time),
        "date": _epoch_ms(announcement.time),
        "enteredBy": who if sep and who else announcement.source,
    }
