"""The devicestatus, profile and treatments as Nightscout's plugins read them, from real loop cycles.

The loop is wired by the composition root (``controller.loop.live.compose``) from a real
configuration: the reference pump firmware as a subprocess on a pseudo-terminal pair
(socat), the loop's own Nightscout-API receiver as its CGM source, and a second
receiver over real HTTP as the Nightscout it uploads to. Every field a plugin of
cgm-remote-monitor reads (``lib/plugins/openaps.js``, ``loop.js``, ``iob.js``,
``cob.js``, ``pump.js``, ``upbat.js``; the profile as ``lib/profilefunctions.js``
reads it) is checked for presence, type and unit, and its value against an
independent computation (the journal, the pump's own status, the supervisor's
insulin curve) where one exists.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import pytest

from controller.insulin_math import Delivery, fraction_remaining, insulin_on_board_u
from controller.loop.nightscout.battery import read_battery
from controller.loop.nightscout.insulin import activity_fraction_per_min
from controller.loop.nightscout.predictions import pred_bgs
from sensors.nightscout.entry import CarbAnnouncement
from sensors.nightscout.receiver import NightscoutReceiver
from sensors.reading import GlucoseReading

REPO = Path(__file__).resolve().parents[1]
SECRET = "correct horse battery"
KEY = bytes(range(32))
DEV = "pump-ns-01"
RESERVOIR_U = 150.0
ISO_Z = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$"

needs_socat = pytest.mark.skipif(shutil.which("socat") is None,
                                 reason="needs socat (Debian: apt-get install socat; installed by .ci/run)")


# --- the insulin curve: two forms of the same math ---------------------------------------------


@pytest.mark.parametrize("duration_min,peak_min", [(600.0, 100.0), (360.0, 75.0), (300.0, 55.0)])
def test_activity_is_the_rate_insulin_on_board_falls(duration_min, peak_min):
    h = 1e-3
    for t in [0.5, 5.0, 30.0, peak_min, 2 * peak_min, duration_min * 0.8, duration_min - 1.0]:
        numeric = (fraction_remaining(t - h, duration_min, peak_min) - fraction_remaining(t + h, duration_min, peak_min)) \
            / (2 * h)
        assert activity_fraction_per_min(t, duration_min, peak_min) == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    # it peaks at the curve's peak, and all of a dose acts once over the duration
    grid = [k * 0.25 for k in range(int(duration_min * 4) + 1)]
    values = [activity_fraction_per_min(t, duration_min, peak_min) for t in grid]
    assert grid[values.index(max(values))] == pytest.approx(peak_min, abs=0.25)
    assert sum(values) * 0.25 == pytest.approx(1.0, abs=1e-3)
    assert activity_fraction_per_min(0.0, duration_min, peak_min) == 0.0
    assert activity_fraction_per_min(duration_min, duration_min, peak_min) == 0.0


def test_pred_bgs_lines_come_from_the_forecast_decomposition():
    h = [float(m) for m in range(0, 181, 5)]
    baseline = [150.0] * len(h)
    insulin = [-0.4 * m for m in h]
    carb = [0.3 * m for m in h]
    disturbance = [0.1 * m for m in h]
    full = [b + i + c + d for b, i, c, d in zip(baseline, insulin, carb, disturbance)]
    fc = {"horizons_min": h, "glucose_mg_dl": full, "baseline_mg_dl": baseline, "insulin_effect_mg_dl": insulin,
          "carb_effect_mg_dl": carb, "disturbance_effect_mg_dl": disturbance}
    zero = {**fc, "insulin_effect_mg_dl": [-0.1 * m for m in h]}
    p = pred_bgs(fc, zero)
    assert set(p) == {"IOB", "ZT", "UAM", "COB"} and all(len(v) == 37 for v in p.values())
    assert p["IOB"][-1] == 150 - 72 and p["ZT"][-1] == 150 - 18            # insulin alone; with a zero temp
    assert p["UAM"][-1] == 150 - 72 + 18 and p["COB"][-1] == round(full[-1])  # + disturbance; + carbs too
    no_carbs = {**fc, "carb_effect_mg_dl": [0.0] * len(h)}
    assert "COB" not in pred_bgs(no_carbs) and "ZT" not in pred_bgs(no_carbs)


def test_the_uploader_battery_is_read_from_the_kernel_power_supply_class(tmp_path):
    assert read_battery(tmp_path / "absent") is None
    root = tmp_path / "power_supply"
    for name, kind, capacity, status in [("AC", "Mains", None, None), ("BAT0", "Battery", "81", "Charging"),
                                         ("BAT1", "Battery", "64", "Discharging"), ("BAT2", "Battery", "x", "Full")]:
        d = root / name
        d.mkdir(parents=True)
        (d / "type").write_text(kind + "\n")
        if capacity is not None:
            (d / "capacity").write_text(capacity + "\n")
            (d / "status").write_text(status + "\n")
    assert read_battery(root) == {"percent": 64, "charging": False}  # the lowest readable battery
    (root / "BAT1" / "type").write_text("USB\n")
    assert read_battery(root) == {"percent": 81, "charging": True}


def test_the_profile_store_holds_each_setting_by_time_of_day():
    from controller.loop.nightscout.profile import content_hash, profile_store
    from twin.profile import BasalSegment, PatientProfile
    from twin.schedule import ScheduleSegment

    profile = PatientProfile("ns", 70.0, 40.0, 12.0, 45.0, 35.0,
                             (BasalSegment(0, 0.8), BasalSegment(390, 1.1)), 110.0,
                             carb_ratio_schedule=(ScheduleSegment(0, 12.0), ScheduleSegment(360, 8.0)),
                             correction_factor_schedule=(ScheduleSegment(0, 50.0), ScheduleSegment(1320, 60.0)))
    store = profile_store(profile, 6.0)
    assert store["carbratio"] == [{"time": "00:00", "value": 12.0, "timeAsSeconds": 0},
                                  {"time": "06:00", "value": 8.0, "timeAsSeconds": 21600}]
    assert [e["time"] for e in store["sens"]] == ["00:00", "22:00"] and store["sens"][1]["value"] == 60.0
    assert store["basal"][1] == {"time": "06:30", "value": 1.1, "timeAsSeconds": 23400}
    assert store["target_low"] == store["target_high"] == [{"time": "00:00", "value": 110.0, "timeAsSeconds": 0}]
    assert store["dia"] == 6.0
    assert content_hash(store) == content_hash(profile_store(profile, 6.0)) != content_hash(profile_store(profile, 5.0))


# --- a real loop: pump firmware on a pty, receivers over HTTP ------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def _get(url: str) -> Any:
    request = urllib.request.Request(url, headers={"api-secret": hashlib.sha1(SECRET.encode()).hexdigest()})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


class Rig:
    """socat + the pump firmware process + the Nightscout stand-in; :meth:`config` for the loop."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.host_tty, self.pump_tty = tmp / "host.tty", tmp / "pump.tty"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.socat = subprocess.Popen(["socat", "-d", "-d", f"pty,raw,echo=0,link={self.pump_tty}",
                                       f"pty,raw,echo=0,link={self.host_tty}"], stderr=subprocess.DEVNULL,
                                      start_new_session=True)
        self.procs.append(self.socat)
        _wait(lambda: self.host_tty.exists() and self.pump_tty.exists(), "socat")
        self.key_file = tmp / "pump.key"
        self.key_file.write_text(KEY.hex() + "\n")
        self.pump: subprocess.Popen[bytes] | None = None
        self.start_pump()
        self.nightscout = NightscoutReceiver("127.0.0.1", 0, SECRET)
        self.nightscout.start()
        (tmp / "ns.secret").write_text(SECRET + "\n")

    def start_pump(self) -> None:
        ready = self.tmp / "pump.ready"
        ready.unlink(missing_ok=True)
        self.pump = subprocess.Popen(
            [sys.executable, "-m", "firmware_bridge.pump_device", "--port", str(self.pump_tty), "--device-id", DEV,
             "--key-file", str(self.key_file), "--state-file", str(self.tmp / "pump-state.json"),
             "--reservoir", str(RESERVOIR_U), "--scheduled-basal", "0.8", "--ready-file", str(ready)],
            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(self.pump)
        _wait(lambda: ready.exists() or self.pump.poll() is not None, "the pump firmware")
        assert self.pump.poll() is None, "the pump firmware did not start"

    def kill_pump(self) -> None:
        assert self.pump is not None
        self.pump.kill()
        self.pump.wait(5)

    def config(self, carb_ratio: float = 12.0) -> Any:
        from controller.loop.config.live_config import parse_config

        return parse_config({
            "profile": {"name": "ns", "weight_kg": 70, "total_daily_insulin_u": 40, "carb_ratio_g_per_u": carb_ratio,
                        "correction_factor_mg_dl_per_u": 45, "age_years": 35,
                        "basal": [{"start": "00:00", "rate_u_per_h": 0.8}, {"start": "06:00", "rate_u_per_h": 1.0}]},
            "loop": {"journal": str(self.tmp / "journal.sqlite")},
            "pump": {"transport": "serial", "port": str(self.host_tty), "device_id": DEV,
                     "key_file": str(self.key_file), "reply_timeout_s": 0.5, "retries": 1},
            "sensor": {"transport": "nightscout"},
            "nightscout": {"url": self.nightscout.url, "api_secret_file": str(self.tmp / "ns.secret"),
                           "receive": True, "listen_port": _free_port()}})

    def close(self) -> None:
        self.nightscout.close()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path)
    yield r
    r.close()


