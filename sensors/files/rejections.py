"""What a reader rejected, counted in bounded memory (or kept whole, for the in-memory API)."""

from __future__ import annotations

from collections import Counter

from sensors.reading import Rejected

REJECTION_PHRASES = (
    # The fixed leading phrases of sensors.reading.Rejected.reason.
    "duplicate", "conflicting glucose", "missing glucose", "non-numeric glucose", "glucose out of range",
    "sensor error code", "missing time", "unparseable time", "implausible time", "nonexistent local time",
    "malformed row", "malformed entry", "not a glucose reading",
)
EXAMPLES_KEPT = 20
"""Rejections kept as examples when not keeping all (the first ones, in the order found)."""


def rejection_phrase(reason: str) -> str:
    """The fixed leading phrase of a rejection reason (or its first 60 characters before a colon)."""
    phrase = next((p for p in REJECTION_PHRASES if reason.startswith(p)), None)
    return phrase or reason.split(":")[0][:60]


class RejectionLog:
    """Rejections as they come: a count per leading phrase, the first :data:`EXAMPLES_KEPT`
    of them, and every one of them only if ``keep_all``.

    Memory is bounded unless ``keep_all``: a file of a million bad rows costs a counter.
    """

    def __init__(self, keep_all: bool = False) -> None:
        self.keep_all = keep_all
        self.count = 0
        self.by_phrase: Counter[str] = Counter()
        self.examples: list[Rejected] = []
        self.all: list[Rejected] = []

    def __len__(self) -> int:
        return self.count

    def add(self, rejected: Rejected) -> None:
        self.count += 1
        self.by_phrase[rejection_phrase(rejected.reason)] += 1
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append(rejected)
        if self.keep_all:
            self.all.append(rejected)

    @property
    def reasons(self) -> dict[str, int]:
        """Counts by leading phrase, most frequent first (ties alphabetical)."""
        return dict(sorted(self.by_phrase.items(), key=lambda kv: (-kv[1], kv[0])))

    def sorted_all(self) -> list[Rejected]:
        """Every rejection (``keep_all``), line-numbered ones in file order, then those without lines."""
        return sorted(self.all, key=lambda r: (r.line is None, r.line or 0))
