"""``glucotwin replay``: stream a CGM file through forecasters as if live and score the forecasts."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from sensors import (
    FORMATS,  # standard library only: light enough for the CLI's start-up
)
from sensors.files.units import UNITS
from sim.cli.args import CliError, add_units_argument, positive_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="replay a CGM file through the forecasters and score their forecasts",
        description=(
            "Read a CGM file (iglu CSV, Dexcom Clarity CSV, LibreView CSV, Nightscout entries JSON or a Tidepool "
            "JSON export; CSV delimited by ',', ';' or tab, in mg/dL or mmol/L), feed its "
            "readings one by one to each forecasting method as if live (one fresh forecaster per "
            "subject), issue forecasts after every reading once 2 readings spanning 10 minutes have "
            "been seen, and score them against the later readings: RMSE, MAE, bias and band "
            "coverage per method and horizon, all methods on the same (issue time, horizon) pairs, "
            "truth = the reading within 2.5 minutes of the target time. The files hold no insulin "
            "records: the persistence and linear baselines use glucose only; the twin assumes the "
            "profile's programmed basal and nothing else. The file is streamed (memory stays bounded "
            "whatever its size); the time the replay will take is estimated on its first readings and "
            "printed to stderr, with a progress bar on a terminal."
        ),
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the CGM file")
    p.add_argument("--format", choices=("auto", *FORMATS), default="auto",
                   help="file format (default auto: detected from the content)")
    p.add_argument("--units", choices=("auto", *UNITS), default="auto",
                   help="glucose unit of a CSV file's values (default auto: the header's, else iglu's mg/dL "
                        "unless the values are clearly mmol/L)")
    p.add_argument("--tz", default="UTC", metavar="ZONE",
                   help="IANA time zone of timestamps written without an offset (default UTC)")
    p.add_argument("--profile", type=Path, default=None, metavar="PROFILE.json",
                   help="clinical profile (PatientProfile.to_dict() as JSON) for the twin; default: a "
                        "generic adult, an assumption (70 kg, TDI 40 U, CR 12 g/U, CF 45 mg/dL/U, "
                        "basal 0.8 U/h, age 40, target 120 mg/dL)")
    p.add_argument("--twin", type=Path, default=None, metavar="TWIN.json",
                   help="forecast with the twin glucotwin learn fitted (its profile is used; not with --profile)")
    p.add_argument("--horizons", type=positive_float, nargs="+", default=None, metavar="MIN",
                   help="forecast horizons in minutes (default 30 60)")
    p.add_argument("--methods", nargs="+", default=None, metavar="NAME",
                   help="methods to compare: persistence, linear, twin, blend (default: every available one)")
    p.add_argument("--subject", default=None, metavar="ID", help="replay only this subject (iglu id)")
    p.add_argument("--forecasts", type=Path, default=None, metavar="CSV",
                   help="write every forecast to this CSV")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the report as JSON")
    p.add_argument("--report", type=Path, default=None, metavar="FILE",
                   help="write a self-contained HTML report here (default: with --json or --forecasts, "
                        "beside it with .html); it holds the readings in memory, 17 bytes each")
    p.add_argument("--no-report", action="store_true", help="write no HTML report")
    add_units_argument(p, flag="--report-units", dest="report_units")  # --units names the input file's unit
    p.add_argument("--quiet", action="store_true", help="no progress bar and no time estimate on stderr")
    p.set_defaults(handler=_cmd_replay)


def _choose_methods(requested: list[str] | None, learned: Any = None):
    from sim.forecast.replay import available_methods

    available, unavailable = available_methods(learned)
    if requested is None:
        return available, unavailable
    chosen = {}
    for name in dict.fromkeys(requested):
        if name in available:
            chosen[name] = available[name]
        elif name in unavailable:
            raise CliError(f"method {name!r} is unavailable: {unavailable[name]}")
        else:
            raise CliError(f"unknown method {name!r}; available: {', '.join(available)}")
    return chosen, {}


def _profile(args: argparse.Namespace) -> tuple[Any, str]:
    """The profile to replay with, and where it came from."""
    from sim.forecast.replay import (
        DEFAULT_PROFILE_SOURCE,
        default_profile,
        load_profile,
    )

    if args.profile is None:
        return default_profile(), DEFAULT_PROFILE_SOURCE
    try:
        profile = load_profile(args.profile)
    except OSError as exc:
        raise CliError(f"cannot read profile {args.profile}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CliError(f"bad profile {exc}") from None
    return profile, str(args.profile)


class _Meter:
    """Progress on stderr: a bar redrawn at most 4 times a second (a terminal only), and once the
    first readings have been replayed, the time the whole replay will take."""

    CALIBRATION_READINGS = (50, 500)
    CALIBRATION_S = 2.0

    def __init__(self, stream: TextIO, quiet: bool) -> None:
        self.stream, self.quiet = stream, quiet
        self.bar = not quiet and stream.isatty()
        self._drawn = 0.0
        self._start = time.perf_counter()
        self._estimated = False

    def reading_file(self, done: int, total: int) -> None:
        if self.bar and (time.perf_counter() - self._drawn >= 0.25 or done >= total):
            self._draw(f"reading {done / 1e6:.1f} of {total / 1e6:.1f} MB", done, total, self._start)

    def start_replay(self, total: int, methods: list[str]) -> None:
        self.total, self.methods = total, methods
        self._start = time.perf_counter()
        self._estimated = False

    def replayed(self, n: int) -> None:
        if self.quiet or n & 15 and n != self.total:
            return
        now = time.perf_counter()
        elapsed = now - self._start
        low, high = self.CALIBRATION_READINGS
        if not self._estimated and n >= min(low, self.total) and (elapsed >= self.CALIBRATION_S or n >= high
                                                                  or n >= self.total):
            self._estimated = True
            if n < self.total:
                self._clear()
                per = elapsed / n
                print(f"replay of {self.total:,} readings with {', '.join(self.methods)}: {per * 1e3:.3g} ms per "
                      f"reading on the first {n:,}, so about {_duration(per * self.total)} in all "
                      f"({_duration(per * (self.total - n))} to go)", file=self.stream, flush=True)
        if self.bar and now - self._drawn >= 0.25:
            self._draw(f"replay {n:,}/{self.total:,} readings", n, self.total, self._start)

    def finish(self) -> None:
        self._clear()

    def _draw(self, label: str, done: int, total: int, start: float) -> None:
        now = time.perf_counter()
        self._drawn = now
        share = done / total if total else 1.0
        left = (now - start) * (1 - share) / share if share > 0 else 0.0
        filled = int(share * 30)
        self.stream.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {share:4.0%} {label}, "
                          f"{_duration(now - start)} elapsed, ~{_duration(left)} left \x1b[K")
        self.stream.flush()

    def _clear(self) -> None:
        if self.bar and self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = 0.0


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _open(args: argparse.Namespace, meter: _Meter):
    """The CGM file, read (parsed and sorted, in bounded memory); the reader's errors as CliError."""
    from sim.forecast.replay import open_cgm_file

    try:
        cgm = open_cgm_file(args.file, format=args.format, tz=args.tz, units=args.units)
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        cgm.read(progress=meter.reading_file)
    except OSError as exc:
        cgm.close()
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    except ValueError as exc:
        cgm.close()
        raise CliError(str(exc)) from None
    finally:
        meter.finish()
    return cgm


