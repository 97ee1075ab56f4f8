"""Replay a CGM file through glucose forecasters as if live, and score the forecasts.

Usage::

    loaded = load_cgm_file("trace.csv")
    methods, unavailable = available_methods()   # persistence, linear, twin if importable
    profile = default_profile()
    result = replay(loaded.result.readings, {name: m.build(profile) for name, m in methods.items()})
    print(format_table(result.evaluation))

    with open_cgm_file("big.csv") as cgm:      # any size, bounded memory
        cgm.read()
        result = replay_stream(cgm.readings(), factories, on_forecast=csv_out.write)

Streaming
---------
Readings are grouped by subject (order of first appearance) and fed in time
order to one fresh forecaster per method and subject. After each reading,
once the subject has had a warm-up of at least :data:`WARMUP_READINGS` (2)
readings spanning :data:`WARMUP_MIN` (10) minutes, every method is asked for
forecasts at each horizon, issued at that reading's time. A later reading
with the same time as the previous one of its subject is skipped (counted).
Forecasters are not reset at gaps: handling a gap is their job.

:func:`replay_stream` does this on a stream already grouped and in time order
(a :class:`~sensors.files.source.CgmFile`'s readings) and scores each forecast
as soon as its truth is settled, so it holds only the readings and forecasts
of the last horizon, whatever the file's size; :func:`replay` is it on readings
in any order, in memory.

Insulin
-------
CGM files carry no insulin or carbohydrate records (Clarity insulin events
are not read). Persistence and linear extrapolation use glucose only. A
method with a physiological model, the twin, assumes
:data:`INSULIN_ASSUMPTION`; a method's module may state its own as
``INSULIN_ASSUMPTION``, which the report then quotes.

Scoring follows :mod:`sim.forecast.scoring` (same pairs for every method,
truth within ±2.5 min of the target time).
"""

from __future__ import annotations

import bisect
import csv
import importlib
import json
import math
import os
from collections import Counter
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from collections import deque
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sensors.files.delimited import FileInfo
from sensors.files.rejections import RejectionLog, rejection_phrase
from sensors.files.source import CgmFile
from sensors.reading import GlucoseReading, ReadResult, Rejected
from sim.forecast.scoring import Evaluation, ForecastRow, HorizonScore, horizon_key
from twin.forecaster import (
    BAND_COVERAGE,
    MATCH_TOLERANCE_MIN,
    Forecaster,
    ForecastPoint,
    LinearExtrapolation,
    Persistence,
)
from twin.profile import PatientProfile, flat_basal

REPORT_FORMAT = "glucotwin.replay-report/1"
DEFAULT_HORIZONS_MIN = (30.0, 60.0)
WARMUP_READINGS = 2
WARMUP_MIN = 10.0
FORECAST_COLUMNS = (
    "id", "issued_at", "horizon_min", "target_time", "forecast_mg_dl", "lower_mg_dl", "upper_mg_dl", "method",
)
"""Columns of the forecasts CSV: ``id`` is the subject (iglu's ``id``; empty for a one-person file)."""

INSULIN_ASSUMPTION = (
    "no insulin or carbohydrate records in the file: the profile's programmed basal is assumed "
    "delivered throughout, with no boluses and no announced meals (meals and boluses act as "
    "unmodelled disturbances)"
)
GLUCOSE_ONLY = "none: uses glucose readings only"
DEFAULT_PROFILE_SOURCE = "default_profile(): a generic adult, an assumption, not this person's settings"

ForecasterFactory = Callable[[], Forecaster]


def default_profile() -> PatientProfile:
    """A generic adult, used when no profile is given: an assumption, not a person's settings.

    70 kg, total daily insulin 40 U, carb ratio 12 g/U, correction factor
    45 mg/dL/U, flat basal 0.8 U/h (19.2 U/day, about half the TDI), age 40,
    target 120 mg/dL.
    """
    return PatientProfile(
        name="generic adult (assumed)",
        weight_kg=70.0,
        total_daily_insulin_u=40.0,
        carb_ratio_g_per_u=12.0,
        correction_factor_mg_dl_per_u=45.0,
        age_years=40.0,
        basal_schedule=flat_basal(0.8),
        target_mg_dl=120.0,
    )


