"""Nightscout ``entries`` JSON, as served by ``/api/v1/entries.json``.

An array of objects such as::

    {"_id": "...", "type": "sgv", "sgv": 123, "date": 1623000000000,
     "dateString": "2021-06-06T17:20:00.000Z", "direction": "Flat",
     "device": "xDrip-DexcomG6", "noise": 1}

Only ``type == "sgv"`` entries are readings (``mbg`` meter values and ``cal``
calibrations are rejected as ``"not a glucose reading"``). The time is ``date``
(epoch milliseconds); ``dateString`` is used only when ``date`` is missing or
unusable, and a ``dateString`` without an offset is a local time in ``tz``.

``sgv`` is mg/dL. Values below 39 are Dexcom sensor error codes, not glucose,
and are rejected; 39 is Dexcom's encoding of ``LOW`` and becomes 40 mg/dL with
``clipped=True``, like Clarity's ``Low``. ``direction`` becomes the reading's
``trend``, ``noise`` its ``noise`` and ``device`` is appended to its ``source``.

A file with one JSON object per line (``mongoexport`` output) is read too; its
rejections then carry line numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any, TextIO

from sensors.files.common import (
    Candidate,
    LocalTimes,
    check_time,
    clip_raw,
    glucose_reason,
    parse_number,
    parse_timestamp,
    resolve_tz,
    text_handle,
)
from sensors.files.delimited import FileInfo
from sensors.files.jsonstream import json_items
from sensors.files.ordering import finish
from sensors.files.units import MG_DL, normalize_units
from sensors.reading import SENSOR_LOW_MG_DL, GlucoseReading, ReadResult, Rejected

SOURCE = "nightscout"
GLUCOSE_TYPE = "sgv"
DEXCOM_LOW_CODE = 39.0
"""sgv 39 means the sensor read LOW (below 40 mg/dL); below 39, sensor error codes."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_nightscout_json(text: str, tz: tzinfo | str = UTC, subject: str = "", *, units: str | None = None,
                          info: FileInfo | None = None) -> ReadResult:
    """Readings and rejections from Nightscout entries JSON text.

    Parameters
    ----------
    text: a JSON array of entries, one entry object, or one entry object per line.
    tz: zone of a ``dateString`` that has no offset (tzinfo or IANA name), default UTC.
    subject: subject of every reading.
    units: ``sgv`` is mg/dL by Nightscout's definition: only ``"mg/dL"`` (or None) is accepted.
    info: filled with the units.

    Raises
    ------
    ValueError: the text is not JSON (nor JSON lines), its top level is neither an
        array nor an object, ``units`` is not mg/dL, or ``tz`` is unknown. Bad entries
        never raise: they are returned as rejections.
    """
    info = info if info is not None else FileInfo("nightscout")
    return finish(nightscout_records(lambda: text_handle(text), tz=resolve_tz(tz), subject=subject,
                                     units=normalize_units(units), info=info))


def nightscout_records(open_text: Callable[[], TextIO], *, tz: tzinfo, subject: str, units: str | None,
                       info: FileInfo) -> Iterator[Candidate | Rejected]:
    """Every entry of a Nightscout entries text, as a candidate reading or a rejection, in file order."""
    if units is not None and units != MG_DL:
        raise ValueError(f"Nightscout sgv is always mg/dL (the API's definition), but units {units} were given: "
                         "drop --units")
    info.units, info.units_source = MG_DL, "Nightscout sgv is mg/dL"
    local = LocalTimes(tz)
    for item in json_items(open_text, "Nightscout"):
        if item.error:
            yield Rejected(item.text, item.line, item.error)
            continue
        outcome = _parse_entry(item.value, subject, local)
        if isinstance(outcome, str):
            yield Rejected(item.text, item.line, outcome)
        else:
            yield Candidate(outcome, item.text, item.line)


def _raw(entry: Any) -> str:
    try:
        text = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        text = repr(entry)
    return clip_raw(text)


