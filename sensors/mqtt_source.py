"""CGM readings and carb announcements over MQTT 5 (paho-mqtt 2.x): source and publisher.

Topics, for ``topic_prefix`` P (default ``glucotwin``) and ``subject`` S:

``P/S/cgm``
    Nightscout entry objects (:mod:`sensors.nightscout.entry`): one JSON object, or
    a JSON array of them, UTF-8, QoS 1, not retained. Example::

        {"type": "sgv", "sgv": 123, "date": 1795428000000,
         "dateString": "2026-11-23T10:00:00.000Z", "direction": "Flat",
         "device": "sim", "noise": 1}

``P/S/treatments``
    Nightscout carb treatments, one object or an array, QoS 1::

        {"eventType": "Meal Bolus", "carbs": 45, "created_at": "2026-11-23T12:00:00.000Z",
         "date": 1795435200000, "enteredBy": "phone"}

    and temporary targets (``duration`` 0 cancels; ``units`` "mg/dl" or "mmol")::

        {"eventType": "Temporary Target", "reason": "Eating Soon", "targetBottom": 90, "targetTop": 90,
         "duration": 45, "units": "mg/dl", "created_at": "2026-11-23T11:30:00.000Z"}

``P/S/status/<client_id>``
    retained ``online`` (published on every connect) / ``offline`` (published on a
    clean :meth:`close`, and registered as the MQTT last will, so the broker
    publishes it when the client vanishes without closing).

:class:`MqttCgmSource` subscribes to the first two with QoS 1 on a persistent
session (``clean_start=False`` and a ``SessionExpiryInterval``): QoS 1 messages
published while it was offline are delivered when it reconnects, as long as the
session has not expired. paho reconnects automatically with exponential backoff
(``reconnect_min_delay_s`` doubling up to ``reconnect_max_delay_s``). Every
message becomes items for :meth:`MqttCgmSource.poll`: readings, announcements,
and :class:`~sensors.reading.Rejected` for anything unusable. Nothing a
publisher sends raises; message-level rejections start with
``"malformed message"`` (oversize, not UTF-8, not JSON, not an object or array),
entry-level ones use the Nightscout phrases.

The source does not validate readings against the clock; pass them through a
:class:`sensors.validation.ReadingValidator`.

paho is imported by this module only, so ``import sensors`` stays light.
"""

from __future__ import annotations

import json
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sensors._queue import MAX_QUEUED_ITEMS, BoundedItems
from sensors.nightscout.entry import (
    CarbAnnouncement,
    announcement_to_treatment,
    entry_to_reading,
    reading_to_entry,
    TempTargetTreatment,
    treatment_to_item,
)
from sensors.reading import GlucoseReading, Rejected

MAX_PAYLOAD_BYTES = 64 * 1024
QOS = 1
TRANSPORT = "mqtt"
STATUS_ONLINE = "online"
STATUS_OFFLINE = "offline"
_RAW_MAX_CHARS = 200
_MAX_SESSION_EXPIRY_S = 0xFFFFFFFF

Item = GlucoseReading | Rejected | CarbAnnouncement | TempTargetTreatment


def _check_topic_level(name: str, value: Any, allow_slash: bool = False) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    bad = [c for c in ("+", "#", "\x00") if c in value]
    if bad or (not allow_slash and "/" in value):
        raise ValueError(f"{name} {value!r} must not contain MQTT wildcards, NUL or '/'")
    if allow_slash and (value.startswith("/") or value.endswith("/") or "//" in value):
        raise ValueError(f"{name} {value!r} must not start or end with '/' or contain '//'")