def load_profile(path: str | os.PathLike[str]) -> PatientProfile:
    """A profile from a JSON file holding ``PatientProfile.to_dict()``.

    Raises OSError if unreadable, ValueError (one line, naming the file) if not a valid profile.
    """
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{os.fspath(path)}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{os.fspath(path)}: a profile must be a JSON object, got {type(data).__name__}")
    try:
        return PatientProfile.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{os.fspath(path)}: {exc}") from None


# --- methods ------------------------------------------------------------------------


@dataclass(frozen=True)
class ForecastMethod:
    """A forecasting method replay can run.

    Attributes
    ----------
    name: the method's name in tables, CSV and JSON.
    build: profile → factory of fresh forecasters (called once per replay).
    insulin_assumption: what the method assumes about insulin (quoted in the report).
    band_coverage: the nominal central coverage of the method's band (0.9 for the
        baselines and the twin, 0.8 for the blend); the report states it per method.
    """

    name: str
    build: Callable[[PatientProfile], ForecasterFactory]
    insulin_assumption: str
    band_coverage: float = BAND_COVERAGE


_BASELINES = (
    ForecastMethod("persistence", lambda profile: Persistence, GLUCOSE_ONLY),
    ForecastMethod("linear", lambda profile: LinearExtrapolation, GLUCOSE_ONLY),
)
_registered: dict[str, ForecastMethod] = {}


def register_method(method: ForecastMethod) -> None:
    """Make another method available to :func:`available_methods` (and ``--methods``)."""
    if not method.name or "," in method.name:
        raise ValueError(f"method name must be non-empty and without commas, got {method.name!r}")
    _registered[method.name] = method


def _twin_method(learned: Any = None) -> tuple[ForecastMethod | None, str | None]:
    """The twin method if ``twin.twin_forecaster`` imports, else the reason it is unavailable.

    ``learned``: a :class:`~twin.personalize.Twin` to forecast with (``glucotwin replay --twin``)
    instead of the one personalized from the profile."""
    try:
        module = importlib.import_module("twin.twin_forecaster")
        factory_of = module.twin_forecaster_factory
    except ModuleNotFoundError as exc:
        if exc.name in ("twin.twin_forecaster",):
            return None, "module twin.twin_forecaster not found"
        return None, f"twin.twin_forecaster cannot be imported: {exc}"
    except (ImportError, AttributeError) as exc:
        return None, f"twin.twin_forecaster cannot be imported: {exc}"
    assumption = getattr(module, "INSULIN_ASSUMPTION", INSULIN_ASSUMPTION)
    if learned is not None:
        return ForecastMethod("twin", lambda profile: factory_of(profile, twin=learned),
                              f"{assumption} (the learned twin of {learned.profile.name})"), None
    return ForecastMethod("twin", factory_of, str(assumption)), None


def _blend_method(twin: ForecastMethod | None) -> tuple[ForecastMethod | None, str | None]:
    """The blend (:mod:`twin.forecast_blend`) around the twin, or around no model when the twin is unavailable."""
    try:
        module = importlib.import_module("twin.forecast_blend")
        blend_factory, coverage = module.blend_factory, float(module.BLEND_COVERAGE)
    except (ImportError, AttributeError) as exc:
        return None, f"twin.forecast_blend cannot be imported: {exc}"
    if twin is None:
        return ForecastMethod("blend", lambda profile: blend_factory(None), GLUCOSE_ONLY + " (no twin)",
                              coverage), None
    assumption = (f"as the twin ({twin.insulin_assumption}); the blend adds persistence, a damped trend and "
                  "a fit on this person's already observed outcomes")
    return ForecastMethod("blend", lambda profile: blend_factory(twin.build(profile)), assumption, coverage), None


