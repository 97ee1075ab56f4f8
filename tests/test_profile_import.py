"""Importing the therapy profile a person already has (issue 20, deliver 2): a Nightscout profile document
or an oref0 profile.json becomes the loop configuration's [profile], with its notes; what the loop's
parser would refuse is refused at import."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.loop.config.live_config import load_config, parse_config, profile_to_toml
from controller.loop.nightscout.profile import profile_document, profile_store
from twin.profile import BasalSegment, PatientProfile
from twin.profile_import import (NIGHTSCOUT_MG_DL_PER_MMOL_L, ProfileImportError, detect_format,
                                 from_nightscout_profile, from_oref0_profile, oref0_limit_suggestions)
from twin.schedule import ScheduleSegment, time_weighted_mean

DATA = Path(__file__).parent / "data"
PUMP = {"port": "/dev/ttyUSB0", "key_file": "pump.key"}


def nightscout_doc() -> list:
    return json.loads((DATA / "nightscout_profile.json").read_text())


def oref0_doc() -> dict:
    return json.loads((DATA / "oref0_profile.json").read_text())


def segments(*pairs) -> tuple[ScheduleSegment, ...]:
    return tuple(ScheduleSegment(m, float(v)) for m, v in pairs)


def glucotwin() -> list[str]:
    exe = Path(sys.executable).with_name("glucotwin")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sim.cli"]


def loads_as_config(profile: PatientProfile) -> PatientProfile:
    return parse_config({"profile": tomllib.loads(profile_to_toml(profile))["profile"], "pump": PUMP}).profile


# --- Nightscout -----------------------------------------------------------------------------------


def test_a_weekday_profile_lands_at_the_minutes_its_nightscout_entries_name():
    profile, notes = from_nightscout_profile(nightscout_doc(), weight_kg=70, age_years=35)
    assert profile.name == "Weekday"  # the newest record's defaultProfile
    assert profile.basal_schedule == (BasalSegment(0, 0.8), BasalSegment(180, 1.0), BasalSegment(390, 1.1),
                                      BasalSegment(720, 0.9), BasalSegment(1320, 0.8))
    assert profile.carb_ratio_schedule == segments((0, 12), (360, 8), (660, 10), (1020, 11))  # "11" a string
    assert profile.correction_factor_schedule == segments((0, 50), (360, 40), (1260, 50))
    assert [profile.carb_ratio_at(m) for m in (359, 360, 659, 660, 1019, 1020, 1439)] == [12, 8, 8, 10, 10, 11, 11]
    assert [profile.basal_u_per_h_at(m) for m in (179, 180, 389, 390, 1319, 1320)] == [0.8, 1.0, 1.0, 1.1, 0.9, 0.8]
    assert profile.timezone == "Europe/Berlin"
    assert any(n.startswith("dia 6 h: not imported") for n in notes)
    assert any(n.startswith("timezone 'Europe/Berlin': every schedule is read at the local time of day") for n in notes)
    assert any("not imported from the same record: 'Holiday mmol'" in n for n in notes)
    assert any(n == "not imported: carbs_hr, delay, startDate" for n in notes)


def test_the_newest_record_is_read_whatever_the_order_of_the_list():
    doc = nightscout_doc()
    newest, _ = from_nightscout_profile(doc, weight_kg=70, age_years=35)
    assert from_nightscout_profile(doc[::-1], weight_kg=70, age_years=35)[0] == newest
    one, notes = from_nightscout_profile(doc[1], weight_kg=70, age_years=35)  # a single record, not a list
    assert one == newest and not any("older profile record" in n for n in notes)
    with pytest.raises(ProfileImportError, match="no profile 'Old' in the store; it holds 'Weekday', 'Holiday mmol'"):
        from_nightscout_profile(doc, weight_kg=70, age_years=35, profile_name="Old")


def test_the_target_is_the_middle_of_low_and_high_at_the_times_of_both():
    profile, notes = from_nightscout_profile(nightscout_doc(), weight_kg=70, age_years=35)
    # low 100 / 90 from 07:00 / 100 from 22:00; high 120 / 110 from 07:00 / 130 from 12:00 / 120 from 22:00
    assert profile.target_schedule == segments((0, 110), (420, 100), (720, 110))  # 22:00 is 110 again: merged
    assert any(n.startswith("target: the middle of target_low..target_high") for n in notes)


def test_mmol_is_converted_with_nightscouts_factor():
    profile, notes = from_nightscout_profile(nightscout_doc(), weight_kg=70, age_years=35, profile_name="Holiday mmol")
    assert NIGHTSCOUT_MG_DL_PER_MMOL_L == 18.01559
    # sens 2.5 and 3.0 mmol/L/U; targets 5.5..6.5 mmol/L: each converted and rounded to 0.1 mg/dL
    assert profile.correction_factor_schedule == segments((0, 45.0), (720, 54.0))
    assert profile.target_mg_dl == pytest.approx((99.1 + 117.1) / 2) and profile.target_schedule == ()
    assert profile.carb_ratio_g_per_u == 10.0 and profile.carb_ratio_schedule == ()  # g/U: no conversion
    assert profile.timezone == "Etc/GMT+8"  # Loop's "ETC/GMT+8", as Nightscout reads it
    assert any("mg/dL x 18.01559 (Nightscout lib/constants.json MMOL_TO_MGDL)" in n for n in notes)


def test_reference_values_are_time_weighted_means_and_an_estimated_tdi_is_an_assumption():
    profile, notes = from_nightscout_profile(nightscout_doc(), weight_kg=70, age_years=35)
    assert profile.carb_ratio_g_per_u == round((12 * 6 + 8 * 5 + 10 * 6 + 11 * 7) / 24, 2)
    assert profile.correction_factor_mg_dl_per_u == round(time_weighted_mean(profile.correction_factor_schedule), 2)
    assert profile.target_mg_dl == round((110 * 7 + 100 * 5 + 110 * 12) / 24, 1)
    daily_basal = 0.8 * 3 + 1.0 * 3.5 + 1.1 * 5.5 + 0.9 * 10 + 0.8 * 2
    assert profile.daily_basal_u == pytest.approx(daily_basal)
    assert profile.total_daily_insulin_u == round(daily_basal / 0.5, 1)
    assert any(n.startswith("ASSUMPTION: total_daily_insulin_u = 45.1 U") and "--tdi" in n for n in notes)
    given_tdi, notes = from_nightscout_profile(nightscout_doc(), weight_kg=70, age_years=35, total_daily_insulin_u=52)
    assert given_tdi.total_daily_insulin_u == 52.0 and not any(n.startswith("ASSUMPTION") for n in notes)


def test_imported_profiles_round_trip_through_the_config():
    for kwargs in ({}, {"profile_name": "Holiday mmol"}):
        profile, _ = from_nightscout_profile(nightscout_doc(), weight_kg=70, age_years=35, **kwargs)
        assert loads_as_config(profile) == profile
    profile, _ = from_oref0_profile(oref0_doc(), weight_kg=70, age_years=35, timezone="Europe/Paris")
    assert loads_as_config(profile) == profile


# --- oref0 ----------------------------------------------------------------------------------------


def test_an_oref0_profile_lands_at_its_offsets_and_aims_at_each_low():
    profile, notes = from_oref0_profile(oref0_doc(), weight_kg=70, age_years=35)
    assert profile.basal_schedule == (BasalSegment(0, 0.9), BasalSegment(300, 1.2), BasalSegment(570, 1.0),
                                      BasalSegment(1200, 0.85))
    assert profile.correction_factor_schedule == segments((0, 55), (360, 45), (1080, 50))
    assert profile.carb_ratio_schedule == segments((0, 11), (420, 8), (720, 10))
    assert profile.target_schedule == segments((0, 110), (360, 100), (1320, 110))  # low, not (low + high) / 2
    assert profile.timezone == ""  # oref0 runs on the rig's clock; the notes say what that means
    assert any(n.startswith("timezone: not in the profile") and "--timezone" in n for n in notes)
    assert any(n.startswith("dia 5 h, curve 'rapid-acting': not imported") for n in notes)


def test_oref0_mmol_and_exchanges_are_converted_as_oref0_does():
    doc = oref0_doc()
    doc["isfProfile"]["units"] = "mmol/L"
    for s, v in zip(doc["isfProfile"]["sensitivities"], (3.0, 2.5, 2.8)):
        s["sensitivity"] = v
    doc["bg_targets"]["units"] = "mmol/L"
    for t, v in zip(doc["bg_targets"]["targets"], (6.0, 5.5, 6.0)):
        t["low"] = v
    doc["carb_ratios"]["units"] = "exchanges"
    for c, v in zip(doc["carb_ratios"]["schedule"], (1.0, 1.5, 1.2)):
        c["ratio"] = v
    profile, notes = from_oref0_profile(doc, weight_kg=70, age_years=35)
    assert profile.correction_factor_schedule == segments((0, 54.0), (360, 45.0), (1080, 50.4))  # x 18
    assert profile.target_schedule == segments((0, 108.0), (360, 99.0), (1320, 108.0))
    assert profile.carb_ratio_schedule == segments((0, 12.0), (420, 8.0), (720, 10.0))  # 12 g per exchange
    assert sum("(oref0 bin/oref0-get-profile.js)" in n for n in notes) == 2


def test_oref0_caps_become_suggested_limits_checked_but_never_applied(tmp_path):
    suggestions = {s.key: s.value for s in oref0_limit_suggestions(oref0_doc())}
    # max_basal 3.5 is below max_daily_safety_multiplier 3 x the largest rate 1.2 = 3.6
    assert suggestions == {"max_iob_u": 4.0, "max_basal_u_per_h": 3.5, "max_basal_multiple": 4.0}
    doc = oref0_doc()
    doc["max_basal"], doc["current_basal_safety_multiplier"] = 6.0, 5
    src = tmp_path / "profile.json"
    src.write_text(json.dumps(doc))
    out = tmp_path / "loop-profile.toml"
    run = subprocess.run(glucotwin() + ["profile", "import", str(src), "--weight-kg", "70", "--age-years", "35",
                                        "--tdi", "48", "--out", str(out)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    text = out.read_text()
    comments = " ".join(line[1:].strip() for line in text.splitlines() if line.startswith("#"))  # unwrapped
    assert "# max_basal_u_per_h = 3.6  # oref0 min(max_basal 6, max_daily_safety_multiplier 3 x largest basal" \
           in text
    assert "glucotwin refuses max_basal_multiple = 5.0 (oref0 current_basal_safety_multiplier): [limits] " \
           "max_basal_multiple = 5.0: must be between 1 and 4" in comments
    assert "# max_iob_u = 4.0  # oref0 max_iob" in text
    data = tomllib.loads(text)
    assert set(data) == {"profile"}  # the suggestions are comments
    loaded = parse_config({**data, "pump": PUMP})
    assert loaded.limits.max_iob_u == 0.10 * 48 and loaded.limits.max_basal_u_per_h == 4 * 1.2  # glucotwin's defaults


# --- refusals -------------------------------------------------------------------------------------


def _ns(mutate):
    doc = nightscout_doc()
    mutate(doc[1]["store"]["Weekday"])
    return doc


BAD_NIGHTSCOUT = [
    (lambda e: e.update(basal=[]), "Nightscout profile 'Weekday': basal: missing or empty"),
    (lambda e: e.pop("sens"), "sens: missing or empty"),
    (lambda e: e["basal"].pop(0), r"basal: the first entry must start at 00:00, got 03:00"),
    (lambda e: e["carbratio"].reverse(), r"carbratio: the first entry must start at 00:00"),
    (lambda e: e["sens"].insert(3, {"time": "05:00", "value": 45}), r"increasing time order \(05:00 after 21:00\)"),
    (lambda e: e["sens"][1].update(time="25:00"), r"sens\[1\]\.time: expected a clock time 00:00..23:59"),
    (lambda e: e["sens"][1].update(timeAsSeconds=3600), "time '06:00' and timeAsSeconds 3600 .01:00. disagree"),
    (lambda e: e["carbratio"][2].update(value="ten"), r"carbratio\[2\] \(11:00\): must be a number, got 'ten'"),
    (lambda e: e.update(units="percent"), "units 'percent' is neither mg/dl nor mmol"),
    (lambda e: e["target_high"][1].update(value=80), "target_high 80 is below target_low 90 at 07:00"),
    (lambda e: e["basal"][2].update(value=50), "Nightscout profile 'Weekday': basal rate must be within 0..35 U/h, got 50.0"),
    (lambda e: e.update(timezone="Mars/Olympus"), "timezone 'Mars/Olympus' is not an IANA time zone"),
    (lambda e: (e.pop("units"), [t.update(value=5.5) for t in e["target_low"] + e["target_high"]]),
     "looks like mmol/L: check the profile's units"),
]


@pytest.mark.parametrize("mutate, message", BAD_NIGHTSCOUT)
def test_a_bad_nightscout_document_gives_one_clear_error(mutate, message):
    with pytest.raises(ProfileImportError, match=message) as info:
        from_nightscout_profile(_ns(mutate), weight_kg=70, age_years=35)
    assert "\n" not in str(info.value)


def _oref0(mutate):
    doc = oref0_doc()
    mutate(doc)
    return doc


BAD_OREF0 = [
    (lambda d: d.update(basalprofile=[]), "basalprofile missing or empty"),
    (lambda d: [t.update(offset=t["offset"] * 60) and t.pop("start") for t in d["bg_targets"]["targets"]],
     r"targets\[1\]\.offset = 21600: must be a whole minute of the day"),  # bin/get_profile.py writes seconds
    (lambda d: d["isfProfile"].pop("units"), 'isfProfile.units = None: must be "mg/dL" or "mmol/L"'),
    (lambda d: d["carb_ratios"].update(units="pints"), 'carb_ratios.units \'pints\' must be "grams" or "exchanges"'),
    (lambda d: d["basalprofile"][1].update(start="06:00:00"), r"minutes 300 \(05:00\) and start '06:00:00' disagree"),
    (lambda d: d["carb_ratios"]["schedule"][1].update(ratio=0.5), r"refused: carb_ratio_schedule value at 07:00"),
]


@pytest.mark.parametrize("mutate, message", BAD_OREF0)
def test_a_bad_oref0_profile_gives_one_clear_error(mutate, message):
    with pytest.raises(ProfileImportError, match=message) as info:
        from_oref0_profile(_oref0(mutate), weight_kg=70, age_years=35)
    assert "\n" not in str(info.value)


def test_the_format_is_told_from_the_keys():
    assert detect_format(nightscout_doc()) == "nightscout"
    assert detect_format(nightscout_doc()[1]["store"]["Weekday"]) == "nightscout"  # a legacy record
    assert detect_format(oref0_doc()) == "oref0"
    with pytest.raises(ProfileImportError, match="neither a Nightscout profile"):
        detect_format({"sgv": 120})
    with pytest.raises(ProfileImportError, match="neither"):
        detect_format([])


# --- the command ----------------------------------------------------------------------------------


def test_the_command_writes_a_profile_that_glucotwin_run_loads(tmp_path):
    out = tmp_path / "loop-profile.toml"
    run = subprocess.run(glucotwin() + ["profile", "import", str(DATA / "nightscout_profile.json"), "--weight-kg", "70",
                                        "--age-years", "35", "--profile", "Weekday", "--out", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[1].split() == ["time", "basal", "U/h", "carb", "ratio", "g/U", "correction",
                                                  "mg/dL/U", "target", "mg/dL"]
    assert "07:00       1.10            8.00               40.00        100.00" in run.stdout
    assert f"wrote {out}" in run.stdout
    text = out.read_text()
    assert text.startswith("# glucotwin profile import: nightscout profile nightscout_profile.json\n")
    assert "\n# - ASSUMPTION: total_daily_insulin_u = 45.1 U, estimated as daily basal 22.55 U" in text
    config = tmp_path / "loop.toml"
    config.write_text(text + '\n[pump]\nport = "/dev/ttyUSB0"\nkey_file = "pump.key"\n')
    expected, _ = from_nightscout_profile(nightscout_doc(), weight_kg=70, age_years=35)
    assert load_config(config).profile == expected


def test_the_command_prints_the_section_and_sends_the_table_to_stderr():
    run = subprocess.run(glucotwin() + ["profile", "import", str(DATA / "oref0_profile.json"), "--weight-kg", "70",
                                        "--age-years", "35", "--timezone", "Europe/Paris"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    data = tomllib.loads(run.stdout)
    assert data["profile"]["timezone"] == "Europe/Paris" and data["profile"]["name"] == "oref0"
    assert "mean                        9.88               48.75        103.30" in run.stderr


def test_a_slipped_decimal_point_is_refused_with_the_configs_message(tmp_path):
    doc = nightscout_doc()
    doc[1]["store"]["Weekday"]["carbratio"][1]["value"] = 1.0  # 10 meant; PatientProfile alone allows 1..150
    src = tmp_path / "ns.json"
    src.write_text(json.dumps(doc))
    out = tmp_path / "loop-profile.toml"
    run = subprocess.run(glucotwin() + ["profile", "import", str(src), "--nightscout", "--weight-kg", "70",
                                        "--age-years", "35", "--tdi", "45", "--out", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == "" and not out.exists()
    assert run.stderr.count("\n") == 1
    assert run.stderr.startswith("glucotwin: error: the imported profile is refused by the loop's configuration: "
                                 "[profile] carb_ratio_schedule[1].g_per_u = 1.0: must be between 2.222 and 55.56 g/U")


@pytest.mark.parametrize("args, message", [
    (["--oref0"], "oref0 profile: must be an object, got list"),
    (["--profile", "Nope"], "no profile 'Nope' in the store"),
    (["--timezone", "Nowhere/Land"], "refused: timezone 'Nowhere/Land' is not an IANA time zone"),
])
def test_the_command_refuses_in_one_line(args, message):
    run = subprocess.run(glucotwin() + ["profile", "import", str(DATA / "nightscout_profile.json"), "--weight-kg",
                                        "70", "--age-years", "35", *args], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.startswith("glucotwin: error: ") and message in run.stderr and run.stderr.count("\n") == 1


# --- the property ---------------------------------------------------------------------------------

ZONES = ("", "UTC", "Europe/Paris", "America/Los_Angeles", "Asia/Kolkata")


def _schedule(values: st.SearchStrategy) -> st.SearchStrategy:
    """A time-of-day schedule: from 00:00, increasing whole minutes, 1..6 segments."""
    return st.lists(st.tuples(st.integers(1, 1439), values), max_size=5, unique_by=lambda p: p[0]).flatmap(
        lambda rest: values.map(lambda first: tuple(sorted([(0, first), *rest]))))


@settings(max_examples=60, deadline=None)
@given(basal=_schedule(st.integers(5, 300).map(lambda v: v / 100)),  # 0.05..3 U/h
       cr=_schedule(st.integers(40, 300).map(lambda v: v / 10)),  # 4..30 g/U
       cf=_schedule(st.integers(200, 1200).map(lambda v: v / 10)),  # 20..120 mg/dL/U
       target=_schedule(st.integers(900, 1800).map(lambda v: v / 10)),  # 90..180 mg/dL
       zone=st.sampled_from(ZONES), use_schedules=st.booleans())
def test_any_valid_schedule_written_as_a_nightscout_document_imports_back_to_the_same_values(
        basal, cr, cf, target, zone, use_schedules):
    sched = {"carb_ratio_schedule": segments(*cr), "correction_factor_schedule": segments(*cf),
             "target_schedule": segments(*target)} if use_schedules else {}
    original = PatientProfile("me", 70.0, 60.0, 12.0, 45.0, 35.0, tuple(BasalSegment(m, r) for m, r in basal),
                              target_mg_dl=120.0, timezone=zone, **sched)
    doc = json.loads(json.dumps([profile_document(profile_store(original, 6.0, original.timezone or "UTC"),
                                                  datetime(2026, 3, 1, tzinfo=UTC))]))
    imported, _ = from_nightscout_profile(doc, weight_kg=70, age_years=35, total_daily_insulin_u=60, name="me")
    assert imported.basal_schedule == original.basal_schedule
    assert imported.timezone == (zone or "UTC")
    minutes = sorted({0, 1439} | {m for m, _ in cr + cf + target + basal})
    for at in ("carb_ratio_at", "correction_factor_at", "target_at"):
        assert [getattr(imported, at)(m) for m in minutes] == [getattr(original, at)(m) for m in minutes], at
    for key in ("carb_ratio_schedule", "correction_factor_schedule"):  # as written, or one value all day
        assert getattr(imported, key) == (getattr(original, key) if len(getattr(original, key)) > 1 else ())
    if use_schedules and len(cr) > 1:
        assert imported.carb_ratio_g_per_u == round(time_weighted_mean(original.carb_ratio_schedule), 2)

