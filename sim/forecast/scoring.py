"""Scoring glucose forecasts against the readings that came later (pure functions).

Rules
-----
- Truth: the forecast's target time (``issued_at + horizon_min``) is matched
  to the same subject's reading nearest to it, if that reading is within
  ``±tolerance_min`` (default :data:`~twin.forecaster.MATCH_TOLERANCE_MIN` =
  2.5 min, half the usual 5-minute CGM period; ties go to the earlier
  reading). A target inside a gap has no truth and is not scored. Readings
  the sensor clipped (``Low``/``High``) are never truths: their value is only
  a bound.
- Same pairs: a pair is (subject, issued_at, horizon). Every method is scored
  on the same pairs: those where every compared method issued a forecast and
  a truth exists. So ``n`` is equal across methods at a horizon, and a method
  that skips hard moments cannot look better for it.
- Error is ``forecast - truth`` (mg/dL): RMSE, MAE, bias (mean error;
  positive means forecasts too high), and band coverage, the fraction of
  truths with ``lower <= truth <= upper``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sensors.reading import GlucoseReading
from twin.forecaster import MATCH_TOLERANCE_MIN


@dataclass(frozen=True)
class ForecastRow:
    """One forecast issued during a replay: a row of the forecasts CSV.

    ``subject`` is the reading's subject (the CSV's ``id``; ``""`` when the file
    holds one person), ``issued_at`` the time of the latest reading the method
    had seen, ``target_time`` = ``issued_at + horizon_min``.
    """

    subject: str
    method: str
    issued_at: datetime
    horizon_min: float
    forecast_mg_dl: float
    lower_mg_dl: float
    upper_mg_dl: float

    @property
    def target_time(self) -> datetime:
        return self.issued_at + timedelta(minutes=self.horizon_min)


@dataclass(frozen=True)
class HorizonScore:
    """Scores of one method at one horizon over the common pairs; ``None`` when ``n`` is 0."""

    n: int
    rmse_mg_dl: float | None
    mae_mg_dl: float | None
    bias_mg_dl: float | None
    coverage: float | None

    @classmethod
    def of(cls, errors: Sequence[float], inside: Sequence[bool]) -> HorizonScore:
        n = len(errors)
        if n == 0:
            return cls(0, None, None, None, None)
        return cls(
            n=n,
            rmse_mg_dl=math.sqrt(math.fsum(e * e for e in errors) / n),
            mae_mg_dl=math.fsum(abs(e) for e in errors) / n,
            bias_mg_dl=math.fsum(errors) / n,
            coverage=sum(inside) / n,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "rmse_mg_dl": self.rmse_mg_dl,
            "mae_mg_dl": self.mae_mg_dl,
            "bias_mg_dl": self.bias_mg_dl,
            "coverage": self.coverage,
        }


def horizon_key(horizon_min: float) -> str:
    """A horizon as text: ``30.0`` → ``"30"``, ``7.5`` → ``"7.5"`` (JSON keys, CSV, tables)."""
    return f"{horizon_min:g}"


@dataclass(frozen=True)
class Evaluation:
    """Per method and horizon scores on the common pairs.

    Attributes
    ----------
    methods: the compared methods, in order.
    horizons_min: the scored horizons, ascending.
    tolerance_min: the truth-matching tolerance.
    scores: ``scores[method][horizon_min]``.
    issued: forecasts each method issued per horizon (before the same-pairs rule).
    candidate_pairs: per horizon, pairs some method issued.
    pairs: per horizon, pairs scored (every method issued, a truth exists).
    """

    methods: tuple[str, ...]
    horizons_min: tuple[float, ...]
    tolerance_min: float
    scores: dict[str, dict[float, HorizonScore]]
    issued: dict[str, dict[float, int]]
    candidate_pairs: dict[float, int]
    pairs: dict[float, int]

    def best(self, horizon_min: float) -> str | None:
        """The method with the lowest RMSE at a horizon (first listed on a tie); None if nothing scored."""
        scored = [(self.scores[m][horizon_min].rmse_mg_dl, i, m) for i, m in enumerate(self.methods)
                  if self.scores[m][horizon_min].n > 0]
        return min(scored)[2] if scored else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "tolerance_min": self.tolerance_min,
            "methods": list(self.methods),
            "horizons_min": list(self.horizons_min),
            "pairs": {horizon_key(h): self.pairs[h] for h in self.horizons_min},
            "candidate_pairs": {horizon_key(h): self.candidate_pairs[h] for h in self.horizons_min},
            "issued": {m: {horizon_key(h): self.issued[m][h] for h in self.horizons_min} for m in self.methods},
            "scores": {m: {horizon_key(h): self.scores[m][h].to_dict() for h in self.horizons_min}
                       for m in self.methods},
            "best": {horizon_key(h): self.best(h) for h in self.horizons_min},
        }


class TruthIndex:
    """Unclipped readings by subject, for nearest-in-time look-ups."""

    def __init__(self, readings: Iterable[GlucoseReading]) -> None:
        by_subject: dict[str, list[tuple[float, float]]] = {}
        for r in readings:
            if not r.clipped:
                by_subject.setdefault(r.subject, []).append((r.time.timestamp(), r.glucose_mg_dl))
        self._times: dict[str, list[float]] = {}
        self._values: dict[str, list[float]] = {}
        for subject, pairs in by_subject.items():
            pairs.sort()
            self._times[subject] = [p[0] for p in pairs]
            self._values[subject] = [p[1] for p in pairs]

    def nearest(self, subject: str, time: datetime, tolerance_min: float) -> float | None:
        """Glucose of the subject's reading nearest ``time`` within ±tolerance (earlier on a tie), or None."""
        times = self._times.get(subject)
        if not times:
            return None
        t = time.timestamp()
        i = bisect.bisect_left(times, t)
        best: int | None = None
        for j in (i - 1, i):
            if 0 <= j < len(times) and (best is None or abs(times[j] - t) < abs(times[best] - t)):
                best = j
        if best is None or abs(times[best] - t) > tolerance_min * 60.0 + 1e-6:
            return None
        return self._values[subject][best]