def available_methods(learned: Any = None) -> tuple[dict[str, ForecastMethod], dict[str, str]]:
    """(methods that can run, by name; methods that cannot, with the reason); ``learned``: a twin to use."""
    methods = {m.name: m for m in _BASELINES}
    unavailable: dict[str, str] = {}
    twin, reason = _twin_method(learned)
    if twin is not None:
        methods[twin.name] = twin
    else:
        unavailable["twin"] = reason or "unavailable"
    blend, reason = _blend_method(twin)
    if blend is not None:
        methods[blend.name] = blend
    else:
        unavailable["blend"] = reason or "unavailable"
    methods.update(_registered)
    return methods, unavailable


def nominal_coverage(methods: Mapping[str, ForecastMethod], names: Iterable[str]) -> dict[str, float]:
    """Each method's nominal band coverage (:data:`~twin.forecaster.BAND_COVERAGE` if not a known method)."""
    return {name: (methods[name].band_coverage if name in methods else BAND_COVERAGE) for name in names}


# --- replay -------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayResult:
    """What a replay produced.

    Attributes
    ----------
    forecasts: every forecast issued, by subject, then time, then method, then horizon
        (empty from :func:`replay_stream` unless it was asked to keep them).
    methods: the method names, in order.
    evaluation: the scores (:func:`sim.forecast.scoring.evaluate`'s rules).
    readings_per_subject: readings fed per subject.
    skipped_same_time: readings skipped for repeating their predecessor's time.
    warmup_readings, warmup_min: the warm-up before the first forecast of a subject.
    forecasts_issued: forecasts issued in all (rows of the forecasts CSV).
    """

    forecasts: list[ForecastRow]
    evaluation: Evaluation
    methods: tuple[str, ...]
    readings_per_subject: dict[str, int]
    skipped_same_time: int
    warmup_readings: int
    warmup_min: float
    forecasts_issued: int = 0


def _named_factories(
    forecasters: Mapping[str, ForecasterFactory] | Sequence[ForecasterFactory],
) -> dict[str, ForecasterFactory]:
    if isinstance(forecasters, Mapping):
        named = dict(forecasters)
    else:
        named = {}
        for factory in forecasters:
            name = factory().name
            if name in named:
                raise ValueError(f"two forecasters are named {name!r}: pass a dict to name them")
            named[name] = factory
    if not named:
        raise ValueError("replay needs at least one forecaster")
    return named


def _points_by_horizon(
    method: str, points: list[ForecastPoint], horizons: tuple[float, ...]
) -> dict[float, ForecastPoint]:
    by_horizon: dict[float, ForecastPoint] = {}
    for point in points:
        if not isinstance(point, ForecastPoint):
            raise ValueError(f"forecaster {method!r} returned {type(point).__name__}, not ForecastPoint")
        if point.horizon_min not in horizons or point.horizon_min in by_horizon:
            raise ValueError(
                f"forecaster {method!r} returned horizon {point.horizon_min!r} min; asked for "
                f"{', '.join(horizon_key(h) for h in horizons)} once each"
            )
        by_horizon[point.horizon_min] = point
    return by_horizon


def replay(
    readings: Iterable[GlucoseReading],
    forecasters: Mapping[str, ForecasterFactory] | Sequence[ForecasterFactory],
    horizons_min: Sequence[float] = DEFAULT_HORIZONS_MIN,
    *,
    tolerance_min: float = MATCH_TOLERANCE_MIN,
    warmup_readings: int = WARMUP_READINGS,
    warmup_min: float = WARMUP_MIN,
) -> ReplayResult:
    """Stream readings through fresh forecasters per subject, collect forecasts, score them.

    Parameters
    ----------
    readings: readings of one or more subjects, any order (held in memory; for a
        file of any size use :func:`replay_stream` on a sorted stream).
    forecasters: method name → factory of a fresh :class:`~twin.forecaster.Forecaster`;
        or a list of factories, named by their instances' ``name``.
    horizons_min: forecast horizons, minutes (positive; duplicates ignored).
    tolerance_min: truth-matching tolerance for scoring, minutes.
    warmup_readings, warmup_min: a subject's forecasts start at its first reading
        that is at least the ``warmup_readings``-th and at least ``warmup_min``
        minutes after its first reading.

    Raises ValueError on bad settings or a forecaster that answers other horizons than asked.
    """
    by_subject: dict[str, list[GlucoseReading]] = {}
    for reading in readings:
        by_subject.setdefault(reading.subject, []).append(reading)
    for stream in by_subject.values():
        stream.sort(key=lambda r: r.time)
    rows: list[ForecastRow] = []
    result = replay_stream((r for stream in by_subject.values() for r in stream), forecasters, horizons_min,
                           tolerance_min=tolerance_min, warmup_readings=warmup_readings, warmup_min=warmup_min,
                           on_forecast=rows.append)
    return replace(result, forecasts=rows)


