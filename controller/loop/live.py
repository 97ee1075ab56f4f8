"""The composition root of the live loop: config in, running ``ClosedLoop`` out.

``glucotwin run --config FILE`` calls :func:`run_live`. This module plugs the
real adapters into the controller's ports: an MQTT or serial CGM source and
the reading validator from ``sensors/``, the pump link from
``firmware_bridge/`` behind :class:`PumpLinkPort`, the SQLite journal, and a
clock (the system's, or the readings' own times in lockstep HIL runs).

With a ``[nightscout]`` section it also uploads the journal to Nightscout
(:class:`NightscoutUpload`: documents are queued in the journal's file after
each cycle and sent by a background thread, so a slow or absent Nightscout
never delays a cycle), and ``[sensor] transport = "nightscout"`` takes
readings from a Nightscout-API receiver (:mod:`sensors.nightscout.receiver`).

It imports nothing from simglucose, pandas or matplotlib: this is what runs
on a Raspberry Pi.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Callable, TextIO

from controller.loop.journal import Journal
from controller.loop.config.live_config import LiveConfig, load_prior
from controller.loop.ports import PumpHistory, PumpHistoryEntry, PumpHistoryUnavailable, PumpOrder, PumpOutcome
from controller.loop.runtime import ClosedLoop, CycleResult
from controller.twin_policy import TwinMPCPolicy
from twin.personalize import personalize

MS_PER_S = 1000.0
PUMP_EVENT_KINDS = ("bolus", "temp_basal", "temp_cancel", "suspend", "resume")


def _ms(t: datetime) -> int:
    return int(round(t.timestamp() * MS_PER_S))


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / MS_PER_S, UTC)


class PumpLinkPort:
    """``firmware_bridge.PumpLink`` as the controller's :class:`~controller.loop.ports.PumpPort`."""

    def __init__(self, link: Any, device_id: str) -> None:
        self.link = link
        self.device_id = device_id
        self.pump_time: datetime | None = None  # the pump's clock at the last sync

    def allocate_seq(self) -> int:
        return int(self.link.allocate_seq())

    def _command(self, order: PumpOrder) -> Any:
        from firmware_bridge.protocol import Command

        issued, expires = _ms(order.issued_at), _ms(order.expires_at)
        if order.kind == "temp_basal":
            return Command.temp_basal(order.seq, self.device_id, order.rate_u_per_h, int(round(order.duration_min)),
                                      issued, expires)
        return Command.bolus(order.seq, self.device_id, order.bolus_u, issued, expires)

    def execute(self, order: PumpOrder) -> PumpOutcome:
        return self._outcome(order, self.link.send(self._command(order)))

    def resolve(self, order: PumpOrder) -> PumpOutcome:
        return self._outcome(order, self.link.resolve(self._command(order)))

    def sync(self) -> bool:
        """Move the seq counter above the pump's ``last_seq`` (one STATUS query); False if the pump
        does not answer now. Needed at start: the STATUS queries the link sends to settle lost
        replies spend seqs that the journal does not hold, and a command with a seq at or below
        ``last_seq`` is refused as replayed (glucotwin faults found it)."""
        from firmware_bridge.pump_link import PumpLinkError

        try:
            status = self.link.sync()
        except PumpLinkError:
            return False
        pump_ms = getattr(status, "pump_time_ms", None)
        self.pump_time = _time(pump_ms) if isinstance(pump_ms, int) and pump_ms > 0 else None
        return True

    def history(self, since: datetime) -> PumpHistory:
        """The pump's own delivery log since ``since`` (its authenticated HISTORY query), times in
        the pump's clock (the same epoch as the loop's: UTC, or the HIL lockstep time)."""
        from firmware_bridge.pump_link import PumpLinkError

        query = getattr(self.link, "query_history", None)
        if query is None:
            raise PumpHistoryUnavailable("this pump link has no history query")
        try:
            got = query(_ms(since))
        except PumpLinkError as exc:
            raise PumpHistoryUnavailable(str(exc)) from None
        entries = tuple(PumpHistoryEntry(int(e.seq), _time(e.time_ms), e.kind, float(e.bolus_u),
                                         float(e.rate_u_per_h), float(e.duration_min)) for e in got.entries
                        if e.kind in PUMP_EVENT_KINDS)  # the pump's own entries (log start, ...) dose nothing
        return PumpHistory(_time(got.pump_time_ms), bool(got.covers_since), entries)

    @staticmethod
    def _outcome(order: PumpOrder, outcome: Any) -> PumpOutcome:
        if outcome.status == "ack" and outcome.ack is not None:
            ack = outcome.ack
            return PumpOutcome(order.seq, "ack", ack.bolus_milli_u / 1000.0, ack.rate_milli_u_per_h / 1000.0,
                               outcome.detail)
        if outcome.status == "nak" and outcome.nak is not None:
            return PumpOutcome(order.seq, "nak", reason=f"{outcome.nak.reason.name.lower()}: {outcome.detail}")
        return PumpOutcome(order.seq, outcome.status, reason=outcome.detail)


