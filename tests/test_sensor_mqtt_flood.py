"""A reading flood cannot grow the MQTT source's queue: a real mosquitto, 1000 messages a second.

The source's network thread puts what arrives into a bounded box
(:class:`sensors._queue.BoundedItems`); a loop that does not poll for a while
finds at most ``max_queued_items`` items, the newest, after one ``Rejected``
saying how many older ones were dropped.
"""

from __future__ import annotations

import itertools
import json
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors._queue import MAX_QUEUED_ITEMS, OVERFLOW, BoundedItems
from sensors.mqtt_source import MqttCgmSource, MqttSettings
from sensors.reading import GlucoseReading, Rejected
from sim.hil.broker import Mosquitto, find_mosquitto
from skip_reasons import skip_reason

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
WAIT_S = 10.0
_ids = itertools.count(1)


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.fixture(scope="module")
def broker():
    if find_mosquitto() is None:
        pytest.skip(skip_reason("mosquitto"))
    with Mosquitto() as b:
        yield b


def test_a_1000_msg_per_s_flood_keeps_the_newest_items_and_reports_the_rest(broker):
    n, bound = 3000, 500
    subject = f"flood{next(_ids)}"
    s = MqttSettings(host=broker.host, port=broker.port, client_id=f"loop-{subject}", subject=subject,
                     max_queued_items=bound, session_expiry_s=0)
    source = MqttCgmSource(s)
    source.start()
    assert source.wait_connected(WAIT_S) and source.wait_subscribed(WAIT_S), source.last_error
    flood = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"flood-{subject}", protocol=mqtt.MQTTv5)
    flood.connect(broker.host, broker.port)
    flood.loop_start()
    rss_before = _rss_kib()
    try:
        began = time.monotonic()
        for i in range(n):  # 1000 messages a second, each reading 50 ms of sensor time after the last
            t = T0 + timedelta(milliseconds=50 * i)
            flood.publish(s.cgm_topic, json.dumps({"type": "sgv", "sgv": 100 + i % 50,
                                                   "date": int(t.timestamp() * 1000)}), qos=0)
            if i % 100 == 99:
                time.sleep(max(0.0, began + (i + 1) / 1000 - time.monotonic()))
        deadline = time.monotonic() + WAIT_S
        while source.messages < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert source.messages == n  # QoS 0 on loopback: all arrive; the queue is what is bounded
        assert len(source.queue) == bound and source.queue.high_water == bound
        assert source.queue.dropped == n - bound
        items = source.poll(0.0)
        assert isinstance(items[0], Rejected) and items[0].reason.startswith(OVERFLOW)
        assert f"dropped the {n - bound} oldest" in items[0].reason
        readings = items[1:]
        assert len(readings) == bound and all(isinstance(r, GlucoseReading) for r in readings)
        assert readings[-1].time == T0 + timedelta(milliseconds=50 * (n - 1))  # the newest kept
        assert readings[0].time == T0 + timedelta(milliseconds=50 * (n - bound))
        assert source.poll(0.0) == []  # the drop is reported once
        print(f"flood: {n} messages in {time.monotonic() - began:.2f} s, RSS {rss_before} -> {_rss_kib()} KiB")
    finally:
        flood.loop_stop()
        flood.disconnect()
        source.close()


def test_the_default_bound_and_its_validation():
    assert MqttSettings().max_queued_items == MAX_QUEUED_ITEMS == 4096
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="max_queued_items"):
            MqttSettings(max_queued_items=bad)


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=20),
       st.lists(st.one_of(st.integers(min_value=0, max_value=40), st.just("poll")), max_size=80))
def test_a_bounded_box_never_holds_more_than_its_bound_and_loses_nothing_silently(bound, steps):
    box: BoundedItems[int] = BoundedItems(bound)
    put, delivered, reported = 0, [], 0
    for step in steps:
        if step == "poll":
            for item in box.poll(0.0):
                if isinstance(item, Rejected):
                    reported += int(item.reason.split("dropped the ")[1].split()[0])
                else:
                    delivered.append(item)
        else:
            for _ in range(step):
                box.put(put)
                put += 1
                assert len(box) <= bound
    for item in box.poll(0.0):
        if isinstance(item, Rejected):
            reported += int(item.reason.split("dropped the ")[1].split()[0])
        else:
            delivered.append(item)
    assert delivered == sorted(delivered)  # in arrival order, the oldest dropped first
    assert len(delivered) + reported == put and reported == box.dropped
