"""Helpers shared by the CGM file readers: decoding, CSV lines, numbers, times.

Private to ``sensors``. Nothing here raises on bad data: parsers return
``None`` or a reason string, and the readers turn those into
:class:`~sensors.reading.Rejected` records. De-duplication and ordering are
:mod:`sensors.files.ordering`'s.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, tzinfo
from collections.abc import Mapping
from typing import NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sensors.reading import GlucoseReading, glucose_range_reason

RAW_MAX_CHARS = 200

# Readings before the first commercial CGMs or after 2100 are a clock or unit
# error (e.g. epoch seconds read as milliseconds), not data.
EARLIEST_TIME = datetime(1990, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(2100, 1, 1, tzinfo=UTC)

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")
# A date and at least hours:minutes; fromisoformat does the rest.
_ISO_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


def decode(data: bytes) -> str:
    """Bytes of a text file to str: UTF-16 if it has a UTF-16 BOM, else UTF-8 (BOM dropped).

    Undecodable bytes become U+FFFD, so the affected rows are rejected, not the file.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", errors="replace")
    return data.decode("utf-8-sig", errors="replace")


def text_handle(text: str) -> io.StringIO:
    """The text as a file whose lines split on ``\\n`` only (on ``\\r`` if it has no ``\\n``: classic
    Mac line endings), BOM dropped: the same lines as :func:`split_lines`, one at a time."""
    if text.startswith("\ufeff"):
        text = text[1:]
    return io.StringIO(text, newline="\r" if "\n" not in text and "\r" in text else "\n")


