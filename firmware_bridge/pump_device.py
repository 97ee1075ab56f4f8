"""The virtual pump as a process: ``python -m firmware_bridge.pump_device --port PATH ...``.

Reads command frames from a serial port (or MQTT with ``--mqtt-broker``),
answers each with :class:`~firmware_bridge.virtual_pump.VirtualPump`, and
persists the pump state to ``--state-file`` (temp file + fsync + os.replace)
BEFORE it sends the reply of any command that changed it, so a restarted pump
never executes a seq twice. An existing state file that cannot be read or
validated stops the process (exit 2): starting from a fresh state would forget
which seqs were executed.

Clock: the wall clock, or with ``--hil-broker`` the lockstep HIL clock: each
``{hil-prefix}/clock`` message ``{"t_ms": int}`` sets the pump's clock, and is
answered on ``{hil-prefix}/pump_report`` with
``{"t_ms", "basal_u_per_h", "bolus_u", "last_seq", "reservoir_u"}`` (QoS 1)
after the state (including the "bolus since last report" counter) is
persisted. Until the first clock message the pump's time is its persisted
clock (0 for a new pump), so commands stamped with HIL time are refused as
"expired" rather than executed on a wrong clock.

Audit trail: with ``--audit-log FILE`` the pump appends one JSON line per dose
command it answered (TEMP_BASAL, BOLUS, SUSPEND, RESUME; not STATUS, not
undecodable frames), written and flushed before the reply is sent::

    {"seq": 12, "type": "bolus", "outcome": "executed", "consumed": true,
     "bolus_u": 0.25, "rate_u_per_h": 1.43, "duration_min": 27, "reason": "",
     "tag_prefix": "5ea1b207", "pump_time_ms": 1735689600000, "wall_time": 1795428000.1}

``outcome``: ``executed`` or ``refused`` (the seq was consumed, rules 10-13 of
PROTOCOL.md), ``exact_retry`` (answered from the cache, nothing done again) or
``nak`` (refused without consuming the seq: bad tag, replayed, expired, ...).
The amounts are those of the ACK (0 when refused). Test harnesses compare it
with the host's journal (``glucotwin faults``).

Exit codes: 0 after SIGTERM/SIGINT, 2 bad arguments or state file, 3 state
could not be persisted (no reply is sent for the command concerned).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from .hil_clock import HilClock
from .protocol import DOSE_TYPES, HEADER, OUTCOME_EXECUTED, NakReason, ProtocolError, load_key_file, peek_header
from .transport import Transport, TransportError
from .virtual_pump import PumpSettings, VirtualPump

log = logging.getLogger("firmware_bridge.pump_device")

POLL_S = 0.02
HIL_POLL_S = 0.002
WALL_ADVANCE_S = 1.0
WALL_PERSIST_S = 10.0
EXIT_OK, EXIT_USAGE, EXIT_PERSIST = 0, 2, 3


class PersistError(RuntimeError):
    pass


def write_state_atomic(path: Path, state: dict[str, Any]) -> None:
    """Write JSON to ``path`` durably: temp file, fsync, os.replace, fsync of the directory."""
    tmp = path.with_name(f".{path.name}.tmp")
    data = json.dumps(state, sort_keys=True, separators=(",", ":")).encode()
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise PersistError(f"cannot persist pump state to {path}: {exc}") from exc


def load_state(path: Path) -> dict[str, Any] | None:
    """The saved state, None when the file does not exist; ValueError when it is unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"cannot read state file {path}: {exc}") from exc
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"state file {path} is not valid JSON: {exc}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"state file {path} does not hold an object")
    return state


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class PumpProcess:
    """The main loop, separated from argument parsing so tests can drive it in-process."""

    def __init__(self, pump: VirtualPump, io: Transport, state_file: Path | None, *, hil: Any = None,
                 ready_file: Path | None = None, audit_log: Path | None = None) -> None:
        self.pump = pump
        self.audit = None if audit_log is None else open(audit_log, "a", encoding="utf-8")
        self.ready_file = ready_file
        self.io = io
        self.state_file = state_file
        self.hil = hil
        self.stop_event = threading.Event()
        self._persisted_revision = -1
        self._last_persist = 0.0
        self._hil_started = False

    def now_ms(self) -> int:
        if self.hil is not None:
            return self.pump.clock_ms or 0
        return wall_clock_ms()

    def persist(self) -> None:
        if self.state_file is not None:
            write_state_atomic(self.state_file, self.pump.state)
        self._persisted_revision = self.pump.revision
        self._last_persist = time.monotonic()

    def handle_body(self, body: bytes) -> None:
        revision = self.pump.revision
        retries = self.pump.counters["exact_retry"]
        try:
            reply = self.pump.handle(body, self.now_ms())
        except Exception:  # the state machine must not raise on input; if it does, stay up
            self.pump.counters["internal_error"] += 1
            log.exception("pump failed on a %d-byte frame", len(body))
            return
        if self.pump.revision != revision:
            self.persist()  # PersistError propagates: stop without replying
        if self.audit is not None:
            self.write_audit(body, reply, self.pump.revision != revision,
                             self.pump.counters["exact_retry"] != retries)
        try:
            self.io.send_frame(reply)
        except TransportError as exc:
            log.warning("reply not sent: %s", exc)

    def write_audit(self, body: bytes, reply: bytes, consumed: bool, exact_retry: bool) -> None:
        """One ``--audit-log`` line for a dose command (see the module docstring)."""
        try:
            header = peek_header(body)
        except ProtocolError:
            return  # not a command: nothing was decided
        if header.msg_type not in DOSE_TYPES:
            return
        record: dict[str, Any] = {"seq": header.seq, "type": header.msg_type.name.lower(), "consumed": False,
                                  "bolus_u": 0.0, "rate_u_per_h": 0.0, "duration_min": 0, "reason": "",
                                  "tag_prefix": body[-32:][:4].hex(), "pump_time_ms": self.pump.clock_ms,
                                  "wall_time": time.time()}
        ring = self.pump.state["ring"]
        if consumed and ring and ring[-1]["seq"] == header.seq:
            entry = ring[-1]
            executed = entry["outcome"] == OUTCOME_EXECUTED
            record.update(outcome="executed" if executed else "refused", consumed=True,
                          reason="" if executed else NakReason(entry["outcome"]).name.lower(),
                          bolus_u=entry["bolus_milli_u"] / 1000.0, rate_u_per_h=entry["rate_milli_u_per_h"] / 1000.0,
                          duration_min=entry["duration_min"], tag_prefix=entry["tag_prefix"])
        elif exact_retry:
            record["outcome"] = "exact_retry"
        else:
            try:
                reason = NakReason(reply[HEADER.size]).name.lower()
            except (IndexError, ValueError):
                reason = "unknown"
            record.update(outcome="nak", reason=reason)
        try:
            self.audit.write(json.dumps(record, sort_keys=True) + "\n")  # type: ignore[union-attr]
            self.audit.flush()  # type: ignore[union-attr]
        except OSError as exc:
            log.error("cannot write the audit log: %s", exc)

    def handle_clock(self, t_ms: int) -> None:
        if not self._hil_started:
            self.pump.power_on(t_ms)
            self._hil_started = True
        else:
            self.pump.advance(t_ms)
        bolus_u, rate_u_per_h = self.pump.delivery_since_last_report()
        self.persist()
        report = {"t_ms": t_ms, "basal_u_per_h": rate_u_per_h, "bolus_u": bolus_u,
                  "last_seq": self.pump.last_seq, "reservoir_u": self.pump.reservoir_u}
        try:
            self.hil.publish_report(json.dumps(report))
        except TransportError as exc:
            log.warning("pump_report for t_ms=%d not published: %s", t_ms, exc)

    def run(self) -> int:
        if self.hil is None:
            self.pump.power_on(wall_clock_ms())
        try:
            self.persist()
            if self.ready_file is not None:
                try:
                    self.ready_file.write_text("ready\n")
                except OSError as exc:
                    log.warning("cannot write the ready file: %s", exc)
            last_advance = time.monotonic()
            poll_s = POLL_S if self.hil is None else HIL_POLL_S
            while not self.stop_event.is_set():
                body = self.io.receive_frame(poll_s)
                if body is not None:
                    self.handle_body(body)
                if self.hil is not None:
                    for t_ms in self.hil.drain():
                        self.handle_clock(t_ms)
                elif time.monotonic() - last_advance >= WALL_ADVANCE_S:
                    self.pump.advance(wall_clock_ms())
                    last_advance = time.monotonic()
                    if time.monotonic() - self._last_persist >= WALL_PERSIST_S:
                        self.persist()
            if self.hil is None:
                self.pump.advance(wall_clock_ms())
            self.persist()
        except PersistError as exc:
            log.error("%s; stopping", exc)
            return EXIT_PERSIST
        return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m firmware_bridge.pump_device",
                                description="glucotwin reference virtual pump "
                                            "(research software, not a medical device)")
    where = p.add_argument_group("link to the host (one of)")
    where.add_argument("--port", help="serial device to listen on (e.g. the pump side of a socat pty pair)")
    where.add_argument("--baudrate", type=int, default=115200)
    where.add_argument("--mqtt-broker", help="listen on MQTT instead: mqtt://host:port or mqtts://host:port")
    where.add_argument("--mqtt-prefix", default="glucotwin",
                       help="topics {prefix}/pump/{device_id}/cmd and /reply (default: glucotwin; "
                       "deployments use glucotwin/SUBJECT, see deploy/mosquitto/acl)")
    p.add_argument("--device-id", required=True)
    p.add_argument("--key-file", required=True, help="the device key in hex (>= 16 bytes)")
    p.add_argument("--state-file", help="persist the pump state here (strongly recommended)")
    p.add_argument("--max-rate", type=float, default=5.0, help="max temp basal, U/h (default 5)")
    p.add_argument("--max-bolus", type=float, default=10.0, help="max bolus, U (default 10)")
    p.add_argument("--max-per-hour", type=float, help="most insulin in any 60 min, U (default: two max boluses "
                   "and an hour of max rate)")
    p.add_argument("--max-per-day", type=float, help="most insulin in any 24 h, U (default: three max boluses "
                   "and twice the scheduled basal)")
    p.add_argument("--reservoir", type=float, default=300.0, help="reservoir of a new pump, U (default 300)")
    p.add_argument("--scheduled-basal", type=float, default=1.0, help="programmed basal, U/h (default 1)")
    p.add_argument("--bolus-increment", type=float, default=0.01, help="U (default 0.01)")
    p.add_argument("--rate-increment", type=float, default=0.01, help="U/h (default 0.01)")
    p.add_argument("--max-validity-s", type=float, default=300.0, help="longest command validity (default 300 s)")
    hil = p.add_argument_group("hardware-in-the-loop lockstep clock")
    hil.add_argument("--hil-broker", help="mqtt://host:port: take the clock from {hil-prefix}/clock")
    hil.add_argument("--hil-prefix", help="e.g. glucotwin/SUBJECT/hil")
    auth = p.add_argument_group("MQTT authentication (both brokers)")
    auth.add_argument("--mqtt-username")
    auth.add_argument("--mqtt-password-file", help="file holding the MQTT password")
    auth.add_argument("--mqtt-ca-file", help="CA bundle for TLS")
    auth.add_argument("--mqtt-cert-file")
    auth.add_argument("--mqtt-key-file")
    auth.add_argument("--mqtt-client-id", help="client id of the command connection (default: the username "
                      "if given, as the deployment ACL's status topics expect, else a generated id)")
    p.add_argument("--ready-file", help="write this file once the pump listens (HIL harness, service managers)")
    p.add_argument("--audit-log", help="append one JSON line per dose command answered (test harnesses)")
    p.add_argument("--log-level", default="INFO")
    return p


