"""The shipped broker configuration (deploy/mosquitto/) against a real mosquitto.

Each test starts mosquitto from ``deploy/mosquitto/mosquitto.conf`` with only
its ports, directories and ``user`` substituted, the shipped ``acl`` (plus the
same subject block copied for a second subject, as the ACL tells operators to
do, and a test-only ``observer`` that may read all of ``glucotwin/#``), a
password file made with ``mosquitto_passwd -b`` and certificates made by
``deploy/mosquitto/make-certs.sh``.

"Not delivered" is decided without sleeping: mosquitto queues a message to
every subscriber while it handles the PUBLISH, before it sends the PUBACK, and
it writes a client's packets in order. So once the publisher has its PUBACK,
a round trip on the subscriber's connection (an UNSUBSCRIBE and its UNSUBACK)
returns only after every delivery of that message has reached the subscriber.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from sim.hil.broker import Mosquitto, find_mosquitto, free_port
from skip_reasons import skip_reason

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "mosquitto"
WAIT_S = 5.0
"""Longest wait for a broker answer; only reached when a test fails."""

_missing = [name for name, found in (("mosquitto", find_mosquitto()),
                                     ("mosquitto_passwd", shutil.which("mosquitto_passwd")),
                                     ("openssl", shutil.which("openssl"))) if not found]
pytestmark = pytest.mark.skipif(
    bool(_missing),
    reason=skip_reason("mosquitto", "mosquitto_passwd", "openssl"))

SUBJECT, OTHER = "alice", "bob"
ROLES = ("sensor", "loop", "pump", "app", "dashboard")
OBSERVER = "observer"
NOT_AUTHORIZED = 0x87


def user(role: str, subject: str = SUBJECT) -> str:
    return f"{role}-{subject}"


def password(username: str) -> str:
    return f"{username} secret"


def topic(rest: str, subject: str = SUBJECT) -> str:
    return f"glucotwin/{subject}/{rest}"


NIGHTSCOUT_ENTRY = (b'[{"type": "sgv", "sgv": 142, "direction": "Flat", "date": 1700000000000, '
                    b'"dateString": "2023-11-14T22:13:20.000Z", "device": "xDrip-DexcomG6"}]')

# ------------------------------------------------------------------ the setup


def _replace(text: str, old: str, new: str, count: int | None = 1) -> str:
    """Replace ``old``; fail loudly if the shipped file no longer holds it as expected."""
    found = text.count(old)
    if found == 0 or (count is not None and found != count):
        raise AssertionError(f"deploy/mosquitto/mosquitto.conf: expected {count or 'some'} {old!r}, found {found}")
    return text.replace(old, new)


def render_config(etc: Path, data: Path, port: int, tls_port: int, require_certificate: bool = False) -> str:
    """The shipped mosquitto.conf with test ports, directories and the current user."""
    text = (DEPLOY / "mosquitto.conf").read_text()
    text = _replace(text, "listener 1883 127.0.0.1\n", f"listener {port} 127.0.0.1\n")
    text = _replace(text, "listener 8883\n", f"listener {tls_port} 127.0.0.1\n")
    text = _replace(text, "/etc/mosquitto/glucotwin/", f"{etc}/", count=None)
    text = _replace(text, "/var/lib/mosquitto/", f"{data}/")
    # As root, mosquitto would drop to user mosquitto, which cannot read the
    # test's files; as another user, `user` is ignored.
    text = _replace(text, "\nuser mosquitto\n", f"\nuser {pwd.getpwuid(os.getuid()).pw_name}\n")
    if require_certificate:
        text = _replace(text, "\nrequire_certificate false\n", "\nrequire_certificate true\n")
    return text


def _acl_with_second_subject() -> str:
    shipped = (DEPLOY / "acl").read_text()
    block = re.search(r"^# =+ subject alice \(begin\)\n(.*?)^# =+ subject alice \(end\)\n", shipped, re.S | re.M)
    assert block, "deploy/mosquitto/acl: no '# === subject alice (begin)' ... '(end)' block"
    copied = "\n".join(line.replace(SUBJECT, OTHER) for line in block.group(1).splitlines()
                       if line and not line.startswith("#"))
    return f"{shipped}\n{copied}\n\n# test only\nuser {OBSERVER}\ntopic read glucotwin/#\n"


@pytest.fixture(scope="module")
def etc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Password file, ACL and certificates, laid out as in /etc/mosquitto/glucotwin/."""
    etc = tmp_path_factory.mktemp("etc")
    (etc / "acl").write_text(_acl_with_second_subject())
    users = [user(r, s) for s in (SUBJECT, OTHER) for r in ROLES] + [OBSERVER]
    for i, name in enumerate(users):
        create = ["-c"] if i == 0 else []
        subprocess.run(["mosquitto_passwd", *create, "-b", str(etc / "passwd"), name, password(name)],
                       check=True, capture_output=True, timeout=30)
    for out in ("certs", "other-ca"):
        subprocess.run(["bash", str(DEPLOY / "make-certs.sh"), str(etc / out)], check=True, capture_output=True,
                       timeout=30, env={**os.environ, "CLIENT_CN": user("app")})
    return etc


