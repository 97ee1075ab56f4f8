"""The MQTT CGM source and publisher against a real mosquitto (sim.hil.broker.Mosquitto).

Covers: readings and carb announcements end to end, malformed payloads (listed
and fuzzed) becoming rejections, the retained online/offline status including
the last will of a process killed with SIGKILL, a persistent session receiving
QoS 1 messages published while the source was away, a broker restart, and TLS
with a client certificate and a password.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sensors.mqtt_source import (
    MAX_PAYLOAD_BYTES,
    MqttCgmPublisher,
    MqttCgmSource,
    MqttSettings,
    decode_payload,
    parse_message,
)
from sensors.nightscout.entry import (
    ENTRY_FIELDS,
    CarbAnnouncement,
    announcement_to_treatment,
    entry_to_reading,
    reading_to_entry,
    treatment_to_announcement,
)
from sensors.reading import GlucoseReading, Rejected
from sim.hil.broker import Mosquitto, find_mosquitto, free_port
from skip_reasons import skip_reason

pytestmark = pytest.mark.skipif(find_mosquitto() is None,
                                reason=skip_reason("mosquitto"))

ROOT = Path(__file__).resolve().parents[1]
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
WAIT_S = 10.0
"""Longest wait for something the broker should deliver; reached only when a test fails."""
_ids = itertools.count(1)


def reading(minutes: float, glucose: float, **kw) -> GlucoseReading:
    return GlucoseReading(T0 + timedelta(minutes=minutes), glucose, "sim", **kw)


@pytest.fixture(scope="module")
def broker():
    with Mosquitto() as b:
        yield b


def settings_for(broker: Mosquitto, role: str, subject: str, **kw) -> MqttSettings:
    kw.setdefault("reconnect_min_delay_s", 0.2)
    kw.setdefault("reconnect_max_delay_s", 1.0)
    return MqttSettings(host=broker.host, port=broker.port, client_id=f"{role}-{subject}",
                        subject=subject, **kw)


def subject() -> str:
    return f"s{next(_ids)}"


def receive(source: MqttCgmSource, n: int, timeout_s: float = WAIT_S) -> list:
    items: list = []
    deadline = time.monotonic() + timeout_s
    while len(items) < n and time.monotonic() < deadline:
        items += source.poll(0.2)
    return items


def started(endpoint):
    """Started and connected; a source also subscribed (so that nothing published next is missed)."""
    endpoint.start()
    assert endpoint.wait_connected(WAIT_S), endpoint.last_error
    if isinstance(endpoint, MqttCgmSource):
        assert endpoint.wait_subscribed(WAIT_S), endpoint.last_error
    return endpoint


class Observer:
    """A plain paho client collecting (topic, payload, retained) of a topic filter."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.messages: queue.Queue[tuple[str, str, bool]] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"observer-{next(_ids)}",
                                  protocol=mqtt.MQTTv5)
        self.client.on_message = lambda c, u, m: self.messages.put(
            (m.topic, m.payload.decode("utf-8", "replace"), bool(m.retain)))
        self.client.connect(broker.host, broker.port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def wait_for(self, topic: str, payload: str, timeout_s: float = WAIT_S) -> tuple[str, str, bool]:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {payload!r} on {topic} within {timeout_s} s")
            try:
                message = self.messages.get(timeout=remaining)
            except queue.Empty:
                continue
            if message[0] == topic and message[1] == payload:
                return message

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- settings and payload parsing (no broker traffic) ------------------------------------------


def test_settings_topics_and_validation():
    s = MqttSettings(host="broker.lan", client_id="loop-alice", subject="alice", topic_prefix="lab/glucotwin")
    assert s.cgm_topic == "lab/glucotwin/alice/cgm"
    assert s.treatments_topic == "lab/glucotwin/alice/treatments"
    assert s.status_topic() == "lab/glucotwin/alice/status/loop-alice"
    assert not s.tls and MqttSettings(tls_ca_file="ca.crt").tls
    for kwargs, match in [
        ({"subject": "a/b"}, "subject"), ({"subject": "+"}, "subject"), ({"topic_prefix": "/x"}, "topic_prefix"),
        ({"client_id": ""}, "client_id"), ({"port": 0}, "port"), ({"keepalive_s": 1}, "keepalive_s"),
        ({"session_expiry_s": -1}, "session_expiry_s"), ({"password": "p"}, "password needs a username"),
        ({"tls_key_file": "k.pem"}, "tls_key_file needs tls_cert_file"),
        ({"reconnect_min_delay_s": 5, "reconnect_max_delay_s": 1}, "reconnect_min_delay_s"),
        ({"reconnect_max_delay_s": float("inf")}, "reconnect_max_delay_s"), ({"host": ""}, "host"),
    ]:
        with pytest.raises(ValueError, match=match):
            MqttSettings(**kwargs)


@pytest.mark.parametrize("payload, reason", [
    (b"x" * (MAX_PAYLOAD_BYTES + 1), "malformed message: 65537 bytes is larger than 65536"),
    (b"\xff\xfe{}", "malformed message: not UTF-8"),
    (b"{not json", "malformed message: not valid JSON"),
    (b"", "malformed message: not valid JSON"),
    (b'{"sgv": NaN}', "malformed message: not valid JSON"),
    (b"[" * 5000 + b"]" * 5000, "malformed message: not valid JSON"),
    (b"42", "malformed message: expected a JSON object or array, got int"),
    (b'"sgv"', "malformed message: expected a JSON object or array, got str"),
])
def test_malformed_payloads_are_rejected(payload, reason):
    s = MqttSettings(subject="p")
    items = parse_message(s.cgm_topic, payload, s)
    assert len(items) == 1 and isinstance(items[0], Rejected)
    assert items[0].reason == reason and items[0].line is None and len(items[0].raw) <= 200


def test_entries_and_treatments_are_parsed_per_object():
    s = MqttSettings(subject="p")
    entries = [{"type": "sgv", "sgv": 120, "date": 1795428000000, "device": "G7"},
               {"type": "mbg", "mbg": 118, "date": 1795428000000}, 17,
               {"sgv": 39, "dateString": "2026-11-23T10:05:00Z"}]
    items = parse_message(s.cgm_topic, json.dumps(entries).encode(), s)
    assert isinstance(items[0], GlucoseReading) and items[0].source == "mqtt:G7" and items[0].subject == "p"
    assert items[1].reason.startswith("not a glucose reading")
    assert items[2].reason.startswith("malformed entry")
    assert items[3].clipped and items[3].glucose_mg_dl == 40.0
    treatments = [{"eventType": "Carb Correction", "carbs": "12", "created_at": "2026-11-23T10:00:00Z"},
                  {"eventType": "Temp Basal", "rate": 1}, {"eventType": "Meal Bolus", "carbs": 0,
                                                            "date": 1795428000000}]
    items = parse_message(s.treatments_topic, json.dumps(treatments).encode(), s)
    assert items[0] == CarbAnnouncement(T0, 12.0, "mqtt", "p")
    assert items[1].reason.startswith("not a carb announcement")
    assert items[2].reason.startswith("carbs out of range")
    assert parse_message("other/topic", b"{}", s)[0].reason.startswith("malformed message: unexpected topic")
    assert parse_message(s.cgm_topic, b"[]", s) == []


@settings(max_examples=300)
@given(st.binary(max_size=400) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
        st.sampled_from(["sgv", "date", "dateString", "type", "eventType", "carbs", "created_at", "x"]),
        kids, max_size=6),
    max_leaves=20).map(lambda v: json.dumps(v, allow_nan=True).encode()))
