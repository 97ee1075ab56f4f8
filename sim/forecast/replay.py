"""Replay a CGM file through glucose forecasters as if live, and score the forecasts.

Usage::

    loaded = load_cgm_file("trace.csv")
    methods, unavailable = available_methods()   # persistence, linear, twin if importable
    profile = default_profile()
    result = replay(loaded.result.readings, {name: m.build(profile) for name, m in methods.items()})
    print(format_table(result.evaluation))

Streaming
---------
Readings are grouped by subject (order of first appearance) and fed in time
order to one fresh forecaster per method and subject. After each reading,
once the subject has had a warm-up of at least :data:`WARMUP_READINGS` (2)
readings spanning :data:`WARMUP_MIN` (10) minutes, every method is asked for
forecasts at each horizon, issued at that reading's time. A later reading
with the same time as the previous one of its subject is skipped (counted).
Forecasters are not reset at gaps: handling a gap is their job.

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

import csv
import importlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sensors import FORMATS, GlucoseReading, ReadResult, Rejected, detect_format, parse_cgm_text
from sim.forecast.scoring import Evaluation, ForecastRow, evaluate, horizon_key
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
    forecasts: every forecast issued, by subject, then time, then method, then horizon.
    methods: the method names, in order.
    evaluation: the scores (:func:`sim.forecast.scoring.evaluate`).
    readings_per_subject: readings fed per subject.
    skipped_same_time: readings skipped for repeating their predecessor's time.
    warmup_readings, warmup_min: the warm-up before the first forecast of a subject.
    """

    forecasts: list[ForecastRow]
    evaluation: Evaluation
    methods: tuple[str, ...]
    readings_per_subject: dict[str, int]
    skipped_same_time: int
    warmup_readings: int
    warmup_min: float


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
    readings: readings of one or more subjects, any order.
    forecasters: method name → factory of a fresh :class:`~twin.forecaster.Forecaster`;
        or a list of factories, named by their instances' ``name``.
    horizons_min: forecast horizons, minutes (positive; duplicates ignored).
    tolerance_min: truth-matching tolerance for scoring, minutes.
    warmup_readings, warmup_min: a subject's forecasts start at its first reading
        that is at least the ``warmup_readings``-th and at least ``warmup_min``
        minutes after its first reading.

    Raises ValueError on bad settings or a forecaster that answers other horizons than asked.
    """
    named = _named_factories(forecasters)
    horizons = tuple(sorted({float(h) for h in horizons_min}))
    if not horizons or any(not (h > 0 and h < float("inf")) for h in horizons):
        raise ValueError(f"horizons must be positive minutes, got {list(horizons_min)!r}")
    if warmup_readings < 1 or not (warmup_min >= 0):
        raise ValueError("warm-up needs warmup_readings >= 1 and warmup_min >= 0")

    by_subject: dict[str, list[GlucoseReading]] = {}
    for reading in readings:
        by_subject.setdefault(reading.subject, []).append(reading)

    rows: list[ForecastRow] = []
    fed: dict[str, int] = {}
    skipped = 0
    for subject, stream in by_subject.items():
        stream.sort(key=lambda r: r.time)
        instances = {name: factory() for name, factory in named.items()}
        first: datetime | None = None
        previous: datetime | None = None
        count = 0
        for reading in stream:
            if reading.time == previous:
                skipped += 1
                continue
            previous = reading.time
            first = first or reading.time
            count += 1
            for instance in instances.values():
                instance.observe(reading.time, reading.glucose_mg_dl)
            if count < warmup_readings or (reading.time - first).total_seconds() < warmup_min * 60.0:
                continue
            for name, instance in instances.items():
                points = _points_by_horizon(name, instance.forecast(horizons), horizons)
                for h in horizons:
                    p = points.get(h)
                    if p is not None:
                        rows.append(ForecastRow(subject, name, reading.time, h,
                                                p.forecast_mg_dl, p.lower_mg_dl, p.upper_mg_dl))
        fed[subject] = count

    truths = [r for stream in by_subject.values() for r in stream]
    evaluation = evaluate(rows, truths, methods=list(named), horizons_min=horizons, tolerance_min=tolerance_min)
    return ReplayResult(rows, evaluation, tuple(named), fed, skipped, warmup_readings, float(warmup_min))


# --- files --------------------------------------------------------------------------


class LoadedFile(NamedTuple):
    """A CGM file read for replay: what the reader returned and the format it used."""

    result: ReadResult
    format: str


def load_cgm_file(path: str | os.PathLike[str], format: str = "auto", tz: str = "UTC") -> LoadedFile:
    """Read a CGM file with :func:`sensors.parse_cgm_text`, reporting the format detected.

    Raises OSError if the file cannot be read, ValueError (one line, naming the file)
    for an unknown or undetectable format, an unusable header or an unknown time zone.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    # The same decoding as sensors.read_cgm_file: UTF-16 with a BOM, else UTF-8.
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        text = data.decode("utf-16", errors="replace")
    else:
        text = data.decode("utf-8-sig", errors="replace")
    try:
        if format == "auto":
            format = detect_format(text)
        elif format not in FORMATS:
            raise ValueError(f"unknown CGM file format {format!r}: use 'auto' or one of {', '.join(FORMATS)}")
        return LoadedFile(parse_cgm_text(text, format=format, tz=tz), format)
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)}: {exc}") from None


