"""The loop's clocks: the system's, or the readings' own times in lockstep HIL runs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any


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


def system_clock() -> datetime:
    return datetime.now(UTC)