@dataclass(frozen=True)
class MqttSettings:
    """Where the broker is, who we are, and the topics (see the module docstring).

    Attributes
    ----------
    host, port: the broker (8883 is customary with TLS).
    client_id: MQTT client identifier; must be stable for a persistent session and
        unique per connected client (the source and a publisher need different ones).
    username, password: broker authentication (password needs a username).
    tls_ca_file: CA certificate(s) that signed the broker's certificate; setting it
        (or a client certificate) turns TLS on.
    tls_cert_file, tls_key_file: client certificate and key for mutual TLS
        (the key may be inside the certificate file).
    keepalive_s: MQTT keepalive, seconds (5..65535).
    session_expiry_s: how long the broker keeps our session (subscriptions and queued
        QoS 1 messages) after a disconnect; 0 = a clean session on every connect.
    reconnect_min_delay_s, reconnect_max_delay_s: reconnect backoff.
    topic_prefix: first topic levels, e.g. ``glucotwin`` or ``lab/glucotwin``.
    subject: whose readings (one topic level); also the readings' ``subject``.
    connect_timeout_s: how long ``MqttCgmPublisher.start`` waits for the broker.
    max_queued_items: items a source keeps for the loop's next ``poll``; beyond it the
        oldest are dropped and reported (a flood cannot grow memory, see :mod:`sensors._queue`).
    """

    host: str = "localhost"
    port: int = 1883
    client_id: str = "glucotwin-cgm"
    username: str | None = None
    password: str | None = None
    tls_ca_file: str | Path | None = None
    tls_cert_file: str | Path | None = None
    tls_key_file: str | Path | None = None
    keepalive_s: int = 30
    session_expiry_s: int = 3600
    reconnect_min_delay_s: float = 1.0
    reconnect_max_delay_s: float = 30.0
    topic_prefix: str = "glucotwin"
    subject: str = "default"
    connect_timeout_s: float = 10.0
    max_queued_items: int = MAX_QUEUED_ITEMS

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ValueError(f"host must be a non-empty string, got {self.host!r}")
        for name, low, high in (("port", 1, 65535), ("keepalive_s", 5, 65535),
                                ("session_expiry_s", 0, _MAX_SESSION_EXPIRY_S)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer {low}..{high}, got {value!r}")
        if not isinstance(self.client_id, str) or not self.client_id or len(self.client_id.encode()) > 128:
            raise ValueError(f"client_id must be a non-empty string of at most 128 bytes, got {self.client_id!r}")
        _check_topic_level("client_id", self.client_id)
        if self.username is not None and not isinstance(self.username, str):
            raise ValueError("username must be a string or None")
        if self.password is not None:
            if not isinstance(self.password, str):
                raise ValueError("password must be a string or None")
            if self.username is None:
                raise ValueError("password needs a username")
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, (str, Path)):
                raise ValueError(f"{name} must be a path or None, got {value!r}")
            if value is not None and not str(value):
                raise ValueError(f"{name} must not be empty")
        if self.tls_key_file is not None and self.tls_cert_file is None:
            raise ValueError("tls_key_file needs tls_cert_file")
        for name in ("reconnect_min_delay_s", "reconnect_max_delay_s", "connect_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if self.reconnect_min_delay_s > self.reconnect_max_delay_s:
            raise ValueError("reconnect_min_delay_s must not exceed reconnect_max_delay_s")
        n = self.max_queued_items
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"max_queued_items must be a positive integer, got {n!r}")
        _check_topic_level("topic_prefix", self.topic_prefix, allow_slash=True)
        _check_topic_level("subject", self.subject)

    @property
    def tls(self) -> bool:
        return self.tls_ca_file is not None or self.tls_cert_file is not None

    @property
    def cgm_topic(self) -> str:
        return f"{self.topic_prefix}/{self.subject}/cgm"

    @property
    def treatments_topic(self) -> str:
        return f"{self.topic_prefix}/{self.subject}/treatments"

    def status_topic(self, client_id: str | None = None) -> str:
        return f"{self.topic_prefix}/{self.subject}/status/{client_id or self.client_id}"


