"""MAGE, the mean amplitude of glycemic excursions, by short and long moving averages.

This is iglu's ``mage_ma_single`` (``mage(version = "ma")``), the algorithm of
Fernandes et al., "Open-source algorithm to calculate mean amplitude of
glycemic excursions using short and long moving averages", J Diabetes Sci
Technol 2022;16(2):576-577, doi:10.1177/19322968211061165, ported line by line
from irinagain/iglu R/mage_ma_single.R at commit 33d72695 (iglu 4.3.0), the
version after the 4.1 revision. Steps:

1. Glucose is interpolated onto a 5-min grid (:mod:`sim.trial.metrics.day_grid`,
   gaps over ``inter_gap_min`` = 45 min left empty) and trimmed to the first
   and last known value.
2. Runs of empty grid points longer than ``max_gap_min`` (180 min) split the
   trace into segments; each segment is scored on its own.
3. In a segment: a short (5 points) and a long (32 points) trailing moving
   average of glucose (ignoring empty points); where their difference changes
   sign the trace crosses; between crossings the lowest or highest glucose is
   a nadir or a peak.
4. MAGE+ is the mean of nadir-to-peak rises, MAGE- of peak-to-nadir falls,
   counting only excursions of at least one SD of the segment's (gridded)
   glucose.
5. ``direction``: ``"avg"`` (iglu's default) averages every segment's MAGE+
   and MAGE-; ``"plus"`` and ``"minus"`` take one of them; ``"service"`` the
   direction of each segment's first excursion; ``"max"`` the larger one. The
   segments are weighted by their duration.

A trace too short for the long average (under 32 grid points, 2 h 35 min) has
no MAGE (NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.trial.metrics.day_grid import INTER_GAP_MIN, day_grid

MAGE_GRID_MIN = 5.0
"""iglu always interpolates MAGE onto a 5-min grid."""
SHORT_MA_POINTS = 5
LONG_MA_POINTS = 32
MAX_GAP_MIN = 180.0
DIRECTIONS = ("avg", "service", "max", "plus", "minus")

_MIN, _MAX = 0, 1


@dataclass(frozen=True)
class SegmentMage:
    """One segment's result: its span (grid minutes), MAGE+ and MAGE- (NaN if none) and which came first."""

    start_min: float
    end_min: float
    plus_mg_dl: float
    minus_mg_dl: float
    plus_first: bool

    @property
    def scored(self) -> bool:
        return np.isfinite(self.plus_mg_dl) or np.isfinite(self.minus_mg_dl)


def _moving_average(g: np.ndarray, width: int) -> np.ndarray:
    """Right-aligned mean of ``width`` points ignoring NaN (zoo::rollapply, na.rm); the first
    ``width`` values are set to the first full window's, as iglu fills them."""
    out = np.full(g.size, np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(g, width)
    known = np.isfinite(windows).sum(axis=1)
    sums = np.nansum(windows, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out[width - 1:] = np.where(known > 0, sums / np.maximum(known, 1), np.nan)
    out[:width] = out[width - 1]
    return out


def _crossings(g: np.ndarray, delta: np.ndarray) -> list[tuple[int, int]]:
    """(index, type) where the short average crosses the long one, plus the first and last points."""
    crosses = [(0, _MAX if delta[0] > 0 else _MIN)]
    for i in range(1, g.size):
        if np.isnan(g[i]) or np.isnan(g[i - 1]) or np.isnan(delta[i]) or np.isnan(delta[i - 1]):
            continue
        if delta[i] * delta[i - 1] < 0:
            crosses.append((i, _MIN if delta[i] < delta[i - 1] else _MAX))
        else:  # across a gap, or after a zero difference: compare with the last crossing
            prev = delta[crosses[-1][0]]
            if delta[i] * prev < 0:
                crosses.append((i, _MIN if delta[i] < prev else _MAX))
    crosses.append((g.size - 1, _MAX if delta[-1] > 0 else _MIN))
    return crosses


def _turning_points(g: np.ndarray, crosses: list[tuple[int, int]]) -> np.ndarray:
    """The nadir or peak glucose between consecutive crossings (from the previous turning point on)."""
    values = np.empty(len(crosses) - 1)
    index = 0
    for i in range(len(crosses) - 1):
        s1 = crosses[0][0] if i == 0 else index
        s2 = crosses[i + 1][0]
        window = g[s1: s2 + 1]
        k = int(np.nanargmin(window)) if crosses[i][1] == _MIN else int(np.nanargmax(window))
        values[i], index = window[k], s1 + k
    return values


def _excursions_up(tp: np.ndarray, sd: float) -> tuple[list[float], list[tuple[int, int]]]:
    """Nadir-to-peak rises of at least ``sd`` (iglu's MAGE+ loop): heights and (nadir, peak) indices."""
    heights, pairs = [], []
    n = tp.size
    j = prev_j = 0
    while j < n:
        delta = tp[j] - tp[prev_j: j + 1]
        i = int(np.argmax(delta)) + prev_j
        if delta.max() >= sd:
            for k in range(j, n):
                if tp[k] > tp[j]:
                    j = k
                if tp[k] - tp[j] < -sd or k == n - 1:
                    heights.append(tp[j] - tp[i])
                    pairs.append((i, j))
                    prev_j = j = k
                    break
        else:
            j += 1
    return heights, pairs


def _excursions_down(tp: np.ndarray, sd: float) -> tuple[list[float], list[tuple[int, int]]]:
    """Peak-to-nadir falls of at least ``sd`` (iglu's MAGE- loop): heights (negative) and (peak, nadir) indices."""
    heights, pairs = [], []
    n = tp.size
    j = prev_j = 0
    while j < n:
        delta = tp[j] - tp[prev_j: j + 1]
        i = int(np.argmin(delta)) + prev_j
        if delta.min() <= -sd:
            for k in range(j, n):
                if tp[k] < tp[j]:
                    j = k
                if tp[k] - tp[j] > sd or k == n - 1:
                    heights.append(tp[j] - tp[i])
                    pairs.append((i, j))
                    prev_j, j = j, k  # iglu restarts the left side at the nadir here, not at k
                    break
        else:
            j += 1
    return heights, pairs


def segment_mage(g: np.ndarray, start_min: float, short_ma: int = SHORT_MA_POINTS,
                 long_ma: int = LONG_MA_POINTS) -> SegmentMage:
    """MAGE+ and MAGE- of one segment of 5-min grid glucose (mg/dL; NaN for empty points)."""
    end_min = start_min + MAGE_GRID_MIN * (g.size - 1)
    none = SegmentMage(start_min, end_min, float("nan"), float("nan"), False)
    known = g[np.isfinite(g)]
    if known.size == 0 or g.size < 7 or g.size < long_ma:
        return none
    sd = float(np.std(known, ddof=1)) if known.size > 1 else float("nan")
    if not sd >= 1.0:  # no glucose variation in the segment
        return none
    delta = _moving_average(g, short_ma) - _moving_average(g, long_ma)
    tp = _turning_points(g, _crossings(g, delta))
    up, up_pairs = _excursions_up(tp, sd)
    down, down_pairs = _excursions_down(tp, sd)
    if not up and not down:
        return none
    plus_first = bool(up) and (not down or up_pairs[0][1] <= down_pairs[0][0])
    return SegmentMage(start_min, end_min, float(np.mean(up)) if up else float("nan"),
                       float(abs(np.mean(down))) if down else float("nan"), plus_first)


def _segments(g: np.ndarray, max_gap_points: float) -> list[tuple[int, int]]:
    """[start, stop) of the stretches between runs of empty points longer than ``max_gap_points``."""
    empty = np.isnan(g)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], empty.astype(int), [0]])))
    runs = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b - a > max_gap_points]
    out, start = [], 0
    for a, b in runs:
        out.append((start, a))
        start = b
    out.append((start, g.size))
    return out