def replay_stream(
    readings: Iterable[GlucoseReading],
    forecasters: Mapping[str, ForecasterFactory] | Sequence[ForecasterFactory],
    horizons_min: Sequence[float] = DEFAULT_HORIZONS_MIN,
    *,
    tolerance_min: float = MATCH_TOLERANCE_MIN,
    warmup_readings: int = WARMUP_READINGS,
    warmup_min: float = WARMUP_MIN,
    on_forecast: Callable[[ForecastRow], None] | None = None,
    on_reading: Callable[[int], None] | None = None,
) -> ReplayResult:
    """:func:`replay` of a stream, in memory bounded by the longest horizon, not by the stream.

    ``readings`` must come grouped by subject and in time order within each
    (what :meth:`sensors.files.source.CgmFile.readings` yields). Forecasts are
    handed to ``on_forecast`` as they are issued (and not kept: the result's
    ``forecasts`` is empty) and scored as soon as their truth can no longer
    change (:class:`_StreamScorer`: the same pairs, truths and sums as
    :func:`sim.forecast.scoring.evaluate`). ``on_reading(n)`` is called after
    each of the ``n`` readings so far.

    Raises ValueError on bad settings, readings out of order, or a forecaster that
    answers other horizons than asked.
    """
    named = _named_factories(forecasters)
    horizons = tuple(sorted({float(h) for h in horizons_min}))
    if not horizons or any(not (h > 0 and h < float("inf")) for h in horizons):
        raise ValueError(f"horizons must be positive minutes, got {list(horizons_min)!r}")
    if warmup_readings < 1 or not (warmup_min >= 0):
        raise ValueError("warm-up needs warmup_readings >= 1 and warmup_min >= 0")
    if not (math.isfinite(tolerance_min) and tolerance_min >= 0):
        raise ValueError(f"tolerance_min must be >= 0 minutes, got {tolerance_min!r}")

    methods = tuple(named)
    scorer = _StreamScorer(methods, horizons, tolerance_min)
    deltas = {h: timedelta(minutes=h) for h in horizons}
    fed: dict[str, int] = {}
    skipped = 0
    issued_rows = 0
    seen = 0
    subject: str | None = None
    instances: dict[str, Forecaster] = {}
    first = previous = None
    count = 0
    for reading in readings:
        if reading.subject != subject:
            if subject is not None:
                fed[subject] = count
                scorer.end_subject()
            if reading.subject in fed:
                raise ValueError(f"replay_stream needs readings grouped by subject: subject {reading.subject!r} "
                                 "comes again after another one (use replay() for readings in any order)")
            subject = reading.subject
            instances = {name: factory() for name, factory in named.items()}
            first = previous = None
            count = 0
        elif previous is not None and reading.time < previous:
            raise ValueError(f"replay_stream needs readings in time order: {reading.time.isoformat()} comes after "
                             f"{previous.isoformat()} for subject {subject!r} (use replay() for any order)")
        seen += 1
        scorer.truth(reading)
        if reading.time == previous:
            skipped += 1
            if on_reading is not None:
                on_reading(seen)
            continue
        previous = reading.time
        first = first or reading.time
        count += 1
        for instance in instances.values():
            instance.observe(reading.time, reading.glucose_mg_dl)
        if count >= warmup_readings and (reading.time - first).total_seconds() >= warmup_min * 60.0:
            answers = {name: _points_by_horizon(name, instance.forecast(horizons), horizons)
                       for name, instance in instances.items()}
            for h in horizons:
                points = {name: answers[name][h] for name in methods if h in answers[name]}
                if points:
                    scorer.issue((reading.time + deltas[h]).timestamp(), h, points)
            if on_forecast is not None:
                for name in methods:
                    for h in horizons:
                        p = answers[name].get(h)
                        if p is not None:
                            on_forecast(ForecastRow(subject, name, reading.time, h,
                                                    p.forecast_mg_dl, p.lower_mg_dl, p.upper_mg_dl))
            issued_rows += sum(len(a) for a in answers.values())
        if on_reading is not None:
            on_reading(seen)
    if subject is not None:
        fed[subject] = count
        scorer.end_subject()
    return ReplayResult([], scorer.evaluation(), methods, fed, skipped, warmup_readings, float(warmup_min),
                        issued_rows)


