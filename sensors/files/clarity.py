"""Dexcom Clarity CSV export.

Header (mg/dL export; a mmol/L export has ``Glucose Value (mmol/L)``)::

    Index,Timestamp (YYYY-MM-DDThh:mm:ss),Event Type,Event Subtype,Patient Info,
    Device Info,Source Device ID,Glucose Value (mg/dL),Insulin Value (u),
    Carb Value (grams),Duration (hh:mm:ss),Glucose Rate of Change (mg/dL/min),
    Transmitter Time (Long Integer),Transmitter ID

then rows without timestamps (``FirstName``, ``LastName``, ``Device``,
``Alert``...), then events. Only ``EGV`` (estimated glucose value) rows are
readings; every other row is rejected as ``"not a glucose reading"``, with the
``Patient Info`` field redacted from the recorded raw line.

Timestamps are the receiver's local time without a zone: they are read in
``tz``. A glucose value ``Low`` or ``High`` (outside the sensor's 40..400 mg/dL
range) becomes 40 or 400 mg/dL with ``clipped=True``, in either unit.
mmol/L values are converted with 18.0182 mg/dL per mmol/L.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, tzinfo

from sensors.files.common import (
    Candidate,
    LocalTimes,
    clip_raw,
    csv_fields,
    finish,
    glucose_reason,
    parse_number,
    parse_timestamp,
    resolve_tz,
    split_lines,
)
from sensors.reading import (
    MG_DL_PER_MMOL_L,
    SENSOR_HIGH_MG_DL,
    SENSOR_LOW_MG_DL,
    GlucoseReading,
    ReadResult,
    Rejected,
)

SOURCE = "clarity"
GLUCOSE_EVENT = "EGV"
_GLUCOSE_HEADER = re.compile(r"glucose value\s*\(\s*(mg/dl|mmol/l)\s*\)", re.IGNORECASE)
_CLIPPED = {"low": SENSOR_LOW_MG_DL, "high": SENSOR_HIGH_MG_DL}


def parse_clarity_csv(text: str, tz: tzinfo | str = UTC, subject: str = "") -> ReadResult:
    """Readings and rejections from the text of a Dexcom Clarity CSV export.

    Parameters
    ----------
    text: the whole file.
    tz: zone of the export's local timestamps (tzinfo or IANA name), default UTC.
    subject: subject of every reading (the export's patient name is not used).

    Raises
    ------
    ValueError: the header lacks the timestamp, event type or glucose column, its
        glucose unit is neither mg/dL nor mmol/L, or ``tz`` is unknown.
        Bad rows never raise: they are returned as rejections.
    """
    zone = resolve_tz(tz)
    lines = split_lines(text)
    header_index = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_index is None:
        raise ValueError("Clarity CSV is empty")
    columns = _Columns.from_header(csv_fields(lines[header_index]) or [], lines[header_index])

    local = LocalTimes(zone)
    candidates: list[Candidate] = []
    rejected: list[Rejected] = []
    for index in range(header_index + 1, len(lines)):
        line = lines[index]
        if not line.strip():
            continue
        fields = csv_fields(line)
        raw = clip_raw(line if fields is None else columns.redacted(line, fields))
        outcome = _parse_row(fields, columns, subject, local)
        if isinstance(outcome, str):
            rejected.append(Rejected(raw, index + 1, outcome))
        else:
            candidates.append(Candidate(outcome, raw, index + 1))
    return finish(candidates, rejected)


class _Columns:
    """Positions of the columns the reader uses, and the glucose unit."""

    def __init__(self, n: int, time: int, event: int, glucose: int, mg_dl_per_unit: float,
                 device: int | None, patient: int | None) -> None:
        self.n, self.time, self.event, self.glucose = n, time, event, glucose
        self.mg_dl_per_unit = mg_dl_per_unit
        self.device, self.patient = device, patient

    @classmethod
    def from_header(cls, names: list[str], header_line: str) -> _Columns:
        lowered = [name.strip().lower() for name in names]

        def find(prefix: str) -> int | None:
            return next((i for i, name in enumerate(lowered) if name.startswith(prefix)), None)

        time, event, glucose = find("timestamp"), find("event type"), find("glucose value")
        if time is None or event is None or glucose is None:
            raise ValueError(
                "Clarity CSV header needs 'Timestamp', 'Event Type' and 'Glucose Value' columns, "
                f"got {clip_raw(header_line)!r}"
            )
        unit = _GLUCOSE_HEADER.fullmatch(lowered[glucose])
        if unit is None:
            raise ValueError(
                f"Clarity CSV glucose column {names[glucose].strip()!r} has no known unit "
                "(expected 'Glucose Value (mg/dL)' or 'Glucose Value (mmol/L)')"
            )
        factor = 1.0 if unit.group(1) == "mg/dl" else MG_DL_PER_MMOL_L
        return cls(len(names), time, event, glucose, factor, find("source device id"), find("patient info"))

    def redacted(self, line: str, fields: list[str]) -> str:
        """The line, with a non-empty Patient Info field (a name, a birth date) replaced."""
        if self.patient is None or self.patient >= len(fields) or not fields[self.patient].strip():
            return line
        fields = list(fields)
        fields[self.patient] = "<redacted>"
        out = io.StringIO()
        csv.writer(out, lineterminator="").writerow(fields)
        return out.getvalue()


def _parse_row(
    fields: list[str] | None, columns: _Columns, subject: str, local: LocalTimes
) -> GlucoseReading | str:
    """One row to a reading, or the reason it is rejected."""
    if fields is None:
        return "malformed row: not parseable as CSV"
    if len(fields) != columns.n:
        return f"malformed row: expected {columns.n} fields, got {len(fields)}"
    event = fields[columns.event].strip()
    if event.upper() != GLUCOSE_EVENT:
        shown = f"event type {clip_raw(event)!r}" if event else "no event type"
        return f"not a glucose reading ({shown})"
    stamp = parse_timestamp(fields[columns.time])
    if isinstance(stamp, str):
        return stamp
    time = local.to_utc(stamp, subject)
    if isinstance(time, str):
        return time
    value_text = fields[columns.glucose].strip()
    clipped = value_text.lower() in _CLIPPED
    if clipped:
        glucose = _CLIPPED[value_text.lower()]
    elif not value_text:
        return "missing glucose"
    else:
        value = parse_number(value_text)
        if value is None:
            return f"non-numeric glucose {clip_raw(value_text)!r}"
        glucose = value * columns.mg_dl_per_unit
    reason = glucose_reason(glucose)
    if reason:
        return reason
    device = fields[columns.device].strip() if columns.device is not None else ""
    source = f"{SOURCE}:{device}" if device else SOURCE
    try:
        return GlucoseReading(time=time, glucose_mg_dl=glucose, source=source, subject=subject, clipped=clipped)
    except ValueError as err:  # defensive: the checks above should make this unreachable
        return f"malformed row: {err}"
