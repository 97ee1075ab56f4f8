"""The live loop's TOML configuration: the shipped example parses; mistakes are one clear error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from controller.loop.config.live_config import ConfigError, load_config, parse_config, profile_to_toml
from twin.profile import BasalSegment, PatientProfile

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "glucotwin.example.toml"


def test_the_shipped_example_parses():
    config = load_config(EXAMPLE)
    assert config.profile.basal_u_per_h_at(7 * 60) == 1.0
    assert config.limits.max_bolus_u == 5.0
    assert config.loop.cycle_min == 5 and config.clock == "system" and config.arm == "hcl"
    assert config.pump.device_id == "pump-1" and config.sensor.transport == "mqtt"


def test_profile_round_trips_through_toml(tmp_path):
    profile = PatientProfile("adult#003", 70.5, 41.2, 11.0, 43.0, 40.0,
                             (BasalSegment(0, 0.85), BasalSegment(390, 1.1)), 120.0)
    text = profile_to_toml(profile) + '\n[pump]\nport = "/dev/null"\nkey_file = "k"\n'
    (tmp_path / "c.toml").write_text(text)
    assert load_config(tmp_path / "c.toml").profile == profile


@pytest.mark.parametrize("change, message", [
    ({"extra": {}}, "unknown config section"),
    ({"loop": {"clock": "ntp"}}, '[loop] clock = "ntp": must be one of "system", "readings"'),
    ({"loop": {"cycle_min": -5}}, "[loop] cycle_min = -5: must be between 1 and 15 min"),
    ({"pump": {"transport": "serial"}}, "needs port"),
    ({"limits": {"max_bolus": 3}}, "[limits]"),
    ({"sensor": {"transport": "bluetooth"}}, '[sensor] transport = "bluetooth": must be one of'),
])
def test_mistakes_are_one_clear_error(change, message):
    data = {
        "profile": {"name": "x", "weight_kg": 70, "total_daily_insulin_u": 40, "carb_ratio_g_per_u": 12,
                    "correction_factor_mg_dl_per_u": 45, "age_years": 30,
                    "basal": [{"start": "00:00", "rate_u_per_h": 0.8}]},
        "pump": {"port": "/dev/ttyUSB0", "key_file": "k"},
    }
    for section, values in change.items():
        data[section] = {**data.get(section, {}), **values} if section in data else values
    if "pump" in change and "port" not in change["pump"]:
        data["pump"] = {"key_file": "k", **change["pump"]}
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(data)


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[profile\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_pump_key_must_be_hex_and_long_enough(tmp_path):
    config = load_config(EXAMPLE)
    key = tmp_path / "pump.key"
    key.write_text("zz")
    from dataclasses import replace
    with pytest.raises(ConfigError, match="hex"):
        replace(config.pump, key_file=str(key)).key()
    key.write_text("00" * 8)
    with pytest.raises(ConfigError, match="too short"):
        replace(config.pump, key_file=str(key)).key()
    key.write_text("ab" * 32 + "\n")
    assert replace(config.pump, key_file=str(key)).key() == bytes([0xAB]) * 32


# --- issue 15, item 4: every key has a type and a hard range -------------------------------------------------

import copy  # noqa: E402
import os  # noqa: E402
import tomllib  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from controller.loop.config import ranges as config_ranges  # noqa: E402
from controller.loop.config.preflight import preflight  # noqa: E402
from controller.loop.config.checks import check_config  # noqa: E402
from controller.loop.config.ranges import SETTINGS, Bound, Context  # noqa: E402
from controller.loop.config.reference import render_markdown  # noqa: E402

CONFIG_MD = Path(__file__).resolve().parents[1] / "deploy" / "CONFIG.md"


def base_data(**profile) -> dict:
    p = {"name": "x", "weight_kg": 70, "total_daily_insulin_u": 42, "carb_ratio_g_per_u": 12,
         "correction_factor_mg_dl_per_u": 45, "age_years": 30, "basal": [{"start": "00:00", "rate_u_per_h": 0.8}]}
    p.update(profile)
    return {"profile": p, "pump": {"transport": "mqtt", "key_file": "k"}}


def with_value(data: dict, section: str, key: str, value) -> dict:
    data = copy.deepcopy(data)
    data.setdefault(section, {})[key] = value
    return data


# each value the issue lists loaded before; now each is one error naming [section] key = value and the range
@pytest.mark.parametrize("section, key, value, message", [
    ("limits", "max_bolus_u", 1000, "[limits] max_bolus_u = 1000: must be between 0 and 14.7 U "
                                    "(highest: the smaller of 35% of total_daily_insulin_u (42 U) = 14.7 U and the "
                                    "adult maximum 17 U (AndroidAPS MAX_BOLUS); default 10.5"),
    ("limits", "max_iob_u", 1000, "[limits] max_iob_u = 1000: must be between 0 and 8.4 U"),
    ("limits", "low_mg_dl", 0, "[limits] low_mg_dl = 0: must be between 60 and 90 mg/dL"),
    ("limits", "suspend_forecast_mg_dl", 0, "[limits] suspend_forecast_mg_dl = 0: must be between 70 and 120 mg/dL"),
    ("limits", "stale_after_min", 1e9, "[limits] stale_after_min = 1000000000.0: must be between 5 and 20 min"),
    ("limits", "sensor_max_mg_dl", 100000, "[limits] sensor_max_mg_dl = 100000: must be between 300 and 501 mg/dL"),
    ("limits", "max_basal_multiple", 1000, "[limits] max_basal_multiple = 1000: must be between 1 and 4"),
    ("loop", "command_validity_s", 1e9, "[loop] command_validity_s = 1000000000.0: must be between 10 and 300 s"),
    ("loop", "temp_basal_duration_min", 100000, "[loop] temp_basal_duration_min = 100000: must be between 5 and 60"),
    ("limits", "max_bolus_u", True, "[limits] max_bolus_u = true: must be a number (U)"),
    ("loop", "publish_cycles", "false", '[loop] publish_cycles = "false": must be a TOML boolean'),
    ("mqtt", "port", "abc", '[mqtt] port = "abc": must be an integer'),
    ("mqtt", "port", -1, "[mqtt] port = -1: must be between 1 and 65535"),
    ("mqtt", "port", 1883.0, "[mqtt] port = 1883.0: must be an integer"),
    ("pump", "reply_timeout_s", -5, "[pump] reply_timeout_s = -5: must be between 0.1 and 30 s"),
    ("limits", "correction_iob_to_target", False, "[limits] correction_iob_to_target = false: must be true"),
    ("limits", "max_rate_mg_dl_per_min", 1000, "[limits] max_rate_mg_dl_per_min = 1000: must be between 4 and 10"),
    ("limits", "iob_action_duration_min", 60, "[limits] iob_action_duration_min = 60: must be between 300 and 720"),
    ("loop", "cycle_min", 0.5, "[loop] cycle_min = 0.5: must be between 1 and 15 min"),
    ("loop", "replay_hours", 2, "[loop] replay_hours = 2: must be between 12 and 72 h"),
    ("loop", "journal_retention_days", 1, "[loop] journal_retention_days = 1: must be between 2 and 365 days"),
    ("profile", "total_daily_insulin_u", 1000, "[profile] total_daily_insulin_u = 1000: must be between 7 and 210"),
    ("profile", "carb_ratio_g_per_u", 1.2, "[profile] carb_ratio_g_per_u = 1.2: must be between 2.381 and 59.52"),
    ("profile", "correction_factor_mg_dl_per_u", 450, "[profile] correction_factor_mg_dl_per_u = 450: must be"),
    ("profile", "age_years", "35", '[profile] age_years = "35": must be a number'),
    ("profile", "name", 7, "[profile] name = 7: must be a string"),
    ("pump", "device_id", "pump/1", '[pump] device_id = "pump/1": must be 1..16 characters'),
    ("mqtt", "subject", "me/#", '[mqtt] subject = "me/#": must be [A-Za-z0-9._-]+'),
    ("sensor", "baudrate", 12345, "[sensor] baudrate = 12345: must be one of 9600,"),
    ("nightscout", "upload", "yes", '[nightscout] upload = "yes": must be a TOML boolean (true or false'),
])
def test_unsafe_or_mistyped_values_are_refused_naming_the_key(section, key, value, message):
    data = with_value(base_data(), section, key, value)
    if section == "nightscout":
        data["nightscout"].update(url="https://ns.example.org", api_secret_file="s")
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value).startswith(message), str(info.value)
    assert "\n" not in str(info.value)


def test_a_bool_and_an_int_in_toml_text_are_typed(tmp_path):
    text = profile_to_toml(parse_config(base_data()).profile) + '[pump]\ntransport = "mqtt"\nkey_file = "k"\n'
    for extra, message in [('[loop]\npublish_cycles = "false"\n', "publish_cycles"),
                           ("[mqtt]\nport = 1883.5\n", "[mqtt] port = 1883.5: must be an integer"),
                           ('[limits]\nmax_bolus_u = "5"\n', '[limits] max_bolus_u = "5": must be a number')]:
        (tmp_path / "c.toml").write_text(text + extra)
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_config(tmp_path / "c.toml")
    (tmp_path / "c.toml").write_text(text + "[loop]\npublish_cycles = false\n")
    assert load_config(tmp_path / "c.toml").publish_cycles is False


@pytest.mark.parametrize("section, key, hint", [
    ("limits", "max_bolus", "did you mean max_bolus_u?"),
    ("limits", "max_iob", "did you mean max_iob_u?"),
    ("loop", "cycle_mins", "did you mean cycle_min?"),
    ("mqtt", "pasword_file", "did you mean password_file?"),
    ("pump", "keyfile", "did you mean key_file?"),
    ("limits", "colour", "known keys: max_basal_u_per_h"),
])
def test_unknown_keys_are_errors_with_the_nearest_known_key(section, key, hint):
    with pytest.raises(ConfigError, match=re.escape(f"[{section}]: unknown key {key!r}")) as info:
        parse_config(with_value(base_data(), section, key, 1))
    assert hint in str(info.value)
    data = base_data()
    data["limit"] = {"max_bolus_u": 1}
    with pytest.raises(ConfigError, match=re.escape("unknown config section [limit] (did you mean limits?)")):
        parse_config(data)
    data = base_data()
    data["profile"]["basal"] = [{"start": "00:00", "rate": 0.8}]
    with pytest.raises(ConfigError, match=re.escape("[profile] basal[0]: unknown key 'rate' (did you mean")):
        parse_config(data)


def test_age_group_and_tdi_set_the_caps_and_clamp_the_defaults():
    # a 10-year-old with 40.9 U/day: 25 % of TDI would be 10.2 U; AndroidAPS's child maximum is 5 U
    child = base_data(name="c", weight_kg=38, age_years=10, total_daily_insulin_u=40.9, carb_ratio_g_per_u=7,
                      correction_factor_mg_dl_per_u=34, basal=[{"start": "00:00", "rate_u_per_h": 0.52}])
    limits = parse_config(child).limits
    assert limits.max_bolus_u == 5.0 and limits.max_basal_u_per_h == 2.0 and limits.max_iob_u == pytest.approx(4.09)
    with pytest.raises(ConfigError, match=re.escape("[limits] max_bolus_u = 6: must be between 0 and 5 U")) as info:
        parse_config(with_value(child, "limits", "max_bolus_u", 6))
    assert "the child maximum 5 U" in str(info.value)
    teen = copy.deepcopy(child)
    teen["profile"]["age_years"] = 15
    assert parse_config(teen).limits.max_bolus_u == 10.0
    with pytest.raises(ConfigError, match=re.escape("[profile] basal[0].rate_u_per_h = 2.5: must be between 0 and 2")):
        parse_config(with_value(child, "profile", "basal", [{"start": "00:00", "rate_u_per_h": 2.5}]))
    adult = parse_config(base_data()).limits  # no [limits]: the same defaults as SafetyLimits.for_profile
    assert adult.max_bolus_u == pytest.approx(0.25 * 42) and adult.max_iob_u == pytest.approx(4.2)
    assert adult.max_basal_u_per_h == pytest.approx(3.2)


@pytest.mark.parametrize("limits, message", [
    ({"low_mg_dl": 85, "suspend_forecast_mg_dl": 80}, "[limits] suspend_forecast_mg_dl = 80: must be between 85"),
    ({"correction_threshold_mg_dl": 130}, "[limits] correction_threshold_mg_dl = 130: must be between 80 and 120"),
    ({"suspend_forecast_mg_dl": 150}, "[limits] suspend_forecast_mg_dl = 150: must be between 70 and 120"),
    ({"low_mg_dl": 59}, "[limits] low_mg_dl = 59: must be between 60"),
    ({"max_basal_u_per_h": 0.5}, "[limits] max_basal_u_per_h = 0.5: must be between 0.8 and 3.2 U/h"),
    ({"meal_insulin_fraction": 0.3}, "[limits] meal_insulin_fraction = 0.3: must be between 0.4 and 1"),
    ({"correction_share_initial": 1.5}, "[limits] correction_share_initial = 1.5: must be between 0.5 and 1"),
])
def test_thresholds_are_consistent_with_each_other_and_the_target(limits, message):
    data = base_data()
    data["limits"] = limits
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(data)


def test_cross_section_ranges():
    data = base_data()
    data["loop"] = {"cycle_min": 15}
    with pytest.raises(ConfigError, match=re.escape("[loop] temp_basal_duration_min = 10: must be between 15 and 60")):
        parse_config({**data, "loop": {"cycle_min": 15, "temp_basal_duration_min": 10}})
    data["limits"] = {"stale_after_min": 10}
    with pytest.raises(ConfigError, match=re.escape("[limits] stale_after_min = 10: must be between 15 and 20")):
        parse_config(data)
    data = base_data()
    data["loop"] = {"command_validity_s": 20}
    data["pump"]["reply_timeout_s"] = 6
    with pytest.raises(ConfigError, match=re.escape("[pump] reply_timeout_s = 6: must be between 0.1 and 5 s")):
        parse_config(data)


def test_config_reference_is_generated_from_the_table():
    assert CONFIG_MD.read_text() == render_markdown(), \
        "deploy/CONFIG.md is stale: python -m controller.loop.config.reference > deploy/CONFIG.md"
    text = CONFIG_MD.read_text()
    for s in SETTINGS:
        assert f"| `{s.key}` |" in text and s.reason in text


def test_the_advice_section_reaches_the_controller_and_can_be_switched_off():
    base = {"profile": {"name": "x", "weight_kg": 70, "total_daily_insulin_u": 40, "carb_ratio_g_per_u": 12,
                        "correction_factor_mg_dl_per_u": 45, "age_years": 30,
                        "basal": [{"start": "00:00", "rate_u_per_h": 0.8}]},
            "pump": {"port": "/dev/ttyUSB0", "key_file": "k"}}
    default = parse_config(base)
    assert default.advice is not None and default.control_settings().advice == default.advice
    tuned = parse_config({**base, "advice": {"low_mg_dl": 80, "max_carbs_g": 30, "site_check": False}})
    assert tuned.advice.low_mg_dl == 80.0 and tuned.advice.max_carbs_g == 30.0 and tuned.advice.site_check is False
    off = parse_config({**base, "advice": {"enabled": False}})
    assert off.advice is None and off.control_settings().advice is None
    with pytest.raises(ConfigError, match=r"\[advice\] low_mg_dl"):
        parse_config({**base, "advice": {"low_mg_dl": 40}})


def test_the_table_covers_every_field_of_the_settings_it_builds():
    from dataclasses import fields

    from controller.loop.config.live_config import MqttEndpoint, NightscoutEndpoint, PumpEndpoint, SensorEndpoint
    from controller.loop.runtime import LoopSettings
    from controller.safety import SafetyLimits

    keys = {(s.section, s.key) for s in SETTINGS}
    for section, cls in [("limits", SafetyLimits), ("mqtt", MqttEndpoint), ("sensor", SensorEndpoint),
                         ("pump", PumpEndpoint), ("nightscout", NightscoutEndpoint), ("loop", LoopSettings)]:
        missing = {f.name for f in fields(cls)} - {k for sec, k in keys if sec == section}
        assert not missing, (section, missing)
    # [advice] exposes the thresholds a person would change; the rest are the module's defaults
    from controller.advice import AdviceSettings

    advice_fields = {f.name for f in fields(AdviceSettings)}
    assert {k for sec, k in keys if sec == "advice"} - {"enabled"} <= advice_fields


def test_constants_agree_with_the_components_they_describe():
    from firmware_bridge.protocol import check_device_id
    from sensors.nightscout.auth import MIN_SECRET_CHARS

    assert config_ranges.NIGHTSCOUT_MIN_SECRET_CHARS == MIN_SECRET_CHARS
    device = next(s for s in SETTINGS if s.key == "device_id")
    for candidate in ("pump-1", "a" * 16, "a" * 17, "pump/1", "", "p.m_1-x"):
        try:
            check_device_id(candidate)
            ok = True
        except ValueError:
            ok = False
        assert ok == bool(re.fullmatch(device.pattern, candidate)), candidate


def test_every_hil_generated_config_loads():
    """sim/hil/rig.py writes a loop config per patient with profile_to_toml; all 30 must keep loading."""
    pytest.importorskip("simglucose", reason="needs simglucose (the sim extra): pip install 'glucotwin[sim]'")
    from sim.trial.cohort import clinical_profile
    from sim.hil.rig import loop_config_text
    from sim.hil.nightscout import NightscoutTarget, nightscout_section
    from sim.trial.protocol import TrialProtocol

    for sensor in ("Dexcom", "GuardianRT", "Navigator"):
        for group in ("adolescent", "adult", "child"):
            for i in range(1, 11):
                name = f"{group}#{i:03d}"
                profile = clinical_profile(name)
                text = loop_config_text(profile_to_toml(profile), Path("/j.sqlite"), "127.0.0.1", 1883,
                                        name.replace("#", "-"), Path("/host.tty"), f"pump-{group[:5]}-{i}",
                                        Path("/pump.key"), TrialProtocol(sensor=sensor), Path("/prior.json"))
                text += (f"\n[nightscout]\nurl = \"http://127.0.0.1:1337\"\napi_secret_file = \"/s\"\n"
                         "upload = true\n")
                config = parse_config(tomllib.loads(text))
                assert config.profile == profile
    assert NightscoutTarget and nightscout_section  # the section the harness appends has the keys used above


# --- the property: accepted means inside the hard limits; outside means an error naming the key --------------

AGE = {"child": (1, 12.9), "teenage": (13, 17.9), "adult": (18, 90)}
BOLUS_CAP = {"child": 5, "teenage": 10, "adult": 17}
IOB_CAP = {"child": 7, "teenage": 13, "adult": 22}
BASAL_CAP = {"child": 2, "teenage": 5, "adult": 10}


@st.composite
def profiles(draw):
    group = draw(st.sampled_from(sorted(AGE)))
    age = draw(st.floats(*AGE[group]))
    weight = draw(st.floats(10, 250))
    tdi = draw(st.floats(max(1.0, 0.1 * weight), min(300.0, 3.0 * weight)))
    rate = draw(st.floats(0.11 * tdi / 24, min(BASAL_CAP[group], 0.89 * tdi / 24)))
    return group, {"name": "p", "weight_kg": weight, "total_daily_insulin_u": tdi, "age_years": age,
                   "carb_ratio_g_per_u": draw(st.floats(max(2, 100 / tdi), min(100, 2500 / tdi))),
                   "correction_factor_mg_dl_per_u": draw(st.floats(max(2, 300 / tdi), min(500, 5400 / tdi))),
                   "basal": [{"start": "00:00", "rate_u_per_h": rate}]}


LIMIT_KEYS = [s.key for s in SETTINGS if s.section in ("limits", "loop") and s.kind == "float"]
wild = st.one_of(st.floats(-1e9, 1e9, allow_nan=False), st.integers(-1000, 1000), st.booleans(),
                 st.text(max_size=3), st.floats(0, 700))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(profiles(), st.dictionaries(st.sampled_from(LIMIT_KEYS), wild, max_size=6))
def test_whatever_the_loader_accepts_is_inside_the_hard_limits(profile, overrides):
    group, p = profile
    data = {"profile": p, "pump": {"transport": "mqtt", "key_file": "k"}, "limits": {}, "loop": {}}
    for key, value in overrides.items():
        section = next(s.section for s in SETTINGS if s.key == key)
        data[section][key] = value
    try:
        config = parse_config(data)
    except ConfigError as exc:  # refused: the message names one of the keys given
        assert any(str(exc).startswith(f"[{sec}] {k} = ") for sec in ("limits", "loop") for k in data[sec]), exc
        return
    lim, loop, tdi = config.limits, config.loop, p["total_daily_insulin_u"]
    largest = p["basal"][0]["rate_u_per_h"]
    assert 0 <= lim.max_bolus_u <= min(0.35 * tdi, BOLUS_CAP[group]) + 1e-9
    assert 0 <= lim.max_iob_u <= min(0.20 * tdi, IOB_CAP[group]) + 1e-9
    assert largest - 1e-9 <= lim.max_basal_u_per_h <= min(4 * largest, BASAL_CAP[group]) + 1e-9
    assert 1 <= lim.max_basal_multiple <= 4
    assert 60 <= lim.low_mg_dl <= lim.suspend_forecast_mg_dl <= config.profile.target_mg_dl
    assert lim.low_mg_dl + 10 <= lim.correction_threshold_mg_dl <= config.profile.target_mg_dl
    assert loop.cycle_min <= lim.stale_after_min <= 20
    assert 20 <= lim.sensor_min_mg_dl <= 40 and 300 <= lim.sensor_max_mg_dl <= 501
    assert 4 <= lim.max_rate_mg_dl_per_min <= 10
    assert 300 <= lim.iob_action_duration_min <= 720 and 35 <= lim.iob_peak_min <= 120
    assert lim.correction_iob_to_target is True
    assert lim.meal_insulin_fraction_max <= 1 and lim.correction_share_initial <= 1
    assert 1 <= loop.cycle_min <= 15 and loop.cycle_min <= loop.temp_basal_duration_min <= 60
    assert 10 <= loop.command_validity_s <= 300 and 12 <= loop.replay_hours <= 72


def _bounds(setting, data) -> tuple[float | None, float | None]:
    """The setting's range for this config, from the values before it (as the loader computes it)."""
    ctx = Context()
    for section, values in check_config(data).items():
        for key, value in values.items():
            ctx.values[(section, key)] = value
    out = []
    for b in (setting.low, setting.high):
        out.append(b.compute(ctx)[0] if isinstance(b, Bound) else b)
    return out[0], out[1]


