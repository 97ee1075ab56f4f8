"""Tidepool data export, JSON (``TidepoolExport.json``).

Tidepool's web app exports a person's data as JSON or as an Excel workbook
(tidepool-org/export, built on @tidepool/data-tools). The JSON is one array
of records of every data type (``cbg``, ``smbg``, ``basal``, ``bolus``,
``upload``, ``pumpSettings``...), each flattened two levels deep. Only ``cbg``
(continuous glucose monitor) records are readings::

    {"type": "cbg", "units": "mmol/L", "value": 6.050315310239632,
     "time": "2016-05-04T08:18:04.889Z", "deviceTime": "2016-05-04T01:18:04",
     "timezoneOffset": -420, "deviceId": "DexG6Rec_...", "uploadId": "..."}

Every other type is rejected as ``"not a glucose reading (type 'basal')"``.

- ``value`` is in ``units``: ``mmol/L`` (Tidepool stores glucose in mmol/L,
  the export's default) or ``mg/dL`` (an export asked for in mg/dL). mmol/L is
  converted with Tidepool's own factor, :data:`TIDEPOOL_MG_DL_PER_MMOL_L`
  (18.01559, the one it divided by), so a device's integer mg/dL comes back.
- ``time`` is UTC. Without it, ``deviceTime`` (local) minus ``timezoneOffset``
  (minutes) is used, and without an offset ``deviceTime`` is read in ``tz``.
- A ``bg/out-of-range`` annotation (``annotations``: a list, or the JSON text of
  one as the export writes it) with ``value`` ``low`` or ``high`` makes a
  clipped reading at the annotation's ``threshold`` (always mg/dL), or at
  40 / 400 mg/dL when it has none.
- ``deviceId`` is appended to the reading's source.
- A record ``{"exportError": "..."}`` (the export was cut short) is rejected
  and its message kept in the file's notes.

The Excel workbook (and a CSV made from one of its sheets) is not read: its
columns follow a configuration in @tidepool/data-tools and its dates a
spreadsheet's locale; export JSON instead.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, TextIO

from sensors.files.common import (
    Candidate,
    LocalTimes,
    clip_raw,
    glucose_reason,
    parse_timestamp,
    resolve_tz,
    text_handle,
)
from sensors.files.delimited import FileInfo
from sensors.files.jsonstream import json_items
from sensors.files.nightscout import nightscout_number
from sensors.files.ordering import finish
from sensors.files.units import normalize_units
from sensors.reading import SENSOR_HIGH_MG_DL, SENSOR_LOW_MG_DL, GlucoseReading, ReadResult, Rejected

SOURCE = "tidepool"
GLUCOSE_TYPE = "cbg"
TIDEPOOL_MG_DL_PER_MMOL_L = 18.01559
"""Tidepool's conversion (molar mass of glucose 180.1559 g/mol / 10): mg/dL values are divided by it on upload."""
OUT_OF_RANGE = "bg/out-of-range"
KNOWN_TYPES = frozenset({
    "cbg", "smbg", "basal", "bolus", "wizard", "upload", "pumpSettings", "cgmSettings", "deviceEvent", "food",
    "physicalActivity", "bloodKetone", "reportedState", "insulin", "dosingDecision", "controllerSettings",
    "controllerStatus", "pumpStatus", "alert", "water", "cbg/summary",
})
"""Tidepool data types: any of them in a JSON array tells a Tidepool export from Nightscout entries."""


def parse_tidepool_json(text: str, tz: tzinfo | str = UTC, subject: str = "", *, units: str | None = None,
                        info: FileInfo | None = None) -> ReadResult:
    """Readings and rejections from the text of a Tidepool JSON export.

    Parameters
    ----------
    text: a JSON array of Tidepool records (or one record, or one per line).
    tz: zone of a ``deviceTime`` used without ``time`` or ``timezoneOffset``, default UTC.
    subject: subject of every reading.
    units: not accepted (each record states its units); ``None``.
    info: filled with the notes (an export error).

    Raises
    ------
    ValueError: the text is not JSON, its top level is neither an array nor an object,
        ``units`` is given, or ``tz`` is unknown. Bad records never raise: they are
        returned as rejections.
    """
    info = info if info is not None else FileInfo("tidepool")
    return finish(tidepool_records(lambda: text_handle(text), tz=resolve_tz(tz), subject=subject,
                                   units=normalize_units(units), info=info))