class _ExactSum:
    """A running sum with no rounding error until read: :func:`math.fsum` of everything added.

    Shewchuk's algorithm (the partials :func:`math.fsum` keeps), so the scores of a
    stream equal those of :func:`sim.forecast.scoring.evaluate` on the same pairs, bit for bit.
    """

    __slots__ = ("partials",)

    def __init__(self) -> None:
        self.partials: list[float] = []

    def add(self, x: float) -> None:
        partials = self.partials
        i = 0
        for y in partials:
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo:
                partials[i] = lo
                i += 1
            x = hi
        partials[i:] = [x]

    @property
    def value(self) -> float:
        return math.fsum(self.partials)


class _Score:
    """Sums of one method at one horizon."""

    __slots__ = ("n", "squares", "absolute", "errors", "inside")

    def __init__(self) -> None:
        self.n, self.inside = 0, 0
        self.squares, self.absolute, self.errors = _ExactSum(), _ExactSum(), _ExactSum()

    def add(self, error: float, inside: bool) -> None:
        self.n += 1
        self.inside += inside
        self.squares.add(error * error)
        self.absolute.add(abs(error))
        self.errors.add(error)

    def score(self) -> HorizonScore:
        if self.n == 0:
            return HorizonScore(0, None, None, None, None)
        n = self.n
        return HorizonScore(n, math.sqrt(self.squares.value / n), self.absolute.value / n, self.errors.value / n,
                            self.inside / n)