class Peer:
    """One MQTT 5 client on its own network thread; every wait ends on a broker answer."""

    def __init__(self, username: str | None, password: str | None = None, *, client_id: str | None = None,
                 tls: dict[str, str] | None = None, will_topic: str | None = None) -> None:
        self.name = username or "anonymous"
        # No automatic reconnection: a refused or dropped connection stays so.
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or self.name,
                                  protocol=mqtt.MQTTv5, reconnect_on_failure=False)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None:
            self.client.tls_set(**tls)
        if will_topic is not None:
            self.client.will_set(will_topic, b"offline", qos=1, retain=True)
        self._cond = threading.Condition()
        self.connack: ReasonCode | None = None
        self.disconnected = False
        self.messages: list[mqtt.MQTTMessage] = []
        self._acks: dict[int, object] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_ack
        self.client.on_subscribe = self._on_ack
        self.client.on_unsubscribe = self._on_ack

    # callbacks (network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            self.connack = reason_code
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        with self._cond:
            self.disconnected = True
            self._cond.notify_all()

    def _on_message(self, client, userdata, message) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def _on_ack(self, client, userdata, mid, reason, properties) -> None:
        with self._cond:
            self._acks[mid] = reason
            self._cond.notify_all()

    def _wait(self, predicate, what: str):
        with self._cond:
            if not self._cond.wait_for(predicate, timeout=WAIT_S):
                raise AssertionError(f"{self.name}: no {what} within {WAIT_S} s")
            return predicate()

    # actions (test thread)
    def connect(self, port: int, host: str = "127.0.0.1") -> ReasonCode | None:
        """CONNACK's reason code, or None when the connection closed without one."""
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        self._wait(lambda: self.connack is not None or self.disconnected, "CONNACK")
        return self.connack

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """Publish at QoS 1; the PUBACK's reason code."""
        info = self.client.publish(topic, payload, qos=1)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS, f"{self.name}: publish to {topic}: {mqtt.error_string(info.rc)}"
        return self._wait(lambda: self._acks.get(info.mid), f"PUBACK for {topic}")

    def subscribe(self, *topics: str) -> None:
        """Subscribe at QoS 1 and wait for the SUBACK. mosquitto 2.0 grants a
        subscription the ACL does not cover and then delivers nothing on it;
        the tests judge by what is delivered, not by the SUBACK."""
        rc, mid = self.client.subscribe([(t, 1) for t in topics])
        assert rc == mqtt.MQTT_ERR_SUCCESS
        self._wait(lambda: self._acks.get(mid), f"SUBACK for {topics}")

    def round_trip(self) -> list[mqtt.MQTTMessage]:
        """Everything the broker queued for this client so far; see the module docstring."""
        rc, mid = self.client.unsubscribe("glucotwin/round-trip")
        assert rc == mqtt.MQTT_ERR_SUCCESS
        self._wait(lambda: self._acks.get(mid), "UNSUBACK")
        with self._cond:
            return list(self.messages)

    def received(self) -> list[tuple[str, bytes]]:
        return [(m.topic, m.payload) for m in self.round_trip()]

    def wait_for_message(self, topic: str) -> mqtt.MQTTMessage:
        def first():
            return next((m for m in self.messages if m.topic == topic), None)
        return self._wait(first, f"message on {topic}")

    def wait_until_disconnected(self) -> None:
        self._wait(lambda: self.disconnected, "disconnection")

    def disconnect_with_will(self) -> None:
        """End the connection so that the broker publishes the last will (MQTT 5 reason 0x04)."""
        self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
        self.wait_until_disconnected()
        self.client.loop_stop()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Rig:
    """A running broker from the shipped configuration, and the clients of a test."""

    def __init__(self, etc: Path, data: Path, require_certificate: bool = False) -> None:
        self.etc = etc
        self.port, self.tls_port = free_port(), free_port()
        data.mkdir(exist_ok=True)
        config = render_config(etc, data, self.port, self.tls_port, require_certificate)
        self.broker = Mosquitto(port=self.port, config=config, wait_ports=[self.tls_port])
        self._peers: list[Peer] = []

    def tls(self, ca: str = "certs", client_cert: bool = False) -> dict[str, str]:
        options = {"ca_certs": str(self.etc / ca / "ca.crt")}
        if client_cert:
            options |= {"certfile": str(self.etc / "certs" / "client.crt"),
                        "keyfile": str(self.etc / "certs" / "client.key")}
        return options

    def attempt(self, username: str | None, password_: str | None = None, *, tls: dict[str, str] | None = None,
                host: str = "127.0.0.1", **options) -> tuple[Peer, ReasonCode | None]:
        if username is not None and password_ is None:
            password_ = password(username)
        peer = Peer(username, password_, tls=tls, **options)
        self._peers.append(peer)
        return peer, peer.connect(self.tls_port if tls else self.port, host)

    def peer(self, username: str, **options) -> Peer:
        """A connected client; fails the test if the broker refuses it."""
        peer, connack = self.attempt(username, **options)
        assert connack is not None and not connack.is_failure, f"{username} refused: {connack}"
        return peer

    def __enter__(self) -> "Rig":
        self.broker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for peer in self._peers:
            peer.close()
        self.broker.__exit__(*exc)


