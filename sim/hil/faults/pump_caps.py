"""The fault campaign's last act: a rogue host hammers the pump, which must hold its own limits.

After the final restore (the loop stopped, the HIL clock frozen at the end of
the simulation), a second host with the pump's key (a misconfigured or
compromised controller: the pump cannot tell) opens the host side of the
serial line and sends :data:`ROGUE_BOLUSES` boluses of the pump's max bolus at
pump time. The reference firmware must execute no more than its hourly limit
allows (counted with the boluses the campaign's own audit trail shows in that
hour), refuse the rest with ``over_limit`` ("hourly insulin limit"), and still
refuse after it is SIGKILLed and restarted from its state file.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

ROGUE_BOLUSES = 29
HOUR_MS = 3_600_000


def _option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def hammer_pump(hp: Any, audit_before: list[dict[str, Any]]) -> dict[str, Any]:
    """Run the rogue host against the pump of ``hp`` (:class:`sim.hil.rig.HilProcesses`); the figures.

    ``audit_before``: the pump's audit records of the campaign proper (the boluses
    it executed in the hour before count against the same limit).
    """
    from firmware_bridge.protocol import Command, load_key_file
    from firmware_bridge.pump_link import PumpLink
    from firmware_bridge.serial_transport import SerialTransport

    device_id = _option(hp.pump_command, "--device-id")
    max_bolus_u = float(_option(hp.pump_command, "--max-bolus"))
    hour_cap_u = float(_option(hp.pump_command, "--max-per-hour"))
    key = load_key_file(_option(hp.pump_command, "--key-file"))
    transport = SerialTransport(str(Path(hp.directory) / "host.tty"))
    try:
        link = PumpLink(transport, device_id, key, reply_timeout_s=1.0, retries=2)
        status = link.sync()
        pump_time = status.pump_time_ms

        def rogue_bolus() -> Any:
            return link.send(Command.bolus(link.allocate_seq(), device_id, max_bolus_u, pump_time,
                                           pump_time + 60_000))

        outcomes = [rogue_bolus() for _ in range(ROGUE_BOLUSES)]
        hp.kill_pump()
        hp.start_pump()
        link.sync()
        after_restart = rogue_bolus()
    finally:
        transport.close()
    executed_u = sum(o.delivered_bolus_u for o in outcomes if o.status == "ack")
    earlier_u = sum(r["bolus_u"] for r in audit_before if r.get("outcome") == "executed" and r["type"] == "bolus"
                    and r.get("pump_time_ms") is not None and pump_time - HOUR_MS < r["pump_time_ms"] <= pump_time)
    naks = Counter(f"{o.nak.reason.name.lower()}: {o.nak.detail}" for o in outcomes if o.nak is not None)
    others = Counter(o.status for o in outcomes if o.status not in ("ack", "nak"))
    refused_at_limit = naks.get("over_limit: hourly insulin limit", 0)
    after = ("executed" if after_restart.status == "ack"
             else f"{after_restart.nak.reason.name.lower()}: {after_restart.nak.detail}" if after_restart.nak
             else after_restart.status)
    violations = Counter()
    if earlier_u + executed_u > hour_cap_u + 1e-6:
        violations["pump_hourly_limit_exceeded"] += 1
    if refused_at_limit == 0:
        violations["pump_never_refused_at_its_limit"] += 1
    if after_restart.status == "ack":
        violations["pump_forgot_its_limit_after_restart"] += 1
    return {"boluses_sent": ROGUE_BOLUSES, "bolus_u_each": max_bolus_u, "hour_cap_u": hour_cap_u,
            "executed": sum(o.status == "ack" for o in outcomes), "executed_u": round(executed_u, 3),
            "bolus_u_in_the_hour_before": round(earlier_u, 3), "naks": dict(naks), "unsettled": dict(others),
            "after_restart": after, "violations": dict(violations)}


def format_pump_caps(block: dict[str, Any]) -> list[str]:
    """Lines for the campaign table."""
    naks = ", ".join(f"{k} {v}" for k, v in sorted(block["naks"].items())) or "-"
    verdict = "OK" if not block["violations"] else "FAIL " + ", ".join(block["violations"])
    return [f"{'rogue host (pump limits)':<28}",
            f"  {'boluses sent':<26}{block['boluses_sent']:>7}  (of {block['bolus_u_each']:.2f} U each)",
            f"  {'executed':<26}{block['executed']:>7}  ({block['executed_u']:.2f} U; "
            f"{block['bolus_u_in_the_hour_before']:.2f} U in the hour before; limit {block['hour_cap_u']:.2f} U/h)",
            f"  {'refused':<26}{sum(block['naks'].values()):>7}  ({naks})",
            f"  {'after SIGKILL + restart':<26}{'':>7}  {block['after_restart']}   {verdict}"]
