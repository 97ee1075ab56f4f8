"""The CSV side of every CSV format: delimiter, header, a look-ahead sample, rows, streamed.

A format (iglu, Clarity, LibreView) is a :class:`CsvFormat`: how to recognize
its column header, the columns it needs, and how one row becomes a reading.
:func:`csv_records` does the rest for all of them, one line at a time:

- the delimiter is ``,``, ``;`` or tab, whichever makes the header one the
  format recognizes (or the one given);
- the header is the first non-blank line, or for a format with a preamble
  (LibreView's title line) one of its first :attr:`CsvFormat.preamble_lines` + 1;
- the first :data:`SAMPLE_ROWS` rows are read ahead so the format can settle
  what the header does not say (units from the values, the date order);
- every later non-blank line is a reading or a :class:`~sensors.reading.Rejected`
  with its line number and a reason; nothing is held but the look-ahead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from itertools import chain, islice
from typing import Any, TextIO

from sensors.files.common import Candidate, LocalTimes, clip_raw, csv_fields
from sensors.reading import GlucoseReading, Rejected

DELIMITERS = (",", ";", "\t")
SAMPLE_ROWS = 500


def delimiter_name(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else repr(delimiter)


@dataclass
class FileInfo:
    """What a reader found out about a file (or was told), for the user to check.

    Attributes
    ----------
    format: the format's name (:data:`sensors.files.read.FORMATS`).
    delimiter: the CSV delimiter (``None`` for JSON).
    units: ``"mg/dL"`` or ``"mmol/L"`` for a CSV file; ``None`` for JSON, whose records state theirs.
    units_source: why those units (the header, ``--units``, the values).
    date_order: ``"day-first"``, ``"month-first"`` or ``"year-first"`` (LibreView), else ``None``.
    notes: anything else worth saying (an assumed date order, an export that says it is incomplete).
    """

    format: str
    delimiter: str | None = None
    units: str | None = None
    units_source: str = ""
    date_order: str | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line: ``units mmol/L (from the header), ';'-delimited, day-first dates``."""
        parts = []
        if self.units:
            parts.append(f"units {self.units} ({self.units_source})" if self.units_source else f"units {self.units}")
        if self.delimiter is not None:
            parts.append(f"{delimiter_name(self.delimiter)}-delimited")
        if self.date_order:
            parts.append(f"{self.date_order} dates")
        return ", ".join(parts)


class CsvFormat:
    """A CSV export format; subclasses say how its header and rows read.

    Attributes
    ----------
    name: the format's name, as ``format=`` takes it.
    title: how messages name it (``"iglu CSV"``).
    preamble_lines: non-blank lines that may come before the column header.
    needs: what its header needs, for messages.
    """

    name = ""
    title = ""
    preamble_lines = 0
    needs = ""

    def is_header(self, names: list[str]) -> bool:
        """Whether these column names are this format's header."""
        raise NotImplementedError

    def columns(self, names: list[str], header_line: str, units: str | None) -> Any:
        """The column positions (and the units, if the header says) of a header; ValueError if unusable."""
        raise NotImplementedError

    def prepare(self, columns: Any, sample: list[list[str]], rescan: Callable[[], Iterable[list[str]]],
                info: FileInfo) -> None:
        """Settle from the first rows what the header does not say; record it in ``info``."""

    def row(self, fields: list[str], columns: Any, subject: str, local: LocalTimes) -> GlucoseReading | str:
        """One row to a reading, or the reason it is rejected."""
        raise NotImplementedError

    def raw(self, line: str, fields: list[str], columns: Any, delimiter: str) -> str:
        """The line as a rejection records it (formats with personal fields redact them)."""
        return line