class _Endpoint:
    """A paho client with our connection options, status topic and last will."""

    def __init__(self, settings: MqttSettings) -> None:
        if not isinstance(settings, MqttSettings):
            raise ValueError(f"settings must be MqttSettings, got {type(settings).__name__}")
        self.settings = settings
        self.connects = 0
        self.last_error: str | None = None
        self._connected = threading.Event()
        self._started = False
        self._closed = False
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                             protocol=mqtt.MQTTv5)
        client.suppress_exceptions = True  # a bug in a callback must not kill the network thread
        if settings.username is not None:
            client.username_pw_set(settings.username, settings.password)
        if settings.tls:
            try:
                client.tls_set(
                    ca_certs=str(settings.tls_ca_file) if settings.tls_ca_file is not None else None,
                    certfile=str(settings.tls_cert_file) if settings.tls_cert_file is not None else None,
                    keyfile=str(settings.tls_key_file) if settings.tls_key_file is not None else None,
                )
            except OSError as err:  # ssl.SSLError is an OSError too
                raise ValueError(f"unusable TLS file(s) ({settings.tls_ca_file}, {settings.tls_cert_file}, "
                                 f"{settings.tls_key_file}): {err}") from None
        client.will_set(settings.status_topic(), STATUS_OFFLINE, qos=QOS, retain=True)
        client.reconnect_delay_set(settings.reconnect_min_delay_s, settings.reconnect_max_delay_s)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        self.client = client

    @property
    def connected(self) -> bool:
        """True while connected to the broker (CONNACK received, not yet disconnected)."""
        return self._connected.is_set()

    @property
    def reconnects(self) -> int:
        """Successful connects after the first."""
        return max(0, self.connects - 1)

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def start(self) -> None:
        """Connect in the background (``connect_async`` + ``loop_start``); paho retries until it succeeds."""
        if self._started:
            return
        s = self.settings
        properties = None
        if s.session_expiry_s > 0:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = s.session_expiry_s
        self.client.connect_async(s.host, s.port, keepalive=s.keepalive_s,
                                  clean_start=s.session_expiry_s == 0, properties=properties)
        self._started = True
        self.client.loop_start()

    def close(self, timeout_s: float = 5.0) -> None:
        """Publish the retained ``offline`` status, disconnect cleanly, stop the network thread."""
        if self._closed:
            return
        self._closed = True
        if not self._started:
            return
        if self.connected:
            try:
                info = self.client.publish(self.settings.status_topic(), STATUS_OFFLINE, qos=QOS, retain=True)
                info.wait_for_publish(timeout_s)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()
        self._connected.clear()

    # --- paho callbacks (network thread) ------------------------------------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                    properties: Any) -> None:
        if reason_code.is_failure:
            self.last_error = f"connect refused: {reason_code}"
            return
        self.connects += 1
        self._subscribe(client)
        client.publish(self.settings.status_topic(), STATUS_ONLINE, qos=QOS, retain=True)
        self._connected.set()

    def _subscribe(self, client: mqtt.Client) -> None:
        pass

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        # After a refused CONNECT, keep the refusal (the more useful message).
        if was_connected and reason_code is not None and getattr(reason_code, "is_failure", False):
            self.last_error = f"disconnected: {reason_code}"

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.last_error = "connection failed"


class MqttCgmSource(_Endpoint):
    """Readings and carb announcements from the ``cgm`` and ``treatments`` topics.

    ``start()`` connects in the background; ``poll(timeout_s)`` returns what has
    arrived (thread-safe); ``close()`` says ``offline`` and disconnects.

    Attributes
    ----------
    messages: MQTT messages received.
    queue: the items waiting for ``poll``, at most ``settings.max_queued_items``
        (``queue.dropped`` counts what a flood pushed out; ``poll`` reports it).
    """

    def __init__(self, settings: MqttSettings) -> None:
        super().__init__(settings)
        self.queue: BoundedItems[Item] = BoundedItems(settings.max_queued_items)
        self.messages = 0
        self._subscribed = threading.Event()
        self._extra_topics: list[str] = []
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    def add_topic(self, topic: str, callback: Any) -> None:
        """Also subscribe to ``topic`` (QoS 1, again after every reconnect); its messages go to
        ``callback(client, userdata, message)`` on the network thread, not into :meth:`poll`."""
        self.client.message_callback_add(topic, callback)
        self._extra_topics.append(topic)
        if self.connected:
            self.client.subscribe(topic, QOS)

    def poll(self, timeout_s: float = 0.0) -> list[Item]:
        """Items received: waits at most ``timeout_s`` for the first, then drains the rest."""
        return self.queue.poll(timeout_s)

    def _subscribe(self, client: mqtt.Client) -> None:
        s = self.settings
        client.subscribe([(s.cgm_topic, QOS), (s.treatments_topic, QOS)] + [(t, QOS) for t in self._extra_topics])

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: Any,
                      properties: Any) -> None:
        refused = [str(rc) for rc in reason_codes if getattr(rc, "is_failure", False)]
        if refused:
            self.last_error = f"subscription refused: {', '.join(refused)}"
        else:
            self._subscribed.set()

    def wait_subscribed(self, timeout_s: float) -> bool:
        """Wait until the broker has granted the subscriptions of the current connection."""
        return self._subscribed.wait(timeout_s)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: Any,
                       properties: Any) -> None:
        self._subscribed.clear()
        super()._on_disconnect(client, userdata, flags, reason_code, properties)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages += 1
        try:
            items = parse_message(message.topic, message.payload, self.settings)
        except Exception as err:  # noqa: BLE001 - never let a message kill the network thread
            items = [Rejected(_raw_payload(message.payload), None,
                              f"malformed message: {type(err).__name__} while parsing")]
        for item in items:
            self.queue.put(item)

    def __enter__(self) -> MqttCgmSource:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class MqttCgmPublisher(_Endpoint):
    """Publishes readings and announcements (a simulated sensor, a bridge, tests).

    Each publish is QoS 1 and waits for the broker's PUBACK; TimeoutError if it
    does not come within ``timeout_s`` (the message stays queued in paho and is
    re-sent after a reconnect).
    """

    def start(self, wait: bool = True) -> None:  # type: ignore[override]
        """Connect; with ``wait`` (default), block until connected or raise ConnectionError."""
        super().start()
        if wait and not self.wait_connected(self.settings.connect_timeout_s):
            raise ConnectionError(
                f"no MQTT connection to {self.settings.host}:{self.settings.port} within "
                f"{self.settings.connect_timeout_s:g} s ({self.last_error or 'no answer'})"
            )

    def publish_reading(self, reading: GlucoseReading, timeout_s: float = 5.0) -> None:
        self.publish_payload("cgm", json.dumps(reading_to_entry(reading)), timeout_s)

    def publish_readings(self, readings: list[GlucoseReading], timeout_s: float = 5.0) -> None:
        """Several readings as one JSON array message."""
        self.publish_payload("cgm", json.dumps([reading_to_entry(r) for r in readings]), timeout_s)

    def publish_announcement(self, announcement: CarbAnnouncement, timeout_s: float = 5.0) -> None:
        self.publish_payload("treatments", json.dumps(announcement_to_treatment(announcement)), timeout_s)

    def publish_payload(self, kind: str, payload: bytes | str, timeout_s: float = 5.0) -> None:
        """Any payload on the ``cgm`` or ``treatments`` topic (tests send malformed ones)."""
        topics = {"cgm": self.settings.cgm_topic, "treatments": self.settings.treatments_topic}
        if kind not in topics:
            raise ValueError(f"kind must be 'cgm' or 'treatments', got {kind!r}")
        if not self.wait_connected(timeout_s):
            raise ConnectionError(f"not connected to the MQTT broker within {timeout_s:g} s; nothing published")
        info = self.client.publish(topics[kind], payload, qos=QOS)
        if info.rc == mqtt.MQTT_ERR_NO_CONN:
            raise ConnectionError(f"connection lost while publishing message {info.mid} on {topics[kind]}; "
                                  "paho re-sends it after reconnecting")
        info.wait_for_publish(timeout_s)
        if not info.is_published():
            raise TimeoutError(f"no PUBACK for message {info.mid} on {topics[kind]} within {timeout_s:g} s")

    def __enter__(self) -> MqttCgmPublisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- payloads ---------------------------------------------------------------------------------


