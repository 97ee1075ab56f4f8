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
mmol/L values are converted with 18.0182 mg/dL per mmol/L; a decimal comma
(``5,1``, in a ``;``- or tab-delimited export, or quoted) is read too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, tzinfo

from sensors.files.common import (
    LocalTimes,
    clip_raw,
    device_reading,
    glucose_cell,
    parse_timestamp,
    redact_field,
    resolve_tz,
    text_handle,
)
from sensors.files.delimited import CsvFormat, FileInfo, csv_records, expect_fields
from sensors.files.ordering import finish
from sensors.files.units import MG_DL, MMOL_L, mg_dl_per, normalize_units
from sensors.reading import SENSOR_HIGH_MG_DL, SENSOR_LOW_MG_DL, GlucoseReading, ReadResult

SOURCE = "clarity"
GLUCOSE_EVENT = "EGV"
_GLUCOSE_HEADER = re.compile(r"glucose value\s*\(\s*(mg/dl|mmol/l)\s*\)", re.IGNORECASE)
_CLIPPED = {"low": SENSOR_LOW_MG_DL, "high": SENSOR_HIGH_MG_DL}


@dataclass
class _Columns:
    """Positions of the columns the reader uses, and the glucose unit."""

    n: int
    time: int
    event: int
    glucose: int
    units: str
    device: int | None
    patient: int | None

    @property
    def mg_dl_per_unit(self) -> float:
        return mg_dl_per(self.units)


def _find(lowered: list[str], prefix: str) -> int | None:
    return next((i for i, name in enumerate(lowered) if name.startswith(prefix)), None)


class ClarityFormat(CsvFormat):
    name = "clarity"
    title = "Clarity CSV"
    needs = ("a Dexcom Clarity export's header has 'Timestamp (YYYY-MM-DDThh:mm:ss)', 'Event Type' and "
             "'Glucose Value (mg/dL)' or 'Glucose Value (mmol/L)'")

    def is_header(self, names: list[str]) -> bool:
        return all(_find(names, p) is not None for p in ("timestamp", "event type", "glucose value"))

    def columns(self, names: list[str], header_line: str, units: str | None) -> _Columns:
        lowered = [name.strip().lower() for name in names]
        time, event, glucose = _find(lowered, "timestamp"), _find(lowered, "event type"), _find(lowered, "glucose value")
        if time is None or event is None or glucose is None:
            raise ValueError(
                "Clarity CSV header needs 'Timestamp', 'Event Type' and 'Glucose Value' columns, "
                f"got {clip_raw(header_line)!r}; export again from Dexcom Clarity (Export, CSV) "
                "or pass the --format of the export it is"
            )
        unit = _GLUCOSE_HEADER.fullmatch(lowered[glucose])
        if unit is None:
            raise ValueError(
                f"Clarity CSV glucose column {names[glucose].strip()!r} has no known unit "
                "(expected 'Glucose Value (mg/dL)' or 'Glucose Value (mmol/L)')"
            )
        header_units = MG_DL if unit.group(1) == "mg/dl" else MMOL_L
        if units is not None and units != header_units:
            raise ValueError(
                f"Clarity CSV header says {header_units} ({names[glucose].strip()!r}) but units {units} were "
                "given: drop --units (the header decides)"
            )
        return _Columns(len(names), time, event, glucose, header_units, _find(lowered, "source device id"),
                        _find(lowered, "patient info"))

    def prepare(self, columns: _Columns, sample: list[list[str]], rescan: Callable[[], Iterable[list[str]]],
                info: FileInfo) -> None:
        info.units, info.units_source = columns.units, "from the header"

    def raw(self, line: str, fields: list[str], columns: _Columns, delimiter: str) -> str:
        """The line, with a non-empty Patient Info field (a name, a birth date) replaced."""
        return redact_field(line, fields, columns.patient, delimiter)

    def row(self, fields: list[str], columns: _Columns, subject: str, local: LocalTimes) -> GlucoseReading | str:
        bad = expect_fields(fields, columns.n)
        if bad:
            return bad
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
        cell = glucose_cell(fields[columns.glucose], columns.mg_dl_per_unit, _CLIPPED)
        if isinstance(cell, str):
            return cell
        device = fields[columns.device] if columns.device is not None else ""
        return device_reading(time, cell, device, SOURCE, subject)


CLARITY = ClarityFormat()


def parse_clarity_csv(text: str, tz: tzinfo | str = UTC, subject: str = "", *, units: str | None = None,
                      delimiter: str | None = None, info: FileInfo | None = None) -> ReadResult:
    """Readings and rejections from the text of a Dexcom Clarity CSV export.

    Parameters
    ----------
    text: the whole file.
    tz: zone of the export's local timestamps (tzinfo or IANA name), default UTC.
    subject: subject of every reading (the export's patient name is not used).
    units: must agree with the header's unit if given.
    delimiter: ``","``, ``";"`` or ``"\\t"``; default: the one that splits the header into Clarity's columns.
    info: filled with the delimiter and units used.

    Raises
    ------
    ValueError: the header lacks the timestamp, event type or glucose column, its
        glucose unit is neither mg/dL nor mmol/L (or disagrees with ``units``), or ``tz``
        is unknown. Bad rows never raise: they are returned as rejections.
    """
    info = info if info is not None else FileInfo(CLARITY.name)
    records = csv_records(CLARITY, text_handle(text), tz=resolve_tz(tz), subject=subject,
                          units=normalize_units(units), delimiter=delimiter, info=info)
    return finish(records)
