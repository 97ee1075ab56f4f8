"""The composition root of the live loop: config in, running ``ClosedLoop`` out.

``glucotwin run --config FILE`` calls :func:`run_live`. This module plugs the
real adapters into the controller's ports: a CGM source (:mod:`.sources`:
MQTT, serial, or a Nightscout-API receiver) and the reading validator from
``sensors/``, the pump link from ``firmware_bridge/`` behind
:class:`~controller.loop.pump_port.PumpLinkPort`, the SQLite journal, and a
clock (:mod:`.reading_clock`: the system's, or the readings' own times in
lockstep HIL runs). With a ``[nightscout]`` section it also uploads the
journal to Nightscout (:mod:`controller.loop.nightscout.upload`).

It imports nothing from simglucose, pandas, matplotlib or Dask: this is what
runs on a Raspberry Pi.
"""

from __future__ import annotations

import signal
import sys
import threading
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, TextIO

from controller.loop.config.live_config import LiveConfig, load_twin
from controller.loop.cycle_publisher import CyclePublisher
from controller.loop.cycle_result import CycleResult, RestoreReport
from controller.loop.journal import Journal
from controller.loop.nightscout.upload import FORECAST_HORIZON_MIN, NightscoutUpload
from controller.loop.pump_port import PumpLinkPort, build_pump
from controller.loop.reading_clock import ReadingClock, system_clock
from controller.loop.runtime import ClosedLoop
from controller.loop.sources import build_source
from controller.twin_policy import TwinMPCPolicy


def _say(out: TextIO, line: str) -> None:
    """A status line; a full disk under a file stdout must not stop the loop (its journal degrades)."""
    try:
        print(line, file=out, flush=True)
    except OSError:
        pass


def _stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT stop the loop after the cycle it is in; a second one leaves at once."""
    if threading.current_thread() is not threading.main_thread():
        return

    def on_signal(signum: int, _frame: Any) -> None:
        if stop.is_set():  # a second signal: leave now (a restart resolves what was in flight)
            raise SystemExit(128 + signum)
        stop.set()  # the loop stops after the cycle it is in

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    # a file size limit (ulimit -f) must fail the journal's write, not kill the loop
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


@dataclass
class LiveParts:
    """What :func:`compose` wired together, for the serve loop and the shutdown."""

    loop: ClosedLoop
    source: Any
    journal: Journal
    clock: Callable[[], datetime]
    reading_clock: ReadingClock | None
    publisher: CyclePublisher | None
    upload: NightscoutUpload | None
    whatif: Any = None  # controller.loop.whatif_service.WhatIfService, when [mqtt] whatif_key_file is set


def _lockstep_clock(config: LiveConfig, journal: Journal) -> ReadingClock | None:
    """Lockstep (HIL) time; after a restart it resumes at the last journaled cycle."""
    if config.clock != "readings":
        return None
    reading_clock = ReadingClock()
    last = journal.last("decision")
    if last is not None:
        reading_clock.now = datetime.fromisoformat(last.time)
    return reading_clock


def _connect_pump(config: LiveConfig, journal: Journal, reading_clock: ReadingClock | None) -> PumpLinkPort:
    pump = build_pump(config, first_seq=journal.max_seq() + 1)
    pump.sync()  # above the journal's seqs AND the pump's last_seq (STATUS seqs are not journaled)
    if reading_clock is not None and pump.pump_time is not None and pump.pump_time > reading_clock.now:
        # lockstep: the pump's clock ran on while the loop was down (or the journal is new); time resumes
        # there, so the pump's history is read up to now and no delivery is cut short
        reading_clock.now = pump.pump_time
    return pump


def compose(config: LiveConfig) -> LiveParts:
    """Open the journal, connect pump and source, and build the :class:`ClosedLoop` (not yet restored)."""
    from sensors.validation import ReadingValidator, ValidationSettings

    journal = Journal(config.journal_path)
    reading_clock = _lockstep_clock(config, journal)
    clock: Callable[[], datetime] = reading_clock or system_clock
    policy = TwinMPCPolicy(load_twin(config), config.control_settings(), limits=config.limits)
    # before the pump and the source: a missing secret file stops the start, not a running loop
    upload = NightscoutUpload(config, policy) if config.nightscout is not None and config.nightscout.upload else None
    pump = _connect_pump(config, journal, reading_clock)
    if upload is not None:
        upload.pump = pump  # the pump's own status (reservoir, clock, suspended) for Nightscout's pump pill
    source = build_source(config, clock)
    publisher = None
    if getattr(source, "client", None) is not None and config.publish_cycles:
        publisher = CyclePublisher(source.client, f"{config.mqtt.topic_prefix}/{config.mqtt.subject}")

    whatif = _whatif_service(config, source, clock)

    def on_cycle(result: CycleResult) -> None:
        if publisher is not None:
            publisher.cycle(result)
        if upload is not None:
            upload.cycle(result)
        if whatif is not None:
            whatif.update(policy)  # a copy: questions are answered on it, never on the live policy

    settings = config.loop
    if upload is not None:  # Nightscout's forecast lines want 3 hours; the runtime computes it once
        settings = replace(settings, forecast_horizon_min=max(settings.forecast_horizon_min, FORECAST_HORIZON_MIN))
    validator = ReadingValidator(ValidationSettings.for_sample_interval(settings.cycle_min * 60.0))
    loop = ClosedLoop(policy, source, pump, journal, clock, settings, validator=validator,
                      on_cycle=on_cycle if publisher is not None or upload is not None or whatif is not None
                      else None)
    if upload is not None:  # never prune what the uploader has not collected yet
        loop.prune_limit = lambda: upload.uploader.cursor
    return LiveParts(loop, source, journal, clock, reading_clock, publisher, upload, whatif)


def _whatif_service(config: LiveConfig, source: Any, clock: Callable[[], datetime]) -> Any:
    """The what-if service on the sensor's MQTT client ([mqtt] whatif_key_file), or None."""
    if not config.mqtt.whatif_key_file or not hasattr(source, "add_topic"):
        return None
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from controller.loop.whatif_service import WhatIfService, read_key

    key = read_key(config.mqtt.whatif_key_file)
    client = source.client

    def publish(topic: str, payload: bytes, correlation: bytes | None) -> None:
        props = Properties(PacketTypes.PUBLISH)
        if correlation:
            props.CorrelationData = correlation
        client.publish(topic, payload, qos=1, properties=props)

    service = WhatIfService(key, f"{config.mqtt.topic_prefix}/{config.mqtt.subject}", publish, clock)

    def on_request(client: Any, userdata: Any, message: Any) -> None:
        props = getattr(message, "properties", None)
        service.on_message(message.payload, getattr(props, "ResponseTopic", None),
                           getattr(props, "CorrelationData", None))

    source.add_topic(service.request_topic, on_request)
    return service