def test_parse_message_never_raises(payload):
    s = MqttSettings(subject="p")
    for topic in (s.cgm_topic, s.treatments_topic):
        for item in parse_message(topic, payload, s):
            assert isinstance(item, (GlucoseReading, CarbAnnouncement, Rejected))
    assert isinstance(decode_payload(payload), (dict, list, Rejected))


def test_reading_to_entry_has_exactly_the_nightscout_fields_and_round_trips():
    r = GlucoseReading(T0 + timedelta(milliseconds=123), 123.4, "clarity:G7", trend="FortyFiveUp", noise=1)
    entry = reading_to_entry(r)
    assert entry == {"type": "sgv", "sgv": 123, "date": 1795428000123, "dateString": "2026-11-23T10:00:00.123Z",
                     "direction": "FortyFiveUp", "device": "G7", "noise": 1}
    assert set(entry) == set(ENTRY_FIELDS)
    back = entry_to_reading(json.loads(json.dumps(entry)), subject="p", transport="mqtt")
    assert back == GlucoseReading(r.time, 123.0, "mqtt:G7", "p", "FortyFiveUp", 1)
    low = reading_to_entry(GlucoseReading(T0, 40.0, "sim", clipped=True))
    assert low["sgv"] == 39 and set(low) == {"type", "sgv", "date", "dateString", "device"}
    assert entry_to_reading(low).clipped
    assert entry_to_reading(low).source == "nightscout:sim"