@pytest.fixture
def rig(etc: Path, tmp_path: Path) -> Iterator[Rig]:
    with Rig(etc, tmp_path / "data") as rig:
        yield rig


def refused(connack: ReasonCode | None) -> bool:
    return connack is None or connack.is_failure


# ------------------------------------------------------------------ the broker


def _config_sections() -> list[dict[str, list[str]]]:
    """The shipped mosquitto.conf: global options, then one dict per listener."""
    sections: list[dict[str, list[str]]] = [{}]
    for line in (DEPLOY / "mosquitto.conf").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.strip().partition(" ")
        if key == "listener":
            sections.append({})
        sections[-1].setdefault(key, []).append(value)
    return sections


def test_shipped_config_requires_a_known_user_on_every_listener() -> None:
    # On the TLS listener use_username_as_clientid alone would also turn
    # anonymous clients away; this keeps allow_anonymous false from being
    # dropped unnoticed.
    general, loopback, tls = _config_sections()
    assert general["allow_anonymous"] == ["false"]
    assert general["per_listener_settings"] == ["false"]
    assert len(general["password_file"]) == len(general["acl_file"]) == 1
    assert loopback["listener"] == ["1883 127.0.0.1"] and loopback["use_username_as_clientid"] == ["false"]
    assert tls["listener"] == ["8883"] and tls["use_username_as_clientid"] == ["true"]