def _check_subject(args: argparse.Namespace, cgm: Any) -> None:
    from sim.forecast.replay import rejection_summary

    subjects = cgm.subjects
    if args.subject is not None and args.subject not in subjects:
        shown = ", ".join(repr(s) for s in subjects[:5]) + (", ..." if len(subjects) > 5 else "")
        raise CliError(f"no subject {args.subject!r} in {args.file}; subjects: {shown or 'none'}")
    if not len(cgm):
        reasons = ", ".join(f"{k} {v}" for k, v in rejection_summary(cgm.rejections).items())
        detail = f" ({len(cgm.rejections)} rejected: {reasons})" if len(cgm.rejections) else ""
        raise CliError(f"no glucose readings in {args.file}{detail}")


def _writable(path: Path | None) -> None:
    """Refuse, before a long replay, an output file that cannot be written."""
    if path is not None and not os.access(path.parent, os.W_OK):
        why = "no such directory" if not path.parent.is_dir() else "permission denied"
        raise CliError(f"cannot write {path}: {why} ({path.parent})")


def _cmd_replay(args: argparse.Namespace) -> int:
    from sim.forecast.replay import (
        DEFAULT_HORIZONS_MIN,
        CompactReadings,
        ForecastsCsv,
        ReportForecasts,
        build_report,
        format_table,
        nominal_coverage,
        replay_stream,
        write_report_json,
    )

    learned = None
    if args.twin is not None:
        if args.profile is not None:
            raise CliError("--twin carries its own profile: give --twin or --profile, not both")
        from twin.learning.learned import load_learned_twin

        try:
            learned = load_learned_twin(args.twin, purpose="forecast")
        except (OSError, ValueError) as exc:
            raise CliError(f"--twin {args.twin}: {exc}") from None
        profile, profile_source = learned.profile, f"the learned twin {args.twin}"
    else:
        profile, profile_source = _profile(args)
    methods, unavailable = _choose_methods(args.methods, learned)
    for path in (args.json, args.report):
        _writable(path)
    meter = _Meter(sys.stderr, args.quiet)
    cgm = _open(args, meter)
    with cgm:
        _check_subject(args, cgm)
        factories = {name: method.build(profile) for name, method in methods.items()}
        horizons = tuple(args.horizons) if args.horizons else DEFAULT_HORIZONS_MIN
        try:
            csv_out = ForecastsCsv(args.forecasts) if args.forecasts is not None else None
        except OSError as exc:
            raise CliError(f"cannot write {args.forecasts}: {exc.strerror or exc}") from None
        want_report = not args.no_report and bool(args.report or args.json or args.forecasts)
        kept = CompactReadings() if want_report else None
        drawn = ReportForecasts() if want_report else None
        counts = {"readings": 0, "clipped": 0}

        def readings():
            for reading in cgm.readings(args.subject):
                counts["readings"] += 1
                counts["clipped"] += reading.clipped
                if kept is not None:
                    kept.add(reading)
                yield reading

        def on_forecast(row) -> None:
            if csv_out is not None:
                csv_out.write(row)
            if drawn is not None:
                drawn.add(row)

        meter.start_replay(cgm.count(args.subject), list(methods))
        try:
            result = replay_stream(readings(), factories, horizons, on_reading=meter.replayed,
                                   on_forecast=on_forecast if csv_out is not None or drawn is not None else None)
        finally:
            meter.finish()
            if csv_out is not None:
                csv_out.close()
    if not counts["readings"]:
        raise CliError(f"no glucose readings in {args.file} ({len(cgm.rejections)} rejected: every reading "
                       "conflicts with another at the same time)")

    clipped = counts["clipped"]
    subjects = len(result.readings_per_subject)
    print(f"{args.file}: {cgm.format}, {counts['readings']} readings of {subjects} subject(s)"
          f"{f', {clipped} clipped (Low/High, not scored)' if clipped else ''}, {len(cgm.rejections)} rejected")
    if cgm.info.describe():
        print(f"read as: {cgm.info.describe()}")
    for note in cgm.info.notes:
        print(f"note: {note}")
    print(f"profile: {profile.name}, from {profile_source}")
    assumptions: dict[str, list[str]] = {}
    for name, method in methods.items():
        assumptions.setdefault(method.insulin_assumption, []).append(name)
    for text, names in assumptions.items():
        print(f"insulin, {', '.join(names)}: {text}")
    if unavailable:
        print("not compared: " + "; ".join(f"{name} ({why})" for name, why in unavailable.items()))
    print(format_table(result.evaluation, nominal_coverage(methods, result.methods), args.report_units))

    def summary() -> dict:
        return build_report(result, file=str(args.file), format=cgm.format, rejected=cgm.rejections,
                            profile=profile, profile_source=profile_source, methods=methods,
                            unavailable=unavailable, clipped_readings=clipped, file_info=cgm.info)

    if csv_out is not None:
        print(f"wrote {csv_out.rows} forecasts to {args.forecasts}")
    if args.json is not None:
        try:
            write_report_json(summary(), args.json)
        except OSError as exc:
            raise CliError(f"cannot write {args.json}: {exc.strerror or exc}") from None
        print(f"wrote report to {args.json}")
    if want_report:
        from sim.report import (  # never raises
            replay_report_after_run,
            replay_report_path,
        )

        replay_report_after_run(args.report or replay_report_path(args.json or args.forecasts), summary(),
                                kept, drawn.rows, tz=args.tz, units=args.report_units)
    return 0
