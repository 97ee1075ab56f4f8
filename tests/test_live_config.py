"""The live loop's TOML configuration: the shipped example parses; mistakes are one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.live_config import ConfigError, load_config, parse_config, profile_to_toml
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
    ({"loop": {"clock": "ntp"}}, "clock must be"),
    ({"loop": {"cycle_min": -5}}, "cycle_min must be a positive number"),
    ({"pump": {"transport": "serial"}}, "needs port"),
    ({"limits": {"max_bolus": 3}}, "[limits]"),
    ({"sensor": {"transport": "bluetooth"}}, "transport must be"),
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
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
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
