"""Message bodies over MQTT (paho-mqtt 2.x, MQTT v5, QoS 1).

Topics, for ``prefix`` (default ``glucotwin``) and the pump's ``device_id``::

    {prefix}/pump/{device_id}/cmd     host -> pump   (command bodies)
    {prefix}/pump/{device_id}/reply   pump -> host   (reply bodies)

One MQTT message carries one message body (header + payload + tag) with no
COBS and no CRC: MQTT already delimits messages and TCP checks them. Messages
are never retained. QoS 1 may deliver a message twice; the protocol makes
that harmless (an exact retry gets the cached reply, the host matches replies
by seq). ``role="host"`` publishes commands and reads replies; ``role="pump"``
the reverse (used by ``pump_device --mqtt-broker``).
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .framing import MAX_BODY_BYTES
from .protocol import check_device_id
from .transport import TransportError

log = logging.getLogger(__name__)

MessageHandler = Callable[[str, bytes], None]


@dataclass(frozen=True)
class BrokerConfig:
    """Where and how to connect. ``tls`` is implied by an ``mqtts://`` URL or a CA file."""

    host: str
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    keepalive_s: int = 30

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("broker host must not be empty")
        if not isinstance(self.port, int) or not 0 < self.port < 65536:
            raise ValueError(f"broker port must be in 1..65535, got {self.port!r}")
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        if self.keepalive_s < 5:
            raise ValueError(f"keepalive_s must be >= 5, got {self.keepalive_s}")

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> "BrokerConfig":
        """``mqtt://host[:port]`` or ``mqtts://host[:port]`` (user:password@ in the URL is accepted)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError(f"broker URL must be mqtt://host:port or mqtts://host:port, got {url!r}")
        tls = parts.scheme == "mqtts"
        fields: dict[str, Any] = {"host": parts.hostname, "port": parts.port or (8883 if tls else 1883), "tls": tls}
        if parts.username:
            fields["username"] = parts.username
        if parts.password:
            fields["password"] = parts.password
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**fields)


class MqttSession:
    """A paho client (MQTT v5) that connects in the background, reconnects, and
    re-subscribes ``subscriptions`` (QoS 1) after every connect. Incoming messages
    go to ``on_message(topic, payload)`` on paho's network thread."""

    def __init__(self, config: BrokerConfig, subscriptions: list[str], on_message: MessageHandler, *,
                 client_id: str | None = None) -> None:
        self.config = config
        self.subscriptions = list(subscriptions)
        self._on_message = on_message
        self._subscribed = threading.Event()
        self._settled = threading.Event()
        self.last_refusal: str | None = None
        self.counters: Counter[str] = Counter()
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or f"glucotwin-{uuid.uuid4().hex[:12]}",
                             protocol=mqtt.MQTTv5)
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.tls or config.tls_ca_file:
            client.tls_set(ca_certs=config.tls_ca_file, certfile=config.tls_cert_file, keyfile=config.tls_key_file,
                           cert_reqs=ssl.CERT_REQUIRED)
        client.reconnect_delay_set(min_delay=1, max_delay=10)
        client.on_connect = self._handle_connect
        client.on_subscribe = self._handle_subscribe
        client.on_message = self._handle_message
        client.on_disconnect = self._handle_disconnect
        self.client = client

    def start(self, timeout_s: float = 10.0) -> "MqttSession":
        """Connect and wait until subscribed; raises TransportError when the broker
        refuses the connection (e.g. a wrong password) or after ``timeout_s``."""
        self.client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s,
                                  clean_start=True)
        self.client.loop_start()
        self._settled.wait(timeout_s)
        if not self._subscribed.is_set():
            self.stop()
            why = f"refused: {self.last_refusal}" if self.last_refusal else f"no session within {timeout_s} s"
            raise TransportError(f"MQTT {self.config.host}:{self.config.port} {why}")
        return self

    def stop(self) -> None:
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    @property
    def connected(self) -> bool:
        return self.client.is_connected()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        if not self.client.is_connected():
            raise TransportError("MQTT client is not connected")
        info = self.client.publish(topic, payload, qos=qos, retain=False)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise TransportError(f"MQTT publish failed: {mqtt.error_string(info.rc)}")

    # -- paho callbacks (network thread) ------------------------------------------
    def _handle_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                        properties: Properties | None) -> None:
        if reason_code.is_failure:
            self.counters["connect_refused"] += 1
            self.last_refusal = str(reason_code)
            log.warning("MQTT connect refused: %s", reason_code)
            self._settled.set()
            return
        self.counters["connects"] += 1
        if self.subscriptions:
            client.subscribe([(topic, 1) for topic in self.subscriptions])
        else:
            self._subscribed.set()
            self._settled.set()

    def _handle_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                          properties: Properties | None) -> None:
        if any(code.is_failure for code in reason_codes):
            self.counters["subscribe_refused"] += 1
            self.last_refusal = f"subscription refused: {[str(c) for c in reason_codes]}"
            log.warning("MQTT subscribe refused: %s", reason_codes)
            self._settled.set()
            return
        self._subscribed.set()
        self._settled.set()

    def _handle_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                           properties: Properties | None) -> None:
        self.counters["disconnects"] += 1

    def _handle_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._on_message(message.topic, bytes(message.payload))
        except Exception:  # a handler bug must not kill paho's network thread
            self.counters["handler_error"] += 1
            log.exception("MQTT message handler failed")