class _StreamScorer:
    """:func:`sim.forecast.scoring.evaluate` for one subject at a time, as readings come in time order.

    A pair waits (``_pending``, per horizon) until a reading later than its target
    plus the tolerance has come, or its subject ends: then its truth, the nearest
    unclipped reading within the tolerance (the earlier on a tie), can no longer
    change. Readings are kept (``_window``) only as far back as a waiting target
    can reach.
    """

    def __init__(self, methods: tuple[str, ...], horizons: tuple[float, ...], tolerance_min: float) -> None:
        self.methods, self.horizons, self.tolerance_min = methods, horizons, float(tolerance_min)
        self._reach_s = tolerance_min * 60.0 + 1e-6
        self._scores = {m: {h: _Score() for h in horizons} for m in methods}
        self._issued = {m: {h: 0 for h in horizons} for m in methods}
        self._candidates = {h: 0 for h in horizons}
        self._pairs = {h: 0 for h in horizons}
        self._pending: dict[float, deque[tuple[float, dict[str, ForecastPoint]]]] = {h: deque() for h in horizons}
        self._window: list[tuple[float, float]] = []
        self._start = 0
        self._now = -math.inf

    def truth(self, reading: GlucoseReading) -> None:
        t = reading.time.timestamp()
        self._now = t
        self._settle(t)
        if not reading.clipped:
            item = (t, reading.glucose_mg_dl)
            if self._window and self._window[-1] > item:  # a reading at the same time: keep (time, glucose) order
                bisect.insort(self._window, item, lo=self._start)
            else:
                self._window.append(item)

    def issue(self, target_s: float, horizon: float, points: dict[str, ForecastPoint]) -> None:
        self._candidates[horizon] += 1
        for name in points:
            self._issued[name][horizon] += 1
        if len(points) == len(self.methods):
            self._pending[horizon].append((target_s, points))

    def end_subject(self) -> None:
        self._settle(math.inf)
        self._window, self._start, self._now = [], 0, -math.inf

    def evaluation(self) -> Evaluation:
        scores = {m: {h: self._scores[m][h].score() for h in self.horizons} for m in self.methods}
        return Evaluation(self.methods, self.horizons, self.tolerance_min, scores, self._issued,
                          self._candidates, self._pairs)

    def _settle(self, now: float) -> None:
        """Score every waiting pair whose truth no reading from ``now`` on can change."""
        for h, queue in self._pending.items():
            while queue and queue[0][0] + self._reach_s < now:
                target, points = queue.popleft()
                truth = self._nearest(target)
                if truth is None:
                    continue
                self._pairs[h] += 1
                for name, p in points.items():
                    self._scores[name][h].add(p.forecast_mg_dl - truth, p.lower_mg_dl <= truth <= p.upper_mg_dl)
        self._trim()

    def _nearest(self, target: float) -> float | None:
        """As :meth:`sim.forecast.scoring.TruthIndex.nearest`, on the window."""
        window = self._window
        i = bisect.bisect_left(window, (target,), lo=self._start)
        best: int | None = None
        for j in (i - 1, i):
            if self._start <= j < len(window) and (best is None or abs(window[j][0] - target) <
                                                    abs(window[best][0] - target)):
                best = j
        if best is None or abs(window[best][0] - target) > self._reach_s:
            return None
        return window[best][1]

    def _trim(self) -> None:
        """Forget readings no waiting (or future) target can reach."""
        fronts = [q[0][0] for q in self._pending.values() if q]
        earliest = min(fronts) if fronts else self._now + self.horizons[0] * 60.0
        keep_from = min(earliest, self._now) - self._reach_s - 1.0
        window, start = self._window, self._start
        while start < len(window) and window[start][0] < keep_from:
            start += 1
        if start > 1024 and start * 2 > len(window):
            del window[:start]
            start = 0
        self._start = start


# --- files --------------------------------------------------------------------------


class LoadedFile(NamedTuple):
    """A CGM file read for replay: what the reader returned and the format it used."""

    result: ReadResult
    format: str


def load_cgm_file(path: str | os.PathLike[str], format: str = "auto", tz: str = "UTC",
                  units: str | None = None) -> LoadedFile:
    """Read a whole CGM file into memory (:class:`sensors.files.source.CgmFile`), reporting the format used.

    For a file of any size, replay :func:`open_cgm_file`'s stream instead.
    Raises OSError if the file cannot be read, ValueError (one line, naming the file)
    for an unknown or undetectable format, an unusable header, an unknown time zone or unit.
    """
    with CgmFile.open(path, format=format, tz=tz, units=units, keep_rejected=True) as cgm:
        cgm.read()
        readings = list(cgm.readings())
        return LoadedFile(ReadResult(readings, cgm.rejections.sorted_all()), cgm.format)


def open_cgm_file(path: str | os.PathLike[str], format: str = "auto", tz: str = "UTC",
                  units: str | None = None) -> CgmFile:
    """A CGM file to stream (call ``read()``, then iterate ``readings()``; close it after).

    Raises OSError if the file cannot be read, ValueError (one line) for an unknown format, zone or unit.
    """
    return CgmFile.open(path, format=format, tz=tz, units=units)


