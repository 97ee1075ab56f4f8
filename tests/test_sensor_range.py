"""One plausible glucose range everywhere in ``sensors``: file readers, live parsers, live validator.

Every path that turns a number into a reading (iglu CSV, Clarity CSV in mg/dL and
mmol/L, Nightscout JSON, a Nightscout entry over MQTT or the Nightscout receiver,
a serial text line, a serial COBS frame) and the live validator must accept and
reject exactly the same values, with the same reason text, so that a value a
replayed file rejects cannot reach the loop live (and the other way round).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sensors.files.clarity import parse_clarity_csv
from sensors.files.iglu import parse_iglu_csv
from sensors.files.nightscout import parse_nightscout_json
from sensors.mqtt_source import MqttSettings, parse_message
from sensors.nightscout.entry import entry_to_reading
from sensors.reading import (
    MG_DL_PER_MMOL_L,
    PLAUSIBLE_MAX_MG_DL,
    PLAUSIBLE_MIN_MG_DL,
    SENSOR_HIGH_MG_DL,
    SENSOR_LOW_MG_DL,
    GlucoseReading,
    Rejected,
    glucose_range_reason,
)
from sensors.serial.frames import FrameStreamDecoder, encode_frame, parse_text_line
from sensors.validation import ReadingValidator, ValidationSettings

T = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
T_MS = int(T.timestamp() * 1000)
CLARITY_HEADER = ("Index,Timestamp (YYYY-MM-DDThh:mm:ss),Event Type,Event Subtype,Patient Info,Device Info,"
                  "Source Device ID,Glucose Value ({unit}),Insulin Value (u),Carb Value (grams)")
BOUNDARIES = [PLAUSIBLE_MIN_MG_DL, PLAUSIBLE_MAX_MG_DL, 38.9, 38.99, 39.01, 40.0, 400.0, 500.0, 500.9, 501.01,
              501.1, 10.0, 20.0, 600.0, 1000.0]


def _clarity_row(unit: str, value: object) -> str:
    return CLARITY_HEADER.format(unit=unit) + f"\n1,2026-11-23T10:00:00,EGV,,,,G7,{value},,\n"


def _outcome(result: GlucoseReading | Rejected | str) -> str | None:
    """None for a reading, else the reason."""
    if isinstance(result, GlucoseReading):
        return None
    return result.reason if isinstance(result, Rejected) else result


def _file_outcomes(g: float) -> dict[str, str | None]:
    text = repr(g)
    iglu = parse_iglu_csv(f"id,time,gl\nA,2026-11-23T10:00:00Z,{text}\n")
    clarity = parse_clarity_csv(_clarity_row("mg/dL", text))
    ns = parse_nightscout_json(json.dumps([{"type": "sgv", "sgv": g, "date": T_MS}]))
    out = {}
    for name, result in (("iglu", iglu), ("clarity", clarity), ("nightscout file", ns)):
        out[name] = None if result.readings else result.rejected[0].reason
    return out


def _live_outcomes(g: float) -> dict[str, str | None]:
    settings_ = MqttSettings()
    entry = {"type": "sgv", "sgv": g, "date": T_MS}
    mqtt_items = parse_message(settings_.cgm_topic, json.dumps(entry).encode(), settings_)
    return {
        "nightscout entry": _outcome(entry_to_reading(entry, transport="nightscout-api")),
        "mqtt": _outcome(mqtt_items[0]),
        "serial line": _outcome(parse_text_line(f"{T.isoformat()},{g!r}", T)),
        "validator": _outcome(ReadingValidator().check(GlucoseReading(T, g, "live"), T)),
    }


@settings(max_examples=300)
@given(st.one_of(st.sampled_from(BOUNDARIES),
                 st.floats(min_value=39.0, max_value=1200.0, allow_nan=False),
                 st.floats(min_value=PLAUSIBLE_MAX_MG_DL - 0.01, max_value=PLAUSIBLE_MAX_MG_DL + 0.01)))
@example(PLAUSIBLE_MAX_MG_DL)
@example(PLAUSIBLE_MAX_MG_DL + 1e-9)
def test_file_readers_live_parsers_and_the_validator_agree_on_every_value(g):
    """At and around both limits, every path accepts or rejects ``g`` alike, with one reason text.

    Nightscout's sgv 39 is its LOW code and becomes a clipped 40 in every Nightscout path; below 39
    Nightscout values are Dexcom's sensor error codes, rejected with that reason in file and live paths."""
    outcomes = {**_file_outcomes(g), **_live_outcomes(g)}
    for name in ("nightscout file", "nightscout entry", "mqtt"):
        if g == 39.0:
            assert outcomes.pop(name) is None  # accepted, as a clipped LOW
        elif g < 39.0:  # below Nightscout's LOW code: Dexcom's error codes, rejected in file and live alike
            assert outcomes.pop(name) == f"sensor error code {g:g} (sgv below 39 is not glucose)"
    expected = glucose_range_reason(g)
    assert outcomes == {name: expected for name in outcomes}, g
    assert (expected is None) == (PLAUSIBLE_MIN_MG_DL <= g <= PLAUSIBLE_MAX_MG_DL)