def test_broker_listens_only_on_the_loopback_and_tls_ports(rig: Rig) -> None:
    log = rig.broker.log_path.read_text()
    opened = {int(p) for p in re.findall(r"Opening ipv[46] listen socket on port (\d+)", log)}
    assert opened == {rig.port, rig.tls_port}


# ------------------------------------------------------------------ who may connect


def test_anonymous_client_is_refused(rig: Rig) -> None:
    _, connack = rig.attempt(None)
    assert connack is not None and connack.value in (0x86, 0x87), connack


@pytest.mark.parametrize("username, secret", [("loop-alice", "wrong"), ("loop-alice", ""), ("stranger", "x")])
def test_wrong_password_or_unknown_user_is_refused(rig: Rig, username: str, secret: str) -> None:
    _, connack = rig.attempt(username, secret)
    assert connack is not None and connack.value in (0x86, 0x87), connack


def test_a_client_on_the_network_cannot_take_over_the_loops_session(rig: Rig) -> None:
    loop = rig.peer(user("loop"))
    loop.subscribe(topic("cgm"))
    rig.peer(user("app"), client_id=user("loop"), tls=rig.tls())  # mosquitto renames it app-alice
    sensor = rig.peer(user("sensor"))
    assert sensor.publish(topic("cgm"), NIGHTSCOUT_ENTRY).value == 0
    loop.wait_for_message(topic("cgm"))
    assert not loop.disconnected


def test_the_loops_cgm_source_and_pump_link_share_its_username_on_loopback(rig: Rig) -> None:
    source = rig.peer(user("loop"))  # client id loop-alice
    source.subscribe(topic("cgm"))
    pump_link = rig.peer(user("loop"), client_id="glucotwin-host-pump-1-0a1b2c3d")
    pump_link.subscribe(topic("pump/pump-1/reply"))
    pump = rig.peer(user("pump"))
    pump.subscribe(topic("pump/pump-1/cmd"))
    assert pump_link.publish(topic("pump/pump-1/cmd"), b"basal 0.8 U/h").value == 0
    assert pump.publish(topic("pump/pump-1/reply"), b"ack").value == 0
    assert rig.peer(user("sensor")).publish(topic("cgm"), NIGHTSCOUT_ENTRY).value == 0
    assert pump.received() == [(topic("pump/pump-1/cmd"), b"basal 0.8 U/h")]
    assert pump_link.received() == [(topic("pump/pump-1/reply"), b"ack")]
    assert source.received() == [(topic("cgm"), NIGHTSCOUT_ENTRY)]
    assert not source.disconnected and not pump_link.disconnected


def test_on_the_tls_listener_a_username_has_one_connection(rig: Rig) -> None:
    first = rig.peer(user("app"), client_id="phone", tls=rig.tls())
    rig.peer(user("app"), client_id="tablet", tls=rig.tls())
    first.wait_until_disconnected()


# ------------------------------------------------------------------ CGM


def test_sensor_reading_reaches_the_loop(rig: Rig) -> None:
    loop = rig.peer(user("loop"))
    loop.subscribe(topic("cgm"))
    sensor = rig.peer(user("sensor"))
    assert sensor.publish(topic("cgm"), NIGHTSCOUT_ENTRY).value == 0
    assert loop.wait_for_message(topic("cgm")).payload == NIGHTSCOUT_ENTRY


def test_sensor_cannot_write_another_subjects_cgm_or_a_pump_command(rig: Rig) -> None:
    observer = rig.peer(OBSERVER)
    observer.subscribe("glucotwin/#")
    other_loop = rig.peer(user("loop", OTHER))
    other_loop.subscribe(topic("cgm", OTHER))
    pump = rig.peer(user("pump"))
    pump.subscribe(topic("pump/pump-1/cmd"))
    sensor = rig.peer(user("sensor"))

    assert sensor.publish(topic("cgm", OTHER), b"forged reading").value == NOT_AUTHORIZED
    assert sensor.publish(topic("pump/pump-1/cmd"), b"forged bolus").value == NOT_AUTHORIZED
    assert sensor.publish(topic("cgm"), NIGHTSCOUT_ENTRY).value == 0  # its own topic still works

    assert other_loop.received() == []
    assert pump.received() == []
    assert observer.received() == [(topic("cgm"), NIGHTSCOUT_ENTRY)]


