"""iglu-style CSV: columns ``id,time,gl``, several subjects in one file.

The layout of the iglu CGM analysis package (Broll et al.) and of R's
``write.csv``: an optional leading unnamed index column (header ``""``),
``id`` (subject), ``time`` (local time, no zone: ``2015-06-06 16:50:27``),
``gl`` (mg/dL; ``NA`` when missing)::

    "","id","time","gl"
    "1","Subject 1",2015-06-06 16:50:27,153

Times without an offset are local times in ``tz``; a time with an offset
(``...+02:00``, ``...Z``) is taken as written.
"""

from __future__ import annotations

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
from sensors.reading import GlucoseReading, ReadResult, Rejected

SOURCE = "iglu"
MISSING_MARKERS = frozenset({"", "na", "nan", "null"})


def parse_iglu_csv(text: str, tz: tzinfo | str = UTC, subject: str = "") -> ReadResult:
    """Readings and rejections from the text of an iglu CSV file.

    Parameters
    ----------
    text: the whole file.
    tz: zone of the local times in the file (tzinfo or IANA name), default UTC.
    subject: subject of every reading when the file has no ``id`` column.

    Raises
    ------
    ValueError: the header lacks a ``time`` or a ``gl`` column, or ``tz`` is unknown.
        Bad rows never raise: they are returned as rejections.
    """
    zone = resolve_tz(tz)
    lines = split_lines(text)
    header_index = next((i for i, line in enumerate(lines) if line.strip()), None)
    if header_index is None:
        raise ValueError("iglu CSV is empty")
    header = csv_fields(lines[header_index]) or []
    names = [name.strip().lower() for name in header]
    for required in ("time", "gl"):
        if required not in names:
            raise ValueError(
                f"iglu CSV header needs columns 'time' and 'gl' (and usually 'id'), "
                f"got {clip_raw(lines[header_index])!r}"
            )
    i_time, i_gl = names.index("time"), names.index("gl")
    i_id = names.index("id") if "id" in names else None

    local = LocalTimes(zone)
    candidates: list[Candidate] = []
    rejected: list[Rejected] = []
    for index in range(header_index + 1, len(lines)):
        line = lines[index]
        if not line.strip():
            continue
        line_no = index + 1
        outcome = _parse_row(line, len(names), i_id, i_time, i_gl, subject, local)
        if isinstance(outcome, str):
            rejected.append(Rejected(clip_raw(line), line_no, outcome))
        else:
            candidates.append(Candidate(outcome, clip_raw(line), line_no))
    return finish(candidates, rejected)


def _parse_row(
    line: str,
    n_fields: int,
    i_id: int | None,
    i_time: int,
    i_gl: int,
    default_subject: str,
    local: LocalTimes,
) -> GlucoseReading | str:
    """One data row to a reading, or the reason it is rejected."""
    fields = csv_fields(line)
    if fields is None:
        return "malformed row: not parseable as CSV"
    if len(fields) != n_fields:
        return f"malformed row: expected {n_fields} fields, got {len(fields)}"
    subject = fields[i_id].strip() if i_id is not None else default_subject
    stamp = parse_timestamp(fields[i_time])
    if isinstance(stamp, str):
        return stamp
    time = local.to_utc(stamp, subject)
    if isinstance(time, str):
        return time
    gl_text = fields[i_gl].strip()
    if gl_text.lower() in MISSING_MARKERS:
        return "missing glucose"
    glucose = parse_number(gl_text)
    if glucose is None:
        return f"non-numeric glucose {clip_raw(gl_text)!r}"
    reason = glucose_reason(glucose)
    if reason:
        return reason
    try:
        return GlucoseReading(time=time, glucose_mg_dl=glucose, source=SOURCE, subject=subject)
    except ValueError as err:  # defensive: the checks above should make this unreachable
        return f"malformed row: {err}"
