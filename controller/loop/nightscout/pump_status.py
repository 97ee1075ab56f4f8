"""The pump's own status for Nightscout's pump pill (``devicestatus.pump``).

What the pump protocol reports (``firmware_bridge`` STATUS_REPLY,
:class:`firmware_bridge.protocol.PumpStatus`, PROTOCOL.md) and so what
glucotwin can show:

- its clock (``pump_time_ms``) -> ``pump.clock`` and ``pump.status.timestamp``;
- the reservoir (``reservoir_milli_u``) -> ``pump.reservoir`` (U);
- its flags: suspended, temp basal running, reservoir empty, basal held by the
  pump's own hourly/daily insulin limit -> ``pump.status.status`` and
  ``pump.status.suspended``;
- the basal running now, the programmed one, the temp basal's minutes left ->
  ``pump.extended`` (shown in the pill's details).

Not in the protocol, hence never sent (Nightscout then shows nothing for them):
the pump's battery (``pump.battery``), a bolus in progress
(``pump.status.bolusing``: the reference firmware delivers a bolus whole when
it acknowledges it, so there is no "bolusing" state to report), manufacturer
and model.

:func:`read_pump_status` asks the pump with one authenticated STATUS query
through the loop's own pump link (the port's ``link``), in the loop's thread
after a cycle whose commands the pump answered; :func:`pump_facts` is the
pure mapping of a STATUS reply to plain data (journal-free, JSON-ready).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

MILLI = 1000.0


def pump_facts(status: Any) -> dict[str, Any]:
    """A STATUS reply (``PumpStatus``) as plain data: time, reservoir, flags, rates."""
    from firmware_bridge.protocol import PumpFlags

    flags = PumpFlags(int(status.flags))
    return {
        "time": datetime.fromtimestamp(int(status.pump_time_ms) / MILLI, UTC).isoformat(),
        "reservoir_u": int(status.reservoir_milli_u) / MILLI,
        "suspended": PumpFlags.SUSPENDED in flags,
        "temp_basal_active": PumpFlags.TEMP_BASAL_ACTIVE in flags,
        "reservoir_empty": PumpFlags.RESERVOIR_EMPTY in flags,
        "limit_hold": PumpFlags.LIMIT_HOLD in flags,
        "running_basal_u_per_h": int(status.running_rate_milli_u_per_h) / MILLI,
        "scheduled_basal_u_per_h": int(status.scheduled_rate_milli_u_per_h) / MILLI,
        "temp_remaining_min": int(status.temp_remaining_min),
    }


def read_pump_status(pump: Any) -> dict[str, Any] | None:
    """One STATUS query through the pump port's link (:class:`controller.loop.pump_port.PumpLinkPort`),
    as :func:`pump_facts`; None when the port has no link or the pump does not answer."""
    query = getattr(getattr(pump, "link", None), "query_status", None)
    if query is None:
        return None
    try:
        return pump_facts(query())
    except Exception:  # noqa: BLE001 - PumpLinkError or a broken link: no pump status this cycle
        return None