# ------------------------------------------------------------------ the pump


def test_only_the_loop_commands_the_pump(rig: Rig) -> None:
    pump = rig.peer(user("pump"))
    pump.subscribe(topic("pump/pump-1/cmd"))
    for name in (user("sensor"), user("app"), user("dashboard"), user("loop", OTHER)):
        assert rig.peer(name).publish(topic("pump/pump-1/cmd"), name.encode()).value == NOT_AUTHORIZED, name
    loop = rig.peer(user("loop"))
    assert loop.publish(topic("pump/pump-1/cmd"), b"bolus 0.5 U").value == 0
    assert pump.wait_for_message(topic("pump/pump-1/cmd")).payload == b"bolus 0.5 U"
    assert pump.received() == [(topic("pump/pump-1/cmd"), b"bolus 0.5 U")]


def test_pump_cannot_command_and_reads_only_its_own_commands(rig: Rig) -> None:
    loop = rig.peer(user("loop"))
    loop.subscribe(topic("pump/+/reply"))
    pump = rig.peer(user("pump"))
    pump.subscribe(topic("pump/+/cmd"), "glucotwin/#")

    assert pump.publish(topic("pump/pump-1/cmd"), b"self-issued bolus").value == NOT_AUTHORIZED
    assert pump.publish(topic("pump/pump-2/reply"), b"spoofed reply").value == NOT_AUTHORIZED
    assert loop.publish(topic("pump/pump-2/cmd"), b"for another pump").value == 0
    assert pump.received() == []

    assert pump.publish(topic("pump/pump-1/reply"), b"ack").value == 0
    assert loop.received() == [(topic("pump/pump-1/reply"), b"ack")]


def test_a_last_will_on_another_clients_status_is_not_published(rig: Rig) -> None:
    loop = rig.peer(user("loop"))
    loop.subscribe(topic("status/+"))
    forger, connack = rig.attempt(user("sensor"), will_topic=topic("status/pump-alice"))
    if not refused(connack):  # mosquitto 2.0 accepts the CONNECT and drops the will when it is due
        forger.disconnect_with_will()
    sensor = rig.peer(user("sensor"), will_topic=topic("status/sensor-alice"))
    sensor.disconnect_with_will()
    assert loop.wait_for_message(topic("status/sensor-alice")).payload == b"offline"
    assert loop.received() == [(topic("status/sensor-alice"), b"offline")]


# ------------------------------------------------------------------ the whole ACL

# What each of alice's users may publish (under glucotwin/alice/); everything
# else in TOPICS, and every topic of TOPICS under glucotwin/bob/, is refused.
WRITES = {
    user("sensor"): {"cgm", "status/sensor-alice"},
    user("loop"): {"pump/pump-1/cmd", "pump/pump-2/cmd", "loop/cycle", "loop/advice", "status/loop-alice"},
    user("pump"): {"pump/pump-1/reply", "status/pump-alice"},
    user("app"): {"treatments", "status/app-alice"},
    user("dashboard"): {"status/dashboard-alice"},
}
# What each of alice's users receives when every topic in WRITES is published,
# under glucotwin/alice/ by alice's users and under glucotwin/bob/ by bob's.
READS = {
    user("sensor"): set(),
    user("loop"): {"cgm", "treatments", "pump/pump-1/reply"} | {f"status/{u}" for u in WRITES},
    user("pump"): {"pump/pump-1/cmd"},
    user("app"): {"cgm", "loop/cycle", "loop/advice"} | {f"status/{u}" for u in WRITES},
    user("dashboard"): {"cgm", "loop/cycle", "loop/advice"} | {f"status/{u}" for u in WRITES},
}
TOPICS = sorted({t for ts in WRITES.values() for t in ts} | {"pump/pump-2/reply", "hil/clock"})