@settings(max_examples=200)
@given(st.datetimes(min_value=datetime(1990, 1, 2), max_value=datetime(2099, 12, 30), timezones=st.just(UTC)),
       st.integers(40, 400), st.sampled_from([None, "Flat", "SingleUp"]), st.none() | st.integers(0, 4))
def test_entries_round_trip(time, sgv, trend, noise):
    time = time.replace(microsecond=time.microsecond // 1000 * 1000)
    r = GlucoseReading(time, float(sgv), "mqtt:dev", "p", trend, noise, clipped=False)
    assert entry_to_reading(reading_to_entry(r), subject="p", transport="mqtt") == r


def test_carb_announcement_validation_and_dict_round_trip():
    a = CarbAnnouncement(datetime(2026, 11, 23, 13, 0, tzinfo=timezone(timedelta(hours=1))), 45, "sim", "p")
    assert a.time == datetime(2026, 11, 23, 12, 0, tzinfo=UTC) and a.carbs_g == 45.0
    assert CarbAnnouncement.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    for kwargs, match in [({"carbs_g": 0}, "carbs_g"), ({"carbs_g": float("nan")}, "carbs_g"),
                          ({"carbs_g": True}, "carbs_g"), ({"source": ""}, "source"),
                          ({"time": datetime(2026, 1, 1)}, "timezone-aware")]:
        with pytest.raises(ValueError, match=match):
            CarbAnnouncement(**{"time": T0, "carbs_g": 10.0, "source": "x", **kwargs})
    with pytest.raises(ValueError, match="unknown"):
        CarbAnnouncement.from_dict({**a.to_dict(), "insulin_u": 1})
    with pytest.raises(ValueError, match="missing"):
        CarbAnnouncement.from_dict({"time": T0.isoformat(), "source": "x"})


def test_treatments_round_trip_and_rejections():
    a = CarbAnnouncement(T0 + timedelta(milliseconds=250), 37.5, "sim:phone", "p")
    t = announcement_to_treatment(a)
    assert t == {"eventType": "Meal Bolus", "carbs": 37.5, "created_at": "2026-11-23T10:00:00.250Z",
                 "date": 1795428000250, "enteredBy": "phone"}
    assert treatment_to_announcement(t, subject="p", transport="sim") == a
    only_iso = {"eventType": "Carb Correction", "carbs": 20, "created_at": "2026-11-23T10:00:00Z"}
    assert treatment_to_announcement(only_iso) == CarbAnnouncement(T0, 20.0, "nightscout")
    naive = {**only_iso, "created_at": "2026-11-23T10:00:00"}
    assert treatment_to_announcement(naive).time == T0  # Nightscout times without an offset are UTC
    for bad, phrase in [
        ([1], "malformed treatment"), ({"eventType": "Note", "carbs": 10}, "not a carb announcement"),
        ({"carbs": 10, "created_at": "2026-11-23T10:00:00Z"}, "not a carb announcement"),
        ({"eventType": "Meal Bolus", "created_at": "2026-11-23T10:00:00Z"}, "missing carbs"),
        ({"eventType": "Meal Bolus", "carbs": "lots", "date": 1795428000000}, "non-numeric carbs"),
        ({"eventType": "Meal Bolus", "carbs": 900, "date": 1795428000000}, "carbs out of range"),
        ({"eventType": "Meal Bolus", "carbs": -5, "date": 1795428000000}, "carbs out of range"),
        ({"eventType": "Meal Bolus", "carbs": 10}, "missing time"),
        ({"eventType": "Meal Bolus", "carbs": 10, "created_at": "soon"}, "unparseable time"),
        ({"eventType": "Meal Bolus", "carbs": 10, "date": 5}, "implausible time"),
    ]:
        out = treatment_to_announcement(bad)
        assert isinstance(out, Rejected) and out.reason.startswith(phrase), (bad, out)


# --- end to end through the broker ----------------------------------------------------------------


def test_readings_and_announcements_end_to_end(broker):
    sub = subject()
    with started(MqttCgmSource(settings_for(broker, "loop", sub))) as source, \
            MqttCgmPublisher(settings_for(broker, "sensor", sub)) as publisher:
        r1 = reading(0, 123.0, trend="Flat", noise=1)
        publisher.publish_reading(r1)
        publisher.publish_readings([reading(5, 125.0), reading(10, 39.5, clipped=True)])
        meal = CarbAnnouncement(T0 + timedelta(minutes=12), 45.0, "sim:phone")
        publisher.publish_announcement(meal)
        items = receive(source, 4)
    assert len(items) == 4
    assert items[0] == GlucoseReading(T0, 123.0, "mqtt:sim", subject=sub, trend="Flat", noise=1)
    assert [i.glucose_mg_dl for i in items[1:3]] == [125.0, 40.0] and items[2].clipped
    assert items[3] == CarbAnnouncement(meal.time, 45.0, "mqtt:phone", sub)
    assert source.messages == 3 and source.reconnects == 0
    # Another subject's topics are not ours.
    assert items[0].subject == sub


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=st.binary(max_size=300) | st.sampled_from(
    [b"{}", b"[]", b"null", b"[{}]", b'{"sgv": "x"}', b'{"eventType": "Meal Bolus"}', b"\xc3\x28"]))
