"""The virtual patient device of the HIL harness: a simglucose patient on the wire.

:class:`RemoteLoopController` is a simglucose ``Controller`` whose decisions
come from the *running* loop in another process, so the harness reuses the
trial runner unchanged (same environment, seeds, traces, summary). Per sample,
in lockstep with the simulated clock:

1. announced carbohydrates (HCL) go out as a Nightscout treatment on
   ``{prefix}/{subject}/treatments``, then the CGM value as a Nightscout entry
   on ``{prefix}/{subject}/cgm`` (QoS 1, the same client, so in order);
2. the patient waits for the loop's ``{prefix}/{subject}/loop/processed``
   message for that reading (a cycle ran, or the reading was rejected);
3. it publishes the simulated time on ``{prefix}/{subject}/hil/clock``; the
   virtual pump advances its clock and answers on ``.../hil/pump_report`` with
   the basal rate it runs and the bolus it delivered since its last report;
4. those pump deliveries become simglucose's action for the next sample
   (converted from pump units in ``sim.trial.adapter``, the one place for that).

Simulated time is naive in simglucose; on the wire it is UTC.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

from simglucose.controller.base import Action, Controller

from controller.policy import Dose
from sim.trial.adapter import dose_to_action, rate_per_min_to_amount
from sensors.nightscout.entry import CarbAnnouncement, announcement_to_treatment, reading_to_entry
from sensors.reading import GlucoseReading


def subject_slug(patient: str) -> str:
    """A patient name usable in MQTT topics (``#`` and ``+`` are wildcards): ``adult#003`` -> ``adult-003``."""
    return patient.replace("#", "-").replace("+", "-").replace("/", "-")


def epoch_ms(t: datetime) -> int:
    aware = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return int(round(aware.timestamp() * 1000))


class HilBus:
    """The virtual patient's MQTT client (paho-mqtt 2.x, MQTT 5, QoS 1), tolerant of a broker restart.

    Publishing waits for a connection and for the PUBACK (paho keeps QoS 1
    messages queued across a reconnect); every ``loop/processed`` message is
    also kept in ``processed_log`` (the fault campaign reads it).
    """

    def __init__(self, host: str, port: int, prefix: str, subject: str, client_id: str,
                 username: str = "", password: str = "", timeout_s: float = 60.0) -> None:
        import paho.mqtt.client as mqtt

        self.base = f"{prefix}/{subject}"
        self.timeout_s = timeout_s
        self._processed: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reports: queue.Queue[dict[str, Any]] = queue.Queue()
        self.processed_log: list[dict[str, Any]] = []
        self.ready = threading.Event()  # connected and subscribed
        self.connects = 0
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if username:
            c.username_pw_set(username, password)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *a: self.ready.set()
        c.on_disconnect = lambda *a: self.ready.clear()
        c.on_message = self._on_message
        c.reconnect_delay_set(0.1, 1.0)
        self.client = c
        c.connect(host, port, keepalive=10)
        c.loop_start()
        if not self.ready.wait(timeout_s):
            raise RuntimeError(f"HIL patient could not connect to the broker at {host}:{port}")

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason_code: Any, properties: Any) -> None:
        self.connects += 1
        client.subscribe([(f"{self.base}/loop/processed", 1), (f"{self.base}/hil/pump_report", 1)])

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        try:
            data = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(data, dict):
            return
        if msg.topic.endswith("/loop/processed"):
            self.processed_log.append({"reading_t_ms": data.get("reading_t_ms"), "rejected": data.get("rejected"),
                                       "cycle": (data.get("result") or {}).get("cycle")})
            self._processed.put(data)
        else:
            self._reports.put(data)

    def wait_ready(self, timeout_s: float) -> bool:
        return self.ready.wait(timeout_s)

    def publish(self, topic: str, payload: str | bytes) -> None:
        if not self.ready.wait(self.timeout_s):
            raise RuntimeError(f"HIL patient: no broker connection for {self.timeout_s:g} s")
        info = self.client.publish(f"{self.base}/{topic}", payload, qos=1)
        deadline = time.monotonic() + self.timeout_s
        while not info.is_published():  # queued by paho over a reconnect: wait for the PUBACK
            if time.monotonic() > deadline:
                raise RuntimeError(f"HIL patient: no PUBACK on {topic} within {self.timeout_s:g} s")
            time.sleep(0.002)

    def publish_entry(self, entry: dict[str, Any]) -> None:
        self.publish("cgm", json.dumps(entry))

    def publish_cgm(self, time: datetime, cgm_mg_dl: float) -> None:
        entry = reading_to_entry(GlucoseReading(time, cgm_mg_dl, "sim:hil"))
        entry["sgv"] = float(cgm_mg_dl)  # simglucose's CGM is not whole mg/dL; JSON floats round-trip exactly
        self.publish_entry(entry)

    def publish_carbs(self, time: datetime, carbs_g: float) -> None:
        self.publish("treatments", json.dumps(announcement_to_treatment(CarbAnnouncement(time, carbs_g, "sim:hil"))))

    def publish_clock(self, t_ms: int) -> None:
        self.publish("hil/clock", json.dumps({"t_ms": t_ms}))

    def await_message(self, box: "queue.Queue[dict[str, Any]]", key: str, value: int,
                      timeout_s: float) -> dict[str, Any] | None:
        """The first message in ``box`` whose ``key`` equals ``value`` (others are dropped), or None."""
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                data = box.get(timeout=remaining)
            except queue.Empty:
                return None
            if data.get(key) == value:
                return data
        return None

    def wait(self, box: "queue.Queue[dict[str, Any]]", key: str, t_ms: int, what: str) -> dict[str, Any]:
        data = self.await_message(box, key, t_ms, self.timeout_s)
        if data is None:
            raise RuntimeError(f"HIL: no {what} for t={t_ms} within {self.timeout_s:g} s")
        return data

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class RemoteLoopController(Controller):
    """simglucose ``Controller`` answering with what the remote loop had the pump deliver."""

    def __init__(self, bus: HilBus, meal_announcement: bool = True) -> None:
        super().__init__(init_state=None)
        self.bus = bus
        self.meal_announcement = meal_announcement
        self.last: dict[str, Any] = {}
        self._clock_set = False

    def policy(self, observation: Any, reward: float, done: bool, **info: Any) -> Action:
        sample_min = float(info.get("sample_time", 1.0))
        time = info["time"].replace(tzinfo=UTC)
        t_ms = epoch_ms(time)
        if not self._clock_set:  # the pump's clock starts at the simulation's start, before any command
            self.bus.publish_clock(t_ms)
            self.bus.wait(self.bus._reports, "t_ms", t_ms, "pump report")
            self._clock_set = True
        carbs_g = rate_per_min_to_amount(float(info.get("meal", 0.0) or 0.0), sample_min)
        if self.meal_announcement and carbs_g > 0:
            self.bus.publish_carbs(time, carbs_g)
        self.bus.publish_cgm(time, float(observation.CGM))
        processed = self.bus.wait(self.bus._processed, "reading_t_ms", t_ms, "loop cycle")
        self.bus.publish_clock(t_ms)
        report = self.bus.wait(self.bus._reports, "t_ms", t_ms, "pump report")
        cycle = processed.get("result") or {}
        dose = cycle.get("dose") or {}
        self.last = {
            "basal_u_per_h": float(report["basal_u_per_h"]),
            "bolus_u": float(report["bolus_u"]),
            "reason": dose.get("reason", processed.get("rejected", "")),
            "pump_last_seq": report.get("last_seq"),
            **{k: v for k, v in (dose.get("diagnostics") or {}).items() if isinstance(v, (int, float, str))},
        }
        return dose_to_action(Dose(float(report["basal_u_per_h"]), float(report["bolus_u"])), sample_min)

    def diagnostics(self) -> dict[str, Any]:
        return dict(self.last)

    def reset(self) -> None:
        self.last = {}
        self._clock_set = False
