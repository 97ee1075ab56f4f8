"""Glucose readings: the reading type, validation, and sources (MQTT, serial, files).

A leaf package: never imports other glucotwin packages. Importing ``sensors``
loads only the standard library (the live loop on a Raspberry Pi stays light):
paho-mqtt and pyserial are imported by :mod:`sensors.mqtt_source` and
:mod:`sensors.serial.source` only, and the names they define are loaded from
here on first use.

- :mod:`sensors.reading`: :class:`GlucoseReading`, :class:`Rejected`, :class:`ReadResult`
- :mod:`sensors.files.read`: :func:`read_cgm_file` for iglu CSV, Dexcom Clarity CSV, Abbott
  LibreView CSV, Nightscout entries JSON and Tidepool export JSON (one reader module each in
  :mod:`sensors.files`; any delimiter, decimal commas, mg/dL or mmol/L); :class:`sensors.files.source.CgmFile`
  streams a file of any size
- :mod:`sensors.validation`: :class:`ReadingValidator` judges live readings against
  the clock and the previous reading (range, future, stale, duplicate, order, rate)
- :mod:`sensors.nightscout.entry`: single Nightscout entries, carb treatments
  (:class:`CarbAnnouncement`) and temporary targets (``TempTargetTreatment``) as carried by MQTT
  and the Nightscout receiver
- :mod:`sensors.mqtt_source`: :class:`MqttCgmSource`, :class:`MqttCgmPublisher`, :class:`MqttSettings`
- :mod:`sensors.serial.source`: :class:`SerialCgmSource` (COBS frames or text lines,
  :mod:`sensors.serial.frames`; see ``sensors/SERIAL.md``)
- :mod:`sensors.nightscout.receiver`: :class:`~sensors.nightscout.receiver.NightscoutReceiver`,
  a Nightscout REST API v1 receiver (xDrip+ and other uploaders feed the loop; stdlib only;
  its parts are the other modules of :mod:`sensors.nightscout`)
"""

from typing import Any

from sensors.files.read import FORMATS, detect_format, parse_cgm_text, read_cgm_file
from sensors.nightscout.entry import (
    CarbAnnouncement,
    announcement_to_treatment,
    entry_to_reading,
    reading_to_entry,
    treatment_to_announcement,
)
from sensors.reading import GlucoseReading, ReadResult, Rejected
from sensors.validation import ReadingValidator, ValidationSettings

_LAZY = {
    "MqttCgmPublisher": "sensors.mqtt_source",
    "MqttCgmSource": "sensors.mqtt_source",
    "MqttSettings": "sensors.mqtt_source",
    "SerialCgmSource": "sensors.serial.source",
}


def __getattr__(name: str) -> Any:
    """The transport classes, imported on first use (they pull in paho-mqtt or pyserial)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sensors' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "FORMATS",
    "CarbAnnouncement",
    "GlucoseReading",
    "MqttCgmPublisher",
    "MqttCgmSource",
    "MqttSettings",
    "ReadResult",
    "ReadingValidator",
    "Rejected",
    "SerialCgmSource",
    "ValidationSettings",
    "announcement_to_treatment",
    "detect_format",
    "entry_to_reading",
    "parse_cgm_text",
    "read_cgm_file",
    "reading_to_entry",
    "treatment_to_announcement",
]