class ReadingClock:
    """Lockstep clock for HIL: the newest reading or announcement time seen.

    Once set, it moves at most ``max_step`` per item: an item dated further ahead (a
    wrong sensor clock, a year off) leaves the clock where it is, so the validator judges
    it "in the future" instead of the loop jumping to it (and every later, correct
    reading then being out of order). A lockstep sensor is silent for hours at most
    (a sensor change); 24 h is above any such gap.
    """

    EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

    def __init__(self, max_step: timedelta = timedelta(hours=24)) -> None:
        self.now = self.EPOCH
        self.max_step = max_step
        self.refused = 0

    def observe(self, item: Any) -> bool:
        """Move to the item's time if later and plausible; False when refused as too far ahead."""
        t = getattr(item, "time", None)
        if not isinstance(t, datetime) or t.tzinfo is None or t <= self.now:
            return True
        if self.now != self.EPOCH and t - self.now > self.max_step:
            self.refused += 1
            return False
        self.now = t
        return True

    def __call__(self) -> datetime:
        return self.now


def _say(out: TextIO, line: str) -> None:
    """A status line; a full disk under a file stdout must not stop the loop (its journal degrades)."""
    try:
        print(line, file=out, flush=True)
    except OSError:
        pass


def system_clock() -> datetime:
    return datetime.now(UTC)


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


def build_pump(config: LiveConfig, first_seq: int) -> PumpLinkPort:
    from firmware_bridge.pump_link import PumpLink

    p = config.pump
    if p.transport == "serial":
        from firmware_bridge.serial_transport import SerialTransport

        transport: Any = SerialTransport(p.port, p.baudrate)
    else:
        from firmware_bridge.mqtt_transport import MqttTransport

        m = config.mqtt
        transport = MqttTransport.from_url(f"mqtt://{m.host}:{m.port}", p.device_id,
                                           prefix=f"{m.topic_prefix}/{m.subject}",
                                           username=m.username or None, password=m.password() or None,
                                           tls_ca_file=m.tls_ca_file or None, tls_cert_file=m.tls_cert_file or None,
                                           tls_key_file=m.tls_key_file or None)
    link = PumpLink(transport, p.device_id, p.key(), reply_timeout_s=p.reply_timeout_s, retries=p.retries,
                    next_seq=first_seq)
    return PumpLinkPort(link, p.device_id)


class CyclePublisher:
    """Publishes each cycle on ``{prefix}/{subject}/loop/cycle`` (retained: dashboards see the
    latest) and each reading's fate on ``.../loop/processed`` (the HIL patient waits for it)."""

    def __init__(self, client: Any, base: str) -> None:
        self.client = client
        self.base = base

    def cycle(self, result: CycleResult) -> None:
        self.client.publish(f"{self.base}/loop/cycle", json.dumps(result.to_dict()), qos=1, retain=True)

    def processed(self, reading_time: datetime, result: CycleResult | None, rejected: str | None) -> None:
        payload = {"reading_t_ms": _ms(reading_time), "result": None if result is None else result.to_dict(),
                   "rejected": rejected}
        self.client.publish(f"{self.base}/loop/processed", json.dumps(payload), qos=1)


FORECAST_HORIZON_MIN = 180.0
UPLOAD_FLUSH_S = 5.0