@settings(max_examples=300, deadline=None, derandomize=True)
@given(profiles(), st.sampled_from([s for s in SETTINGS if s.kind in ("float", "int") and not s.choices]),
       st.floats(1e-6, 1e6), st.booleans())
def test_any_value_outside_its_range_is_refused_naming_the_key(profile, setting, excess, above):
    _, p = profile
    data = {"profile": p, "pump": {"transport": "mqtt", "key_file": "k"}}
    if setting.section == "nightscout":
        data["nightscout"] = {"upload": False}
    low, high = _bounds(setting, data)
    if above and high is not None:
        value = high + excess
    elif low is not None:
        value = low - excess
    else:
        return
    if setting.kind == "int":
        value = int(value) + (1 if above else -1)
    with pytest.raises(ConfigError) as info:
        parse_config(with_value(data, setting.section, setting.key, value))
    assert str(info.value).startswith(f"[{setting.section}] {setting.key} = "), str(info.value)


# --- issue 15, item 5: the preflight reads secrets and checks files and devices ----------------------------

@pytest.fixture()
def live(tmp_path):
    """A config whose files all exist: pump key, MQTT password, a real pty as the pump's serial device."""
    master, slave = os.openpty()
    key = tmp_path / "pump.key"
    key.write_text("ab" * 32 + "\n")
    password = tmp_path / "mqtt.password"
    password.write_text("pw\n")
    secret = tmp_path / "ns.secret"
    secret.write_text("s" * 12 + "\n")
    data = base_data()
    data["pump"] = {"transport": "serial", "port": os.ttyname(slave), "key_file": str(key)}
    data["mqtt"] = {"username": "loop", "password_file": str(password)}
    data["nightscout"] = {"url": "https://ns.example.org", "api_secret_file": str(secret)}
    data["loop"] = {"journal": str(tmp_path / "journal.sqlite")}
    yield data, tmp_path
    os.close(master)
    os.close(slave)


