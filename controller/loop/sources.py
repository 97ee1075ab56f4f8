"""The CGM source a configuration names: MQTT, a serial line, or a Nightscout-API receiver."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable

from controller.loop.config.live_config import LiveConfig


def build_source(config: LiveConfig, clock: Callable[[], datetime]) -> Any:
    if config.sensor.transport == "nightscout" and config.nightscout is not None:
        from sensors.nightscout.receiver import NightscoutReceiver

        ns = config.nightscout
        receiver = NightscoutReceiver(ns.listen_host, ns.listen_port, ns.listen_api_secret())
        receiver.start()
        return receiver
    if config.sensor.transport == "serial":
        from sensors.serial.source import SerialCgmSource

        return SerialCgmSource(config.sensor.port, baudrate=config.sensor.baudrate, mode=config.sensor.mode,
                               clock=clock)
    return _mqtt_source(config, client_role="loop")


def _mqtt_settings(config: LiveConfig, client_role: str) -> Any:
    from sensors.mqtt_source import MqttSettings

    m = config.mqtt
    return MqttSettings(host=m.host, port=m.port, client_id=m.client_id or f"{client_role}-{m.subject}",
                        username=m.username or None, password=(m.password() or None) if m.username else None,
                        tls_ca_file=m.tls_ca_file or None, tls_cert_file=m.tls_cert_file or None,
                        tls_key_file=m.tls_key_file or None, topic_prefix=m.topic_prefix, subject=m.subject)


def _mqtt_source(config: LiveConfig, client_role: str) -> Any:
    from sensors.mqtt_source import MqttCgmSource

    source = MqttCgmSource(_mqtt_settings(config, client_role))
    source.start()
    return source