class CompactReadings:
    """Readings held as 17 bytes each (time, glucose, clipped), grouped by subject, for the report.

    Iterating gives :class:`~sensors.reading.GlucoseReading` values again (source ``source``).
    """

    def __init__(self, source: str = "replay") -> None:
        self.source = source
        self._subjects: list[tuple[str, array, array, array]] = []

    def add(self, reading: GlucoseReading) -> None:
        if not self._subjects or self._subjects[-1][0] != reading.subject:
            self._subjects.append((reading.subject, array("d"), array("d"), array("b")))
        _, times, values, clipped = self._subjects[-1]
        times.append(reading.time.timestamp())
        values.append(reading.glucose_mg_dl)
        clipped.append(reading.clipped)

    def __len__(self) -> int:
        return sum(len(times) for _, times, _, _ in self._subjects)

    def __iter__(self) -> Iterator[GlucoseReading]:
        for subject, times, values, clipped in self._subjects:
            for t, g, c in zip(times, values, clipped):
                yield GlucoseReading(datetime.fromtimestamp(t, UTC), g, self.source, subject=subject, clipped=bool(c))


REPORT_FORECAST_HOURS = 24.0
REPORT_FORECAST_SUBJECTS = 8
"""The forecasts kept for the HTML report: each subject's first 24 h of them, for the first 8 subjects
(the report draws the first 24 h of at most 3 subjects)."""


class ReportForecasts:
    """Collects, from a stream of forecasts, the few the HTML report draws."""

    def __init__(self) -> None:
        self.rows: list[ForecastRow] = []
        self._first: dict[str, datetime] = {}

    def add(self, row: ForecastRow) -> None:
        first = self._first.get(row.subject)
        if first is None:
            if len(self._first) >= REPORT_FORECAST_SUBJECTS:
                return
            first = self._first[row.subject] = row.issued_at
        if row.issued_at <= first + timedelta(hours=REPORT_FORECAST_HOURS):
            self.rows.append(row)


def _iso(t: datetime) -> str:
    return t.isoformat()


def _number(x: float) -> str:
    return f"{x:.2f}"


