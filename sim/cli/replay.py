"""``glucotwin replay``: stream a CGM file through forecasters as if live and score the forecasts."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sensors import (
    FORMATS,  # standard library only: light enough for the CLI's start-up
)
from sim.cli.args import CliError, positive_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "replay",
        help="replay a CGM file through the forecasters and score their forecasts",
        description=(
            "Read a CGM file (iglu CSV, Dexcom Clarity CSV or Nightscout entries JSON), feed its "
            "readings one by one to each forecasting method as if live (one fresh forecaster per "
            "subject), issue forecasts after every reading once 2 readings spanning 10 minutes have "
            "been seen, and score them against the later readings: RMSE, MAE, bias and band "
            "coverage per method and horizon, all methods on the same (issue time, horizon) pairs, "
            "truth = the reading within 2.5 minutes of the target time. The files hold no insulin "
            "records: the persistence and linear baselines use glucose only; the twin assumes the "
            "profile's programmed basal and nothing else."
        ),
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the CGM file")
    p.add_argument("--format", choices=("auto", *FORMATS), default="auto",
                   help="file format (default auto: detected from the content)")
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
                        "beside it with .html)")
    p.add_argument("--no-report", action="store_true", help="write no HTML report")
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


def _readings(args: argparse.Namespace) -> tuple[Any, list, list, list[str]]:
    """The file's readings (of ``--subject`` if given), its rejections and its subjects."""
    from sim.forecast.replay import load_cgm_file, rejection_summary

    try:
        loaded = load_cgm_file(args.file, format=args.format, tz=args.tz)
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    readings, rejected = loaded.result
    subjects = list(dict.fromkeys(r.subject for r in readings))
    if args.subject is not None:
        if args.subject not in subjects:
            shown = ", ".join(repr(s) for s in subjects[:5]) + (", ..." if len(subjects) > 5 else "")
            raise CliError(f"no subject {args.subject!r} in {args.file}; subjects: {shown or 'none'}")
        readings = [r for r in readings if r.subject == args.subject]
        subjects = [args.subject]
    if not readings:
        reasons = ", ".join(f"{k} {v}" for k, v in rejection_summary(rejected).items())
        detail = f" ({len(rejected)} rejected: {reasons})" if rejected else ""
        raise CliError(f"no glucose readings in {args.file}{detail}")
    return loaded, readings, rejected, subjects


def _cmd_replay(args: argparse.Namespace) -> int:
    from sim.forecast.replay import (
        DEFAULT_HORIZONS_MIN,
        build_report,
        format_table,
        nominal_coverage,
        replay,
        write_forecasts_csv,
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
    loaded, readings, rejected, subjects = _readings(args)

    factories = {name: method.build(profile) for name, method in methods.items()}
    horizons = tuple(args.horizons) if args.horizons else DEFAULT_HORIZONS_MIN
    result = replay(readings, factories, horizons)

    clipped = sum(r.clipped for r in readings)
    print(f"{args.file}: {loaded.format}, {len(readings)} readings of {len(subjects)} subject(s)"
          f"{f', {clipped} clipped (Low/High, not scored)' if clipped else ''}, {len(rejected)} rejected")
    print(f"profile: {profile.name}, from {profile_source}")
    assumptions: dict[str, list[str]] = {}
    for name, method in methods.items():
        assumptions.setdefault(method.insulin_assumption, []).append(name)
    for text, names in assumptions.items():
        print(f"insulin, {', '.join(names)}: {text}")
    if unavailable:
        print("not compared: " + "; ".join(f"{name} ({why})" for name, why in unavailable.items()))
    print(format_table(result.evaluation, nominal_coverage(methods, result.methods)))

    def summary() -> dict:
        return build_report(result, file=str(args.file), format=loaded.format, rejected=rejected,
                            profile=profile, profile_source=profile_source, methods=methods,
                            unavailable=unavailable, clipped_readings=clipped)

    if args.forecasts is not None:
        try:
            n = write_forecasts_csv(result.forecasts, args.forecasts)
        except OSError as exc:
            raise CliError(f"cannot write {args.forecasts}: {exc.strerror or exc}") from None
        print(f"wrote {n} forecasts to {args.forecasts}")
    if args.json is not None:
        try:
            write_report_json(summary(), args.json)
        except OSError as exc:
            raise CliError(f"cannot write {args.json}: {exc.strerror or exc}") from None
        print(f"wrote report to {args.json}")
    if not args.no_report and (args.report or args.json or args.forecasts):
        from sim.report import (  # never raises
            replay_report_after_run,
            replay_report_path,
        )

        replay_report_after_run(args.report or replay_report_path(args.json or args.forecasts), summary(),
                                readings, result.forecasts, tz=args.tz)
    return 0
