"""Temporary targets in the live loop: received as Nightscout treatments (MQTT ``treatments`` topic),
journaled, honoured with their duration, and back after a restart (issue 20, deliver 2)."""

from __future__ import annotations

import json
from datetime import timedelta

from controller.loop.journal import Journal
from sensors.mqtt_source import MqttSettings, parse_message
from sensors.nightscout.entry import TempTargetTreatment
from test_runtime import T0, Clock, MemoryPump, feed, make_loop

SETTINGS = MqttSettings(subject="test")


def treatment(minutes: float, duration_min: float, bottom: float, top: float, units: str = "mg/dl") -> list:
    doc = {"eventType": "Temporary Target", "reason": "Eating Soon", "duration": duration_min,
           "targetBottom": bottom, "targetTop": top, "units": units, "enteredBy": "phone",
           "created_at": (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")}
    return parse_message(SETTINGS.treatments_topic, json.dumps(doc).encode(), SETTINGS)


def test_a_temporary_target_on_the_treatments_topic_moves_the_target_for_its_duration_and_survives_a_restart(tmp_path):
    items = treatment(10, 30, 90, 90)
    assert len(items) == 1 and isinstance(items[0], TempTargetTreatment) and items[0].source == "mqtt:phone"
    path = tmp_path / "j.sqlite"
    pump, clock = MemoryPump(), Clock()
    with Journal(path) as journal:
        loop, source = make_loop(journal, pump, clock)
        feed(loop, source, clock, 0, 2)
        source.items += items
        results = feed(loop, source, clock, 2, 2)  # 06:10, 06:15
        journaled = journal.last("temp_target").payload
        assert journaled["target_mg_dl"] == 90.0 and journaled["duration_min"] == 30.0
        assert journaled["source"] == "mqtt:phone"
        decisions = [e.payload for e in journal.events("decision")]
        targets = [d["dose"]["diagnostics"]["target_mg_dl"] for d in decisions]
        assert targets == [120.0, 120.0, 90.0, 90.0]
        assert "temporary target: Eating Soon 90 mg/dL until 06:40" in results[-1].dose.reason
    with Journal(path) as journal:  # a restart at 06:20: the target still runs, until 06:40
        loop, source = make_loop(journal, pump, clock)
        loop.restore()
        feed(loop, source, clock, 4, 5)  # 06:20 .. 06:40
        targets = [e.payload["dose"]["diagnostics"]["target_mg_dl"] for e in journal.events("decision")][-5:]
        assert targets == [90.0, 90.0, 90.0, 90.0, 120.0]


def test_a_cancellation_and_a_bad_target_are_handled_and_journaled(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        loop, source = make_loop(journal, MemoryPump(), clock := Clock())
        source.items += treatment(0, 120, 7.5, 8.0, units="mmol")  # exercise-like, mmol/L
        feed(loop, source, clock, 0, 2)
        source.items += treatment(10, 0, 0, 0)  # duration 0: cancel
        source.items += treatment(10, 30, 40, 50)  # a typo: 45 mg/dL is refused, never a target
        feed(loop, source, clock, 2, 2)
        targets = [e.payload["dose"]["diagnostics"]["target_mg_dl"] for e in journal.events("decision")]
        assert targets == [139.6, 139.6, 120.0, 120.0]  # 7.75 mmol/L x 18.01559, rounded to 0.1
        rejected = journal.last("rejection").payload["reason"]
        assert rejected.startswith("temporary target refused") and "80..200 mg/dL" in rejected
        assert [e.payload["duration_min"] for e in journal.events("temp_target")] == [120.0, 0.0]