def split_lines(text: str) -> list[str]:
    """Lines split on ``\\n`` only (a trailing ``\\r`` removed), so line numbers match an editor's.

    A text with ``\\r`` but no ``\\n`` (classic Mac line endings) is split on ``\\r``.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\n" not in text and "\r" in text:  # classic Mac line endings
        return text.split("\r")
    return [line[:-1] if line.endswith("\r") else line for line in text.split("\n")]


def csv_fields(line: str, delimiter: str = ",") -> list[str] | None:
    """The fields of one CSV line, or ``None`` if the csv module cannot parse it.

    A line without quotes, carriage returns or NUL bytes is split directly (what
    the csv module would return, ten times faster).
    """
    if '"' not in line and "\r" not in line and "\x00" not in line:
        return line.split(delimiter)
    try:
        rows = list(csv.reader([line], delimiter=delimiter))
    except csv.Error:
        return None
    return rows[0] if len(rows) == 1 else None


def clip_raw(raw: str) -> str:
    return raw if len(raw) <= RAW_MAX_CHARS else raw[: RAW_MAX_CHARS - 1] + "\u2026"


def parse_number(text: str) -> float | None:
    """A plain decimal number (``153``, ``5.6``, ``1e2``), or ``None``: no ``nan``, ``inf``, ``1_0``."""
    s = text.strip()
    if not _NUMBER.fullmatch(s):
        return None
    try:
        value = float(s)
    except (ValueError, OverflowError):
        return None
    return value


def parse_decimal(text: str) -> float | None:
    """A number as spreadsheets in many locales write it: :func:`parse_number`, or one decimal
    comma (``7,4``); ``None`` otherwise. Thousands separators are not numbers here (no glucose
    value has four digits)."""
    value = parse_number(text)
    if value is not None:
        return value
    s = text.strip()
    if _DECIMAL_COMMA.fullmatch(s):
        return float(s.replace(",", "."))
    return None


def glucose_reason(glucose_mg_dl: float) -> str | None:
    """Why a glucose value is not plausible, or ``None`` if it is (the one range of
    :data:`~sensors.reading.PLAUSIBLE_MIN_MG_DL`, shared with the live validator)."""
    return glucose_range_reason(glucose_mg_dl)


def resolve_tz(tz: tzinfo | str) -> tzinfo:
    """A tzinfo from a tzinfo or an IANA name (``"Europe/Paris"``, ``"UTC"``); ValueError if unknown."""
    if isinstance(tz, tzinfo):
        return tz
    if isinstance(tz, str):
        if tz.upper() == "UTC":
            return UTC
        try:
            return ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {tz!r}: use an IANA name such as 'Europe/Paris'") from None
    raise ValueError(f"tz must be a tzinfo or an IANA time zone name, got {tz!r}")


def parse_timestamp(text: str) -> datetime | str:
    """An ISO 8601 date and time, naive or with an offset; or the reason it is not one."""
    s = text.strip()
    if not s:
        return "missing time"
    if not _ISO_DATETIME.match(s):
        return f"unparseable time {clip_raw(s)!r}"
    try:
        return datetime.fromisoformat(s)
    except ValueError:
        return f"unparseable time {clip_raw(s)!r}"


def check_time(t: datetime) -> str | None:
    if not (EARLIEST_TIME <= t < LATEST_TIME):
        return f"implausible time {t.isoformat()} (outside 1990..2100)"
    return None


class LocalTimes:
    """Turns the naive local times of one file into UTC, in a given zone.

    A time with an explicit offset is taken as is. A local time that does not
    exist (skipped by a DST change) is refused. A local time that occurs twice
    (the hour repeated when DST ends) is taken as the first occurrence until the
    times of that subject go backwards inside the repeated hour, then as the
    second: this assumes the file is in time order per subject, as CGM exports are.
    """

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        self._last_ambiguous: dict[str, datetime] = {}
        self._second_pass: set[str] = set()

    def to_utc(self, t: datetime, subject: str) -> datetime | str:
        try:
            if self.tz is UTC and t.tzinfo is None:
                utc = t.replace(tzinfo=UTC)
            elif t.tzinfo is not None:
                utc = t.astimezone(UTC)
            else:
                utc = self._localize(t, subject)
                if isinstance(utc, str):
                    return utc
        except (OverflowError, ValueError):
            return f"implausible time {t.isoformat()}"
        return check_time(utc) or utc

    def _localize(self, naive: datetime, subject: str) -> datetime | str:
        first = naive.replace(tzinfo=self.tz, fold=0)
        second = naive.replace(tzinfo=self.tz, fold=1)
        off0, off1 = first.utcoffset(), second.utcoffset()
        if off0 == off1:
            self._last_ambiguous.pop(subject, None)
            self._second_pass.discard(subject)
            return first.astimezone(UTC)
        # Offsets differ: the time is either repeated (ambiguous) or skipped.
        roundtrip = first.astimezone(UTC).astimezone(self.tz).replace(tzinfo=None)
        if roundtrip != naive:
            return f"nonexistent local time {naive.isoformat()} in {self.tz} (skipped by a DST change)"
        last = self._last_ambiguous.get(subject)
        if last is not None and naive < last:
            self._second_pass.add(subject)
        self._last_ambiguous[subject] = naive
        chosen = second if subject in self._second_pass else first
        return chosen.astimezone(UTC)


class Candidate(NamedTuple):
    """A parsed reading and where it came from, before de-duplication."""

    reading: GlucoseReading
    raw: str
    line: int | None


def redact_field(line: str, fields: list[str], index: int | None, delimiter: str) -> str:
    """``line`` with its field ``index`` replaced by ``<redacted>`` when that field holds anything (a name,
    a birth date, notes): what a rejection may keep of a row."""
    if index is None or index >= len(fields) or not fields[index].strip():
        return line
    fields = list(fields)
    fields[index] = "<redacted>"
    out = io.StringIO()
    csv.writer(out, delimiter=delimiter, lineterminator="").writerow(fields)
    return out.getvalue()


def glucose_cell(value_text: str, mg_dl_per_unit: float, clipped_words: Mapping[str, float]) -> tuple[float, bool] | str:
    """A glucose cell as (mg/dL, clipped), or the reason it is none: a word of ``clipped_words`` (``Low``,
    ``HI``: the sensor's limit, clipped), a number in the file's unit (decimal comma allowed), else a reason."""
    text = value_text.strip()
    if text.lower() in clipped_words:
        glucose, clipped = clipped_words[text.lower()], True
    elif not text:
        return "missing glucose"
    else:
        value = parse_decimal(text)
        if value is None:
            return f"non-numeric glucose {clip_raw(text)!r}"
        glucose, clipped = value * mg_dl_per_unit, False
    reason = glucose_reason(glucose)
    return reason if reason else (glucose, clipped)


def device_reading(time: datetime, cell: tuple[float, bool], device: str, source: str,
                   subject: str) -> GlucoseReading | str:
    """The reading of a row whose time and glucose cell are good, its source ``source:device``."""
    glucose, clipped = cell
    device = device.strip()
    try:
        return GlucoseReading(time=time, glucose_mg_dl=glucose, source=f"{source}:{device}" if device else source,
                              subject=subject, clipped=clipped)
    except ValueError as err:  # defensive: the checks before should make this unreachable
        return f"malformed row: {err}"

