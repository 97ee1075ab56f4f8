"""Readings in (subject, time) order, exact duplicates dropped, in bounded memory.

CGM exports are not always in time order: Nightscout serves newest first,
LibreView groups rows by device and record type. So a reader hands every
parsed reading to :class:`SortedCandidates`, which sorts them in chunks of
``chunk`` readings, spills each sorted chunk to a temporary file once there is
more than one, and merges the chunks when the readings are asked for: memory
stays near ``chunk`` readings whatever the file's size (an external merge
sort; at most :data:`MAX_FAN_IN` chunks are merged at once).

De-duplication, on the sorted stream: candidates with the same subject and
time are one group. A later one with the same glucose (and clipping) is an
exact duplicate, rejected as ``"duplicate"``; if their glucose values differ,
all of them are rejected as conflicting, since picking one would be a guess.
The first one in file order is the one kept.
"""

from __future__ import annotations

import heapq
import os
import pickle
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from sensors.files.common import Candidate
from sensors.reading import GlucoseReading, ReadResult, Rejected

CHUNK_READINGS = 50_000
"""Readings held in memory before a sorted chunk is spilled to disk."""
MAX_FAN_IN = 32
"""Chunks merged at once; more are first merged into longer chunks."""
_BATCH = 512  # readings per pickle record in a chunk file (what the merge holds per chunk)

_Item = tuple  # (subject, time, seq, reading, raw, line): sorts by subject, time, then file order


class SortedCandidates:
    """Collect candidates in any order; yield readings sorted by subject then time, de-duplicated.

    Parameters
    ----------
    on_rejected: called with each duplicate or conflicting candidate's rejection.
    chunk: readings held in memory before spilling a sorted chunk.
    spill_dir: where chunk files go (default: the system's temporary directory).

    Use :meth:`add` for every candidate, then iterate :meth:`readings` once;
    :meth:`close` (or the context manager) removes the chunk files.
    """

    def __init__(self, on_rejected: Callable[[Rejected], None], chunk: int = CHUNK_READINGS,
                 spill_dir: str | os.PathLike[str] | None = None) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be at least 1 reading, got {chunk}")
        self._on_rejected = on_rejected
        self._chunk = chunk
        self._spill_dir = spill_dir
        self._buffer: list[_Item] = []
        self._runs: list[str] = []
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._count = 0
        self._per_subject: Counter[str] = Counter()

    def __enter__(self) -> SortedCandidates:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        """Candidates added (an upper bound of the readings that will come out)."""
        return self._count

    @property
    def subjects(self) -> list[str]:
        """The subjects of the candidates added, sorted."""
        return sorted(self._per_subject)

    def count(self, subject: str) -> int:
        """Candidates added of one subject."""
        return self._per_subject[subject]

    @property
    def spilled_chunks(self) -> int:
        """Sorted chunks written to disk so far (0: everything fitted in memory)."""
        return len(self._runs)

    def add(self, candidate: Candidate) -> None:
        r = candidate.reading
        self._buffer.append((r.subject, r.time, self._count, r, candidate.raw, candidate.line))
        self._count += 1
        self._per_subject[r.subject] += 1
        if len(self._buffer) >= self._chunk:
            self._spill()

    def readings(self) -> Iterator[GlucoseReading]:
        """The readings, sorted by (subject, time), exact duplicates dropped (see the module docstring)."""
        return _deduplicated(self._merged(), self._on_rejected)

    def close(self) -> None:
        self._buffer = []
        self._runs = []
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # --- chunks ---------------------------------------------------------------------

    def _path(self) -> str:
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="glucotwin-cgm-", dir=self._spill_dir)
        return os.path.join(self._tmp.name, f"chunk{len(self._runs):06d}-{os.urandom(4).hex()}.pickle")

    def _spill(self) -> None:
        self._buffer.sort(key=_key)
        self._runs.append(_write_run(self._path(), self._buffer))
        self._buffer = []

    def _merged(self) -> Iterator[_Item]:
        self._buffer.sort(key=_key)
        if not self._runs:
            buffer, self._buffer = self._buffer, []
            yield from buffer
            return
        while len(self._runs) + 1 > MAX_FAN_IN:  # merge the oldest chunks into one longer chunk
            group, self._runs = self._runs[:MAX_FAN_IN], self._runs[MAX_FAN_IN:]
            merged = _write_run(self._path(), heapq.merge(*(_read_run(p) for p in group), key=_key))
            for p in group:
                os.remove(p)
            self._runs.append(merged)
        buffer, self._buffer = self._buffer, []
        yield from heapq.merge(*(_read_run(p) for p in self._runs), iter(buffer), key=_key)


def _key(item: _Item) -> tuple[str, datetime, int]:
    return item[0], item[1], item[2]


def _write_run(path: str, items: Iterable[_Item]) -> str:
    with open(path, "wb") as handle:
        batch: list[_Item] = []
        for item in items:
            batch.append(item)
            if len(batch) >= _BATCH:
                pickle.dump(batch, handle, protocol=pickle.HIGHEST_PROTOCOL)
                batch = []
        if batch:
            pickle.dump(batch, handle, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def _read_run(path: str) -> Iterator[_Item]:
    # Our own chunk files, written above in this process's private temporary directory.
    with open(path, "rb") as handle:
        while True:
            try:
                batch = pickle.load(handle)
            except EOFError:
                return
            yield from batch


def _deduplicated(items: Iterable[_Item], on_rejected: Callable[[Rejected], None]) -> Iterator[GlucoseReading]:
    group: list[_Item] = []
    for item in items:
        if group and (item[0] != group[0][0] or item[1] != group[0][1]):
            yield from _settle(group, on_rejected)
            group = []
        group.append(item)
    if group:
        yield from _settle(group, on_rejected)


def _settle(group: list[_Item], on_rejected: Callable[[Rejected], None]) -> Iterator[GlucoseReading]:
    if len(group) == 1:
        yield group[0][3]
        return
    values = {(item[3].glucose_mg_dl, item[3].clipped) for item in group}
    if len(values) > 1:
        shown = ", ".join(f"{g:g}" for g, _ in sorted(values))
        for item in group:
            on_rejected(Rejected(item[4], item[5], f"conflicting glucose at the same time ({shown} mg/dL)"))
        return
    yield group[0][3]
    for item in group[1:]:
        on_rejected(Rejected(item[4], item[5], "duplicate"))


def finish(candidates: Iterable[Candidate | Rejected], rejected: Iterable[Rejected] = ()) -> ReadResult:
    """All of a reader's output as one :class:`~sensors.reading.ReadResult` (in memory).

    Readings sorted by subject then time, de-duplicated as the module says;
    rejections in file order (line-numbered first, then those without lines in
    the order found).
    """
    out: list[Rejected] = list(rejected)
    with SortedCandidates(out.append) as ordered:
        for record in candidates:
            if isinstance(record, Rejected):
                out.append(record)
            else:
                ordered.add(record)
        readings = list(ordered.readings())
    out.sort(key=lambda r: (r.line is None, r.line or 0))
    return ReadResult(readings, out)