def evaluate(
    forecasts: Iterable[ForecastRow],
    truths: Iterable[GlucoseReading],
    methods: Sequence[str] | None = None,
    horizons_min: Sequence[float] | None = None,
    tolerance_min: float = MATCH_TOLERANCE_MIN,
) -> Evaluation:
    """Score forecasts against later readings under the module's rules.

    Parameters
    ----------
    forecasts: rows of every method.
    truths: the readings (all subjects); clipped ones are ignored.
    methods: methods to compare, in order; default: those in ``forecasts`` in
        order of first appearance. A listed method without any forecast makes
        every pair incomplete, so nothing is scored (``n`` = 0).
    horizons_min: horizons to score; default: those in ``forecasts``, ascending.
    tolerance_min: truth-matching tolerance, minutes (>= 0).

    Raises ValueError on a negative tolerance or on two forecasts of one method
    for the same pair.
    """
    if not (math.isfinite(tolerance_min) and tolerance_min >= 0):
        raise ValueError(f"tolerance_min must be >= 0 minutes, got {tolerance_min!r}")
    rows = list(forecasts)
    if methods is None:
        methods = list(dict.fromkeys(row.method for row in rows))
    methods = tuple(methods)
    if horizons_min is None:
        horizons_min = sorted({row.horizon_min for row in rows})
    horizons = tuple(sorted({float(h) for h in horizons_min}))
    wanted_methods, wanted_horizons = set(methods), set(horizons)

    by_pair: dict[tuple[str, datetime, float], dict[str, ForecastRow]] = {}
    issued = {m: {h: 0 for h in horizons} for m in methods}
    for row in rows:
        if row.method not in wanted_methods or row.horizon_min not in wanted_horizons:
            continue
        per_method = by_pair.setdefault((row.subject, row.issued_at, row.horizon_min), {})
        if row.method in per_method:
            raise ValueError(
                f"method {row.method!r} issued two forecasts for subject {row.subject!r} at "
                f"{row.issued_at.isoformat()} horizon {horizon_key(row.horizon_min)} min"
            )
        per_method[row.method] = row
        issued[row.method][row.horizon_min] += 1

    index = TruthIndex(truths)
    errors = {m: {h: [] for h in horizons} for m in methods}
    inside = {m: {h: [] for h in horizons} for m in methods}
    candidate_pairs = {h: 0 for h in horizons}
    pairs = {h: 0 for h in horizons}
    for (subject, issued_at, horizon), per_method in by_pair.items():
        candidate_pairs[horizon] += 1
        if len(per_method) != len(methods):
            continue
        truth = index.nearest(subject, issued_at + timedelta(minutes=horizon), tolerance_min)
        if truth is None:
            continue
        pairs[horizon] += 1
        for m, row in per_method.items():
            errors[m][horizon].append(row.forecast_mg_dl - truth)
            inside[m][horizon].append(row.lower_mg_dl <= truth <= row.upper_mg_dl)

    scores = {m: {h: HorizonScore.of(errors[m][h], inside[m][h]) for h in horizons} for m in methods}
    return Evaluation(methods, horizons, float(tolerance_min), scores, issued, candidate_pairs, pairs)