def parse_message(topic: str, payload: bytes, settings: MqttSettings) -> list[Item]:
    """The items one MQTT message carries (never raises on bad payloads)."""
    if topic == settings.cgm_topic:
        kind = "cgm"
    elif topic == settings.treatments_topic:
        kind = "treatments"
    else:
        return [Rejected(_raw_payload(payload), None, f"malformed message: unexpected topic {topic[:100]!r}")]
    document = decode_payload(payload)
    if isinstance(document, Rejected):
        return [document]
    objects = document if isinstance(document, list) else [document]
    subject = settings.subject
    items: list[Item] = []
    for obj in objects:
        try:
            if kind == "cgm":
                items.append(entry_to_reading(obj, subject=subject, transport=TRANSPORT))
            else:
                items.append(treatment_to_item(obj, subject=subject, transport=TRANSPORT))
        except Exception as err:  # noqa: BLE001 - e.g. RecursionError on a pathologically nested entry
            what = "entry" if kind == "cgm" else "treatment"
            items.append(Rejected(_raw_payload(payload), None, f"malformed {what}: {type(err).__name__}"))
    return items


def decode_payload(payload: bytes) -> dict[str, Any] | list[Any] | Rejected:
    """A JSON object or array from a payload, or a ``"malformed message"`` rejection."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return Rejected(f"<{len(payload)} bytes>", None,
                        f"malformed message: {len(payload)} bytes is larger than {MAX_PAYLOAD_BYTES}")
    try:
        text = bytes(payload).decode("utf-8")
    except UnicodeDecodeError:
        return Rejected(_raw_payload(payload), None, "malformed message: not UTF-8")
    try:
        document = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return Rejected(_raw_payload(payload), None, "malformed message: not valid JSON")
    if not isinstance(document, (dict, list)):
        return Rejected(_raw_payload(payload), None,
                        f"malformed message: expected a JSON object or array, got {type(document).__name__}")
    return document


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def _raw_payload(payload: bytes) -> str:
    text = bytes(payload[: _RAW_MAX_CHARS * 4]).decode("utf-8", errors="replace")
    return text if len(text) <= _RAW_MAX_CHARS else text[: _RAW_MAX_CHARS - 1] + "\u2026"