@settings(max_examples=200)
@given(st.one_of(st.sampled_from(BOUNDARIES), st.floats(min_value=1.0, max_value=1200.0, allow_nan=False)))
def test_a_custom_validator_range_words_its_rejection_like_the_readers(g):
    s = ValidationSettings(min_mg_dl=50, max_mg_dl=300)
    out = ReadingValidator(s).check(GlucoseReading(T, g, "live"), T)
    assert _outcome(out) == glucose_range_reason(g, 50, 300)


@pytest.mark.parametrize("g", BOUNDARIES)
def test_the_serial_frame_path_agrees_on_boundary_values(g):
    decoder = FrameStreamDecoder(lambda: T)
    items = decoder.feed(encode_frame(1, T_MS, g))
    assert len(items) == 1
    g10 = round(g * 10) / 10  # frames carry 0.1 mg/dL
    assert _outcome(items[0]) == glucose_range_reason(g10)


def test_mmol_exports_keep_the_sensor_limits():
    """Dexcom's 40 and Libre's 500 mg/dL written in mmol/L with one decimal (2.2, 27.8) are readings."""
    for mmol in (2.2, 22.2, 27.8):
        result = parse_clarity_csv(_clarity_row("mmol/L", mmol))
        assert len(result.readings) == 1, result.rejected
        assert abs(result.readings[0].glucose_mg_dl - mmol * MG_DL_PER_MMOL_L) < 1e-9
    result = parse_clarity_csv(_clarity_row("mmol/L", 2.1))
    assert result.rejected[0].reason == glucose_range_reason(2.1 * MG_DL_PER_MMOL_L)


def test_low_and_high_flags_are_clipped_readings_inside_the_range():
    for text, limit in (("LOW", SENSOR_LOW_MG_DL), ("HIGH", SENSOR_HIGH_MG_DL)):
        live = parse_text_line(f"{T.isoformat()},{text}", T)
        assert isinstance(live, GlucoseReading) and live.clipped and live.glucose_mg_dl == limit
        assert ReadingValidator().check(live, T) is live
        clarity = parse_clarity_csv(_clarity_row("mg/dL", text))
        assert clarity.readings[0].clipped and clarity.readings[0].glucose_mg_dl == limit
    low = entry_to_reading({"type": "sgv", "sgv": 39, "date": T_MS})
    assert isinstance(low, GlucoseReading) and low.clipped and low.glucose_mg_dl == SENSOR_LOW_MG_DL
    assert PLAUSIBLE_MIN_MG_DL <= SENSOR_LOW_MG_DL < SENSOR_HIGH_MG_DL <= PLAUSIBLE_MAX_MG_DL
