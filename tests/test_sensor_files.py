"""CGM file readers: iglu CSV, Dexcom Clarity CSV, Nightscout entries JSON.

Every fixture is in tests/data (see its README): one real trace (iglu's
example subject) and synthetic files in each format's published shape.
A malformed row is always a rejection with a reason, never an exception.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors.files.clarity import parse_clarity_csv
from sensors.files.iglu import parse_iglu_csv
from sensors.files.nightscout import parse_nightscout_json
from sensors.files.read import FORMATS, detect_format, parse_cgm_text, read_cgm_file
from sensors.reading import (
    MG_DL_PER_MMOL_L,
    PLAUSIBLE_MAX_MG_DL,
    PLAUSIBLE_MIN_MG_DL,
    GlucoseReading,
    ReadResult,
    Rejected,
)

DATA = Path(__file__).parent / "data"
REAL_TRACE = DATA / "cgm_example_1_subject.csv"
CLARITY_MG_DL = DATA / "clarity_export_mgdl.csv"
CLARITY_MMOL = DATA / "clarity_export_mmol.csv"
NIGHTSCOUT = DATA / "nightscout_entries.json"
IGLU_TWO = DATA / "iglu_two_subjects.csv"


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def reasons(result: ReadResult) -> list[str]:
    return [r.reason for r in result.rejected]


def assert_sorted_unique(readings: list[GlucoseReading]) -> None:
    keys = [(r.subject, r.time) for r in readings]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)


# --- the reading type ------------------------------------------------------


def test_reading_refuses_a_naive_time():
    with pytest.raises(ValueError, match="timezone-aware"):
        GlucoseReading(datetime(2021, 6, 6, 12, 0), 120.0, "test")


@pytest.mark.parametrize("glucose", [math.nan, math.inf, -math.inf, 0.0, -5.0, True, "120"])
def test_reading_refuses_glucose_that_is_not_a_finite_positive_number(glucose):
    with pytest.raises(ValueError, match="glucose_mg_dl"):
        GlucoseReading(utc(2021, 6, 6, 12), glucose, "test")


def test_reading_in_another_zone_is_stored_in_utc():
    paris_summer = timezone(timedelta(hours=2))
    reading = GlucoseReading(datetime(2021, 6, 6, 14, 0, tzinfo=paris_summer), 120, "test")
    assert reading.time == utc(2021, 6, 6, 12) and reading.time.tzinfo is UTC
    assert isinstance(reading.glucose_mg_dl, float)


def test_reading_and_rejection_round_trip_through_json():
    reading = GlucoseReading(
        utc(2021, 6, 6, 12, 0, 3, 250000), 40.0, "nightscout:xDrip", subject="Subject 1",
        trend="SingleDown", noise=1, clipped=True,
    )
    assert GlucoseReading.from_dict(json.loads(json.dumps(reading.to_dict()))) == reading
    assert reading.to_dict()["time"] == "2021-06-06T12:00:03.250000+00:00"
    rejected = Rejected('"3","S",2015-06-06,x', 4, "non-numeric glucose 'x'")
    assert Rejected.from_dict(json.loads(json.dumps(rejected.to_dict()))) == rejected


def test_reading_from_dict_names_unknown_and_missing_keys():
    good = GlucoseReading(utc(2021, 6, 6, 12), 120.0, "test").to_dict()
    with pytest.raises(ValueError, match="unknown glucose reading keys: glucose_mmol"):
        GlucoseReading.from_dict({**good, "glucose_mmol": 6.7})
    with pytest.raises(ValueError, match="missing: glucose_mg_dl"):
        GlucoseReading.from_dict({k: v for k, v in good.items() if k != "glucose_mg_dl"})
    with pytest.raises(ValueError, match="timezone-aware"):
        GlucoseReading.from_dict({**good, "time": "2021-06-06T12:00:00"})


# --- iglu CSV: the real trace ----------------------------------------------


def test_real_trace_reads_all_2915_readings_with_its_gaps():
    readings, rejected = read_cgm_file(REAL_TRACE)
    assert len(readings) == 2915 and rejected == []
    assert readings[0].time == utc(2015, 6, 6, 16, 50, 27) and readings[0].glucose_mg_dl == 153.0
    assert readings[-1].time == utc(2015, 6, 19, 8, 59, 36) and readings[-1].glucose_mg_dl == 115.0
    assert {r.subject for r in readings} == {"Subject 1"} and {r.source for r in readings} == {"iglu"}
    assert_sorted_unique(readings)
    steps = [b.time - a.time for a, b in zip(readings, readings[1:])]
    # The first step is already a missed reading: 16:50:27 -> 17:05:27.
    assert steps[0] == timedelta(minutes=15)
    assert sum(step > timedelta(minutes=7) for step in steps) > 20
    assert max(steps) > timedelta(hours=1)


def test_real_trace_local_times_are_read_in_the_given_zone():
    readings, _ = read_cgm_file(REAL_TRACE, tz="America/New_York")
    assert readings[0].time == utc(2015, 6, 6, 20, 50, 27)  # EDT is UTC-4


# --- iglu CSV: several subjects, bad rows ----------------------------------


def test_two_subjects_are_sorted_by_subject_then_time_and_bad_rows_explained():
    readings, rejected = read_cgm_file(IGLU_TWO)
    by_subject = {s: [r for r in readings if r.subject == s] for s in ("Subject 1", "Subject 2")}
    assert [len(v) for v in by_subject.values()] == [12, 11]
    assert_sorted_unique(readings)
    # The row written last, 07:58:40, is that subject's first reading.
    assert by_subject["Subject 2"][0].time == utc(2020, 2, 3, 7, 58, 40)
    assert [(r.line, r.reason.split(":")[0].split(" '")[0]) for r in rejected] == [
        (24, "missing glucose"),
        (25, "unparseable time"),
        (26, "non-numeric glucose"),
        (27, "malformed row"),
        (28, "glucose out of range"),
        (29, "duplicate"),
    ]
    assert rejected[5].raw == '"28","Subject 1",2020-02-03 08:26:12,135'


def test_iglu_without_index_or_id_column_takes_the_subject_given():
    text = "time,gl\n2021-01-01 00:00:00,100\n2021-01-01 00:05:00,104\n"
    readings, rejected = parse_iglu_csv(text, subject="Subject 9")
    assert [r.subject for r in readings] == ["Subject 9"] * 2 and rejected == []


def test_iglu_time_with_an_offset_is_taken_as_written():
    text = "id,time,gl\nA,2021-01-01T01:00:00+01:00,100\nA,2021-01-01T00:05:00Z,104\n"
    readings, _ = parse_iglu_csv(text, tz="Asia/Tokyo")
    assert [r.time for r in readings] == [utc(2021, 1, 1, 0, 0), utc(2021, 1, 1, 0, 5)]


def test_repeated_local_hour_at_the_end_of_dst_keeps_time_moving_forward():
    # New York, 2021-11-07: 01:00-01:59 happens twice (EDT, then EST).
    local = ["00:55", "01:25", "01:55", "01:25", "01:55", "02:25"]
    text = "id,time,gl\n" + "".join(f"A,2021-11-07 {t}:00,{100 + i}\n" for i, t in enumerate(local))
    readings, rejected = parse_iglu_csv(text, tz="America/New_York")
    assert rejected == []
    assert [r.glucose_mg_dl for r in readings] == [100, 101, 102, 103, 104, 105]
    assert all(b.time - a.time == timedelta(minutes=30) for a, b in zip(readings, readings[1:]))


def test_local_time_skipped_by_dst_is_rejected():
    text = "id,time,gl\nA,2021-03-14 01:55:00,100\nA,2021-03-14 02:30:00,101\nA,2021-03-14 03:05:00,102\n"
    readings, rejected = parse_iglu_csv(text, tz="America/New_York")
    assert len(readings) == 2
    assert rejected[0].line == 3 and rejected[0].reason.startswith("nonexistent local time")


def test_readings_at_the_same_time_with_different_glucose_are_both_rejected():
    text = "id,time,gl\nA,2021-01-01 00:00:00,100\nA,2021-01-01 00:00:00,180\nA,2021-01-01 00:05:00,101\n"
    readings, rejected = parse_iglu_csv(text)
    assert [r.glucose_mg_dl for r in readings] == [101.0]
    assert [(r.line, r.reason) for r in rejected] == [
        (2, "conflicting glucose at the same time (100, 180 mg/dL)"),
        (3, "conflicting glucose at the same time (100, 180 mg/dL)"),
    ]


def test_iglu_with_crlf_bom_and_undecodable_bytes(tmp_path):
    path = tmp_path / "windows.csv"
    path.write_bytes(
        b'\xef\xbb\xbf"","id","time","gl"\r\n"1","A",2021-01-01 00:00:00,100\r\n'
        b'"2","A",2021-01-01 00:05:00,1\xff4\r\n"3","A",2021-01-01 00:10:00,nan\r\n'
        b'"4","A",2021-01-01 00:15:00,1e9\r\n'
    )
    readings, rejected = read_cgm_file(path)
    assert [r.glucose_mg_dl for r in readings] == [100.0]
    assert [r.line for r in rejected] == [3, 4, 5]
    assert rejected[0].reason.startswith("non-numeric glucose")
    assert rejected[1].reason == "missing glucose"
    assert rejected[2].reason.startswith("glucose out of range")


# --- Dexcom Clarity --------------------------------------------------------


def test_clarity_mg_dl_export_reads_egv_rows_only():
    readings, rejected = read_cgm_file(CLARITY_MG_DL)
    assert len(readings) == 21
    assert {r.source for r in readings} == {"clarity:Android G6"}
    assert readings[0].time == utc(2023, 5, 10, 5, 2, 11) and readings[0].glucose_mg_dl == 92.0
    assert_sorted_unique(readings)
    skipped = [r.reason for r in rejected if r.reason.startswith("not a glucose reading")]
    assert len(skipped) == 10  # 8 metadata rows, a Calibration, an Insulin event
    assert "not a glucose reading (event type 'Calibration')" in skipped
    assert [(r.line, r.reason) for r in rejected if not r.reason.startswith("not a")] == [
        (31, "non-numeric glucose '1O9'")
    ]


def test_clarity_low_and_high_are_the_range_limits_flagged_as_clipped():
    readings, _ = read_cgm_file(CLARITY_MG_DL)
    clipped = [(r.time.strftime("%H:%M"), r.glucose_mg_dl) for r in readings if r.clipped]
    assert clipped == [("05:37", 40.0), ("05:42", 40.0), ("16:07", 400.0), ("16:12", 400.0)]
    # A measured 44 or 391 is not clipped.
    assert not any(r.clipped for r in readings if r.glucose_mg_dl in (44.0, 391.0))


def test_clarity_patient_info_never_reaches_the_rejection_record():
    _, rejected = read_cgm_file(CLARITY_MG_DL)
    raws = " ".join(r.raw for r in rejected)
    assert "<redacted>" in raws
    assert "Test" not in raws and "Patient" not in raws and "1990-01-01" not in raws


def test_clarity_mmol_export_is_converted_to_mg_dl():
    readings, rejected = read_cgm_file(CLARITY_MMOL)
    assert len(readings) == 17
    assert readings[0].glucose_mg_dl == pytest.approx(5.1 * MG_DL_PER_MMOL_L)
    assert readings[0].glucose_mg_dl == pytest.approx(91.89, abs=0.01)
    # Low / High are range limits in mg/dL, not numbers of mmol/L to convert.
    assert [r.glucose_mg_dl for r in readings if r.clipped] == [40.0, 400.0, 400.0]
    assert [r.reason for r in rejected if r.reason.startswith("non-numeric")] == ["non-numeric glucose '2l.4'"]


def test_clarity_local_timestamps_are_read_in_the_given_zone():
    readings, _ = read_cgm_file(CLARITY_MG_DL, tz="Europe/Paris")
    assert readings[0].time == utc(2023, 5, 10, 3, 2, 11)  # CEST is UTC+2


def test_clarity_header_with_unknown_unit_is_refused():
    header = CLARITY_MG_DL.read_text().splitlines()[0].replace("(mg/dL)", "(g/L)", 1)
    with pytest.raises(ValueError, match="no known unit"):
        parse_clarity_csv(header + "\n")


# --- Nightscout ------------------------------------------------------------


def test_nightscout_entries_read_sgv_only_and_explain_the_rest():
    readings, rejected = read_cgm_file(NIGHTSCOUT)
    assert len(readings) == 26
    assert_sorted_unique(readings)  # the API's newest-first order is undone
    assert all(r.line is None for r in rejected)
    assert sorted(r.reason.split(" (")[0].split(";")[0] for r in rejected) == [
        "duplicate",
        "missing glucose",
        "not a glucose reading",
        "not a glucose reading",
        "sensor error code 5",
        "unparseable time",
    ]
    assert "not a glucose reading (type 'mbg')" in reasons(read_cgm_file(NIGHTSCOUT))


def test_nightscout_fields_map_to_the_reading():
    readings, _ = read_cgm_file(NIGHTSCOUT)
    first = readings[0]
    assert first.time == utc(2021, 6, 6, 17, 0, 3) and first.glucose_mg_dl == 148.0
    assert (first.source, first.trend, first.noise, first.clipped) == ("nightscout:xDrip-DexcomG6", "Flat", 1, False)
    # The entry without `date` falls back to its dateString.
    last = readings[-1]
    assert last.time == utc(2021, 6, 6, 19, 10, 3) and last.glucose_mg_dl == 161.0


def test_nightscout_low_code_39_is_clipped_and_epoch_seconds_are_not_guessed():
    entries = [
        {"type": "sgv", "sgv": 39, "date": 1623000000000},
        {"type": "sgv", "sgv": 120, "date": 1623000300},  # seconds, not ms: 1970-01-19
        {"type": "sgv", "sgv": "121", "date": "1623000600000", "noise": True},
    ]
    readings, rejected = parse_nightscout_json(json.dumps(entries))
    assert (readings[0].glucose_mg_dl, readings[0].clipped) == (40.0, True)
    assert (readings[1].glucose_mg_dl, readings[1].noise) == (121.0, None)
    assert len(rejected) == 1 and rejected[0].reason.startswith("implausible time")


def test_nightscout_json_lines_report_line_numbers():
    text = '{"type":"sgv","sgv":100,"date":1623000000000}\n{"type":"sgv","sgv":\n\n{"type":"sgv","sgv":101,"date":1623000300000}\n'
    readings, rejected = parse_nightscout_json(text)
    assert len(readings) == 2
    assert [(r.line, r.reason) for r in rejected] == [(2, "malformed entry: not valid JSON")]


@pytest.mark.parametrize(
    ("text", "message"),
    [("[1, 2", "not valid JSON"), ("3", "JSON array"), ("[" * 100_000, "nested too deeply")],
)
def test_nightscout_file_that_is_not_an_entries_array_is_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_nightscout_json(text)


# --- dispatch and file errors ----------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [(REAL_TRACE, "iglu"), (IGLU_TWO, "iglu"), (CLARITY_MG_DL, "clarity"),
     (CLARITY_MMOL, "clarity"), (NIGHTSCOUT, "nightscout")],
)
def test_format_is_detected_from_the_content(path, expected):
    assert detect_format(path.read_text()) == expected
    assert read_cgm_file(path) == read_cgm_file(path, format=expected)


def test_unreadable_or_unknown_files_raise_one_clear_line(tmp_path):
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("date,value\n2021-01-01,5.6\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("\n\n")
    cases = [
        (unknown, {}, "cannot tell the CGM file format"),
        (empty, {}, "empty file"),
        (CLARITY_MG_DL, {"format": "iglu"}, "needs columns 'time' and 'gl'"),
        (REAL_TRACE, {"format": "libre"}, "unknown CGM file format 'libre'"),
        (REAL_TRACE, {"tz": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
    ]
    for path, kwargs, message in cases:
        with pytest.raises(ValueError, match=message) as err:
            read_cgm_file(path, **kwargs)
        assert "\n" not in str(err.value) and str(path) in str(err.value)
    with pytest.raises(OSError):
        read_cgm_file(tmp_path / "missing.csv")
    assert FORMATS == ("iglu", "clarity", "nightscout", "libreview", "tidepool")


def test_parse_cgm_text_reads_a_payload_without_a_file():
    payload = json.dumps([{"type": "sgv", "sgv": 131, "date": 1623000000000, "direction": "Flat"}])
    readings, rejected = parse_cgm_text(payload, subject="live")
    assert readings[0].subject == "live" and readings[0].trend == "Flat" and rejected == []


def test_sensors_stays_a_light_leaf_package():
    # The live loop on a Pi imports sensors: no pandas, no other glucotwin package.
    code = (
        "import sys, sensors, sensors.files.read; "
        "bad = [m for m in ('pandas', 'scipy', 'controller', 'twin', 'sim', 'firmware_bridge') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# --- properties: garbage never raises ----------------------------------------

IGLU_HEADER = '"","id","time","gl"'

_near_valid_row = st.tuples(
    st.sampled_from(['"1"', "", '"x"', "1"]),
    st.sampled_from(['"Subject 1"', '"Subject 2"', "", 'A"B', "S,3"]),
    st.one_of(
        st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(
            lambda t: t.isoformat(sep=" ")
        ),
        st.sampled_from(["2021-11-07 01:30:00", "2021-03-14 02:30:00", "2015-06-06T16:50:27Z", ""]),
        st.text(max_size=25),
    ),
    st.one_of(
        st.integers(-100, 2000).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.sampled_from(["NA", "", "Low", "1e3", "1_000", " 120 ", "0x7f"]),
        st.text(max_size=10),
    ),
).map(",".join).filter(lambda row: "\n" not in row)  # a row is one line (free text may hold a newline)

_line = st.one_of(_near_valid_row, st.text(alphabet=st.characters(blacklist_characters="\n"), max_size=60))


def _is_blank(line: str) -> bool:
    return not (line[:-1] if line.endswith("\r") else line).strip()


@settings(derandomize=True, max_examples=150, deadline=None)
@given(lines=st.lists(_line, max_size=12), tz=st.sampled_from(["UTC", "America/New_York", "Australia/Lord_Howe"]))
def test_garbage_lines_in_an_iglu_csv_never_raise(lines, tz):
    readings, rejected = parse_iglu_csv("\n".join([IGLU_HEADER, *lines]), tz=tz)
    # Every non-blank line ends up exactly once: a reading or a rejection.
    assert len(readings) + len(rejected) == sum(not _is_blank(line) for line in lines)
    assert_sorted_unique(readings)
    assert all(PLAUSIBLE_MIN_MG_DL <= r.glucose_mg_dl <= PLAUSIBLE_MAX_MG_DL and r.time.tzinfo is UTC for r in readings)
    assert all(isinstance(r.reason, str) and r.reason for r in rejected)


@settings(derandomize=True, max_examples=100, deadline=None)
@given(body=st.binary(max_size=300))
def test_garbage_bytes_in_a_cgm_file_never_raise(tmp_path_factory, body):
    path = tmp_path_factory.getbasetemp() / "garbage.csv"
    for header in (IGLU_HEADER.encode(), CLARITY_MG_DL.read_bytes().splitlines()[0]):
        path.write_bytes(header + b"\n" + body)
        readings, rejected = read_cgm_file(path)
        assert isinstance(readings, list) and isinstance(rejected, list)


_json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_entry = st.one_of(
    _json_value,
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.sampled_from(["sgv", "mbg", "cal", None, 3]),
            "sgv": st.one_of(st.integers(-5, 1200), st.floats(), st.text(max_size=5), st.none()),
            "date": st.one_of(st.integers(-(10**20), 10**20), st.floats(), st.text(max_size=14)),
            "dateString": st.one_of(st.text(max_size=25), st.just("2021-06-06T17:00:03.000Z")),
            "direction": _json_value,
            "noise": _json_value,
            "device": _json_value,
        },
    ),
)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(entries=st.lists(_entry, max_size=8))
def test_garbage_nightscout_entries_never_raise(entries):
    readings, rejected = parse_nightscout_json(json.dumps(entries))
    assert len(readings) + len(rejected) == len(entries)
    assert_sorted_unique(readings)


@settings(derandomize=True, max_examples=150, deadline=None)
@given(text=st.one_of(st.text(max_size=200), _line.map(lambda row: f"{IGLU_HEADER}\n{row}")))
def test_any_text_is_read_or_refused_with_a_value_error(text):
    try:
        readings, rejected = parse_cgm_text(text)
    except ValueError as err:
        assert str(err)
    else:
        assert_sorted_unique(readings)
