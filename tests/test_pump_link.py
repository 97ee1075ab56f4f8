"""Host link <-> pump process over a real pseudo-terminal pair (socat) and over MQTT (mosquitto).

The pump runs as a real subprocess (``python -m firmware_bridge.pump_device``).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from firmware_bridge.protocol import Ack, Command, Nak, NakReason, PumpStatus, decode_reply
from firmware_bridge.pump_link import PumpLink
from skip_reasons import skip_reason

REPO = Path(__file__).resolve().parents[1]
KEY = bytes(range(32))
DEV = "pump-0001"

pytestmark = pytest.mark.skipif(shutil.which("socat") is None, reason=skip_reason("socat"))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def wait_for(predicate: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Socat:
    def __init__(self, directory: Path) -> None:
        self.host = str(directory / "host")
        self.pump = str(directory / "pump")
        self.log = directory / "socat.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "Socat":
        for link in (self.host, self.pump):
            if os.path.lexists(link):
                os.unlink(link)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["socat", "-d", "-d", f"pty,raw,echo=0,link={self.host}",
                                          f"pty,raw,echo=0,link={self.pump}"], stderr=log, start_new_session=True)
        wait_for(lambda: os.path.exists(self.host) and os.path.exists(self.pump), what="socat pty links")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None


class PumpProc:
    """The pump device process; ``start()`` waits for its "ready" log line."""

    def __init__(self, directory: Path, args: list[str], device_id: str = DEV) -> None:
        self.directory = directory
        self.device_id = device_id
        self.key_file = directory / "pump.key"
        self.key_file.write_text(KEY.hex() + "\n")
        self.state_file = directory / "pump-state.json"
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> "PumpProc":
        self.starts += 1
        log_path = self.directory / f"pump-{self.starts}.log"
        ready = self.directory / "pump.ready"
        ready.unlink(missing_ok=True)
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "firmware_bridge.pump_device", "--device-id", self.device_id, "--key-file",
                 str(self.key_file), "--state-file", str(self.state_file), "--ready-file", str(ready), *self.args],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: ready.exists() or self.proc.poll() is not None, what="pump ready")
        assert self.proc.poll() is None, log_path.read_text()
        self.log_path = log_path
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(5)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


class Lossy:
    """Wraps a transport; drops outgoing frames or incoming replies chosen by predicates."""

    def __init__(self, inner: object, drop_send: Callable[[bytes], bool] = lambda b: False,
                 drop_reply: Callable[[bytes], bool] = lambda b: False) -> None:
        self.inner = inner
        self.drop_send = drop_send
        self.drop_reply = drop_reply
        self.dropped_sends = 0
        self.dropped_replies = 0

    def send_frame(self, body: bytes) -> None:
        if self.drop_send(body):
            self.dropped_sends += 1
            return
        self.inner.send_frame(body)  # type: ignore[attr-defined]

    def receive_frame(self, timeout_s: float) -> bytes | None:
        deadline = time.monotonic() + timeout_s
        while (remaining := deadline - time.monotonic()) > 0:
            body = self.inner.receive_frame(remaining)  # type: ignore[attr-defined]
            if body is None:
                return None
            if self.drop_reply(body):
                self.dropped_replies += 1
                continue
            return body
        return None


def seq_of(body: bytes) -> int:
    return int.from_bytes(body[2:6], "big")


@pytest.fixture
def socat(tmp_path: Path) -> Iterator[Socat]:
    pair = Socat(tmp_path).start()
    yield pair
    pair.stop()


@pytest.fixture
def serial_pump(tmp_path: Path, socat: Socat) -> Iterator[PumpProc]:
    pump = PumpProc(tmp_path, ["--port", socat.pump, "--max-bolus", "5", "--reservoir", "100"]).start()
    yield pump
    pump.stop()


@pytest.fixture
def host(socat: Socat) -> Iterator[object]:
    from firmware_bridge.serial_transport import SerialTransport

    transport = SerialTransport(socat.host)
    yield transport
    transport.close()


def make_link(transport: object, **kwargs: object) -> PumpLink:
    options = {"reply_timeout_s": 0.4, "retries": 2, **kwargs}
    link = PumpLink(transport, DEV, KEY, **options)  # type: ignore[arg-type]
    link.sync()
    return link


def bolus(link: PumpLink, units: float, seq: int | None = None) -> Command:
    t = now_ms()
    return Command.bolus(link.allocate_seq() if seq is None else seq, DEV, units, t, t + 30_000)


# --------------------------------------------------------------------------- serial


def test_temp_basal_and_bolus_are_acked_over_a_pty(serial_pump: PumpProc, host: object) -> None:
    link = make_link(host)
    t = now_ms()
    temp = link.send(Command.temp_basal(link.allocate_seq(), DEV, 2.0, 30, t, t + 30_000))
    assert temp.status == "ack" and temp.ack is not None
    assert temp.ack.rate_u_per_h == 2.0 and temp.ack.duration_min == 30 and temp.attempts == 1
    dose = link.send(bolus(link, 1.255))
    assert dose.status == "ack" and dose.delivered_bolus_u == pytest.approx(1.25)
    refused = link.send(bolus(link, 6.0))
    assert refused.status == "nak" and refused.nak is not None and refused.nak.reason == NakReason.OVER_LIMIT
    # garbage on the line gets a NAK with seq 0 (ignored by the link) and does not disturb the pump
    host.send_frame(b"not a message")  # type: ignore[attr-defined]
    host._serial.write(b"\x00\xff\xfe random \x01\x02\x00")  # type: ignore[attr-defined]
    status = link.query_status()
    assert status.bolus_delivered_total_milli_u == 1250 and status.running_rate_milli_u_per_h == 2000
    assert [(e.seq, e.outcome) for e in status.ring[:3]] == [(refused.seq, NakReason.OVER_LIMIT),
                                                            (dose.seq, 0), (temp.seq, 0)]


def test_lost_first_ack_is_recovered_by_an_exact_retry(serial_pump: PumpProc, host: object) -> None:
    lossy = Lossy(host, drop_reply=lambda body: body[1] == 0x81 and lossy.dropped_replies == 0)
    link = make_link(lossy)
    outcome = link.send(bolus(link, 2.0))
    assert outcome.status == "ack" and outcome.attempts == 2 and not outcome.resolved_by_status
    assert outcome.delivered_bolus_u == 2.0 and lossy.dropped_replies == 1
    assert link.query_status().bolus_delivered_total_milli_u == 2000


def test_all_acks_lost_is_resolved_by_status_without_second_delivery(serial_pump: PumpProc, host: object) -> None:
    lossy = Lossy(host)
    link = make_link(lossy)
    command = bolus(link, 1.5)
    lossy.drop_reply = lambda body: seq_of(body) == command.seq
    outcome = link.send(command)
    assert outcome.status == "ack" and outcome.resolved_by_status and outcome.attempts == 3
    assert outcome.status_seq == command.seq + 1
    assert outcome.ack is not None and outcome.ack.bolus_milli_u == 1500
    lossy.drop_reply = lambda body: False
    status = link.query_status()
    assert status.bolus_delivered_total_milli_u == 1500
    # the original bytes sent once more are answered from the cache, not executed
    host.send_frame(command.encode(KEY))  # type: ignore[attr-defined]
    cached = decode_reply(host.receive_frame(2.0), KEY)  # type: ignore[attr-defined]
    assert isinstance(cached, Ack) and cached.seq == command.seq
    assert link.query_status().bolus_delivered_total_milli_u == 1500


def test_command_that_never_arrived_is_settled_as_not_executed(serial_pump: PumpProc, host: object) -> None:
    lossy = Lossy(host)
    link = make_link(lossy, retries=1)
    command = bolus(link, 1.0)
    lossy.drop_send = lambda body: seq_of(body) == command.seq
    outcome = link.send(command)
    assert outcome.status == "not_executed" and outcome.attempts == 2, outcome
    # the STATUS was a fence: the late command can never execute now
    host.send_frame(command.encode(KEY))  # type: ignore[attr-defined]
    late = decode_reply(host.receive_frame(2.0), KEY)  # type: ignore[attr-defined]
    assert isinstance(late, Nak) and late.reason == NakReason.REPLAYED
    assert link.query_status().bolus_delivered_total_milli_u == 0


def test_killed_pump_restarted_with_its_state_file_never_reexecutes(serial_pump: PumpProc, host: object) -> None:
    link = make_link(host)
    command = bolus(link, 3.0)
    body = command.encode(KEY)
    host.send_frame(body)  # type: ignore[attr-defined]
    first = host.receive_frame(2.0)  # type: ignore[attr-defined]
    assert isinstance(decode_reply(first, KEY), Ack)
    serial_pump.kill()
    serial_pump.start()
    host.send_frame(body)  # type: ignore[attr-defined]
    assert host.receive_frame(2.0) == first  # type: ignore[attr-defined]
    other = Command.bolus(command.seq, DEV, 1.0, command.issued_at_ms, command.expires_at_ms).encode(KEY)
    host.send_frame(other)  # type: ignore[attr-defined]
    again = decode_reply(host.receive_frame(2.0), KEY)  # type: ignore[attr-defined]
    assert isinstance(again, Nak) and again.reason == NakReason.REPLAYED
    status = link.query_status()
    assert status.bolus_delivered_total_milli_u == 3000 and status.last_seq >= command.seq
    # a restarted host settles the command from its journal without sending it
    fresh = PumpLink(host, DEV, KEY, reply_timeout_s=0.4, retries=1, next_seq=status.last_seq + 1)  # type: ignore
    settled = fresh.resolve(command)
    assert settled.status == "ack" and settled.resolved_by_status and settled.attempts == 0
    assert settled.ack is not None and settled.ack.bolus_milli_u == 3000
    assert fresh.query_status().bolus_delivered_total_milli_u == 3000


def test_pump_process_keeps_its_hourly_limit_across_a_sigkill(tmp_path: Path, socat: Socat, host: object) -> None:
    """Issue 15 item 3: 29 boluses of 10 U from an authenticated host; the pump gives what its limit allows."""
    pump = PumpProc(tmp_path, ["--port", socat.pump, "--max-bolus", "10", "--reservoir", "300",
                               "--max-per-hour", "25", "--max-per-day", "60"]).start()
    try:
        assert "25.000 U per hour, 60.000 U per day" in pump.log_path.read_text()
        link = make_link(host)
        outcomes = [link.send(bolus(link, 10.0)) for _ in range(29)]
        executed = [o for o in outcomes if o.status == "ack"]
        refused = [o for o in outcomes if o.status == "nak"]
        assert len(executed) == 2 and len(refused) == 27
        assert {(o.nak.reason, o.nak.detail) for o in refused if o.nak} == {(NakReason.OVER_LIMIT,
                                                                            "hourly insulin limit")}
        status = link.query_status()
        assert status.bolus_delivered_total_milli_u + status.basal_delivered_total_milli_u <= 25_000
        pump.kill()
        pump.start()
        again = make_link(host)
        after = again.send(bolus(again, 10.0))
        assert after.status == "nak" and after.nak is not None and after.nak.detail == "hourly insulin limit"
        assert again.query_status().bolus_delivered_total_milli_u == 20_000
    finally:
        pump.stop()


def test_sigterm_stops_cleanly_and_a_bad_state_file_refuses_to_start(serial_pump: PumpProc, host: object) -> None:
    link = make_link(host)
    assert link.send(bolus(link, 0.5)).status == "ack"
    assert serial_pump.terminate() == 0
    saved = json.loads(serial_pump.state_file.read_text())
    assert saved["bolus_total_milli_u"] == 500
    serial_pump.state_file.write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "firmware_bridge.pump_device", "--port", "/nonexistent",
                           "--device-id", DEV, "--key-file", str(serial_pump.key_file), "--state-file",
                           str(serial_pump.state_file)], cwd=REPO, capture_output=True, timeout=20)
    assert proc.returncode == 2 and b"not valid JSON" in proc.stderr


def test_pump_and_host_reopen_the_port_after_it_disappears(serial_pump: PumpProc, host: object,
                                                           socat: Socat) -> None:
    link = make_link(host)
    assert link.send(bolus(link, 0.1)).status == "ack"
    socat.stop()
    time.sleep(0.3)
    socat.start()
    outcome = link.send(bolus(link, 0.2))
    assert outcome.status in ("ack", "unknown", "not_executed")
    wait_for(lambda: _status_or_none(link) is not None, 15, "the link to come back")
    assert link.send(bolus(link, 0.3)).status == "ack"
    status = link.query_status()
    delivered = 100 + (200 if outcome.status == "ack" else 0) + 300
    assert status.bolus_delivered_total_milli_u == delivered
    assert serial_pump.proc is not None and serial_pump.proc.poll() is None


def _status_or_none(link: PumpLink) -> PumpStatus | None:
    from firmware_bridge.pump_link import PumpLinkError

    try:
        return link.query_status()
    except PumpLinkError:
        return None


# --------------------------------------------------------------------------- MQTT


def _mqtt_available() -> bool:
    from sim.hil.broker import find_mosquitto

    return find_mosquitto() is not None


needs_mosquitto = pytest.mark.skipif(not _mqtt_available(), reason=skip_reason("mosquitto"))


@needs_mosquitto
def test_hil_clock_message_gets_a_pump_report(tmp_path: Path, socat: Socat, host: object) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from sim.hil.broker import Mosquitto

    prefix = "glucotwin/adult001/hil"
    with Mosquitto() as broker:
        pump = PumpProc(tmp_path, ["--port", socat.pump, "--hil-broker", broker.url, "--hil-prefix", prefix,
                                   "--scheduled-basal", "1.2"]).start()
        reports: queue.Queue[dict] = queue.Queue()
        subscribed = queue.Queue()  # type: ignore[var-annotated]
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="hil-test", protocol=mqtt.MQTTv5)
        client.on_message = lambda c, u, m: reports.put(json.loads(m.payload))
        client.on_subscribe = lambda *a: subscribed.put(True)
        client.on_connect = lambda c, *a: c.subscribe(f"{prefix}/pump_report", qos=1)
        client.connect(broker.host, broker.port)
        client.loop_start()
        try:
            subscribed.get(timeout=5)
            t0 = 1_700_000_000_000

            def tick(t_ms: int) -> dict:
                client.publish(f"{prefix}/clock", json.dumps({"t_ms": t_ms}), qos=1)
                report = reports.get(timeout=5)
                assert report["t_ms"] == t_ms
                return report

            first = tick(t0)
            assert first == {"t_ms": t0, "basal_u_per_h": 1.2, "bolus_u": 0.0, "last_seq": 0, "reservoir_u": 300.0}
            link = PumpLink(host, DEV, KEY, reply_timeout_s=0.5, retries=2, clock_ms=lambda: t0)  # type: ignore
            outcome = link.send(Command.bolus(link.allocate_seq(), DEV, 2.0, t0, t0 + 60_000))
            assert outcome.status == "ack"
            second = tick(t0 + 5 * 60_000)
            assert second["bolus_u"] == 2.0 and second["last_seq"] == outcome.seq
            assert second["reservoir_u"] == pytest.approx(300.0 - 2.0 - 1.2 * 5 / 60, abs=1e-3)
            client.publish(f"{prefix}/clock", b"not json", qos=1)  # ignored, counted, no crash
            third = tick(t0 + 10 * 60_000)
            assert third["bolus_u"] == 0.0
            # a command stamped with wall-clock time is far from the HIL clock: refused as expired
            wall = now_ms()
            late = link.send(Command.bolus(link.allocate_seq(), DEV, 1.0, wall, wall + 60_000))
            assert late.status == "nak" and late.nak is not None and late.nak.reason == NakReason.EXPIRED
        finally:
            client.loop_stop()
            client.disconnect()
            pump.stop()


@needs_mosquitto
def test_pump_over_mqtt_with_the_host_mqtt_transport(tmp_path: Path) -> None:
    from firmware_bridge.mqtt_transport import MqttTransport
    from sim.hil.broker import Mosquitto

    with Mosquitto() as broker:
        pump = PumpProc(tmp_path, ["--mqtt-broker", broker.url, "--mqtt-prefix", "glucotwin/test"]).start()
        transport = MqttTransport.from_url(broker.url, DEV, prefix="glucotwin/test")
        try:
            assert transport.cmd_topic == f"glucotwin/test/pump/{DEV}/cmd"
            link = make_link(transport)
            outcome = link.send(bolus(link, 1.0))
            assert outcome.status == "ack" and outcome.delivered_bolus_u == 1.0
            lossy = Lossy(transport)
            link.transport = lossy  # type: ignore[assignment]
            command = bolus(link, 0.5)
            lossy.drop_reply = lambda body: seq_of(body) == command.seq
            resolved = link.send(command)
            assert resolved.status == "ack" and resolved.resolved_by_status
            assert link.query_status().bolus_delivered_total_milli_u == 1500
        finally:
            transport.close()
            pump.stop()


MAKE_CERTS = REPO / "deploy" / "mosquitto" / "make-certs.sh"
SHIPPED_ACL = REPO / "deploy" / "mosquitto" / "acl"


@needs_mosquitto
def test_pump_over_tls_with_passwords_under_the_shipped_acl(tmp_path: Path) -> None:
    """loop-alice commands pump-1 of subject alice through mqtts with the deployment ACL."""
    if not (shutil.which("openssl") and shutil.which("mosquitto_passwd") and MAKE_CERTS.exists()
            and SHIPPED_ACL.exists()):
        pytest.skip(skip_reason("openssl", "mosquitto_passwd",
                                also="and the repository's deploy/mosquitto/make-certs.sh and deploy/mosquitto/acl"))
    from firmware_bridge.mqtt_transport import MqttTransport
    from firmware_bridge.transport import TransportError
    from sim.hil.broker import Mosquitto, free_port

    # Not under pytest's 0700 tmp: mosquitto started as root reads these as its own user.
    etc = Path(tempfile.mkdtemp(prefix="glucotwin-pump-tls-"))
    try:
        subprocess.run(["bash", str(MAKE_CERTS), str(etc)], check=True, capture_output=True)
        for i, (user, password) in enumerate([("loop-alice", "loop pw"), ("pump-alice", "pump pw")]):
            subprocess.run(["mosquitto_passwd", *(["-c"] if i == 0 else []), "-b", str(etc / "passwd"), user,
                            password], check=True, capture_output=True)
        shutil.copy(SHIPPED_ACL, etc / "acl")
        etc.chmod(0o755)
        for path in etc.iterdir():
            path.chmod(0o644)
        tls_port = free_port()
        extra = (f"password_file {etc / 'passwd'}\nacl_file {etc / 'acl'}\nlistener {tls_port} 127.0.0.1\n"
                 f"cafile {etc / 'ca.crt'}\ncertfile {etc / 'server.crt'}\nkeyfile {etc / 'server.key'}\n")
        with Mosquitto(extra_config=extra, allow_anonymous=False) as broker:
            wait_for(lambda: _can_connect(broker.host, tls_port), what="the TLS listener")
            url = f"mqtts://127.0.0.1:{tls_port}"
            (tmp_path / "pump.password").write_text("pump pw\n")
            pump = PumpProc(tmp_path, ["--mqtt-broker", url, "--mqtt-prefix", "glucotwin/alice",
                                       "--mqtt-username", "pump-alice", "--mqtt-password-file",
                                       str(tmp_path / "pump.password"), "--mqtt-ca-file", str(etc / "ca.crt")],
                            device_id="pump-1").start()
            common = {"prefix": "glucotwin/alice", "tls_ca_file": str(etc / "ca.crt"), "connect_timeout_s": 5.0}
            try:
                with pytest.raises(TransportError, match="refused"):
                    MqttTransport.from_url(url, "pump-1", username="loop-alice", password="wrong", **common)
                transport = MqttTransport.from_url(url, "pump-1", username="loop-alice", password="loop pw",
                                                   client_id="loop-alice", **common)
                try:
                    link = PumpLink(transport, "pump-1", KEY, reply_timeout_s=1.0, retries=1)
                    link.sync()
                    t = now_ms()
                    outcome = link.send(Command.bolus(link.allocate_seq(), "pump-1", 0.7, t, t + 30_000))
                    assert outcome.status == "ack" and outcome.delivered_bolus_u == pytest.approx(0.7)
                finally:
                    transport.close()
            finally:
                pump.stop()
    finally:
        shutil.rmtree(etc, ignore_errors=True)


def _can_connect(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False