def test_fuzzed_payloads_through_the_broker_never_raise(fuzz_pair, payload):
    source, publisher = fuzz_pair
    publisher.publish_payload("cgm", payload)
    publisher.publish_payload("treatments", payload)
    sentinel = reading(0, 111.0)
    publisher.publish_reading(sentinel)
    items: list = []
    deadline = time.monotonic() + WAIT_S
    while not any(isinstance(i, GlucoseReading) and i.glucose_mg_dl == 111.0 for i in items):
        assert time.monotonic() < deadline, "the sentinel reading did not arrive"
        items += source.poll(0.2)
    assert all(isinstance(i, (GlucoseReading, CarbAnnouncement, Rejected)) for i in items)
    assert source.connected


@pytest.fixture(scope="module")
def fuzz_pair(broker):
    sub = subject()
    source = started(MqttCgmSource(settings_for(broker, "loop", sub)))
    publisher = MqttCgmPublisher(settings_for(broker, "sensor", sub))
    publisher.start()
    yield source, publisher
    publisher.close()
    source.close()


def test_retained_status_online_then_offline_on_close(broker):
    sub = subject()
    s = settings_for(broker, "loop", sub)
    source = started(MqttCgmSource(s))
    observer = Observer(broker, f"glucotwin/{sub}/status/#")
    try:
        observer.wait_for(s.status_topic(), "online")
        late = Observer(broker, s.status_topic())
        try:  # a subscriber arriving later still gets it: the broker retained it
            assert late.wait_for(s.status_topic(), "online")[2] is True
        finally:
            late.close()
        source.close()
        assert not source.connected
        observer.wait_for(s.status_topic(), "offline")
    finally:
        observer.close()
    late = Observer(broker, s.status_topic())
    try:
        assert late.wait_for(s.status_topic(), "offline")[2] is True
    finally:
        late.close()


SOURCE_PROCESS = textwrap.dedent("""
    import sys, time
    from sensors.mqtt_source import MqttCgmSource, MqttSettings
    settings = MqttSettings(host=sys.argv[1], port=int(sys.argv[2]), client_id=sys.argv[3], subject=sys.argv[4])
    source = MqttCgmSource(settings)
    source.start()
    if not source.wait_connected(10):
        sys.exit("no connection")
    print("ready", flush=True)
    time.sleep(60)
""")