def test_each_user_publishes_exactly_what_the_acl_grants(rig: Rig) -> None:
    observer = rig.peer(OBSERVER)
    observer.subscribe("glucotwin/#")
    publishers = {name: rig.peer(name) for name in WRITES}
    delivered = set()
    for name, peer in publishers.items():
        for subject in (SUBJECT, OTHER):
            for rest in TOPICS:
                full = topic(rest, subject)
                reason = peer.publish(full, name.encode())
                allowed = subject == SUBJECT and rest in WRITES[name]
                if allowed:
                    assert not reason.is_failure, f"{name} may publish {full}, got {reason}"
                    delivered.add((full, name.encode()))
                else:
                    assert reason.value == NOT_AUTHORIZED, f"{name} must not publish {full}, got {reason}"
    assert set(observer.received()) == delivered
    assert len(observer.received()) == len(delivered)


def test_each_user_reads_exactly_what_the_acl_grants(rig: Rig) -> None:
    readers = {name: rig.peer(name) for name in READS}
    everything = [topic(rest.replace(SUBJECT, s), s) for s in (SUBJECT, OTHER) for rest in TOPICS]
    for peer in readers.values():
        peer.subscribe("glucotwin/#", *everything)
    # Every topic a user may write is written, by that user and by its
    # counterpart of the other subject (whose messages no reader here may see).
    for name, topics in WRITES.items():
        counterpart = rig.peer(name.replace(SUBJECT, OTHER))
        for rest in sorted(topics):
            assert not readers[name].publish(topic(rest), b"x").is_failure
            assert not counterpart.publish(topic(rest.replace(SUBJECT, OTHER), OTHER), b"x").is_failure
    for name, peer in readers.items():
        got = {t for t, _ in peer.received()}  # a message matching two subscriptions may come twice
        assert got == {topic(rest) for rest in READS[name]}, name


# ------------------------------------------------------------------ TLS


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_tls_client_trusting_the_ca_connects_and_shares_the_acl(rig: Rig, host: str) -> None:
    loop = rig.peer(user("loop"))  # on the loopback listener
    loop.subscribe(topic("treatments"))
    app = rig.peer(user("app"), tls=rig.tls(), host=host)
    assert app.client.socket().version() in ("TLSv1.2", "TLSv1.3")
    assert app.publish(topic("treatments"), b'{"carbs": 40}').value == 0
    assert app.publish(topic("pump/pump-1/cmd"), b"bolus").value == NOT_AUTHORIZED
    assert loop.wait_for_message(topic("treatments")).payload == b'{"carbs": 40}'


def test_tls_client_not_trusting_the_ca_is_refused(rig: Rig) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        rig.attempt(user("app"), tls=rig.tls(ca="other-ca"))


def test_tls_listener_still_requires_a_password(rig: Rig) -> None:
    _, connack = rig.attempt(user("app"), "wrong", tls=rig.tls())
    assert refused(connack), connack
    _, connack = rig.attempt(None, tls=rig.tls())
    assert refused(connack), connack


def test_require_certificate_admits_only_clients_with_a_certificate_from_the_ca(etc: Path, tmp_path: Path) -> None:
    with Rig(etc, tmp_path / "data", require_certificate=True) as rig:
        try:
            _, connack = rig.attempt(user("app"), tls=rig.tls())
        except (ssl.SSLError, OSError):
            connack = None  # TLS 1.2 fails in the handshake, TLS 1.3 right after it
        assert refused(connack), connack
        app = rig.peer(user("app"), tls=rig.tls(client_cert=True))
        assert app.publish(topic("treatments"), b"{}").value in (0, 0x10)
