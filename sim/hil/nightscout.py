"""Nightscout in the HIL harness: the loop process uploads to a Nightscout (or a local receiver).

``glucotwin hil --nightscout URL`` (API secret from ``--nightscout-secret-file``
or ``$NIGHTSCOUT_API_SECRET``) makes each patient's loop upload its journal to
that Nightscout, exactly as ``glucotwin run`` does with a ``[nightscout]``
section. ``--nightscout-receiver`` starts a Nightscout-API receiver
(:mod:`sensors.nightscout.receiver`) in the harness process instead and
writes what it received (entries, treatments, devicestatus, profile) to
``<out>/nightscout-received.json`` at the end. In a HIL run the devicestatus
``pump`` object is the virtual pump firmware's own STATUS reply, its clock the
lockstep clock as the pump has it (a few minutes behind the CGM time: the
simulator sets it as it steps).
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class NightscoutTarget:
    """Where the HIL loops upload, and the API secret (plain; the loop sends its SHA-1)."""

    url: str
    api_secret: str

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"Nightscout URL must start with http:// or https://, got {self.url!r}")
        if not self.api_secret:
            raise ValueError("the Nightscout API secret is empty")


def nightscout_section(target: NightscoutTarget, run_dir: Path) -> str:
    """The loop config's ``[nightscout]`` section; the secret goes to ``run_dir/nightscout.secret`` (0600)."""
    secret_file = run_dir / "nightscout.secret"
    secret_file.write_text(target.api_secret + "\n")
    os.chmod(secret_file, 0o600)
    return (f"\n[nightscout]\nurl = {json.dumps(target.url)}\napi_secret_file = {json.dumps(str(secret_file))}\n"
            "upload = true\n")


def start_local_receiver() -> tuple[Any, NightscoutTarget]:
    """A receiver on a free loopback port with a fresh secret, and the target that uploads to it."""
    from sensors.nightscout.receiver import NightscoutReceiver

    secret = secrets.token_hex(16)
    receiver = NightscoutReceiver("127.0.0.1", 0, secret)
    receiver.start()
    return receiver, NightscoutTarget(receiver.url, secret)


def write_received(receiver: Any, path: Path) -> dict[str, int]:
    """Everything the receiver holds, as JSON (newest first per collection); returns the counts."""
    data = {"entries": receiver.entries(), "treatments": receiver.treatments(),
            "devicestatus": receiver.devicestatus(), "profile": receiver.profiles()}
    path.write_text(json.dumps(data, indent=1))
    return {name: len(docs) for name, docs in data.items()}


def target_from_cli(url: str | None, secret_file: Path | None, local_receiver: bool) -> tuple[Any, Any]:
    """(receiver or None, target or None) for ``glucotwin hil``'s Nightscout options; ValueError when unusable."""
    if local_receiver and url:
        raise ValueError("use either --nightscout URL or --nightscout-receiver, not both")
    if local_receiver:
        return start_local_receiver()
    if not url:
        return None, None
    if secret_file is not None:
        try:
            secret = secret_file.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read {secret_file}: {exc.strerror}") from None
    else:
        secret = os.environ.get("NIGHTSCOUT_API_SECRET", "")
    if not secret:
        raise ValueError("--nightscout needs --nightscout-secret-file FILE or $NIGHTSCOUT_API_SECRET")
    return None, NightscoutTarget(url, secret)


def finish_local_receiver(receiver: Any, out_dir: Path) -> str:
    """Write what the local receiver got to ``out_dir/nightscout-received.json``, stop it; a one-line summary."""
    path = out_dir / "nightscout-received.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        counts = write_received(receiver, path)
    finally:
        receiver.close()
    return "nightscout receiver got " + ", ".join(f"{k} {v}" for k, v in counts.items()) + f" (see {path})"