def numbered_lines(handle: TextIO) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end) of a text opened with ``newline`` set."""
    for number, line in enumerate(handle, 1):
        if line.endswith("\n"):
            line = line[:-1]
        if line.endswith("\r"):
            line = line[:-1]
        yield number, line


def locate_header(fmt: CsvFormat, lines: Iterator[tuple[int, str]], delimiter: str | None
                  ) -> tuple[tuple[int, str, str, list[str]] | None, list[tuple[int, str]]]:
    """((line number, line, delimiter, names) of the format's header, or None; the non-blank lines seen).

    Consumes ``lines`` up to the header (or up to the format's preamble allowance).
    """
    delimiters = (delimiter,) if delimiter else DELIMITERS
    seen: list[tuple[int, str]] = []
    for number, line in lines:
        if not line.strip():
            continue
        seen.append((number, line))
        for d in delimiters:
            names = csv_fields(line, d) or []
            if fmt.is_header([n.strip().lower() for n in names]):
                return (number, line, d, names), seen
        if len(seen) > fmt.preamble_lines:
            break
    return None, seen


def best_split(line: str, delimiter: str | None) -> tuple[str, list[str]]:
    """The delimiter (given, or the one making most fields) and the fields it gives."""
    delimiters = (delimiter,) if delimiter else DELIMITERS
    splits = [(d, csv_fields(line, d) or [line]) for d in delimiters]
    return max(splits, key=lambda s: len(s[1]))


def header_error(fmt: CsvFormat, seen: list[tuple[int, str]], delimiter: str | None, units: str | None) -> ValueError:
    """Why no header of ``fmt`` was found: what was seen, and what would work."""
    if not seen:
        return ValueError(f"{fmt.title} is empty: no header line")
    _, line = seen[0]
    d, names = best_split(line, delimiter)
    try:
        fmt.columns(names, line, units)  # raises the format's own message when it applies
    except ValueError as exc:
        return exc
    return ValueError(f"{fmt.title} header not found in its first {len(seen)} non-blank line(s); first line "
                      f"{clip_raw(line)!r} ({len(names)} fields split on {delimiter_name(d)}); {fmt.needs}")


def csv_records(fmt: CsvFormat, handle: TextIO, *, tz: tzinfo, subject: str, units: str | None,
                delimiter: str | None, info: FileInfo,
                reopen: Callable[[], TextIO] | None = None) -> Iterator[Candidate | Rejected]:
    """Every non-blank line after the header: a :class:`Candidate` or a :class:`Rejected`, in file order.

    Raises ValueError (before yielding anything) if the header is missing or unusable.
    ``reopen``: a fresh handle on the same text, for a format that must scan the whole
    file to settle something (LibreView's date order when the first rows cannot tell).
    """
    lines = numbered_lines(handle)
    found, seen = locate_header(fmt, lines, delimiter)
    if found is None:
        raise header_error(fmt, seen, delimiter, units)
    header_no, header_line, d, names = found
    columns = fmt.columns(names, header_line, units)
    info.delimiter = d
    sample = list(islice(lines, SAMPLE_ROWS))
    sample_fields = [f for _, line in sample if line.strip() and (f := csv_fields(line, d)) is not None]

    def rescan() -> Iterator[list[str]]:
        if reopen is None:
            return iter(sample_fields)
        return _rows_after(reopen(), header_no, d)

    fmt.prepare(columns, sample_fields, rescan, info)
    local = LocalTimes(tz)
    for number, line in chain(sample, lines):
        if not line.strip():
            continue
        fields = csv_fields(line, d)
        if fields is None:
            yield Rejected(clip_raw(line), number, "malformed row: not parseable as CSV")
            continue
        raw = clip_raw(fmt.raw(line, fields, columns, d))
        outcome = fmt.row(fields, columns, subject, local)
        if isinstance(outcome, str):
            yield Rejected(raw, number, outcome)
        else:
            yield Candidate(outcome, raw, number)


def _rows_after(handle: TextIO, header_no: int, delimiter: str) -> Iterator[list[str]]:
    with handle:
        for number, line in numbered_lines(handle):
            if number > header_no and line.strip() and (fields := csv_fields(line, delimiter)) is not None:
                yield fields


def expect_fields(fields: list[str], n: int) -> str | None:
    """The rejection reason of a row without the header's number of fields, or None."""
    if len(fields) != n:
        return f"malformed row: expected {n} fields, got {len(fields)}"
    return None