class Loop:
    """The loop as ``glucotwin run`` composes it, fed readings at 5-minute CGM times that end now
    (the pump runs on the wall clock: commands are issued now, whatever the reading's time)."""

    def __init__(self, config: Any, minutes_ago: int) -> None:
        from controller.loop.live import compose

        self.parts = compose(config)
        self.parts.loop.restore()
        self.parts.loop.validator = None  # readings are minutes old by the wall clock, by design
        self.start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=minutes_ago)
        self.k = 0

    def reading(self, glucose_mg_dl: float, carbs_g: float = 0.0) -> None:
        t = self.start + timedelta(minutes=5 * self.k)
        self.k += 1
        if carbs_g:
            self.parts.loop.handle(CarbAnnouncement(t, carbs_g, "test:phone"))
        assert self.parts.loop.handle(GlucoseReading(t, glucose_mg_dl, "test:cgm")) is not None

    def close(self) -> None:
        self.parts.upload.close()
        self.parts.source.close()
        self.parts.journal.close()


def _path(doc: dict[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        value = value[part]
    return value


NUMBER = (int, float)
# (field, type, what the plugin does with it): every devicestatus of an answered cycle has all of these
FIELDS: list[tuple[str, Any, str]] = [
    ("device", str, "openaps.js: the pill's device name (openaps:// stripped)"),
    ("created_at", str, "all: the document's time (mills)"),
    ("openaps.iob.iob", NUMBER, "iob.js: the IOB pill; openaps.js: 'IOB: x U'"),
    ("openaps.iob.basaliob", NUMBER, "openaps.js: 'Basal IOB x U'; iob.js passes it on"),
    ("openaps.iob.bolusiob", NUMBER, "openaps.js: 'Bolus IOB x U'"),
    ("openaps.iob.activity", NUMBER, "iob.js passes it on (care-portal COB uses it)"),
    ("openaps.iob.time", str, "openaps.js / iob.js: copied to timestamp"),
    ("openaps.iob.timestamp", str, "iob.js: recency (30 min)"),
    ("openaps.suggested.bg", int, "openaps.js: 'BG: x'"),
    ("openaps.suggested.temp", str, "oref0's 'absolute'"),
    ("openaps.suggested.rate", NUMBER, "openaps.js (enacted): rate.toFixed(2) U/h"),
    ("openaps.suggested.duration", int, "openaps.js: 'for x m'; rate 0 + duration 0 = canceled"),
    ("openaps.suggested.reason", str, "openaps.js: shown after BG"),
    ("openaps.suggested.IOB", NUMBER, "oref0 field (not displayed)"),
    ("openaps.suggested.COB", NUMBER, "cob.js: the COB pill (g)"),
    ("openaps.suggested.eventualBG", int, "openaps.js: lastEventualBG (virtual assistant)"),
    ("openaps.suggested.sensitivityRatio", NUMBER, "openaps.js: 'Sensitivity Ratio'"),
    ("openaps.suggested.predBGs.IOB", list, "openaps.js: forecast line 'IOB'"),
    ("openaps.suggested.predBGs.ZT", list, "openaps.js: forecast line 'Zero-Temp'"),
    ("openaps.suggested.predBGs.UAM", list, "openaps.js: forecast line 'UAM'"),
    ("openaps.suggested.timestamp", str, "openaps.js: the suggestion's moment; predBGs start"),
    ("openaps.enacted.received", bool, "openaps.js: Enacted vs Not Enacted; loop.js: Error when false"),
    ("openaps.enacted.timestamp", str, "openaps.js: the enactment's moment; predBGs start"),
    ("openaps.enacted.rate", NUMBER, "openaps.js: 'Temp Basal Started x for y m'"),
    ("openaps.enacted.duration", int, "openaps.js"),
    ("openaps.enacted.COB", NUMBER, "cob.js: read from enacted when it is newer than suggested"),
    ("pump.clock", str, "pump.js: 'Last Clock', stale after 30/60 min"),
    ("pump.reservoir", NUMBER, "pump.js: reservoir.toPrecision(3) U, warn < 10, urgent < 5"),
    ("pump.status.status", str, "pump.js: status shown (unless bolusing/suspended)"),
    ("pump.status.suspended", bool, "pump.js: 'suspended'"),
    ("pump.status.timestamp", str, "pump status time"),
    ("pump.extended", dict, "pump.js: key/value lines in the pill"),
    ("loop.timestamp", str, "loop.js: the Loop pill's time"),
    ("loop.iob.iob", NUMBER, "loop.js: 'IOB: x U'"),
    ("loop.cob.cob", NUMBER, "loop.js: 'COB: x g'; cob.js (when no openaps)"),
    ("loop.predicted.startDate", str, "loop.js: forecast start"),
    ("loop.predicted.values", list, "loop.js: forecast line, min-max and eventual BG"),
    ("loop.enacted.received", bool, "loop.js: Error when false"),
    ("loop.enacted.timestamp", str, "loop.js: lastEnacted moment"),
    ("loop.enacted.rate", NUMBER, "loop.js: rate.toFixed(2) U/hour"),
    ("loop.enacted.duration", int, "loop.js: 'for x m'"),
]


def _journal(path: Path) -> dict[str, Any]:
    from controller.loop.journal import Journal

    with Journal(path) as j:
        return {"decision": {e.cycle: e.payload for e in j.events("decision")},
                "delivery": {e.cycle: (e.time, e.payload) for e in j.events("delivery") if e.cycle is not None},
                "reply": [e for e in j.events("reply")], "command": [e for e in j.events("command")],
                "announcement": [e.payload for e in j.events("announcement")]}


def _net_deliveries(journal: dict[str, Any], config: Any) -> list[Delivery]:
    out = []
    for _cycle, (t, d) in journal["delivery"].items():
        when = datetime.fromisoformat(t)
        scheduled = config.profile.basal_u_per_h_at(when.hour * 60 + when.minute)
        out.append(Delivery(when, (d["basal_u_per_h"] - scheduled) * d["minutes"] / 60.0 + d["bolus_u"]))
    return out


@needs_socat
def test_devicestatus_of_real_cycles_has_every_field_the_plugins_read(rig):
    config = rig.config()
    glucose = [150.0 + 3.0 * k for k in range(8)] + [174.0 + 2.0 * k for k in range(8)]
    loop = Loop(config, 5 * len(glucose))
    assert loop.parts.upload.pump is loop.parts.loop.pump  # the composition root gives it the pump
    wall_start = datetime.now(UTC) - timedelta(seconds=2)
    try:
        for k, g in enumerate(glucose):
            loop.reading(g, carbs_g=45.0 if k == 6 else 0.0)
    finally:
        loop.close()
    wall_end = datetime.now(UTC) + timedelta(seconds=2)

    statuses = sorted(_get(f"{rig.nightscout.url}/api/v1/devicestatus.json?count=100"), key=lambda s: s["created_at"])
    journal = _journal(config.journal_path)
    assert len(statuses) == len(glucose) == len(journal["decision"])
    meal_time = journal["announcement"][0]["time"]
    bolus_by_time = {datetime.fromisoformat(t): d["bolus_u"] for t, d in journal["delivery"].values()}
    deliveries = _net_deliveries(journal, config)
    limits = config.limits
    reservoirs = []
    for cycle, s in enumerate(statuses, start=1):
        decision = journal["decision"][cycle]
        t = datetime.fromisoformat(decision["input"]["time"])
        after_meal = decision["input"]["time"] >= meal_time
        for name, kind, _what in FIELDS:
            value = _path(s, name)
            assert isinstance(value, kind) and isinstance(value, bool) == (kind is bool), (name, value)
        for name in ("created_at", "openaps.iob.time", "openaps.suggested.timestamp", "openaps.enacted.timestamp",
                     "pump.clock", "loop.timestamp", "loop.predicted.startDate"):
            assert re.match(ISO_Z, _path(s, name)), (name, _path(s, name))
        assert s["created_at"] == s["openaps"]["iob"]["timestamp"] == s["openaps"]["suggested"]["timestamp"]
        assert datetime.fromisoformat(s["created_at"].replace("Z", "+00:00")) == t

        # IOB: the supervisor's account, split; the split and the activity recomputed from the journal
        iob = s["openaps"]["iob"]
        bolus_now = journal["delivery"][cycle][1]["bolus_u"]
        assert iob["iob"] == pytest.approx(decision["dose"]["diagnostics"]["iob_u"] + bolus_now, abs=6e-4)
        assert iob["basaliob"] + iob["bolusiob"] == pytest.approx(iob["iob"], abs=1.5e-3)
        earlier = [d for d in deliveries if d.time < t] + [Delivery(t, bolus_now)]  # this cycle's temp: not yet
        assert iob["iob"] == pytest.approx(insulin_on_board_u(earlier, t, limits.iob_action_duration_min,
                                                              limits.iob_peak_min), abs=1.5e-3)
        expect_bolus = sum(u * fraction_remaining((t - when).total_seconds() / 60.0, limits.iob_action_duration_min,
                                                  limits.iob_peak_min)
                           for when, u in bolus_by_time.items() if when <= t)
        assert iob["bolusiob"] == pytest.approx(expect_bolus, abs=6e-4)
        past = [d for d in deliveries if d.time <= t]
        falls = (insulin_on_board_u(past, t, limits.iob_action_duration_min, limits.iob_peak_min)
                 - insulin_on_board_u(past, t + timedelta(seconds=6), limits.iob_action_duration_min,
                                      limits.iob_peak_min)) / 0.1
        assert iob["activity"] == pytest.approx(falls, abs=2e-4)  # U/min
        assert s["loop"]["iob"]["iob"] == iob["iob"]

        # what was suggested, and what the pump did
        sug, ena = s["openaps"]["suggested"], s["openaps"]["enacted"]
        assert sug["bg"] == round(decision["input"]["cgm_mg_dl"]) and sug["temp"] == "absolute"
        assert sug["rate"] == pytest.approx(decision["dose"]["basal_u_per_h"], abs=5e-4)
        assert sug["duration"] == ena["duration"] == 30 == s["loop"]["enacted"]["duration"]
        temp = next(c for c in journal["command"] if c.cycle == cycle and c.payload["kind"] == "temp_basal")
        reply = next(r for r in journal["reply"] if r.seq == temp.seq)
        assert ena["received"] is True and s["loop"]["enacted"]["received"] is True
        assert ena["rate"] == pytest.approx(reply.payload["rate_u_per_h"], abs=5e-4) == s["loop"]["enacted"]["rate"]
        acked_bolus = sum(r.payload["bolus_u"] for r in journal["reply"] if r.cycle == cycle)
        assert ena.get("units", 0.0) == pytest.approx(acked_bolus, abs=5e-4)
        assert s["loop"]["enacted"].get("bolusVolume", 0.0) == pytest.approx(acked_bolus, abs=5e-4)

        # the forecast lines: 5-minute whole mg/dL over 3 h, clamped as oref0 does
        preds = sug["predBGs"]
        assert set(preds) == ({"IOB", "ZT", "UAM", "COB"} if after_meal else {"IOB", "ZT", "UAM"})
        for line in preds.values():
            assert len(line) == 37 and all(isinstance(v, int) and 39 <= v <= 401 for v in line)
        assert preds["IOB"][0] == preds["ZT"][0] == preds["UAM"][0]
        assert all(z >= i - 1 for z, i in zip(preds["ZT"], preds["IOB"]))  # less insulin, never lower glucose
        whole = preds["COB"] if after_meal else preds["UAM"]
        assert sug["eventualBG"] == whole[-1] and s["loop"]["predicted"]["values"] == whole
        assert ena["predBGs"] == preds and ena["eventualBG"] == sug["eventualBG"]

        # carbohydrate on board: the twin's, from the announcement on
        assert sug["COB"] == ena["COB"] == s["loop"]["cob"]["cob"]
        assert (0.0 < sug["COB"] <= 45.0) if after_meal else sug["COB"] == 0
        if after_meal and cycle > 8:
            assert sug["COB"] <= statuses[cycle - 2]["openaps"]["suggested"]["COB"]  # absorbed, never gained

        # the pump's own status: clock, reservoir, not suspended
        pump = s["pump"]
        clock = datetime.fromisoformat(pump["clock"].replace("Z", "+00:00"))
        assert wall_start <= clock <= wall_end and pump["status"]["timestamp"] == pump["clock"]
        assert pump["status"] == {"status": "normal", "suspended": False, "timestamp": pump["clock"]}
        assert pump["extended"]["BaseBasalRate"] == 0.8 and "battery" not in pump and "bolusing" not in pump["status"]
        reservoirs.append(pump["reservoir"])
        assert "uploader" not in s or read_battery() is not None  # this machine has no battery: none sent

    boluses = sum(d["bolus_u"] for _, d in journal["delivery"].values())
    assert boluses > 0 and all(b <= a for a, b in zip(reservoirs, reservoirs[1:]))
    assert RESERVOIR_U - boluses - 0.05 <= reservoirs[-1] <= RESERVOIR_U - boluses + 1e-3  # + seconds of basal

    # treatments: the meal bolus with its carbs, one temp basal per acknowledged cycle
    treatments = _get(f"{rig.nightscout.url}/api/v1/treatments.json?count=100")
    kinds = [t["eventType"] for t in treatments]
    assert kinds.count("Temp Basal") == len(glucose)
    (meal,) = [t for t in treatments if t["eventType"] == "Meal Bolus"]
    assert meal["carbs"] == 45 and meal["insulin"] > 0 and meal["created_at"] == meal_time.replace("+00:00", ".000Z")


@needs_socat
def test_the_profile_is_uploaded_once_and_again_when_it_changes(rig):
    config = rig.config()
    for minutes_ago in (60, 40):  # a restart with the same profile uploads none
        loop = Loop(config, minutes_ago)
        try:
            for _ in range(2):
                loop.reading(140.0)
        finally:
            loop.close()
    (profile,) = _get(f"{rig.nightscout.url}/api/v1/profile.json")
    assert profile["defaultProfile"] == "glucotwin" and set(profile["store"]) == {"glucotwin"}
    store = profile["store"]["glucotwin"]
    assert set(store) == {"dia", "carbratio", "sens", "basal", "target_low", "target_high", "timezone", "units"}
    assert store["dia"] == config.limits.iob_action_duration_min / 60.0 and store["units"] == "mg/dl"
    assert store["timezone"] == "UTC"
    assert store["basal"] == [{"time": "00:00", "value": 0.8, "timeAsSeconds": 0},
                              {"time": "06:00", "value": 1.0, "timeAsSeconds": 21600}]
    assert store["carbratio"] == [{"time": "00:00", "value": 12.0, "timeAsSeconds": 0}]
    assert store["sens"][0]["value"] == 45.0 and store["target_low"] == store["target_high"]
    assert store["target_low"][0]["value"] == config.profile.target_mg_dl
    first_cycle = min(s["created_at"] for s in rig.nightscout.devicestatus())
    assert profile["startDate"] == first_cycle and re.match(ISO_Z, profile["startDate"])

    changed = rig.config(carb_ratio=10.0)
    loop = Loop(changed, 20)
    try:
        loop.reading(140.0)
    finally:
        loop.close()
    newest, older = _get(f"{rig.nightscout.url}/api/v1/profile.json")
    assert newest["store"]["glucotwin"]["carbratio"][0]["value"] == 10.0 and older["startDate"] == first_cycle
    assert newest["startDate"] > older["startDate"]


@needs_socat
def test_a_suspended_or_silent_pump_is_shown_as_it_is(rig):
    from firmware_bridge.protocol import Command

    config = rig.config()
    loop = Loop(config, 20)
    try:
        loop.reading(150.0)
        link = loop.parts.loop.pump.link
        now = int(time.time() * 1000)
        outcome = link.send(Command.suspend(link.allocate_seq(), DEV, now, now + 30_000))
        assert outcome.status == "ack"
        loop.reading(152.0)  # the pump refuses the temp basal: suspended
        rig.kill_pump()
        loop.reading(154.0)  # no answer at all: no pump status is asked for, none is made up
    finally:
        loop.close()
    first, suspended, silent = sorted(rig.nightscout.devicestatus(), key=lambda s: s["created_at"])
    assert first["openaps"]["enacted"]["received"] is True and first["pump"]["status"]["status"] == "normal"

    assert suspended["pump"]["status"]["suspended"] is True and suspended["pump"]["status"]["status"] == "suspended"
    assert suspended["pump"]["reservoir"] == first["pump"]["reservoir"]
    ena = suspended["openaps"]["enacted"]
    assert ena["received"] is False and "not enacted: pump nak (suspended" in ena["reason"]
    assert suspended["loop"]["enacted"]["received"] is False and "suspended" in suspended["loop"]["failureReason"]

    assert "pump" not in silent
    ena = silent["openaps"]["enacted"]
    assert ena["received"] is False and "not enacted:" in ena["reason"]
    assert silent["loop"]["failureReason"]


@pytest.mark.skipif(shutil.which("socat") is None, reason="needs socat and mosquitto (installed by .ci/run)")
def test_a_hil_run_uploads_the_pump_status_and_the_profile(tmp_path):
    from sim.hil.broker import find_mosquitto
    from sim.hil.nightscout import NightscoutTarget
    from sim.hil.rig import run_hil
    from sim.trial.protocol import TrialProtocol

    if find_mosquitto() is None:
        pytest.skip("needs mosquitto (Debian: apt-get install mosquitto)")
    protocol = TrialProtocol(arm="hcl", days=0.05, start=datetime(2025, 1, 1, 6, 30))
    with NightscoutReceiver("127.0.0.1", 0, SECRET) as receiver:
        run_hil(["adult#003"], protocol, tmp_path, progress=False, nightscout=NightscoutTarget(receiver.url, SECRET))
        statuses = sorted(receiver.devicestatus(), key=lambda s: s["created_at"])
        profiles = receiver.profiles()
    assert len(profiles) == 1 and profiles[0]["startDate"] == statuses[0]["created_at"]
    assert statuses and all("pump" in s for s in statuses)
    reservoirs = [s["pump"]["reservoir"] for s in statuses]
    assert all(b <= a for a, b in zip(reservoirs, reservoirs[1:])) and reservoirs[-1] < 300.0
    for s in statuses:
        lag = datetime.fromisoformat(s["created_at"][:-1]) - datetime.fromisoformat(s["pump"]["clock"][:-1])
        assert timedelta(0) <= lag <= timedelta(minutes=10)  # the pump's lockstep clock, as the pump tells it
        assert set(s["openaps"]["suggested"]["predBGs"]) >= {"IOB", "ZT", "UAM"}
        assert math.isfinite(s["openaps"]["iob"]["activity"]) and "bolusiob" in s["openaps"]["iob"]
    assert os.path.exists(tmp_path / "adult-003.journal.sqlite")
