"""Glucose readings: the reading type, validation, and sources (MQTT, serial, files).

A leaf package: never imports other glucotwin packages, and only the standard
library and numpy (the live loop on a Raspberry Pi stays light).

- :mod:`sensors.reading`: :class:`GlucoseReading`, :class:`Rejected`, :class:`ReadResult`
- :mod:`sensors.files`: :func:`read_cgm_file` for iglu CSV, Dexcom Clarity CSV and
  Nightscout entries JSON (one reader module each: ``file_iglu``, ``file_clarity``,
  ``file_nightscout``)
"""

from sensors.files import FORMATS, detect_format, parse_cgm_text, read_cgm_file
from sensors.reading import GlucoseReading, ReadResult, Rejected

__all__ = [
    "FORMATS",
    "GlucoseReading",
    "ReadResult",
    "Rejected",
    "detect_format",
    "parse_cgm_text",
    "read_cgm_file",
]
