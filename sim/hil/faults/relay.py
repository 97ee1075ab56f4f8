"""A fault-injecting serial relay between the loop and the pump: a drop-in for the ``socat`` pty pair.

``socat pty,link=pump.tty pty,link=host.tty`` gives the HIL harness a perfect
serial cable. :class:`FaultRelay` gives it a bad one. It creates two
pseudo-terminal pairs (``os.openpty``, raw mode), exposes their slave ends as
the symlinks ``host.tty`` (the loop opens it) and ``pump.tty`` (the virtual
pump opens it), and copies bytes between the two master ends **frame by
frame**: frames on the pump link are COBS-encoded and end with 0x00
(``firmware_bridge/framing.py``), so the relay cuts the stream at each 0x00 and
decides per frame what to do with it:

==================  =====================================================================
fault               effect
==================  =====================================================================
drop_command        a host -> pump frame is not delivered (a command lost on the wire)
drop_reply          a pump -> host frame is not delivered (a lost ACK / NAK / status reply)
corrupt_command     one byte of a host -> pump frame is changed (the CRC-16 catches it)
corrupt_reply       one byte of a pump -> host frame is changed
duplicate_command   a host -> pump frame is delivered twice
duplicate_reply     a pump -> host frame is delivered twice
unplug              both pty pairs are closed and the symlinks removed (the cable pulled,
                    a USB adapter gone); after ``pause_s`` new pairs are created at the
                    same symlink paths (plugged back in). Bytes in flight are lost.
==================  =====================================================================

Faults happen (a) with per-frame probabilities (:class:`FaultRates`) drawn from a
seeded ``random.Random``, so a run is reproducible for a given sequence of
frames, and/or (b) on demand: :meth:`FaultRelay.arm` makes the next eligible
frame(s) suffer a given fault, :meth:`FaultRelay.unplug` pulls the cable now.
:attr:`FaultRelay.counts` counts what the relay did (faults by kind, frames and
bytes forwarded per direction). ``on_frame`` (optional) is called from the relay
thread after each frame was forwarded, with the direction and the frame; the
fault campaign uses it to kill the loop process right after a command reached
the pump.

The relay keeps its own descriptor of each slave open, so a peer that closes and
reopens its end (``SerialTransport`` does after an error) finds the same pty;
only :meth:`unplug` makes the device disappear.

Command line (e.g. to put a bad cable between a real loop and the reference pump)::

    python -m sim.hil.faults.relay DIR [--seed N] [--drop-command P] [--drop-reply P]
        [--corrupt P] [--duplicate P] [--unplug P] [--unplug-pause S]

creates ``DIR/host.tty`` and ``DIR/pump.tty`` and relays until SIGINT/SIGTERM,
then prints the counts as JSON. Linux/POSIX only (pseudo-terminals).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import random
import select
import signal
import sys
import termios
import threading
import time
import tty
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

DELIMITER = 0x00
TO_PUMP, TO_HOST = "to_pump", "to_host"
FAULT_KINDS = ("drop_command", "drop_reply", "corrupt_command", "corrupt_reply", "duplicate_command",
               "duplicate_reply", "unplug")
MAX_FRAME_BYTES = 4096
"""A 'frame' longer than this without a 0x00 is forwarded as it is (garbage passes through)."""


@dataclass(frozen=True)
class FaultRates:
    """Per-frame fault probabilities (0..1) and the unplug pause.

    ``corrupt`` and ``duplicate`` apply to both directions; ``unplug`` is drawn
    once per forwarded frame of either direction.
    """

    drop_command: float = 0.0
    drop_reply: float = 0.0
    corrupt: float = 0.0
    duplicate: float = 0.0
    unplug: float = 0.0
    unplug_pause_s: float = 1.0

    def __post_init__(self) -> None:
        for name in ("drop_command", "drop_reply", "corrupt", "duplicate", "unplug"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
                raise ValueError(f"FaultRates.{name} must be a probability in [0, 1], got {value!r}")
        if not (isinstance(self.unplug_pause_s, (int, float)) and 0.0 <= self.unplug_pause_s <= 600.0):
            raise ValueError(f"FaultRates.unplug_pause_s must be in [0, 600] s, got {self.unplug_pause_s!r}")


class _Pair:
    """One pty pair: the master (the relay's end) and the slave (held open, exposed by a symlink)."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave, termios.TCSANOW)  # no echo, no line editing, 8 bits: a plain byte pipe
        os.set_blocking(self.master, False)
        tmp = link.with_name(f".{link.name}.tmp")
        tmp.unlink(missing_ok=True)
        os.symlink(os.ttyname(self.slave), tmp)
        os.replace(tmp, link)  # atomic: a peer never sees a half-made link
        self.buffer = bytearray()

    def close(self) -> None:
        try:
            if self.link.is_symlink():
                self.link.unlink()
        except OSError:
            pass
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


class FaultRelay:
    """Relay frames between ``directory/host.tty`` and ``directory/pump.tty``, injecting faults.

    ``start()`` creates the ptys and the symlinks and starts the relay thread;
    ``stop()`` ends it and removes the symlinks. Thread-safe: ``arm``,
    ``unplug`` and ``set_rates`` may be called from any thread.
    """

    def __init__(self, directory: str | Path, *, seed: int = 0, rates: FaultRates | None = None,
                 host_name: str = "host.tty", pump_name: str = "pump.tty",
                 on_frame: Callable[[str, bytes], None] | None = None) -> None:
        self.directory = Path(directory)
        self.host_link = self.directory / host_name
        self.pump_link = self.directory / pump_name
        self.rates = rates or FaultRates()
        self.rng = random.Random(seed)
        self.on_frame = on_frame
        self.counts: Counter[str] = Counter()
        self.events: list[dict[str, object]] = []
        self._armed: dict[str, int] = Counter()
        self._lock = threading.Lock()
        self._host: _Pair | None = None
        self._pump: _Pair | None = None
        self._stop = threading.Event()
        self._unplug_request: float | None = None
        self._plugged = threading.Event()
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> "FaultRelay":
        self.directory.mkdir(parents=True, exist_ok=True)
        self._plug()
        self._thread = threading.Thread(target=self._run, name="fault-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._unplug_now(count=False)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_r = self._wake_w = -1

    def __enter__(self) -> "FaultRelay":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def plugged(self) -> bool:
        return self._plugged.is_set()

    def wait_plugged(self, timeout_s: float) -> bool:
        return self._plugged.wait(timeout_s)

    # ------------------------------------------------------------------ control
    def arm(self, kind: str, count: int = 1) -> None:
        """The next ``count`` eligible frames suffer ``kind`` (one of :data:`FAULT_KINDS` but unplug)."""
        if kind not in FAULT_KINDS or kind == "unplug":
            raise ValueError(f"arm() takes one of {', '.join(k for k in FAULT_KINDS if k != 'unplug')}, got {kind!r}")
        with self._lock:
            self._armed[kind] += count

    def armed(self, kind: str) -> int:
        with self._lock:
            return self._armed[kind]

    def disarm(self) -> None:
        with self._lock:
            self._armed.clear()

    def set_rates(self, rates: FaultRates) -> None:
        self.rates = rates

    def unplug(self, pause_s: float) -> None:
        """Pull the cable now; the relay plugs it back in after ``pause_s`` seconds."""
        with self._lock:
            self._unplug_request = max(0.0, float(pause_s))
        self._wake()

    # ------------------------------------------------------------------ internals
    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):
            pass

    def _plug(self) -> None:
        self._host = _Pair(self.host_link)
        self._pump = _Pair(self.pump_link)
        self._plugged.set()

    def _unplug_now(self, count: bool = True) -> None:
        self._plugged.clear()
        lost = 0
        for pair in (self._host, self._pump):
            if pair is not None:
                lost += len(pair.buffer)
                pair.close()
        self._host = self._pump = None
        if count:
            self.counts["unplug"] += 1
            self.counts["bytes_lost_unplug"] += lost

    def _draw(self, kind: str, probability: float) -> bool:
        with self._lock:
            if self._armed[kind] > 0:
                self._armed[kind] -= 1
                return True
        return probability > 0 and self.rng.random() < probability

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                pause, self._unplug_request = self._unplug_request, None
            if pause is not None:
                self._unplug_now()
                self.events.append({"fault": "unplug", "pause_s": pause, "monotonic": time.monotonic()})
                if self._stop.wait(pause):
                    return
                self._plug()
                continue
            host, pump = self._host, self._pump
            if host is None or pump is None:
                return
            try:
                ready, _, _ = select.select([host.master, pump.master, self._wake_r], [], [], 0.2)
            except (OSError, ValueError):
                continue
            if self._wake_r in ready:
                try:
                    os.read(self._wake_r, 4096)
                except OSError:
                    pass
            for pair, other, direction in ((host, pump, TO_PUMP), (pump, host, TO_HOST)):
                if pair.master in ready:
                    self._pump_bytes(pair, other, direction)

    def _pump_bytes(self, src: _Pair, dst: _Pair, direction: str) -> None:
        try:
            data = os.read(src.master, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO:  # no slave open at all (cannot happen while we hold ours)
                time.sleep(0.01)
            return
        if not data:
            return
        self.counts[f"bytes_{direction}"] += len(data)
        start = 0
        while True:
            end = data.find(DELIMITER, start)
            if end < 0:
                src.buffer += data[start:]
                if len(src.buffer) > MAX_FRAME_BYTES:  # no frame structure: pass the garbage on
                    self._write(dst, bytes(src.buffer), direction)
                    self.counts[f"garbage_{direction}"] += 1
                    src.buffer.clear()
                return
            frame = bytes(src.buffer) + data[start:end]
            src.buffer.clear()
            start = end + 1
            self._frame(frame, dst, direction)

    def _frame(self, frame: bytes, dst: _Pair, direction: str) -> None:
        """One frame (without its 0x00) from ``direction``'s source: apply faults, forward."""
        if not frame:  # an empty frame: the delimiter senders put before each frame
            self._write(dst, b"\x00", direction)
            return
        self.counts[f"frames_{direction}"] += 1
        r = self.rates
        command = direction == TO_PUMP
        drop_kind = "drop_command" if command else "drop_reply"
        if self._draw(drop_kind, r.drop_command if command else r.drop_reply):
            self.counts[drop_kind] += 1
            return
        corrupt_kind = "corrupt_command" if command else "corrupt_reply"
        if self._draw(corrupt_kind, r.corrupt):
            self.counts[corrupt_kind] += 1
            i = self.rng.randrange(len(frame))
            mask = self.rng.randrange(1, 256)
            if frame[i] ^ mask == 0:  # keep the frame boundary where it is
                mask ^= 0xFF
            frame = frame[:i] + bytes([frame[i] ^ mask]) + frame[i + 1:]
        copies = 1
        duplicate_kind = "duplicate_command" if command else "duplicate_reply"
        if self._draw(duplicate_kind, r.duplicate):
            self.counts[duplicate_kind] += 1
            copies = 2
        for _ in range(copies):
            self._write(dst, frame + b"\x00", direction)
        if self.on_frame is not None:
            try:
                self.on_frame(direction, frame)
            except Exception:  # noqa: BLE001 - a hook must not stop the relay
                self.counts["hook_errors"] += 1
        if r.unplug > 0 and self.rng.random() < r.unplug:
            with self._lock:
                if self._unplug_request is None:
                    self._unplug_request = r.unplug_pause_s

    def _write(self, dst: _Pair, data: bytes, direction: str) -> None:
        view = memoryview(data)
        deadline = time.monotonic() + 0.5
        while view:
            try:
                n = os.write(dst.master, view)
                view = view[n:]
            except BlockingIOError:  # the peer does not read (not connected): its buffer is full
                if time.monotonic() > deadline:
                    self.counts[f"overflow_{direction}"] += 1
                    return
                time.sleep(0.005)
            except OSError:
                self.counts[f"write_error_{direction}"] += 1
                return


# --------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sim.hil.faults.relay",
                                description="fault-injecting serial relay: DIR/host.tty <-> DIR/pump.tty")
    p.add_argument("directory", type=Path)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--drop-command", type=float, default=0.0, metavar="P")
    p.add_argument("--drop-reply", type=float, default=0.0, metavar="P")
    p.add_argument("--corrupt", type=float, default=0.0, metavar="P")
    p.add_argument("--duplicate", type=float, default=0.0, metavar="P")
    p.add_argument("--unplug", type=float, default=0.0, metavar="P")
    p.add_argument("--unplug-pause", type=float, default=1.0, metavar="S")
    args = p.parse_args(argv)
    try:
        rates = FaultRates(args.drop_command, args.drop_reply, args.corrupt, args.duplicate, args.unplug,
                           args.unplug_pause)
    except ValueError as exc:
        p.error(str(exc))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with FaultRelay(args.directory, seed=args.seed, rates=rates) as relay:
        print(f"relaying {relay.host_link} <-> {relay.pump_link}", file=sys.stderr, flush=True)
        stop.wait()
        counts = dict(relay.counts)
    print(json.dumps(counts, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
