"""``glucotwin whatif`` (ask the live twin about an action) and ``glucotwin whatif-check`` (validate it)."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta
from pathlib import Path

from sim.cli.args import CliError, add_units_argument, positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "whatif",
        help="ask the loop's live twin what an action would do (meal, bolus, temp basal, suspension)",
        description=(
            "Rebuild the loop's twin from its journal (read-only: nothing is written, nothing reaches the "
            "pump) and forecast glucose with and without the action over the next hours: on the programmed "
            "basal (open loop) and with glucotwin's loop answering it (closed loop: its MPC, meal bolus and "
            "safety supervisor run inside the twin's future). Prints a table and writes PREFIX.png, .html "
            "and .json. Research software, not a medical device."
        ),
    )
    p.add_argument("--journal", type=Path, default=None, metavar="FILE",
                   help="the loop's SQLite journal (default: the [loop] journal of --config)")
    p.add_argument("--trace", type=Path, default=None, metavar="CSV",
                   help="instead of a journal: a glucotwin trial trace (controller mpc); with --when, any moment of it")
    p.add_argument("--config", type=Path, default=None, metavar="loop.toml",
                   help="the loop's config (profile, twin, limits); default: loop.toml beside the journal, or "
                        "the glucotwin hil layout's <name>.hil/loop.toml")
    p.add_argument("--carbs", type=positive_float, default=None, metavar="G", help="eat G grams")
    p.add_argument("--absorption", choices=("fast", "medium", "slow"), default="medium",
                   help="how fast the carbs absorb (default medium)")
    p.add_argument("--unannounced", action="store_true", help="the carbs are not told to the loop")
    p.add_argument("--bolus", type=positive_float, default=None, metavar="U", help="take a bolus of U units")
    p.add_argument("--temp-basal", type=float, default=None, metavar="U/H", help="set a temporary basal rate")
    p.add_argument("--suspend", type=positive_float, default=None, metavar="MIN", help="suspend insulin for MIN minutes")
    p.add_argument("--duration", type=positive_float, default=60.0, metavar="MIN",
                   help="temporary basal duration (default 60)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--at", default=None, metavar="HH:MM", help="the action at this clock time (next occurrence)")
    when.add_argument("--in", dest="in_min", type=float, default=None, metavar="MIN", help="the action in MIN minutes")
    p.add_argument("--exercise", default=None, metavar="INTENSITY",
                   help="refused with the reason: the twin's model has no exercise term")
    p.add_argument("--when", default=None, metavar="ISO",
                   help="ask the twin as it was at this moment of the journal (default: its last cycle)")
    p.add_argument("--horizon", type=positive_float, default=360.0, metavar="MIN", help="forecast horizon (default 360)")
    add_units_argument(p)
    p.add_argument("--out", type=Path, default=Path("whatif"), metavar="PREFIX",
                   help="write PREFIX.png, PREFIX.html, PREFIX.json (default ./whatif)")
    p.set_defaults(handler=_cmd_whatif)

    c = sub.add_parser(
        "whatif-check",
        help="validate what-if answers against branched simglucose runs (both arms, all patients)",
        description=(
            "At random moments of glucotwin's closed-loop runs on the public protocol, branch the simglucose run, "
            "apply a meal, a bolus or a suspension in the branch, and compare the what-if's forecast (asked of "
            "the loop's live twin at that moment) with what the branch then did, at 30 / 60 / 120 / 240 min. "
            "Writes rows.json and summary.json to --out and prints the tables."
        ),
    )
    c.add_argument("--patients", nargs="+", default=None, metavar="NAME", help="default: all 30")
    c.add_argument("--arms", nargs="+", choices=("hcl", "fcl"), default=["hcl", "fcl"])
    c.add_argument("--moments", type=positive_int, default=2, metavar="N", help="moments per patient and arm (default 2)")
    c.add_argument("--seed-offset", type=int, default=0, metavar="K", help="patient k uses seed k + K (default 0)")
    c.add_argument("--resolve", type=positive_float, default=15.0, metavar="MIN",
                   help="the closed-loop what-if re-plans every MIN minutes (default 15; 5 = every cycle)")
    c.add_argument("--twins", type=Path, default=None, metavar="DIR",
                   help="run the loop on the twins learned for each patient (DIR/<patient>.json, glucotwin learn)")
    c.add_argument("--twin-purpose", choices=("dosing", "forecast"), default="dosing",
                   help="with --twins: the dosing twin (what glucotwin run doses on) or the whole fit")
    c.add_argument("--workers", type=positive_int, default=1, metavar="N")
    c.add_argument("--out", type=Path, default=Path("runs/whatif-check"), metavar="DIR")
    c.set_defaults(handler=_cmd_check)


def _actions(args: argparse.Namespace, now: datetime) -> list:
    from twin.whatif import Bolus, Exercise, Meal, NotModelled, TempBasal

    at_min = 0.0
    if args.in_min is not None:
        at_min = args.in_min
    elif args.at is not None:
        try:
            hh, mm = (int(x) for x in args.at.split(":"))
            target = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        except ValueError:
            raise CliError(f"--at {args.at!r}: expected HH:MM") from None
        if target < now:
            target += timedelta(days=1)
        at_min = (target - now).total_seconds() / 60.0
    try:
        if args.exercise is not None:
            Exercise(args.exercise, args.duration, at_min)
        acts = []
        if args.carbs is not None:
            acts.append(Meal(args.carbs, at_min, args.absorption, announced=not args.unannounced))
        if args.bolus is not None:
            acts.append(Bolus(args.bolus, at_min))
        if args.temp_basal is not None:
            acts.append(TempBasal(args.temp_basal, args.duration, at_min))
        if args.suspend is not None:
            acts.append(TempBasal(0.0, args.suspend, at_min))
    except NotModelled as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(f"the action: {exc}") from None
    if not acts:
        raise CliError("say what to ask about: --carbs, --bolus, --temp-basal or --suspend")
    return acts


def find_config(journal: Path) -> Path | None:
    """The loop config beside a journal: loop.toml there, or the HIL layout's <name>.hil/loop.toml."""
    name = journal.name.removesuffix(".sqlite").removesuffix(".journal")
    for candidate in (journal.parent / "loop.toml", journal.parent / f"{name}.hil" / "loop.toml"):
        if candidate.exists():
            return candidate
    return None