def _broker_config(url: str, args: argparse.Namespace) -> Any:
    from .mqtt_transport import BrokerConfig

    password = None
    if args.mqtt_password_file:
        password = Path(args.mqtt_password_file).read_text(encoding="utf-8").strip()
    return BrokerConfig.from_url(url, username=args.mqtt_username, password=password, tls_ca_file=args.mqtt_ca_file,
                                 tls_cert_file=args.mqtt_cert_file, tls_key_file=args.mqtt_key_file)


def _parse_args(argv: list[str] | None) -> argparse.Namespace | None:
    """The checked arguments, with logging set up; None (after logging why) on a usage error."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s pump %(levelname)s %(message)s")
    if bool(args.port) == bool(args.mqtt_broker):
        log.error("give exactly one of --port and --mqtt-broker")
        return None
    if bool(args.hil_broker) != bool(args.hil_prefix):
        log.error("--hil-broker and --hil-prefix go together")
        return None
    return args


def _build_pump(args: argparse.Namespace, state_file: Path | None) -> VirtualPump | None:
    """The pump from its settings, key file and state file; None (after logging why) if one is bad."""
    try:
        settings = PumpSettings(device_id=args.device_id, max_rate_u_per_h=args.max_rate, max_bolus_u=args.max_bolus,
                                reservoir_u=args.reservoir, scheduled_basal_u_per_h=args.scheduled_basal,
                                bolus_increment_u=args.bolus_increment, rate_increment_u_per_h=args.rate_increment,
                                max_validity_s=args.max_validity_s, max_insulin_per_hour_u=args.max_per_hour,
                                max_insulin_per_day_u=args.max_per_day)
        key = load_key_file(args.key_file)
        state = load_state(state_file) if state_file is not None else None
        pump = VirtualPump(settings, key, state)
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        return None
    if state_file is None:
        log.warning("no --state-file: a restart forgets executed seqs and the insulin of the last day")
    log.info("pump limits: bolus %.3f U, rate %.3f U/h, %.3f U per hour, %.3f U per day%s", settings.max_bolus_u,
             settings.max_rate_u_per_h, settings.hour_cap_milli_u / 1000, settings.day_cap_milli_u / 1000,
             " (derived: set --max-per-hour and --max-per-day for this person)" if settings.caps_derived else "")
    return pump


def _stop_on_signals() -> threading.Event:
    """An event that SIGTERM and SIGINT set."""
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def _open_links(args: argparse.Namespace, device_id: str) -> tuple[Any, HilClock | None] | None:
    """The transport to the host and, with --hil-broker, the started HIL clock; None (after logging why)."""
    hil = None
    io: Any = None
    try:
        if args.port:
            from .serial_transport import SerialTransport

            io = SerialTransport(args.port, args.baudrate, poll_s=HIL_POLL_S if args.hil_broker else POLL_S)
        else:
            from .mqtt_transport import MqttTransport

            io = MqttTransport(_broker_config(args.mqtt_broker, args), device_id, prefix=args.mqtt_prefix,
                               role="pump", client_id=args.mqtt_client_id or args.mqtt_username)
        if args.hil_broker:
            hil = HilClock(_broker_config(args.hil_broker, args), args.hil_prefix, device_id).start()
    except (ValueError, OSError) as exc:
        log.error("%s", exc)
        if io is not None:
            io.close()
        return None
    return io, hil


def _serve(process: PumpProcess, io: Any, hil: HilClock | None) -> int:
    """Run the pump until stopped, then close the links and the audit log; the exit code."""
    try:
        return process.run()
    finally:
        if hil is not None:
            hil.stop()
        io.close()
        if process.audit is not None:
            process.audit.close()


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if args is None:
        return EXIT_USAGE
    state_file = Path(args.state_file) if args.state_file else None
    ready_file = Path(args.ready_file) if args.ready_file else None
    if ready_file is not None:
        ready_file.unlink(missing_ok=True)  # a stale one from a previous run must not announce this one
    pump = _build_pump(args, state_file)
    if pump is None:
        return EXIT_USAGE
    stop = _stop_on_signals()
    links = _open_links(args, pump.settings.device_id)
    if links is None:
        return EXIT_USAGE
    io, hil = links
    try:
        process = PumpProcess(pump, io, state_file, hil=hil, ready_file=ready_file,
                              audit_log=Path(args.audit_log) if args.audit_log else None)
    except OSError as exc:
        log.error("cannot open the audit log: %s", exc)
        if hil is not None:
            hil.stop()
        io.close()
        return EXIT_USAGE
    process.stop_event = stop
    log.info("pump %s ready (last_seq %d, reservoir %.3f U, %s clock)", pump.settings.device_id, pump.last_seq,
             pump.reservoir_u, "HIL" if hil else "wall")
    code = _serve(process, io, hil)
    log.info("pump %s stopped (counters %s)", pump.settings.device_id, dict(pump.counters))
    return code

if __name__ == "__main__":
    sys.exit(main())
