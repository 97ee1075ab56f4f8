"""iglu-style CSV: columns ``id,time,gl``, several subjects in one file.

The layout of the iglu CGM analysis package (Broll et al.) and of R's
``write.csv``: an optional leading unnamed index column (header ``""``),
``id`` (subject), ``time`` (local time, no zone: ``2015-06-06 16:50:27``),
``gl`` (glucose; ``NA`` when missing)::

    "","id","time","gl"
    "1","Subject 1",2015-06-06 16:50:27,153

iglu's ``gl`` is mg/dL. A file of the same shape in mmol/L (a spreadsheet's
export, ``7,4`` with a decimal comma and ``;`` or tab delimiters) is read with
``units="mmol/L"``, or when its values say so (:mod:`sensors.files.units`).

Times without an offset are local times in ``tz``; a time with an offset
(``...+02:00``, ``...Z``) is taken as written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, tzinfo

from sensors.files.common import (
    LocalTimes,
    clip_raw,
    glucose_reason,
    parse_decimal,
    parse_timestamp,
    resolve_tz,
    text_handle,
)
from sensors.files.delimited import CsvFormat, FileInfo, csv_records, expect_fields
from sensors.files.ordering import finish
from sensors.files.units import MG_DL, mg_dl_per, normalize_units, units_from_values
from sensors.reading import GlucoseReading, ReadResult

SOURCE = "iglu"
MISSING_MARKERS = frozenset({"", "na", "nan", "null"})


@dataclass
class _Columns:
    n: int
    time: int
    gl: int
    id: int | None
    units: str | None = None
    mg_dl_per_unit: float = 1.0


class IgluFormat(CsvFormat):
    name = "iglu"
    title = "iglu CSV"
    needs = "name the columns time and gl (and id for several subjects), mg/dL or --units mmol/L"

    def is_header(self, names: list[str]) -> bool:
        return "gl" in names and "time" in names

    def columns(self, names: list[str], header_line: str, units: str | None) -> _Columns:
        lowered = [name.strip().lower() for name in names]
        if "time" not in lowered or "gl" not in lowered:
            raise ValueError(
                f"iglu CSV header needs columns 'time' and 'gl' (and usually 'id'), got {clip_raw(header_line)!r} "
                f"({len(names)} column(s): {', '.join(repr(n) for n in names[:6])}{', ...' if len(names) > 6 else ''}); "
                "rename the columns to id,time,gl (gl in mg/dL, or pass --units mmol/L), or pass the --format "
                "of the export it is"
            )
        return _Columns(len(names), lowered.index("time"), lowered.index("gl"),
                        lowered.index("id") if "id" in lowered else None, units)

    def prepare(self, columns: _Columns, sample: list[list[str]], rescan: Callable[[], Iterable[list[str]]],
                info: FileInfo) -> None:
        if columns.units is not None:
            info.units, info.units_source = columns.units, "as given"
        else:
            values = [v for f in sample if len(f) == columns.n and (v := parse_decimal(f[columns.gl])) is not None]
            info.units, info.units_source = units_from_values(values, MG_DL)
        columns.units = info.units
        columns.mg_dl_per_unit = mg_dl_per(info.units)

    def row(self, fields: list[str], columns: _Columns, subject: str, local: LocalTimes) -> GlucoseReading | str:
        bad = expect_fields(fields, columns.n)
        if bad:
            return bad
        who = fields[columns.id].strip() if columns.id is not None else subject
        stamp = parse_timestamp(fields[columns.time])
        if isinstance(stamp, str):
            return stamp
        time = local.to_utc(stamp, who)
        if isinstance(time, str):
            return time
        gl_text = fields[columns.gl].strip()
        if gl_text.lower() in MISSING_MARKERS:
            return "missing glucose"
        value = parse_decimal(gl_text)
        if value is None:
            return f"non-numeric glucose {clip_raw(gl_text)!r}"
        glucose = value * columns.mg_dl_per_unit
        reason = glucose_reason(glucose)
        if reason:
            return reason
        try:
            return GlucoseReading(time=time, glucose_mg_dl=glucose, source=SOURCE, subject=who)
        except ValueError as err:  # defensive: the checks above should make this unreachable
            return f"malformed row: {err}"


IGLU = IgluFormat()


def parse_iglu_csv(text: str, tz: tzinfo | str = UTC, subject: str = "", *, units: str | None = None,
                   delimiter: str | None = None, info: FileInfo | None = None) -> ReadResult:
    """Readings and rejections from the text of an iglu CSV file.

    Parameters
    ----------
    text: the whole file.
    tz: zone of the local times in the file (tzinfo or IANA name), default UTC.
    subject: subject of every reading when the file has no ``id`` column.
    units: ``"mg/dL"`` or ``"mmol/L"``; default: iglu's mg/dL unless the values are clearly mmol/L.
    delimiter: ``","``, ``";"`` or ``"\\t"``; default: the one that splits the header into iglu's columns.
    info: filled with the delimiter and units used.

    Raises
    ------
    ValueError: the header lacks a ``time`` or a ``gl`` column, or ``tz`` or ``units`` is unknown.
        Bad rows never raise: they are returned as rejections.
    """
    info = info if info is not None else FileInfo(IGLU.name)
    records = csv_records(IGLU, text_handle(text), tz=resolve_tz(tz), subject=subject,
                          units=normalize_units(units), delimiter=delimiter, info=info)
    return finish(records)