def _cmd_whatif(args: argparse.Namespace) -> int:
    from controller.loop.config.live_config import ConfigError, load_config, load_twin
    from controller.loop.journal import Journal
    from controller.loop.journal_policy import policy_from_journal
    from controller.twin_policy import TwinMPCPolicy

    until = None
    if args.when is not None:
        try:
            until = datetime.fromisoformat(args.when)
        except ValueError:
            raise CliError(f"--when {args.when!r}: expected an ISO date-time") from None
    if args.trace is not None:
        from sim.whatif.trace_policy import policy_at

        try:
            policy, who = policy_at(args.trace, until)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        return _answer(args, policy, who)
    if args.journal is None and args.config is None:
        raise CliError("give --journal FILE, --config loop.toml or --trace CSV")
    config_path = args.config or find_config(args.journal)
    if config_path is None:
        raise CliError(f"no loop config found beside {args.journal}; give --config loop.toml")
    try:
        config = load_config(config_path)
        twin = load_twin(config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    journal_path = args.journal or config.journal_path
    if not Path(journal_path).exists():
        raise CliError(f"{journal_path}: no such journal")
    policy = TwinMPCPolicy(twin, config.control_settings(), limits=config.limits)
    with Journal(journal_path, read_only=True) as journal:
        last = policy_from_journal(policy, journal, config.loop.replay_hours, until)
    if last is None or policy.estimator is None or policy.estimator.readings_accepted == 0:
        raise CliError(f"{journal_path}: no decision with an accepted CGM reading to start from")
    est = policy.estimator
    who = (f"{config.profile.name}, twin at {est.time:%Y-%m-%d %H:%M %Z} (BG {est.glucose_mg_dl:.0f} mg/dL, "
           f"IOB {policy.supervisor.iob_u(est.time):.2f} U)")
    return _answer(args, policy, who)


def _answer(args: argparse.Namespace, policy, who: str) -> int:
    from controller.whatif import closed_loop

    acts = _actions(args, policy.estimator.time)
    horizon = round(args.horizon / 5.0) * 5.0
    try:
        answer = closed_loop(policy, acts, horizon_min=horizon)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    from sim.whatif.present import table, write_outputs

    print(table(answer, who, args.units))
    paths = write_outputs(answer, args.out, who, args.units)
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from sim.trial.cohort import PATIENTS
    from sim.whatif.check import CheckSettings, run_check, summarize
    from sim.whatif.tables import format_summary

    patients = args.patients or list(PATIENTS)
    unknown = [p for p in patients if p not in PATIENTS]
    if unknown:
        raise CliError(f"unknown patient(s): {', '.join(unknown)}")
    settings = CheckSettings(moments=args.moments, seed_offset=args.seed_offset, resolve_min=args.resolve,
                             twins_dir=str(args.twins) if args.twins else None, twin_purpose=args.twin_purpose)
    rows = run_check(patients, list(args.arms), settings, workers=args.workers)
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {"settings": dataclasses.asdict(settings), "patients": patients,
               "arms": list(args.arms), "by_arm": {a: summarize([r for r in rows if r["arm"] == a]) for a in args.arms},
               "all": summarize(rows)}
    (args.out / "rows.json").write_text(json.dumps(rows, indent=0, default=str) + "\n")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(format_summary(summary))
    print(f"wrote {args.out / 'rows.json'} and {args.out / 'summary.json'}")
    return 0