def pump_topics(prefix: str, device_id: str) -> tuple[str, str]:
    """(command topic, reply topic) for a pump."""
    check_device_id(device_id)
    if not prefix or any(c in prefix for c in "+#") or prefix.endswith("/"):
        raise ValueError(f"topic prefix must be non-empty, without + # or a trailing /, got {prefix!r}")
    return f"{prefix}/pump/{device_id}/cmd", f"{prefix}/pump/{device_id}/reply"


class MqttTransport:
    """``send_frame(body)`` / ``receive_frame(timeout_s)`` over MQTT, for either end of the link."""

    def __init__(self, config: BrokerConfig, device_id: str, *, prefix: str = "glucotwin", role: str = "host",
                 client_id: str | None = None, connect_timeout_s: float = 10.0, max_queued: int = 256) -> None:
        if role not in ("host", "pump"):
            raise ValueError(f"role must be 'host' or 'pump', got {role!r}")
        self.cmd_topic, self.reply_topic = pump_topics(prefix, device_id)
        self.role = role
        self._in_topic, self._out_topic = ((self.reply_topic, self.cmd_topic) if role == "host"
                                           else (self.cmd_topic, self.reply_topic))
        self._inbox: queue.Queue[bytes] = queue.Queue(maxsize=max_queued)
        self.dropped: Counter[str] = Counter()
        self.session = MqttSession(config, [self._in_topic], self._on_message,
                                   client_id=client_id or f"glucotwin-{role}-{device_id}-{uuid.uuid4().hex[:8]}")
        self.session.start(connect_timeout_s)

    @classmethod
    def from_url(cls, url: str, device_id: str, **kwargs: Any) -> "MqttTransport":
        """``kwargs``: BrokerConfig overrides (username, password, tls_*) and MqttTransport options."""
        config_keys = {"username", "password", "tls_ca_file", "tls_cert_file", "tls_key_file", "keepalive_s"}
        config = BrokerConfig.from_url(url, **{k: kwargs.pop(k) for k in list(kwargs) if k in config_keys})
        return cls(config, device_id, **kwargs)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic != self._in_topic:
            self.dropped["topic"] += 1
        elif not payload or len(payload) > MAX_BODY_BYTES:
            self.dropped["size"] += 1
        else:
            try:
                self._inbox.put_nowait(payload)
            except queue.Full:
                self.dropped["queue_full"] += 1

    def send_frame(self, body: bytes) -> None:
        self.session.publish(self._out_topic, body, qos=1)

    def receive_frame(self, timeout_s: float) -> bytes | None:
        try:
            return self._inbox.get(timeout=max(0.0, timeout_s)) if timeout_s > 0 else self._inbox.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        self.session.stop()

    def __enter__(self) -> "MqttTransport":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
