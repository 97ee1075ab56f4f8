"""Each cycle and each reading's fate on MQTT, for dashboards and the HIL patient."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from controller.loop.cycle_result import CycleResult
from controller.loop.pump_port import to_ms


class CyclePublisher:
    """Publishes each cycle on ``{prefix}/{subject}/loop/cycle`` (retained: dashboards see the
    latest), each reading's fate on ``.../loop/processed`` (the HIL patient waits for it), and the
    advice to the person on ``.../loop/advice`` (:mod:`controller.advice`).

    Advice is published when it is new (its first cycle, then every ``repeat_min`` while it
    stands) and once when it ends (``{"kind": null, "ended": <kind>}``), retained, so an app that
    connects sees the advice standing now. The topics are under ``loop/#``: written only by the
    subject's loop user, read by its app and dashboard users (``deploy/mosquitto/acl``)."""

    def __init__(self, client: Any, base: str) -> None:
        self.client = client
        self.base = base
        self._advice_kind: str | None = None  # the advice standing after the last cycle

    def cycle(self, result: CycleResult) -> None:
        self.client.publish(f"{self.base}/loop/cycle", json.dumps(result.to_dict()), qos=1, retain=True)
        self.advice(result)

    def advice(self, result: CycleResult) -> None:
        advice = result.dose.diagnostics.get("advice")
        kind = advice.get("kind") if isinstance(advice, dict) else None
        if kind and advice.get("new"):
            payload: dict[str, Any] = {"cycle": result.cycle, "time": result.time.isoformat(), **advice}
        elif not kind and self._advice_kind:
            payload = {"cycle": result.cycle, "time": result.time.isoformat(), "kind": None,
                       "ended": self._advice_kind}
        else:
            payload = {}
        self._advice_kind = kind or None
        if payload:
            self.client.publish(f"{self.base}/loop/advice", json.dumps(payload), qos=1, retain=True)

    def processed(self, reading_time: datetime, result: CycleResult | None, rejected: str | None) -> None:
        payload = {"reading_t_ms": to_ms(reading_time), "result": None if result is None else result.to_dict(),
                   "rejected": rejected}
        self.client.publish(f"{self.base}/loop/processed", json.dumps(payload), qos=1)