def _parse_entry(entry: Any, subject: str, local: LocalTimes) -> GlucoseReading | str:
    """One entry to a reading, or the reason it is rejected."""
    if not isinstance(entry, dict):
        return "malformed entry: not a JSON object"
    kind = entry.get("type")
    if kind is None and "sgv" not in entry:
        return "not a glucose reading (no type and no sgv)"
    if kind is not None and kind != GLUCOSE_TYPE:
        return f"not a glucose reading (type {clip_raw(str(kind))!r})"

    sgv = _number(entry.get("sgv"))
    if sgv is None:
        return "missing glucose (no sgv)" if entry.get("sgv") in (None, "") else (
            f"non-numeric glucose {clip_raw(repr(entry.get('sgv')))}"
        )
    clipped = False
    if sgv < DEXCOM_LOW_CODE:
        return f"sensor error code {sgv:g} (sgv below 39 is not glucose)"
    if sgv == DEXCOM_LOW_CODE:
        sgv, clipped = SENSOR_LOW_MG_DL, True
    reason = glucose_reason(sgv)
    if reason:
        return reason

    time = _entry_time(entry, subject, local)
    if isinstance(time, str):
        return time

    device = entry.get("device")
    source = f"{SOURCE}:{device}" if isinstance(device, str) and device.strip() else SOURCE
    direction = entry.get("direction")
    trend = direction if isinstance(direction, str) and direction.strip() else None
    noise = _number(entry.get("noise"))
    noise_level = int(noise) if noise is not None and noise >= 0 and noise == int(noise) else None
    try:
        return GlucoseReading(
            time=time, glucose_mg_dl=sgv, source=source, subject=subject,
            trend=trend, noise=noise_level, clipped=clipped,
        )
    except ValueError as err:  # defensive: the checks above should make this unreachable
        return f"malformed entry: {err}"


def _entry_time(entry: dict[str, Any], subject: str, local: LocalTimes) -> datetime | str:
    """``date`` (epoch ms) if usable, else ``dateString``, else the reason neither is."""
    date_reason = "missing time"
    if "date" in entry and entry["date"] not in (None, ""):
        ms = _number(entry["date"])
        if ms is None:
            date_reason = f"unparseable time (date {clip_raw(repr(entry['date']))})"
        else:
            try:
                time = _EPOCH + timedelta(milliseconds=ms)
            except OverflowError:
                date_reason = f"implausible time (date {ms:g} ms)"
            else:
                date_reason = check_time(time) or ""
                if not date_reason:
                    return time
    date_string = entry.get("dateString")
    if isinstance(date_string, str) and date_string.strip():
        stamp = parse_timestamp(date_string)
        if isinstance(stamp, str):
            return stamp if date_reason == "missing time" else f"{date_reason}; dateString: {stamp}"
        return local.to_utc(stamp, subject)
    return date_reason


def _number(value: Any) -> float | None:
    """A finite number from a JSON number or numeric string; None otherwise (bool included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an int too large for a float
            return None
    elif isinstance(value, str):
        parsed = parse_number(value)
        if parsed is None:
            return None
        number = parsed
    else:
        return None
    return number if math.isfinite(number) else None


# --- single entries, for live sources (MQTT) ------------------------------------------


def parse_nightscout_entry(entry: Any, subject: str = "", tz: tzinfo | str = UTC) -> GlucoseReading | Rejected:
    """One Nightscout entry object (already decoded from JSON) to a reading, or the reason it is not one.

    The same rules as :func:`parse_nightscout_json` for one entry (no de-duplication:
    a live source leaves that to :mod:`sensors.validation`). Never raises on a bad
    entry; raises ValueError only for an unknown ``tz``.
    """
    local = LocalTimes(resolve_tz(tz))
    try:
        outcome = _parse_entry(entry, subject, local)
    except RecursionError:  # a pathologically nested value inside the entry
        outcome = "malformed entry: nested too deeply"
    if isinstance(outcome, str):
        return Rejected(_raw(entry), None, outcome)
    return outcome


def nightscout_time(date: Any, date_string: Any, tz: tzinfo | str = UTC) -> datetime | str:
    """A time from a Nightscout ``date`` (epoch ms) or, failing that, an ISO ``dateString``
    (or a treatment's ``created_at``); otherwise the reason neither is usable.

    A string without an offset is a local time in ``tz``.
    """
    entry = {"date": date, "dateString": date_string}
    return _entry_time(entry, "", LocalTimes(resolve_tz(tz)))


def nightscout_number(value: Any) -> float | None:
    """A finite number from a JSON number or numeric string; None otherwise (bool included)."""
    return _number(value)


def raw_json(value: Any) -> str:
    """Compact JSON of a decoded value for :attr:`Rejected.raw`, clipped to 200 characters."""
    return _raw(value)