def tidepool_records(open_text: Callable[[], TextIO], *, tz: tzinfo, subject: str, units: str | None,
                     info: FileInfo) -> Iterator[Candidate | Rejected]:
    """Every record of a Tidepool export, as a candidate reading or a rejection, in file order."""
    if units is not None:
        raise ValueError(f"a Tidepool export states the units of every record ('units'), so units {units} "
                         "cannot be given: drop --units")
    info.units_source = "each record's 'units'"
    local = LocalTimes(tz)
    for item in json_items(open_text, "Tidepool"):
        if item.error:
            yield Rejected(item.text, item.line, item.error)
            continue
        if isinstance(item.value, dict) and "exportError" in item.value:
            info.notes.append(f"the export says it is incomplete: {clip_raw(str(item.value['exportError']))}")
        outcome = parse_tidepool_record(item.value, subject, local)
        if isinstance(outcome, str):
            yield Rejected(item.text, item.line, outcome)
        else:
            yield Candidate(outcome, item.text, item.line)


def parse_tidepool_record(record: Any, subject: str, local: LocalTimes) -> GlucoseReading | str:
    """One record to a reading, or the reason it is rejected."""
    if not isinstance(record, dict):
        return "malformed entry: not a JSON object"
    kind = record.get("type")
    if kind != GLUCOSE_TYPE:
        if "exportError" in record:
            return "not a glucose reading (an export error: the export is incomplete)"
        return "not a glucose reading (no type)" if kind is None else f"not a glucose reading (type {clip_raw(str(kind))!r})"
    units = record.get("units")
    try:
        unit = normalize_units(units) if isinstance(units, str) else None
    except ValueError:
        unit = None
    if unit is None:
        return f"malformed entry: units {clip_raw(repr(units))} (expected 'mmol/L' or 'mg/dL')"
    value = nightscout_number(record.get("value"))
    if value is None:
        return "missing glucose (no value)" if record.get("value") in (None, "") else (
            f"non-numeric glucose {clip_raw(repr(record.get('value')))}")
    glucose = value * (TIDEPOOL_MG_DL_PER_MMOL_L if unit == "mmol/L" else 1.0)
    clipped = False
    bound = _out_of_range(record.get("annotations"))
    if bound is not None:
        glucose, clipped = bound, True
    reason = glucose_reason(glucose)
    if reason:
        return reason
    time = _record_time(record, subject, local)
    if isinstance(time, str):
        return time
    device = record.get("deviceId")
    source = f"{SOURCE}:{device}" if isinstance(device, str) and device.strip() else SOURCE
    try:
        return GlucoseReading(time=time, glucose_mg_dl=glucose, source=source, subject=subject, clipped=clipped)
    except ValueError as err:  # defensive: the checks above should make this unreachable
        return f"malformed entry: {err}"


def _out_of_range(annotations: Any) -> float | None:
    """The clipping limit (mg/dL) a ``bg/out-of-range`` annotation states, or None."""
    if isinstance(annotations, str):
        try:
            annotations = json.loads(annotations)
        except (json.JSONDecodeError, RecursionError):
            return None
    if not isinstance(annotations, list):
        return None
    for note in annotations:
        if isinstance(note, dict) and note.get("code") == OUT_OF_RANGE and note.get("value") in ("low", "high"):
            threshold = nightscout_number(note.get("threshold"))
            if threshold is not None:
                return threshold
            return SENSOR_LOW_MG_DL if note["value"] == "low" else SENSOR_HIGH_MG_DL
    return None


def _record_time(record: dict[str, Any], subject: str, local: LocalTimes) -> datetime | str:
    time_text = record.get("time")
    if isinstance(time_text, str) and time_text.strip():
        stamp = parse_timestamp(time_text)
        if isinstance(stamp, str):
            return stamp
        if stamp.tzinfo is None:  # Tidepool's time is UTC: a missing Z is still UTC
            stamp = stamp.replace(tzinfo=UTC)
        return local.to_utc(stamp, subject)
    device_time = record.get("deviceTime")
    if not (isinstance(device_time, str) and device_time.strip()):
        return "missing time (no time or deviceTime)"
    stamp = parse_timestamp(device_time)
    if isinstance(stamp, str):
        return stamp
    offset = nightscout_number(record.get("timezoneOffset"))
    if stamp.tzinfo is None and offset is not None and abs(offset) <= 24 * 60:
        return local.to_utc((stamp - timedelta(minutes=offset)).replace(tzinfo=UTC), subject)
    return local.to_utc(stamp, subject)


def looks_like_tidepool(items: list[Any]) -> bool | None:
    """True if these first records are a Tidepool export's, False if Nightscout entries', None if they cannot tell."""
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind in ("sgv", "mbg", "cal") or "sgv" in item or "dateString" in item:
            return False
        if kind in KNOWN_TYPES or "uploadId" in item or "exportError" in item:
            return True
    return None