def _say_started(config: LiveConfig, report: RestoreReport, out: TextIO) -> None:
    print(f"glucotwin run: {config.profile.name}: journal {config.journal_path} "
          f"({report.cycles_replayed} cycles replayed, {len(report.orders_resolved)} in-flight orders resolved, "
          f"IOB {report.iob_u:.2f} U); arm {config.arm}; clock {config.clock}", file=out, flush=True)
    print(f"glucotwin run: {report.pump_history}", file=out, flush=True)
    if report.conservative_until is not None:
        print(f"glucotwin run: CONSERVATIVE MODE until {report.conservative_until:%Y-%m-%d %H:%M %Z}: no bolus and "
              f"no basal above the programmed rate (the insulin already given is not known)", file=out, flush=True)


def _handle(parts: LiveParts, config: LiveConfig, item: Any, out: TextIO) -> str | None:
    """One item from the source: journaled, maybe a cycle; returns the new status line, if any."""
    loop, publisher = parts.loop, parts.publisher
    if parts.reading_clock is not None:
        parts.reading_clock.observe(item)
    is_reading = hasattr(item, "glucose_mg_dl")
    if config.arm == "fcl" and hasattr(item, "carbs_g") and not is_reading:
        # fully closed loop: announcements are journaled but not used
        loop.journal.append("announcement", parts.clock().isoformat(), {**item.to_dict(), "ignored": "fcl"})
        return None
    before = loop.rejections.copy()
    result = loop.handle(item)
    status = None
    if result is not None:
        status = result.status_line()
        _say(out, status)
    if publisher is not None and is_reading:
        rejected = None
        if result is None:
            changed = [k for k in loop.rejections if loop.rejections[k] != before.get(k, 0)]
            rejected = changed[0] if changed else "rejected"
        publisher.processed(item.time, result, rejected)
    return status


def _serve(parts: LiveParts, config: LiveConfig, out: TextIO, stop: threading.Event, notifier: Any) -> None:
    status = "no cycle yet"
    while not stop.is_set():
        notifier.watchdog(status)  # from the control loop itself: a hung cycle stops the pings
        for item in parts.source.poll(0.5):
            status = _handle(parts, config, item, out) or status
        if parts.reading_clock is None:  # fixed-cadence fallback when readings stop (system clock only)
            result = parts.loop.cadence_cycle()
            if result is not None:
                status = result.status_line()
                _say(out, status)
        if parts.upload is not None:
            parts.upload.collect()  # readings without a cycle, ignored announcements


def run_live(config: LiveConfig, out: TextIO = sys.stdout, ready_file: Path | None = None,
             stop: threading.Event | None = None) -> int:
    """Run the loop until SIGTERM/SIGINT (or ``stop``); prints one status line per cycle."""
    from controller.loop.systemd_notify import Notifier

    stop = stop or threading.Event()
    _stop_on_signals(stop)
    parts = compose(config)
    report = parts.loop.restore()
    _say_started(config, report, out)
    if ready_file is not None:
        ready_file.write_text("ready\n")
    notifier = Notifier()
    conservative = "" if report.conservative_until is None else \
        f"; CONSERVATIVE until {report.conservative_until:%Y-%m-%d %H:%M}"
    notifier.ready(f"{report.cycles_replayed} cycles replayed{conservative}; waiting for CGM")
    try:
        _serve(parts, config, out, stop, notifier)
    finally:
        notifier.stopping()
        notifier.close()
        parts.source.close()
        if parts.whatif is not None:
            parts.whatif.close()
        if parts.upload is not None:
            parts.upload.close()
        parts.journal.close()
    return 0