class ForecastsCsv:
    """The forecasts CSV written row by row (:data:`FORECAST_COLUMNS`; ISO 8601 times with
    offset, glucose in mg/dL to 0.01). Opening it raises OSError if the file cannot be written."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._handle = open(path, "w", newline="", encoding="utf-8")
        self._writer = csv.writer(self._handle)
        self._writer.writerow(FORECAST_COLUMNS)
        self.rows = 0

    def __enter__(self) -> ForecastsCsv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, row: ForecastRow) -> None:
        self._writer.writerow((
            row.subject, _iso(row.issued_at), horizon_key(row.horizon_min), _iso(row.target_time),
            _number(row.forecast_mg_dl), _number(row.lower_mg_dl), _number(row.upper_mg_dl), row.method,
        ))
        self.rows += 1

    def close(self) -> None:
        self._handle.close()


def write_forecasts_csv(rows: Iterable[ForecastRow], path: str | os.PathLike[str]) -> int:
    """Write forecasts as CSV (:class:`ForecastsCsv`). Returns the number of rows written."""
    with ForecastsCsv(path) as out:
        for row in rows:
            out.write(row)
        return out.rows


def rejection_summary(rejected: Iterable[Rejected] | RejectionLog) -> dict[str, int]:
    """Rejections counted by the fixed leading phrase of their reason, most frequent first."""
    if isinstance(rejected, RejectionLog):
        return rejected.reasons
    counts: Counter[str] = Counter(rejection_phrase(r.reason) for r in rejected)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def build_report(
    result: ReplayResult,
    *,
    file: str,
    format: str,
    rejected: Sequence[Rejected] | RejectionLog,
    profile: PatientProfile,
    profile_source: str,
    methods: Mapping[str, ForecastMethod] | None = None,
    unavailable: Mapping[str, str] | None = None,
    clipped_readings: int = 0,
    file_info: FileInfo | None = None,
) -> dict[str, Any]:
    """The JSON report of a replay: input, assumptions, warm-up, scores per method and horizon.

    ``rejected``: the rejections, or the reader's :class:`~sensors.files.rejections.RejectionLog`
    of them; ``methods`` supplies each method's insulin assumption; ``unavailable`` lists
    methods not compared, with the reason; ``file_info`` adds the units, delimiter and
    notes the reader used (``file_units``, ``file_units_source``, ``file_delimiter``,
    ``file_date_order``, ``file_notes``).
    """
    methods = methods or {}
    described = {} if file_info is None else {
        "file_units": file_info.units,
        "file_units_source": file_info.units_source,
        "file_delimiter": file_info.delimiter,
        "file_date_order": file_info.date_order,
        "file_notes": list(file_info.notes),
    }
    return {
        "format": REPORT_FORMAT,
        "file": file,
        "file_format": format,
        **described,
        "readings": sum(result.readings_per_subject.values()),
        "readings_per_subject": dict(result.readings_per_subject),
        "readings_clipped": clipped_readings,
        "readings_skipped_same_time": result.skipped_same_time,
        "rejected": len(rejected),
        "rejected_reasons": rejection_summary(rejected),
        "profile_source": profile_source,
        "profile": profile.to_dict(),
        "insulin_assumption": {
            name: (methods[name].insulin_assumption if name in methods else "not stated")
            for name in result.methods
        },
        "methods_not_compared": dict(unavailable or {}),
        "warmup": {"readings": result.warmup_readings, "minutes": result.warmup_min},
        "band_coverage_nominal": nominal_coverage(methods, result.methods),
        "forecasts_issued": result.forecasts_issued or len(result.forecasts),
        "evaluation": result.evaluation.to_dict(),
    }


def write_report_json(report: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")


def _fmt(x: float | None, spec: str, width: int = 6) -> str:
    return f"{'-':>{width}}" if x is None else f"{format(x, spec):>{width}}"


def format_table(evaluation: Evaluation, nominal: Mapping[str, float] | None = None, units: str = "mg") -> str:
    """Method × horizon RMSE, MAE, bias, band coverage (measured and nominal) and n, then the
    best method per horizon. ``nominal``: each method's nominal band coverage (default
    :data:`~twin.forecaster.BAND_COVERAGE` for all). ``units``: "mg" (mg/dL) or "mmol" (mmol/L)
    for the errors."""
    from sim.trial.metrics.units import glucose_units

    u = glucose_units(units)
    k = u.per_mg_dl
    d = 2 if u.name == "mg" else 3  # mmol/L errors with one more decimal

    def k_(x: float | None) -> float | None:
        return None if x is None else x * k
    nominal = {m: (nominal or {}).get(m, BAND_COVERAGE) for m in evaluation.methods}
    width = max([len("method")] + [len(m) for m in evaluation.methods])
    lines = [f"{'method':<{width}}  {'horizon':>7}  {'n':>6}  {'RMSE':>6}  {'MAE':>6}  {'bias':>6}  {'cover':>5}"
             f"  {'band':>4}"]
    for h in evaluation.horizons_min:
        for m in evaluation.methods:
            s = evaluation.scores[m][h]
            lines.append(
                f"{m:<{width}}  {horizon_key(h) + ' min':>7}  {s.n:>6}  {_fmt(k_(s.rmse_mg_dl), f'6.{d}f')}  "
                f"{_fmt(k_(s.mae_mg_dl), f'6.{d}f')}  {_fmt(k_(s.bias_mg_dl), f'+6.{d}f')}  {_fmt(s.coverage, '5.2f', 5)}"
                f"  {nominal[m]:>4.0%}"
            )
    lines.append(f"({u.label}; same {' / '.join(str(evaluation.pairs[h]) for h in evaluation.horizons_min)} "
                 f"pairs for every method; cover = share of readings inside the method's band, "
                 f"a central prediction interval of nominal coverage 'band')")
    for h in evaluation.horizons_min:
        best = evaluation.best(h)
        if best is None:
            lines.append(f"best at {horizon_key(h)} min: none (no pair could be scored)")
            continue
        others = ", ".join(
            f"{m} {evaluation.scores[m][h].rmse_mg_dl * k:.{d}f}" for m in evaluation.methods if m != best
        )
        lines.append(f"best at {horizon_key(h)} min: {best} (RMSE {evaluation.scores[best][h].rmse_mg_dl * k:.{d}f} "
                     f"{u.label}" + (f"; {others}" if others else "") + ")")
    return "\n".join(lines)
