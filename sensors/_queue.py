"""The ``poll`` of the threaded sources: wait for the first item, then take what else is there.

:class:`BoundedItems` is the box that the MQTT source and the Nightscout receiver fill
from their network threads: bounded, so that a flood (a looping uploader at
1000 messages a second while the loop is busy) cannot grow memory without end.
When it is full the *oldest* item is dropped (the newest readings are the ones
the loop can still use; an old one would soon be stale), and the next ``poll``
starts with one :class:`~sensors.reading.Rejected` that says how many were
dropped (``"queue overflow: ..."``), so that the loss is journaled, not silent.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Generic, TypeVar

from sensors.reading import Rejected

T = TypeVar("T")

MAX_QUEUED_ITEMS = 4096
"""Default bound: two weeks of 5-minute readings; a few MB at most."""
OVERFLOW = "queue overflow"
"""The leading phrase of the ``Rejected`` that reports dropped items."""


class BoundedItems(Generic[T]):
    """A thread-safe FIFO of at most ``max_items`` items that drops the oldest when full.

    Attributes
    ----------
    dropped: items dropped since the start (also reported by ``poll``).
    high_water: the most items ever waiting at once.
    """

    def __init__(self, max_items: int = MAX_QUEUED_ITEMS) -> None:
        if isinstance(max_items, bool) or not isinstance(max_items, int) or max_items < 1:
            raise ValueError(f"max_items must be a positive integer, got {max_items!r}")
        self.max_items = max_items
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self.dropped = 0
        self.high_water = 0
        self._unreported = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, item: T) -> None:
        with self._cond:
            if len(self._items) >= self.max_items:
                self._items.popleft()
                self.dropped += 1
                self._unreported += 1
            self._items.append(item)
            self.high_water = max(self.high_water, len(self._items))
            self._cond.notify()

    def poll(self, timeout_s: float = 0.0) -> list[T | Rejected]:
        """Items waiting: waits at most ``timeout_s`` for the first (not at all when <= 0), then takes all;
        after drops, the first item is a ``Rejected`` saying how many."""
        with self._cond:
            if not self._items and not self._unreported and timeout_s > 0:
                self._cond.wait_for(lambda: self._items or self._unreported, timeout_s)
            out: list[T | Rejected] = []
            if self._unreported:
                n, self._unreported = self._unreported, 0
                out.append(Rejected(f"<{n} items>", None,
                                    f"{OVERFLOW}: dropped the {n} oldest items waiting (more than "
                                    f"{self.max_items} arrived before the loop took them)"))
            out.extend(self._items)
            self._items.clear()
            return out