def test_last_will_says_offline_when_the_source_process_is_killed(broker):
    sub = subject()
    client_id = f"loop-{sub}"
    status = f"glucotwin/{sub}/status/{client_id}"
    observer = Observer(broker, f"glucotwin/{sub}/status/#")
    proc = subprocess.Popen([sys.executable, "-c", SOURCE_PROCESS, broker.host, str(broker.port), client_id, sub],
                            stdout=subprocess.PIPE, cwd=ROOT, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        observer.wait_for(status, "online")
        os.kill(proc.pid, signal.SIGKILL)  # no DISCONNECT: the broker sees the socket close
        proc.wait(timeout=5)
        observer.wait_for(status, "offline")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        observer.close()


def test_last_will_when_the_socket_dies_in_process(broker):
    sub = subject()
    s = settings_for(broker, "loop", sub, reconnect_min_delay_s=0.5, reconnect_max_delay_s=0.5)
    observer = Observer(broker, s.status_topic())
    source = started(MqttCgmSource(s))
    try:
        observer.wait_for(s.status_topic(), "online")
        source.client.socket().close()  # the network drops without a DISCONNECT
        observer.wait_for(s.status_topic(), "offline")
        # ... and the source comes back by itself and says so.
        observer.wait_for(s.status_topic(), "online")
        deadline = time.monotonic() + WAIT_S
        while source.reconnects < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert source.reconnects == 1
    finally:
        source.close()
        observer.close()


def test_persistent_session_delivers_what_was_published_while_away(broker):
    sub = subject()
    s = settings_for(broker, "loop", sub, session_expiry_s=600)
    first = started(MqttCgmSource(s))
    first.close()  # clean close: the session (subscriptions, queued QoS 1) stays for 600 s
    with MqttCgmPublisher(settings_for(broker, "sensor", sub)) as publisher:
        for m in range(3):
            publisher.publish_reading(reading(5 * m, 100.0 + m))
        publisher.publish_announcement(CarbAnnouncement(T0, 30.0, "sim"))
    with started(MqttCgmSource(s)) as again:
        items = receive(again, 4)
    assert [i.glucose_mg_dl for i in items[:3]] == [100.0, 101.0, 102.0]
    assert isinstance(items[3], CarbAnnouncement)


def test_without_a_persistent_session_messages_while_away_are_lost(broker):
    sub = subject()
    s = settings_for(broker, "loop", sub, session_expiry_s=0)
    started(MqttCgmSource(s)).close()
    with MqttCgmPublisher(settings_for(broker, "sensor", sub)) as publisher:
        publisher.publish_reading(reading(0, 100.0))
        with started(MqttCgmSource(s)) as again:
            publisher.publish_reading(reading(5, 105.0))
            items = receive(again, 1)
            assert again.poll(0.3) == []
    assert [i.glucose_mg_dl for i in items] == [105.0]


def test_broker_restart_source_reconnects_and_receives_later_readings():
    sub = subject()
    with Mosquitto() as b:
        with started(MqttCgmSource(settings_for(b, "loop", sub))) as source, \
                MqttCgmPublisher(settings_for(b, "sensor", sub)) as publisher:
            publisher.publish_reading(reading(0, 120.0))
            assert [i.glucose_mg_dl for i in receive(source, 1)] == [120.0]

            b.restart(down_s=0.5)
            deadline = time.monotonic() + WAIT_S
            while not (source.reconnects >= 1 and source.connected and publisher.connected):
                assert time.monotonic() < deadline, f"no reconnect: {source.last_error}"
                time.sleep(0.05)
            assert source.wait_subscribed(WAIT_S)  # the broker lost its state: we subscribed again
            for m in (5, 10):
                publisher.publish_reading(reading(m, 120.0 + m))
            items = receive(source, 2)
            assert [i.glucose_mg_dl for i in items] == [125.0, 130.0]
            assert source.reconnects == 1 and publisher.reconnects == 1


def test_missing_tls_files_are_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="unusable TLS file"):
        MqttCgmSource(MqttSettings(tls_ca_file=tmp_path / "missing-ca.crt"))