def test_preflight_passes_a_good_config(live):
    data, _ = live
    preflight(parse_config(data))


@pytest.mark.parametrize("case, message", [
    ("short_key", "[pump] key_file = "),
    ("missing_key", "[pump] key_file = "),
    ("short_secret", "[nightscout] api_secret_file = "),
    ("no_password_file", "[mqtt] username = 'loop' needs password_file"),
    ("empty_password", "[mqtt] password_file = "),
    ("missing_ca", "[mqtt] tls_ca_file = "),
    ("missing_device", "[pump] port = '/nonexistent/ttyUSB0': no such device"),
    ("file_as_device", "not a serial device (a regular file)"),
    ("no_journal_dir", "[loop] journal = "),
    ("missing_prior", "[twin] prior = "),
])
def test_preflight_names_the_key_of_each_problem(live, case, message):
    data, tmp = live
    if case == "short_key":
        Path(data["pump"]["key_file"]).write_text("00112233")  # 4 bytes
    elif case == "missing_key":
        data["pump"]["key_file"] = str(tmp / "nope.key")
    elif case == "short_secret":
        Path(data["nightscout"]["api_secret_file"]).write_text("ab\n")
    elif case == "no_password_file":
        del data["mqtt"]["password_file"]
    elif case == "empty_password":
        Path(data["mqtt"]["password_file"]).write_text("\n")
    elif case == "missing_ca":
        data["mqtt"]["tls_ca_file"] = str(tmp / "ca.crt")
    elif case == "missing_device":
        data["pump"]["port"] = "/nonexistent/ttyUSB0"
    elif case == "file_as_device":
        data["pump"]["port"] = data["pump"]["key_file"]
    elif case == "no_journal_dir":
        data["loop"]["journal"] = str(tmp / "missing" / "journal.sqlite")
    elif case == "missing_prior":
        data["twin"] = {"prior": str(tmp / "prior.json")}
    with pytest.raises(ConfigError, match=re.escape(message)) as info:
        preflight(parse_config(data))
    assert "\n" not in str(info.value)
