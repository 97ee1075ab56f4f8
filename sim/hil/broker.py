"""A private mosquitto broker on a free loopback port, for the HIL harness and tests.

``glucotwin hil`` without ``--broker`` starts one; tests use the same helper so
that they talk to a real broker, not a mock. The broker's configuration is
written to a temporary directory; ``extra_config`` lines are appended (for
example ``password_file`` and ``acl_file`` in the security tests).

    with Mosquitto() as broker:
        print(broker.host, broker.port)

``config`` replaces the generated configuration by a complete one (for
example ``deploy/mosquitto/mosquitto.conf`` with its ports and paths
substituted); ``wait_ports`` lists further listeners, such as a TLS one, that
``start()`` waits for.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

MOSQUITTO_PATHS = ("/usr/sbin/mosquitto", "/usr/bin/mosquitto", "/usr/local/sbin/mosquitto")


def find_mosquitto() -> str | None:
    """Path of the mosquitto executable, or None when it is not installed."""
    found = shutil.which("mosquitto")
    if found:
        return found
    return next((p for p in MOSQUITTO_PATHS if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """Run mosquitto on 127.0.0.1; stop it on exit. ``restart()`` keeps the same port."""

    def __init__(self, port: int | None = None, extra_config: str = "", allow_anonymous: bool = True,
                 start_timeout_s: float = 10.0, *, config: str | None = None,
                 wait_ports: Sequence[int] = ()) -> None:
        """``config``: a complete configuration, used instead of the generated one
        (``allow_anonymous`` is then unused; ``extra_config`` is still appended). It
        must open a listener on 127.0.0.1 at ``port``, which is then required.
        ``wait_ports``: further loopback ports that ``start()`` waits for."""
        if config is not None and port is None:
            raise ValueError("Mosquitto(config=...) needs the port of the config's 127.0.0.1 listener")
        exe = find_mosquitto()
        if exe is None:
            raise RuntimeError("mosquitto is not installed (Debian: apt-get install mosquitto)")
        self.executable = exe
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.start_timeout_s = start_timeout_s
        self._dir = Path(tempfile.mkdtemp(prefix="glucotwin-mosquitto-"))
        self.config_path = self._dir / "mosquitto.conf"
        self.log_path = self._dir / "mosquitto.log"
        self.wait_ports = tuple(wait_ports)
        anonymous = "true" if allow_anonymous else "false"
        if config is None:
            # Started as root, mosquitto would switch to user mosquitto, which cannot
            # write the persistence file into this root-only directory (state would
            # not survive restart()); as another user, `user` is ignored.
            as_user = "user root\n" if os.geteuid() == 0 else ""
            config = (f"listener {self.port} {self.host}\n"
                      f"allow_anonymous {anonymous}\n"
                      f"{as_user}persistence true\npersistence_location {self._dir}/\n"
                      "log_dest stderr\nlog_type error\nlog_type warning\n")
        self.config_path.write_text(f"{config.rstrip()}\n{extra_config}\n")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def directory(self) -> Path:
        return self._dir

    def start(self) -> "Mosquitto":
        log = open(self.log_path, "ab")
        self._proc = subprocess.Popen([self.executable, "-c", str(self.config_path)], stdout=log, stderr=log,
                                      start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.start_timeout_s
        waiting = [self.port, *self.wait_ports]
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._proc.returncode}: {self.log_path.read_text()[-2000:]}")
            try:
                with socket.create_connection((self.host, waiting[0]), timeout=0.2):
                    pass
            except OSError:
                time.sleep(0.05)
                continue
            waiting.pop(0)
            if not waiting:
                return self
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on {self.host}:{', '.join(map(str, waiting))} "
                           f"within {self.start_timeout_s} s")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)

    def restart(self, down_s: float = 0.0) -> None:
        """Stop the broker, stay down ``down_s`` seconds, start it again on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()

    def __enter__(self) -> "Mosquitto":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)