def test_publisher_start_fails_clearly_without_a_broker():
    s = MqttSettings(host="127.0.0.1", port=free_port(), client_id="sensor-nobody", connect_timeout_s=0.5)
    publisher = MqttCgmPublisher(s)
    try:
        with pytest.raises(ConnectionError, match="no MQTT connection"):
            publisher.start()
    finally:
        publisher.close()


# --- TLS and passwords ------------------------------------------------------------------------------

MAKE_CERTS = ROOT / "deploy" / "mosquitto" / "make-certs.sh"


@pytest.fixture(scope="module")
def tls_broker():
    if not (shutil.which("openssl") and shutil.which("mosquitto_passwd") and MAKE_CERTS.exists()):
        pytest.skip(skip_reason("openssl", "mosquitto_passwd", also="and the repository's deploy/mosquitto/make-certs.sh"))
    # Not under pytest's 0700 tmp: mosquitto started as root drops to the mosquitto user,
    # which must read these throwaway test files.
    certs = Path(tempfile.mkdtemp(prefix="glucotwin-tls-test-"))
    try:
        yield from _tls_broker(certs)
    finally:
        shutil.rmtree(certs, ignore_errors=True)


def _tls_broker(certs: Path):
    subprocess.run(["bash", str(MAKE_CERTS), str(certs)], check=True, capture_output=True,
                   env={**os.environ, "CLIENT_CN": "loop-tls"})
    passwords = certs / "passwd"
    for user, pw in (("loop-tls", "s3cret loop"), ("sensor-tls", "s3cret sensor")):
        subprocess.run(["mosquitto_passwd", "-b", *(["-c"] if user == "loop-tls" else []), str(passwords), user, pw],
                       check=True, capture_output=True)
    certs.chmod(0o755)
    for path in certs.iterdir():
        path.chmod(0o644)
    tls_port = free_port()
    extra = (f"password_file {passwords}\n"
             f"listener {tls_port} 127.0.0.1\n"
             f"cafile {certs / 'ca.crt'}\ncertfile {certs / 'server.crt'}\nkeyfile {certs / 'server.key'}\n"
             "require_certificate true\n")
    with Mosquitto(extra_config=extra, allow_anonymous=False) as b:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                socket.create_connection((b.host, tls_port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, b.log_path.read_text()
                time.sleep(0.05)
        yield b, tls_port, certs


def test_tls_with_client_certificate_and_password(tls_broker):
    b, tls_port, certs = tls_broker
    common = dict(host="127.0.0.1", port=tls_port, subject="tls", tls_ca_file=certs / "ca.crt",
                  tls_cert_file=certs / "client.crt", tls_key_file=certs / "client.key")
    with started(MqttCgmSource(MqttSettings(client_id="loop-tls", username="loop-tls", password="s3cret loop",
                                            **common))) as source, \
            MqttCgmPublisher(MqttSettings(client_id="sensor-tls", username="sensor-tls",
                                          password="s3cret sensor", **common)) as publisher:
        publisher.publish_reading(reading(0, 150.0))
        items = receive(source, 1)
    assert [i.glucose_mg_dl for i in items] == [150.0]


def test_tls_refuses_a_wrong_password(tls_broker):
    b, tls_port, certs = tls_broker
    s = MqttSettings(host="127.0.0.1", port=tls_port, client_id="sensor-tls", subject="tls",
                     username="sensor-tls", password="wrong", tls_ca_file=certs / "ca.crt",
                     tls_cert_file=certs / "client.crt", tls_key_file=certs / "client.key",
                     connect_timeout_s=1.0, reconnect_min_delay_s=1, reconnect_max_delay_s=1)
    publisher = MqttCgmPublisher(s)
    try:
        with pytest.raises(ConnectionError, match="connect refused: (Not authorized|Bad user name or password)"):
            publisher.start()
    finally:
        publisher.close()


def test_plain_port_of_the_tls_broker_refuses_anonymous_clients(tls_broker):
    b, _, _ = tls_broker
    s = MqttSettings(host=b.host, port=b.port, client_id="anon", subject="tls", connect_timeout_s=1.0)
    publisher = MqttCgmPublisher(s)
    try:
        with pytest.raises(ConnectionError):
            publisher.start()
    finally:
        publisher.close()