class NightscoutUpload:
    """The loop's side of the Nightscout upload: collect after each cycle (with the twin's
    forecast, for ``predBGs``), send in the background, flush on the way out. Never raises
    into the loop: a failure is printed once per kind and the loop goes on."""

    def __init__(self, config: LiveConfig, policy: TwinMPCPolicy, err: TextIO = sys.stderr) -> None:
        from controller.loop.nightscout.uploader import NightscoutClient, NightscoutUploader

        ns = config.nightscout
        if ns is None:
            raise ValueError("NightscoutUpload needs a [nightscout] section")
        self.policy = policy
        self.err = err
        self._reported: set[str] = set()
        client = NightscoutClient(ns.url, ns.api_secret(), timeout_s=ns.timeout_s)
        self.client, self.device = client, ns.device
        self._degraded_posted: tuple[str, datetime] | None = None
        self.uploader = NightscoutUploader(config.journal_path, client, device=ns.device,
                                           upload_entries=ns.upload_entries, batch_size=ns.batch_size,
                                           max_backoff_s=ns.max_backoff_s, backfill_hours=ns.backfill_hours,
                                           log=lambda line: print(line, file=err, flush=True))
        self.uploader.start()

    def _guard(self, what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - uploading is never worth stopping the loop
            if what not in self._reported:
                self._reported.add(what)
                print(f"nightscout: {what} failed: {type(exc).__name__}: {exc}", file=self.err, flush=True)

    def cycle(self, result: CycleResult) -> None:
        def collect() -> None:
            forecast = None
            if result.forecast is not None:  # the runtime's forecast of this cycle (FORECAST_HORIZON_MIN)
                forecast = result.forecast.to_dict()
            self.uploader.collect({result.cycle: forecast} if forecast is not None else None)

        self._guard("collect", collect)
        if result.degraded:
            self._post_degraded(result)

    def _post_degraded(self, result: CycleResult) -> None:
        """The loop's trouble straight to Nightscout (``loop.failureReason``, as Loop reports it):
        a journal that cannot be written cannot queue the upload either. On a change, then at
        most every 30 min; in the background, never delaying the cycle."""
        last = self._degraded_posted
        if last is not None and last[0] == result.degraded and result.time - last[1] < timedelta(minutes=30):
            return
        self._degraded_posted = (result.degraded, result.time)
        doc = {"device": self.device, "created_at": result.time.isoformat(),
               "loop": {"timestamp": result.time.isoformat(), "failureReason": result.degraded},
               "openaps": {"suggested": {"timestamp": result.time.isoformat(), "reason": result.dose.reason}}}
        threading.Thread(target=self._guard, args=("degraded status", lambda: self.client.post("devicestatus", [doc])),
                         daemon=True).start()

    def collect(self) -> None:
        self._guard("collect", self.uploader.collect)

    def close(self) -> None:
        self._guard("collect", self.uploader.collect)
        self._guard("close", lambda: self.uploader.close(flush_timeout_s=UPLOAD_FLUSH_S))


def run_live(config: LiveConfig, out: TextIO = sys.stdout, ready_file: Path | None = None,
             stop: threading.Event | None = None) -> int:
    """Run the loop until SIGTERM/SIGINT (or ``stop``); prints one status line per cycle."""
    from sensors.validation import ReadingValidator, ValidationSettings

    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        def on_signal(signum: int, _frame: Any) -> None:
            if stop.is_set():  # a second signal: leave now (a restart resolves what was in flight)
                raise SystemExit(128 + signum)
            stop.set()  # the loop stops after the cycle it is in

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
        # a file size limit (ulimit -f) must fail the journal's write, not kill the loop
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    reading_clock = ReadingClock() if config.clock == "readings" else None
    clock: Callable[[], datetime] = reading_clock or system_clock
    journal = Journal(config.journal_path)
    if reading_clock is not None:  # lockstep: after a restart, time resumes at the last journaled cycle
        last = journal.last("decision")
        if last is not None:
            reading_clock.now = datetime.fromisoformat(last.time)
    policy = TwinMPCPolicy(personalize(config.profile, load_prior(config)), limits=config.limits)
    # before the pump and the source: a missing secret file stops the start, not a running loop
    upload = NightscoutUpload(config, policy) if config.nightscout is not None and config.nightscout.upload else None
    pump = build_pump(config, first_seq=journal.max_seq() + 1)
    pump.sync()  # above the journal's seqs AND the pump's last_seq (STATUS seqs are not journaled)
    if reading_clock is not None and pump.pump_time is not None and pump.pump_time > reading_clock.now:
        # lockstep: the pump's clock ran on while the loop was down (or the journal is new); time resumes
        # there, so the pump's history is read up to now and no delivery is cut short
        reading_clock.now = pump.pump_time
    source = build_source(config, clock)
    publisher = None
    if getattr(source, "client", None) is not None and config.publish_cycles:
        publisher = CyclePublisher(source.client, f"{config.mqtt.topic_prefix}/{config.mqtt.subject}")

    def on_cycle(result: CycleResult) -> None:
        if publisher is not None:
            publisher.cycle(result)
        if upload is not None:
            upload.cycle(result)

    settings = config.loop
    if upload is not None:  # Nightscout's forecast lines want 3 hours; the runtime computes it once
        settings = replace(settings, forecast_horizon_min=max(settings.forecast_horizon_min, FORECAST_HORIZON_MIN))
    validator = ReadingValidator(ValidationSettings.for_sample_interval(settings.cycle_min * 60.0))
    loop = ClosedLoop(policy, source, pump, journal, clock, settings, validator=validator,
                      on_cycle=on_cycle if publisher is not None or upload is not None else None)
    if upload is not None:  # never prune what the uploader has not collected yet
        loop.prune_limit = lambda: upload.uploader.cursor
    report = loop.restore()
    print(f"glucotwin run: {config.profile.name}: journal {config.journal_path} "
          f"({report.cycles_replayed} cycles replayed, {len(report.orders_resolved)} in-flight orders resolved, "
          f"IOB {report.iob_u:.2f} U); arm {config.arm}; clock {config.clock}", file=out, flush=True)
    print(f"glucotwin run: {report.pump_history}", file=out, flush=True)
    if report.conservative_until is not None:
        print(f"glucotwin run: CONSERVATIVE MODE until {report.conservative_until:%Y-%m-%d %H:%M %Z}: no bolus and "
              f"no basal above the programmed rate (the insulin already given is not known)", file=out, flush=True)
    if ready_file is not None:
        ready_file.write_text("ready\n")
    from controller.loop.systemd_notify import Notifier

    notifier = Notifier()
    conservative = "" if report.conservative_until is None else \
        f"; CONSERVATIVE until {report.conservative_until:%Y-%m-%d %H:%M}"
    notifier.ready(f"{report.cycles_replayed} cycles replayed{conservative}; waiting for CGM")
    status = "no cycle yet"
    try:
        while not stop.is_set():
            notifier.watchdog(status)  # from the control loop itself: a hung cycle stops the pings
            for item in source.poll(0.5):
                if reading_clock is not None:
                    reading_clock.observe(item)
                is_reading = hasattr(item, "glucose_mg_dl")
                if config.arm == "fcl" and hasattr(item, "carbs_g") and not is_reading:
                    # fully closed loop: announcements are journaled but not used
                    loop.journal.append("announcement", clock().isoformat(), {**item.to_dict(), "ignored": "fcl"})
                    continue
                before = loop.rejections.copy()
                result = loop.handle(item)
                if result is not None:
                    status = result.status_line()
                    _say(out, status)
                if publisher is not None and is_reading:
                    rejected = None
                    if result is None:
                        changed = [k for k in loop.rejections if loop.rejections[k] != before.get(k, 0)]
                        rejected = changed[0] if changed else "rejected"
                    publisher.processed(item.time, result, rejected)
            if reading_clock is None:  # fixed-cadence fallback when readings stop (system clock only)
                result = loop.cadence_cycle()
                if result is not None:
                    status = result.status_line()
                    _say(out, status)
            if upload is not None:
                upload.collect()  # readings without a cycle, ignored announcements
    finally:
        notifier.stopping()
        notifier.close()
        source.close()
        if upload is not None:
            upload.close()
        journal.close()
    return 0
