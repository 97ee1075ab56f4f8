"""Read a CGM file of any supported format: detection and dispatch.

Formats (one module each):

- ``"iglu"``: iglu-style CSV ``id,time,gl`` (:mod:`sensors.files.iglu`)
- ``"clarity"``: Dexcom Clarity CSV export (:mod:`sensors.files.clarity`)
- ``"nightscout"``: Nightscout entries JSON (:mod:`sensors.files.nightscout`)
- ``"libreview"``: Abbott LibreView CSV export (:mod:`sensors.files.libreview`)
- ``"tidepool"``: Tidepool JSON export (:mod:`sensors.files.tidepool`)

Every CSV format is read with ``,``, ``;`` or tab delimiters, in mg/dL or
mmol/L (decimal commas too); the format, delimiter and units are detected
(:mod:`sensors.files.detect`, :mod:`sensors.files.units`) or given.

Usage::

    readings, rejected = read_cgm_file("export.csv", tz="Europe/Paris")   # all in memory
    with CgmFile.open("big.csv") as cgm:                                 # streamed, bounded memory
        cgm.read()
        for reading in cgm.readings():
            ...

A malformed row never raises: it comes back as a :class:`~sensors.reading.Rejected`
with a reason. Only a file that cannot be read at all (missing, unknown format,
header without the needed columns) raises, with a one-line message: ``OSError``
from the file system, ``ValueError`` otherwise.
"""

from __future__ import annotations

import os
from datetime import UTC, tzinfo

from sensors.files.detect import sniff
from sensors.files.source import FORMATS, CgmFile
from sensors.files.units import UNITS
from sensors.reading import ReadResult

__all__ = ["FORMATS", "UNITS", "CgmFile", "detect_format", "parse_cgm_text", "read_cgm_file"]


def detect_format(text: str) -> str:
    """The format of a CGM file's text: JSON → nightscout or tidepool; a CSV header (``,``, ``;`` or
    tab delimited) of Clarity, LibreView (after its title line) or iglu.

    Raises ValueError if the text is empty or none of these, saying what its first line holds.
    """
    return sniff(text)[0]


def parse_cgm_text(text: str, format: str = "auto", tz: tzinfo | str = UTC, subject: str = "",
                   units: str | None = None) -> ReadResult:
    """Readings and rejections from the text of a CGM file (or a message carrying one).

    Parameters
    ----------
    text: the whole content.
    format: ``"auto"`` or one of :data:`FORMATS`.
    tz: zone of timestamps written without an offset (tzinfo or IANA name), default UTC.
    subject: subject of the readings when the data does not name one (no iglu ``id`` column).
    units: ``"mg/dL"`` or ``"mmol/L"`` for a CSV file; default: the header or the values decide.
    """
    with CgmFile.from_text(text, format=format, tz=tz, subject=subject, units=units, keep_rejected=True) as cgm:
        return _result(cgm)


def read_cgm_file(path: str | os.PathLike[str], format: str = "auto", tz: tzinfo | str = UTC, subject: str = "",
                  units: str | None = None) -> ReadResult:
    """Readings and rejections from a CGM file; see :func:`parse_cgm_text`.

    Returns ``(readings, rejected)``: readings sorted by subject then time, exact
    duplicates dropped (rejected as ``"duplicate"``). For files too large to hold,
    use :class:`~sensors.files.source.CgmFile`.

    Raises
    ------
    OSError: the file cannot be read.
    ValueError: unknown format, undetectable format, unusable header, or unknown ``tz``;
        the message names the file and fits on one line.
    """
    with CgmFile.open(path, format=format, tz=tz, subject=subject, units=units, keep_rejected=True) as cgm:
        return _result(cgm)


def _result(cgm: CgmFile) -> ReadResult:
    cgm.read()
    readings = list(cgm.readings())
    return ReadResult(readings, cgm.rejections.sorted_all())