def _iso(t: datetime) -> str:
    return t.isoformat()


def _number(x: float) -> str:
    return f"{x:.2f}"


def write_forecasts_csv(rows: Iterable[ForecastRow], path: str | os.PathLike[str]) -> int:
    """Write forecasts as CSV (:data:`FORECAST_COLUMNS`; ISO 8601 times with offset,
    glucose in mg/dL to 0.01). Returns the number of rows written."""
    n = 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(FORECAST_COLUMNS)
        for row in rows:
            writer.writerow((
                row.subject, _iso(row.issued_at), horizon_key(row.horizon_min), _iso(row.target_time),
                _number(row.forecast_mg_dl), _number(row.lower_mg_dl), _number(row.upper_mg_dl), row.method,
            ))
            n += 1
    return n


_REJECTION_PHRASES = (
    # The fixed leading phrases of sensors.reading.Rejected.reason.
    "duplicate", "conflicting glucose", "missing glucose", "non-numeric glucose", "glucose out of range",
    "sensor error code", "missing time", "unparseable time", "implausible time", "nonexistent local time",
    "malformed row", "malformed entry", "not a glucose reading",
)


def rejection_summary(rejected: Iterable[Rejected]) -> dict[str, int]:
    """Rejections counted by the fixed leading phrase of their reason, most frequent first."""
    counts: Counter[str] = Counter()
    for r in rejected:
        phrase = next((p for p in _REJECTION_PHRASES if r.reason.startswith(p)), None)
        counts[phrase or r.reason.split(":")[0][:60]] += 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def build_report(
    result: ReplayResult,
    *,
    file: str,
    format: str,
    rejected: Sequence[Rejected],
    profile: PatientProfile,
    profile_source: str,
    methods: Mapping[str, ForecastMethod] | None = None,
    unavailable: Mapping[str, str] | None = None,
    clipped_readings: int = 0,
) -> dict[str, Any]:
    """The JSON report of a replay: input, assumptions, warm-up, scores per method and horizon.

    ``methods`` supplies each method's insulin assumption; ``unavailable`` lists
    methods not compared, with the reason.
    """
    methods = methods or {}
    return {
        "format": REPORT_FORMAT,
        "file": file,
        "file_format": format,
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
        "forecasts_issued": len(result.forecasts),
        "evaluation": result.evaluation.to_dict(),
    }


def write_report_json(report: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")


def _fmt(x: float | None, spec: str, width: int = 6) -> str:
    return f"{'-':>{width}}" if x is None else f"{format(x, spec):>{width}}"


def format_table(evaluation: Evaluation, nominal: Mapping[str, float] | None = None) -> str:
    """Method × horizon RMSE, MAE, bias, band coverage (measured and nominal) and n, then the
    best method per horizon. ``nominal``: each method's nominal band coverage (default
    :data:`~twin.forecaster.BAND_COVERAGE` for all)."""
    nominal = {m: (nominal or {}).get(m, BAND_COVERAGE) for m in evaluation.methods}
    width = max([len("method")] + [len(m) for m in evaluation.methods])
    lines = [f"{'method':<{width}}  {'horizon':>7}  {'n':>6}  {'RMSE':>6}  {'MAE':>6}  {'bias':>6}  {'cover':>5}"
             f"  {'band':>4}"]
    for h in evaluation.horizons_min:
        for m in evaluation.methods:
            s = evaluation.scores[m][h]
            lines.append(
                f"{m:<{width}}  {horizon_key(h) + ' min':>7}  {s.n:>6}  {_fmt(s.rmse_mg_dl, '6.2f')}  "
                f"{_fmt(s.mae_mg_dl, '6.2f')}  {_fmt(s.bias_mg_dl, '+6.2f')}  {_fmt(s.coverage, '5.2f', 5)}"
                f"  {nominal[m]:>4.0%}"
            )
    lines.append(f"(mg/dL; same {' / '.join(str(evaluation.pairs[h]) for h in evaluation.horizons_min)} "
                 f"pairs for every method; cover = share of readings inside the method's band, "
                 f"a central prediction interval of nominal coverage 'band')")
    for h in evaluation.horizons_min:
        best = evaluation.best(h)
        if best is None:
            lines.append(f"best at {horizon_key(h)} min: none (no pair could be scored)")
            continue
        others = ", ".join(
            f"{m} {evaluation.scores[m][h].rmse_mg_dl:.2f}" for m in evaluation.methods if m != best
        )
        lines.append(f"best at {horizon_key(h)} min: {best} (RMSE {evaluation.scores[best][h].rmse_mg_dl:.2f} mg/dL"
                     + (f"; {others}" if others else "") + ")")
    return "\n".join(lines)
