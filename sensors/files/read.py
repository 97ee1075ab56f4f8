"""Read a CGM file of any supported format: detection and dispatch.

Formats (one module each):

- ``"iglu"``: iglu-style CSV ``id,time,gl`` (:mod:`sensors.files.iglu`)
- ``"clarity"``: Dexcom Clarity CSV export (:mod:`sensors.files.clarity`)
- ``"nightscout"``: Nightscout entries JSON (:mod:`sensors.files.nightscout`)

Usage::

    readings, rejected = read_cgm_file("export.csv", tz="Europe/Paris")

A malformed row never raises: it comes back as a :class:`~sensors.reading.Rejected`
with a reason. Only a file that cannot be read at all (missing, unknown format,
header without the needed columns) raises, with a one-line message: ``OSError``
from the file system, ``ValueError`` otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, tzinfo

from sensors.files.common import clip_raw, csv_fields, decode, split_lines
from sensors.files.clarity import parse_clarity_csv
from sensors.files.iglu import parse_iglu_csv
from sensors.files.nightscout import parse_nightscout_json
from sensors.reading import ReadResult

_PARSERS: dict[str, Callable[..., ReadResult]] = {
    "iglu": parse_iglu_csv,
    "clarity": parse_clarity_csv,
    "nightscout": parse_nightscout_json,
}
FORMATS = tuple(_PARSERS)
"""Supported format names, as accepted by ``format=``."""


def detect_format(text: str) -> str:
    """The format of a CGM file's text: JSON → nightscout; a CSV header with a
    ``Glucose Value`` column → clarity; one with a ``gl`` column → iglu.

    Raises ValueError if the text is empty or none of these.
    """
    body = text.lstrip("\ufeff \t\r\n")
    if not body:
        raise ValueError("empty file: no CGM data")
    if body[0] in "[{":
        return "nightscout"
    header = next((line for line in split_lines(body) if line.strip()), None)
    if header is None:
        raise ValueError("empty file: no CGM data")
    names = [name.strip().lower() for name in csv_fields(header) or []]
    if any(name.startswith("glucose value") for name in names):
        return "clarity"
    if "gl" in names:
        return "iglu"
    raise ValueError(
        f"cannot tell the CGM file format from its first line {clip_raw(header)!r}: expected "
        "a JSON array (Nightscout), a CSV header with 'Glucose Value' (Dexcom Clarity) "
        f"or with 'gl' (iglu); pass format= one of {', '.join(FORMATS)}"
    )


def parse_cgm_text(
    text: str, format: str = "auto", tz: tzinfo | str = UTC, subject: str = ""
) -> ReadResult:
    """Readings and rejections from the text of a CGM file (or a message carrying one).

    Parameters
    ----------
    text: the whole content.
    format: ``"auto"`` or one of :data:`FORMATS`.
    tz: zone of timestamps written without an offset (tzinfo or IANA name), default UTC.
    subject: subject of the readings when the data does not name one (no iglu ``id`` column).
    """
    if format == "auto":
        format = detect_format(text)
    parser = _PARSERS.get(format)
    if parser is None:
        raise ValueError(f"unknown CGM file format {format!r}: use 'auto' or one of {', '.join(FORMATS)}")
    return parser(text, tz=tz, subject=subject)


def read_cgm_file(
    path: str | os.PathLike[str], format: str = "auto", tz: tzinfo | str = UTC, subject: str = ""
) -> ReadResult:
    """Readings and rejections from a CGM file; see :func:`parse_cgm_text`.

    Returns ``(readings, rejected)``: readings sorted by subject then time, exact
    duplicates dropped (rejected as ``"duplicate"``).

    Raises
    ------
    OSError: the file cannot be read.
    ValueError: unknown format, undetectable format, unusable header, or unknown ``tz``;
        the message names the file and fits on one line.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return parse_cgm_text(decode(data), format=format, tz=tz, subject=subject)
    except ValueError as err:
        raise ValueError(f"{os.fspath(path)}: {err}") from None
