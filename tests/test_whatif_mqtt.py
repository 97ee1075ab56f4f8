"""What-if over MQTT in a running `glucotwin run` (issue 19): real mosquitto, real pty pair, real pump firmware.

Signed questions get answers on the MQTT 5 response topic with their correlation data; a bad signature, a replay,
a stale time and a response topic outside whatif/response/ are refused; and no question changes a dose: the
doses decided for the same readings are the same with and without questions asked.
"""

from __future__ import annotations

import json
import queue
import secrets
import shutil
import time
import uuid
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from controller.loop.journal import Journal
from controller.loop.whatif_service import sign
from sensors.reading import GlucoseReading
from sim.hil.broker import Mosquitto, find_mosquitto
from test_live_run import wait_for
from skip_reasons import skip_reason
from test_live_safety import Rig

pytestmark = pytest.mark.skipif(find_mosquitto() is None or shutil.which("socat") is None,
                                reason=skip_reason("mosquitto", "socat"))

BASE = "glucotwin/bench"


class App:
    """The person's app: asks questions and collects the answers (MQTT 5)."""

    def __init__(self, broker: Mosquitto) -> None:
        self.answers: "queue.Queue[tuple[str, bytes | None, dict]]" = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="app-bench", protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        # answers, and anything on the pump's command topic (a question must never put something there)
        self.client.subscribe([(f"{BASE}/whatif/response/#", 1), (f"{BASE}/pump/+/cmd", 1)])
        self.client.loop_start()

    def _on_message(self, client, userdata, m) -> None:
        try:
            body = json.loads(m.payload)
        except ValueError:
            body = {"raw": m.payload.hex()}
        self.answers.put((m.topic, getattr(m.properties, "CorrelationData", None), body))

    def ask(self, key: bytes, body: dict, response_topic: str, correlation: bytes, signature: str | None = None):
        fields = dict(body)
        fields["signature"] = signature if signature is not None else sign(key, body)
        props = Properties(PacketTypes.PUBLISH)
        props.ResponseTopic = response_topic
        props.CorrelationData = correlation
        self.client.publish(f"{BASE}/whatif/request", json.dumps(fields), qos=1, properties=props).wait_for_publish(5)

    def answer(self, correlation: bytes, timeout_s: float = 30.0) -> tuple[str, dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                topic, corr, body = self.answers.get(timeout=0.5)
            except queue.Empty:
                continue
            if corr == correlation:
                return topic, body
        raise AssertionError(f"no answer for {correlation!r}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _question(**extra) -> dict:
    return {"time": datetime.now(UTC).isoformat(), "nonce": uuid.uuid4().hex,
            "actions": [{"kind": "meal", "carbs_g": 50, "absorption": "fast"}], "horizon_min": 240, **extra}


def _commands(journal) -> list:
    """The dose decided for each reading (cycles the clock alone starts depend on timing, not on questions)."""
    with Journal(journal, read_only=True) as j:
        return [(e.payload["input"]["time"], e.payload["input"]["cgm_mg_dl"], e.payload["dose"]["basal_u_per_h"],
                 e.payload["dose"]["bolus_u"]) for e in j.events("decision")
                if e.payload["input"].get("cgm_mg_dl") is not None]


def _run(tmp_path, ask: bool):
    tmp_path.mkdir(parents=True, exist_ok=True)
    with Mosquitto() as broker:
        rig = Rig(tmp_path, broker)
        app = App(broker)
        try:
            key = bytes.fromhex(secrets.token_hex(32))
            (tmp_path / "whatif.key").write_text(key.hex())
            journal = tmp_path / "journal.sqlite"
            config = rig.config(journal)
            text = config.read_text().replace("cycle_min = 5", "cycle_min = 2")  # readings 2 min apart
            config.write_text(text.replace('client_id = "loop-bench"',
                                                         f'client_id = "loop-bench"\nwhatif_key_file = "{tmp_path / "whatif.key"}"'))
            rig.start(config)
            start = datetime.now(UTC) - timedelta(minutes=12)  # within the 15-min staleness limit
            results = {}
            for k, g in enumerate((150.0, 156.0, 163.0, 171.0, 180.0, 188.0)):
                rig.sensor.publish_reading(GlucoseReading(start + timedelta(minutes=2 * k), g, "test:cgm"))
                wait_for(lambda: _decisions(journal) == k + 1, 30, f"cycle {k + 1}")
                if ask and k == 2:
                    results = _ask_all(app, key)
            return _commands(journal), results
        finally:
            app.close()
            rig.close()


def _decisions(journal) -> int:
    with Journal(journal, read_only=True) as j:
        return j.counts().get("decision", 0)


def _ask_all(app: App, key: bytes) -> dict:
    out = {}
    good = _question()
    app.ask(key, good, f"{BASE}/whatif/response/phone", b"good")
    out["good"] = app.answer(b"good")
    app.ask(key, good, f"{BASE}/whatif/response/phone", b"replay")  # the same nonce again
    out["replay"] = app.answer(b"replay")
    app.ask(key, _question(), f"{BASE}/whatif/response/phone", b"badsig", signature="00" * 32)
    out["badsig"] = app.answer(b"badsig")
    app.ask(bytes(32), _question(), f"{BASE}/whatif/response/phone", b"wrongkey")
    out["wrongkey"] = app.answer(b"wrongkey")
    app.ask(key, _question(time=(datetime.now(UTC) - timedelta(hours=1)).isoformat()),
            f"{BASE}/whatif/response/phone", b"stale")
    out["stale"] = app.answer(b"stale")
    app.ask(key, _question(actions=[{"kind": "exercise", "minutes": 30}]), f"{BASE}/whatif/response/phone", b"ex")
    out["exercise"] = app.answer(b"ex")
    app.ask(key, _question(), f"{BASE}/pump/pump-1/cmd", b"pump")  # a response topic that is not an answer's
    with pytest.raises(AssertionError):
        app.answer(b"pump", timeout_s=4.0)
    return out


def test_signed_questions_are_answered_bad_ones_refused_and_no_dose_changes(tmp_path):
    asked_commands, r = _run(tmp_path / "asked", ask=True)
    topic, good = r["good"]
    assert topic == f"{BASE}/whatif/response/phone" and good["format"] == "glucotwin.whatif/1"
    assert good["question"] == "eat 50 g (fast) now"
    assert good["closed_loop"]["with"]["max_mg_dl"] > good["closed_loop"]["without"]["max_mg_dl"]
    assert r["replay"][1]["error"] == "refused: replayed (nonce seen before)"
    assert r["badsig"][1]["error"] == "refused: bad signature"
    assert r["wrongkey"][1]["error"] == "refused: bad signature"
    assert "time is more than" in r["stale"][1]["error"]
    assert "unknown action kind" in r["exercise"][1]["error"]
    quiet_commands, _ = _run(tmp_path / "quiet", ask=False)
    # the same readings with and without questions: the same doses (the readings' times differ between runs)
    strip = lambda rows: [r[1:] for r in rows]  # noqa: E731
    assert strip(asked_commands) == strip(quiet_commands) and len(asked_commands) == 6, (asked_commands, quiet_commands)
