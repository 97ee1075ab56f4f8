"""Checks of a loaded live configuration against the machine, before anything connects.

:func:`controller.loop.config.live_config.load_config` checks the file's values without
touching the disk. ``glucotwin run`` then calls :func:`preflight`, which reads
every secret and checks every file and device the configuration names, so that
a short pump key, a Nightscout secret Nightscout would refuse, an unreadable
MQTT password or TLS file, an unwritable journal directory or a missing serial
device stops the start with one line naming the key, instead of a traceback
from inside the running loop (or, worse, a loop that starts and then fails to
dose). It opens no socket and no serial port: it only reads files and asks the
operating system about paths.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from controller.loop.config.ranges import NIGHTSCOUT_MIN_SECRET_CHARS, ConfigError

if TYPE_CHECKING:
    from controller.loop.config.live_config import LiveConfig


def preflight(config: "LiveConfig") -> None:
    """Raise :class:`ConfigError` (one line naming the key) for the first problem found; return if none."""
    config.pump.key()  # hex and long enough; names [pump] key_file
    m = config.mqtt
    if m.username:
        if not m.password_file:
            raise ConfigError(f"[mqtt] username = {m.username!r} needs password_file (the broker password, mode 0600)")
        if not m.password():
            raise ConfigError(f"[mqtt] password_file = {m.password_file!r}: the file is empty")
    for key in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
        path = getattr(m, key)
        if path:
            _readable_file(f"[mqtt] {key}", path)
    if m.whatif_key_file:
        from controller.loop.whatif_service import read_key

        if config.sensor.transport != "mqtt":
            raise ConfigError("[mqtt] whatif_key_file: the what-if service needs [sensor] transport = \"mqtt\"")
        try:
            read_key(m.whatif_key_file)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"[mqtt] whatif_key_file = {m.whatif_key_file!r}: {exc}") from None
    ns = config.nightscout
    if ns is not None:
        if ns.upload:
            _nightscout_secret("[nightscout] api_secret_file", ns.api_secret_file, ns.api_secret())
        if ns.receive:
            key = "listen_api_secret_file" if ns.listen_api_secret_file else "api_secret_file"
            _nightscout_secret(f"[nightscout] {key}", getattr(ns, key), ns.listen_api_secret())
    if config.sensor.transport == "serial":
        _serial_device("[sensor] port", config.sensor.port)
    if config.pump.transport == "serial":
        _serial_device("[pump] port", config.pump.port)
    _journal_writable(config.journal_path)
    if config.prior_path is not None:
        from controller.loop.config.live_config import load_prior

        _readable_file("[twin] prior", str(config.prior_path))
        load_prior(config)  # ConfigError naming [twin] prior if it is not a prior
    if config.learned_path is not None:
        from controller.loop.config.live_config import load_twin

        _readable_file("[twin] learned", str(config.learned_path))
        load_twin(config)  # ConfigError if not a learned twin, or one fitted for another profile


def _nightscout_secret(where: str, path: str, secret: str) -> None:
    if len(secret) < NIGHTSCOUT_MIN_SECRET_CHARS:
        raise ConfigError(f"{where} = {path!r}: the API secret has {len(secret)} characters; Nightscout requires "
                          f"at least {NIGHTSCOUT_MIN_SECRET_CHARS}")


def _readable_file(where: str, path: str) -> None:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{where} = {path!r}: no such file")
    if not p.is_file():
        raise ConfigError(f"{where} = {path!r}: not a regular file")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{where} = {path!r}: not readable by this user")


def _serial_device(where: str, path: str) -> None:
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"{where} = {path!r}: no such device (is it plugged in? ls /dev/serial/by-id/)")
    mode = p.stat().st_mode
    if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        raise ConfigError(f"{where} = {path!r}: not a serial device (a {_kind(mode)})")
    if not os.access(p, os.R_OK | os.W_OK):
        raise ConfigError(f"{where} = {path!r}: no read/write permission (on a Pi: add the user to the "
                          f"dialout group)")


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "directory"
    return "regular file" if stat.S_ISREG(mode) else "special file"


def _journal_writable(path: Path) -> None:
    where = "[loop] journal"
    if path.exists():
        if not path.is_file():
            raise ConfigError(f"{where} = {str(path)!r}: not a regular file")
        if not os.access(path, os.R_OK | os.W_OK):
            raise ConfigError(f"{where} = {str(path)!r}: the journal is not writable by this user")
    directory = path.parent
    if not directory.is_dir():
        raise ConfigError(f"{where} = {str(path)!r}: the directory {str(directory)!r} does not exist")
    # SQLite writes its -wal and -shm files beside the journal
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ConfigError(f"{where} = {str(path)!r}: the directory {str(directory)!r} is not writable by this user")
