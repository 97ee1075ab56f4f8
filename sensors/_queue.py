"""The ``poll`` of the threaded sources: wait for the first item, then take what else is there."""

from __future__ import annotations

import queue
from typing import TypeVar

T = TypeVar("T")


def drain(box: "queue.Queue[T]", timeout_s: float) -> list[T]:
    """Items in ``box``: waits at most ``timeout_s`` for the first (not at all when <= 0), then drains."""
    out: list[T] = []
    try:
        out.append(box.get(timeout=timeout_s) if timeout_s > 0 else box.get_nowait())
    except queue.Empty:
        return out
    while True:
        try:
            out.append(box.get_nowait())
        except queue.Empty:
            return out
