"""A CGM file read as a stream: readings in order, in bounded memory, with progress.

Usage::

    with CgmFile.open("export.csv", tz="Europe/Paris") as cgm:
        cgm.read(progress=lambda done, total: ...)   # parse and sort; raises ValueError if unusable
        print(cgm.info.describe(), len(cgm), cgm.rejections.reasons)
        for reading in cgm.readings():                # sorted by subject, then time; de-duplicated
            ...

:meth:`CgmFile.read` parses the whole file once, a line (or JSON element) at
a time, and hands the readings to :class:`~sensors.files.ordering.SortedCandidates`
(sorted chunks, spilled to temporary files when more than one); rejections are
counted by a :class:`~sensors.files.rejections.RejectionLog`. So memory stays
bounded by the chunk size whatever the file's size, and the number of readings
is known before the first is used (for a progress bar or a time estimate).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from datetime import UTC, tzinfo
from typing import TextIO

from sensors.files.common import Candidate, resolve_tz, text_handle
from sensors.files.delimited import FileInfo, csv_records
from sensors.files.detect import CSV_FORMATS, HEAD_CHARS, JSON_FORMATS, sniff
from sensors.files.libreview import LibreViewFormat
from sensors.files.nightscout import nightscout_records
from sensors.files.ordering import CHUNK_READINGS, SortedCandidates
from sensors.files.rejections import RejectionLog
from sensors.files.tidepool import tidepool_records
from sensors.files.units import normalize_units
from sensors.reading import GlucoseReading, Rejected

FORMATS = ("iglu", "clarity", "nightscout", "libreview", "tidepool")
"""Supported format names, as accepted by ``format=``."""
Progress = Callable[[int, int], None]
"""``progress(done, total)``: bytes (of a file) or characters (of a text) read so far, and in all."""
_PROGRESS_EVERY = 4096  # records between progress calls


class CgmFile:
    """One CGM file or text, read once (:meth:`read`) and then iterated (:meth:`readings`).

    Parameters
    ----------
    open_text: returns a fresh text handle on the content (lines split on ``\\n``).
    name: the file's name for messages (``""`` for a text).
    size: the content's size for progress (bytes of a file, characters of a text).
    position: how far the handle last opened has been read, in the same unit.
    format: ``"auto"`` or one of :data:`FORMATS`.
    tz: zone of timestamps written without an offset (tzinfo or IANA name).
    subject: subject of the readings when the data names none.
    units: ``"mg/dL"``, ``"mmol/L"`` or None/``"auto"`` (the header or the values decide).
    date_order: LibreView's date order (``"day-first"``, ``"month-first"``, ``"year-first"``) or None.
    keep_rejected: keep every rejection (``rejections.all``), not only counts and examples.
    chunk: readings held in memory before a sorted chunk is spilled to disk.
    spill_dir: where spilled chunks go (default: the system's temporary directory).

    Raises ValueError at construction for an unknown format, zone or unit.
    """

    def __init__(self, open_text: Callable[[], TextIO], *, name: str = "", size: int = 0,
                 position: Callable[[], int] | None = None, format: str = "auto", tz: tzinfo | str = UTC,
                 subject: str = "", units: str | None = None, date_order: str | None = None,
                 keep_rejected: bool = False, chunk: int = CHUNK_READINGS,
                 spill_dir: str | os.PathLike[str] | None = None) -> None:
        if format != "auto" and format not in FORMATS:
            raise ValueError(self._named(f"unknown CGM file format {format!r}: use 'auto' or one of "
                                         f"{', '.join(FORMATS)}", name))
        self._open_text, self.name, self.size = open_text, name, size
        self._position = position or (lambda: 0)
        self.requested_format = format
        try:
            self.tz = resolve_tz(tz)
            self.units = normalize_units(units)
            self._libre = LibreViewFormat(date_order)
        except ValueError as exc:
            raise ValueError(self._named(str(exc), name)) from None
        self.subject = subject
        self.rejections = RejectionLog(keep_all=keep_rejected)
        self._ordered = SortedCandidates(self.rejections.add, chunk=chunk, spill_dir=spill_dir)
        self.info = FileInfo(format if format != "auto" else "")
        self._read = False

    @classmethod
    def open(cls, path: str | os.PathLike[str], **options: object) -> CgmFile:
        """A CGM file on disk (UTF-16 if it has a UTF-16 BOM, else UTF-8; undecodable bytes become U+FFFD).

        Raises OSError if it cannot be read.
        """
        text = _FileText(path)
        return cls(text.open, name=os.fspath(path), size=text.size, position=text.position, **options)  # type: ignore[arg-type]

    @classmethod
    def from_text(cls, text: str, **options: object) -> CgmFile:
        """A CGM file's content already in memory (or a message carrying one)."""
        return cls(lambda: text_handle(text), size=len(text), **options)  # type: ignore[arg-type]

    def __enter__(self) -> CgmFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._ordered.close()

    def __len__(self) -> int:
        """Readings parsed (before de-duplication; known after :meth:`read`)."""
        return len(self._ordered)

    @property
    def format(self) -> str:
        return self.info.format

    @property
    def subjects(self) -> list[str]:
        """The subjects of the readings, sorted (known after :meth:`read`)."""
        return self._ordered.subjects

    def count(self, subject: str | None = None) -> int:
        """Readings parsed (before de-duplication), of ``subject`` if given (known after :meth:`read`)."""
        return len(self) if subject is None else self._ordered.count(subject)

    @property
    def spilled_chunks(self) -> int:
        return self._ordered.spilled_chunks

    def read(self, progress: Progress | None = None) -> int:
        """Parse the whole content (once); returns the number of readings parsed.

        Raises ValueError, one line naming the file, if the format cannot be told or the
        header, the JSON or the options are unusable. Bad rows never raise.
        """
        if self._read:
            return len(self)
        self._read = True
        try:
            fmt = self.requested_format
            if fmt == "auto":
                fmt, _ = sniff(self._head())
            self.info.format = fmt
            records = self._records(fmt)
            count = 0
            for record in records:
                if isinstance(record, Rejected):
                    self.rejections.add(record)
                else:
                    self._ordered.add(record)
                count += 1
                if progress is not None and count % _PROGRESS_EVERY == 0:
                    progress(self._position(), self.size)
        except ValueError as exc:
            raise ValueError(self._named(self._hinted(str(exc)), self.name)) from None
        if progress is not None:
            progress(self.size, self.size)
        return len(self)

    def readings(self, subject: str | None = None) -> Iterator[GlucoseReading]:
        """The readings (of ``subject`` if given), sorted by subject then time, exact duplicates dropped.

        Iterate once; duplicates and conflicting readings are added to :attr:`rejections` as they come.
        """
        self.read()
        for reading in self._ordered.readings():
            if subject is None or reading.subject == subject:
                yield reading

    # --- inside -----------------------------------------------------------------------

    def _head(self) -> str:
        with self._open_text() as handle:
            return handle.read(HEAD_CHARS)

    def _records(self, fmt: str) -> Iterator[Candidate | Rejected]:
        common = {"tz": self.tz, "subject": self.subject, "units": self.units, "info": self.info}
        if fmt in JSON_FORMATS:
            records = nightscout_records if fmt == "nightscout" else tidepool_records
            yield from records(self._open_text, **common)  # type: ignore[arg-type]
            return
        csv_format = self._libre if fmt == "libreview" else CSV_FORMATS[fmt]
        with self._open_text() as handle:
            yield from csv_records(csv_format, handle, delimiter=None, reopen=self._open_text, **common)  # type: ignore[arg-type]

    def _hinted(self, message: str) -> str:
        """The message, and (a format was named) the format the content looks like, if another."""
        if self.requested_format == "auto":
            return message
        try:
            seen, _ = sniff(self._head())
        except (ValueError, OSError):
            return message
        if seen != self.requested_format:
            return f"{message}; the file looks like {seen}: pass --format {seen} (or auto)"
        return message

    @staticmethod
    def _named(message: str, name: str) -> str:
        return f"{name}: {message}" if name else message


class _FileText:
    """Opens a file as text the way every reader reads it, and tells how far it has been read."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = path
        with open(path, "rb") as handle:
            head = handle.read(HEAD_CHARS)
            self.size = os.fstat(handle.fileno()).st_size
        self.encoding = "utf-16" if head.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"
        self.newline = "\r" if b"\n" not in head and b"\r" in head else "\n"
        self._current: io.TextIOWrapper | None = None

    def open(self) -> TextIO:
        handle = open(self.path, encoding=self.encoding, errors="replace", newline=self.newline)
        self._current = handle
        return handle

    def position(self) -> int:
        try:
            return self._current.buffer.tell() if self._current is not None else 0
        except (OSError, ValueError):
            return self.size
