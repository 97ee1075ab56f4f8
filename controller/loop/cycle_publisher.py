"""Each cycle and each reading's fate on MQTT, for dashboards and the HIL patient."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from controller.loop.cycle_result import CycleResult
from controller.loop.pump_port import to_ms


class CyclePublisher:
    """Publishes each cycle on ``{prefix}/{subject}/loop/cycle`` (retained: dashboards see the
    latest) and each reading's fate on ``.../loop/processed`` (the HIL patient waits for it)."""

    def __init__(self, client: Any, base: str) -> None:
        self.client = client
        self.base = base

    def cycle(self, result: CycleResult) -> None:
        self.client.publish(f"{self.base}/loop/cycle", json.dumps(result.to_dict()), qos=1, retain=True)

    def processed(self, reading_time: datetime, result: CycleResult | None, rejected: str | None) -> None:
        payload = {"reading_t_ms": to_ms(reading_time), "result": None if result is None else result.to_dict(),
                   "rejected": rejected}
        self.client.publish(f"{self.base}/loop/processed", json.dumps(payload), qos=1)