def mage_segments(time_min: np.ndarray, glucose_mg_dl: np.ndarray, short_ma: int = SHORT_MA_POINTS,
                  long_ma: int = LONG_MA_POINTS, inter_gap_min: float = INTER_GAP_MIN,
                  max_gap_min: float = MAX_GAP_MIN) -> list[SegmentMage]:
    """Every segment's MAGE+ and MAGE- (empty when the trace has fewer than 7 or ``long_ma`` grid points)."""
    if short_ma >= long_ma:  # iglu swaps them, with a warning
        short_ma, long_ma = long_ma, short_ma
    if np.count_nonzero(np.isfinite(np.asarray(glucose_mg_dl, dtype=float))) < 2:
        return []
    grid = day_grid(time_min, glucose_mg_dl, dt_min=MAGE_GRID_MIN, inter_gap_min=inter_gap_min)
    g, t = grid.glucose_mg_dl.ravel(), grid.time_min.ravel()
    known = np.flatnonzero(np.isfinite(g))
    if known.size == 0:
        return []
    g, t = g[known[0]: known[-1] + 1], t[known[0]: known[-1] + 1]
    if g.size < 7 or g.size < long_ma:
        return []
    return [segment_mage(g[a:b], float(t[a]), short_ma, long_ma)
            for a, b in _segments(g, max_gap_min / MAGE_GRID_MIN)]


def combine_segments(segments: list[SegmentMage], direction: str = "avg") -> float:
    """One MAGE from the segments' results, each weighted by its duration (iglu's ``return_type = "num"``)."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    rows: list[tuple[float, float]] = []  # (value, duration) as iglu's result rows
    for s in segments:
        if not s.scored:
            continue
        span = s.end_min - s.start_min
        if direction == "avg":
            rows += [(v, span) for v in (s.plus_mg_dl, s.minus_mg_dl) if np.isfinite(v)]
        elif direction == "plus":
            rows.append((s.plus_mg_dl, span))
        elif direction == "minus":
            rows.append((s.minus_mg_dl, span))
        elif direction == "service":
            rows.append((s.plus_mg_dl if s.plus_first else s.minus_mg_dl, span))
        elif np.isfinite(s.plus_mg_dl) and np.isfinite(s.minus_mg_dl):  # max: both known, ties kept twice
            top = max(s.plus_mg_dl, s.minus_mg_dl)
            rows += [(v, span) for v in (s.plus_mg_dl, s.minus_mg_dl) if v == top]
    if not rows:
        return float("nan")
    values = np.array([v for v, _ in rows])
    spans = np.array([w for _, w in rows])
    return float(np.sum(values * spans / spans.sum()))


def mage_mg_dl(time_min: np.ndarray, glucose_mg_dl: np.ndarray, direction: str = "avg",
               short_ma: int = SHORT_MA_POINTS, long_ma: int = LONG_MA_POINTS,
               inter_gap_min: float = INTER_GAP_MIN, max_gap_min: float = MAX_GAP_MIN) -> float:
    """MAGE (mg/dL) of glucose sampled at ``time_min`` (minutes since a local midnight), iglu's ``ma`` version.

    NaN when the trace is too short or has no excursion of one SD.
    """
    segments = mage_segments(time_min, glucose_mg_dl, short_ma, long_ma, inter_gap_min, max_gap_min)
    return combine_segments(segments, direction)
