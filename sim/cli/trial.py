"""``glucotwin trial``: an in-silico trial against simglucose's virtual patients."""

from __future__ import annotations

import argparse
from pathlib import Path

from sim.cli.args import CliError, add_units_argument, non_negative_int, positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "trial",
        help="run an in-silico trial against simglucose's 30 virtual patients",
        description=(
            "Run a closed-loop trial under the public benchmark protocol (BENCHMARK.md): "
            "RandomScenario and Dexcom CGM seeded with k + seed offset for patient k (1..30), "
            "Insulet pump, start 2025-01-01 00:00. Prints a per-patient table and a cohort "
            "summary on true blood glucose, and writes one trace CSV per patient, the same runs in "
            "simglucose's results layout (OUT/simglucose/<patient>.csv) and summary.json to --out."
        ),
    )
    p.add_argument("--controller", action="append", default=None, metavar="NAME|MODULE:ATTR",
                   help="controller: mpc (glucotwin: twin + meal bolus + MPC + safety supervisor, the default), "
                        "mpc-previous (glucotwin before the meal-bolus redesign, eac2684), bb (simglucose "
                        "basal-bolus), basal (programmed basal only); NOT fair references: mpc-oracle (mpc whose "
                        "twin is the simulator's own patient), ceiling-causal and ceiling-clairvoyant "
                        "(nonlinear MPC on the true model and state). Or your own, MODULE:ATTR imported from the "
                        "current directory or sys.path: a simglucose Controller subclass (built per patient, "
                        "given init_state=0, patient_name and/or profile if its __init__ names them), an "
                        "instance, or a callable policy(observation, reward, done, **info); it gets simglucose's "
                        "info and runs with no glucotwin safety supervisor. Repeat --controller to run several "
                        "on the same patients: each into OUT/<controller>/, and OUT/report.html compares them "
                        "(the first against the others)")
    p.add_argument("--arm", choices=("hcl", "fcl"), default="hcl",
                   help="hcl: meal information given at meal time; fcl: none (default hcl)")
    p.add_argument("--patients", nargs="+", metavar="NAME", help="patients, e.g. adult#001 child#003 (default: all 30)")
    p.add_argument("--group", choices=("adolescent", "adult", "child"), help="only this group")
    p.add_argument("--days", type=positive_float, default=3.0, help="simulated days (fractions allowed; default 3)")
    p.add_argument("--seed-offset", type=non_negative_int, default=0, metavar="K",
                   help="patient k uses seed k + K (default 0, the public benchmark)")
    p.add_argument("--sensor", choices=("Dexcom", "GuardianRT", "Navigator"), default="Dexcom",
                   help="simglucose CGM: Dexcom 3-min samples (default), GuardianRT 5-min, Navigator 1-min")
    p.add_argument("--carb-error", type=float, default=0.0, metavar="PCT",
                   help="HCL: announce carbs off by PCT percent (e.g. 30 or -30); off-protocol check")
    p.add_argument("--meal-delay", type=float, default=0.0, metavar="MIN",
                   help="HCL: announce each meal MIN minutes after it starts (a late announcement, or "
                        "what a perfect meal detector could do); off-protocol check")
    p.add_argument("--scale", action="append", default=[], metavar="PARAM=FACTOR",
                   help="multiply a simulator parameter (e.g. Vmx=1.4; repeatable); the controller is not told")
    p.add_argument("--follow-advice", action="store_true",
                   help="the virtual patient eats the rescue carbs of each new advice of the loop when it is given, "
                        "without telling the controller (it sees only the CGM); for validating the advice")
    p.add_argument("--twin", type=Path, default=None, metavar="DIR",
                   help="mpc only: use the twin learned for each patient, DIR/<patient>.json from glucotwin learn "
                        "(default: the twin personalized from the clinical profile)")
    p.add_argument("--learn-days", type=positive_float, default=None, metavar="N",
                   help="onboarding arm: N days of history under simglucose's basal-bolus controller (other "
                        "seeds), learned with glucotwin learn, then this trial on the learned twins")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="parallel worker processes (default: number of cores)")
    p.add_argument("--engine", choices=("local", "dask"), default=None,
                   help="where the patients run: local worker processes (default) or Dask distributed "
                        "(a LocalCluster of --workers processes, or the cluster at --scheduler); "
                        "results are identical")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (implies --engine dask)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output directory (default runs/<controller>-<arm>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-report", action="store_true", help="do not write report.html (glucotwin report) to --out")
    add_units_argument(p)
    p.set_defaults(handler=_cmd_trial)


def _trial_patients(args: argparse.Namespace) -> list[str]:
    from sim.trial.cohort import PATIENTS, patient_index, patients_in_group

    if args.patients:
        chosen = []
        for name in args.patients:
            try:
                patient_index(name)
            except ValueError as exc:
                raise CliError(str(exc)) from None
            if name not in chosen:
                chosen.append(name)
        if args.group:
            chosen = [p for p in chosen if p.startswith(args.group + "#")]
            if not chosen:
                raise CliError(f"none of the given patients is in group {args.group}")
        return chosen
    if args.group:
        return patients_in_group(args.group)
    return list(PATIENTS)


def _controllers(args: argparse.Namespace, names: dict) -> list:
    """Each --controller as a built-in name or a user's factory (imported now, so errors come first)."""
    from sim.trial.controllers import UserControllerError, is_user_spec, user_controller_factory

    chosen = args.controller or [None]
    resolved = []
    for name in chosen:
        if name is None or name in names:
            resolved.append(name)
        elif is_user_spec(name):
            try:
                resolved.append(user_controller_factory(name))
            except UserControllerError as exc:
                raise CliError(str(exc)) from None
        else:
            raise CliError(f"unknown controller {name!r}; available: {', '.join(sorted(names))}, "
                           "or your own as MODULE:ATTR (e.g. examples.toy_controller:ToyController)")
    if len(set(chosen)) != len(chosen):
        raise CliError("the same --controller is given twice")
    return resolved


def _directory_name(controller) -> str:
    return controller if isinstance(controller, str) else controller.spec.replace(":", ".")


def _cohort_comparison(results: list, units: str = "mg") -> str:
    """One line per controller: cohort and group TIR and time below range on true BG."""
    from sim.trial.metrics.units import glucose_units

    u = glucose_units(units)
    plural = {"adolescent": "adolescents", "adult": "adults", "child": "children"}
    heads = ["TIR"] + [f"{sign}{u.threshold(v)}" for sign, v in (("<", 70), ("<", 54), (">", 180), (">", 250))]
    lines = [f"comparison (true BG, % of samples; groups are means over patients; glucose in {u.label}):",
             f"{'controller':<44}{'group':<17}" + "".join(f"{h:>6}" for h in heads) + f"{'mean':>6}"]
    for label, summary in results:
        rows = [("all", summary["cohort"])] + list(summary["groups"].items())
        for i, (group, agg) in enumerate(rows):
            bg = agg["bg"]
            name = label.split(" ")[0] if i == 0 else ""
            mean = f"{u.value(bg['mean']):6{u.spec}}"
            lines.append(f"{name:<44}{plural.get(group, group) + ' (' + str(agg['n']) + ')':<17}{bg['in_range_70_180']:6.1f}"
                         f"{bg['below_70']:6.1f}{bg['below_54']:6.1f}{bg['above_180']:6.1f}{bg['above_250']:6.1f}"
                         f"{mean}")
    return "\n".join(lines)


def _cmd_trial(args: argparse.Namespace) -> int:
    try:
        from sim.trial.baselines import CONTROLLERS, DEFAULT_CONTROLLER
        from sim.trial.protocol import TrialProtocol
        from sim.trial.summary import format_tables
        from sim.trial.run import run_trial
    except ImportError as exc:
        raise CliError(f"trials need the simulator extra: pip install 'glucotwin[sim]' ({exc})") from None

    controllers = [c or DEFAULT_CONTROLLER for c in _controllers(args, CONTROLLERS)]
    if len(controllers) > 1 and (args.twin is not None or args.learn_days is not None):
        raise CliError("--twin and --learn-days work with one --controller mpc, not with several controllers")
    patients = _trial_patients(args)
    scale = []
    for item in args.scale:
        name, _, factor = item.partition("=")
        try:
            scale.append((name, float(factor)))
        except ValueError:
            raise CliError(f"--scale expects PARAM=FACTOR, got {item!r}") from None
    try:
        protocol = TrialProtocol(arm=args.arm, days=args.days, seed_offset=args.seed_offset, sensor=args.sensor,
                                 carb_announcement_factor=1.0 + args.carb_error / 100.0,
                                 meal_delay_min=args.meal_delay,
                                 physiology_scale=tuple(scale), follow_advice=args.follow_advice)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    from sim.engine import make_engine

    try:
        engine = make_engine(args.engine or ("dask" if args.scheduler else "local"), args.workers, args.scheduler)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if len(controllers) == 1:
        _trial_of_one(args, controllers[0], patients, protocol, engine, args.out, format_tables, run_trial)
        return 0
    base = args.out or Path("runs") / f"compare-{args.arm}"
    results, directories = [], []
    for controller in controllers:
        out_dir = base / _directory_name(controller)
        summary = _trial_of_one(args, controller, patients, protocol, engine, out_dir, format_tables, run_trial)
        results.append((summary["controller"], summary))
        directories.append(out_dir)
        print()
    print(_cohort_comparison(results, args.units))
    if not args.no_report:
        _comparison_report(base, directories, args.units)
    return 0


def _comparison_report(base: Path, directories: list[Path], units: str = "mg") -> None:
    """OUT/report.html: the first run against the others (glucotwin report DIR --compare ...)."""
    import sys
    import time

    try:
        from sim.report import write_report

        tic = time.perf_counter()
        path = write_report(directories[0], out=base / "report.html", compare=directories[1:], units=units)
    except Exception as exc:  # a report must never fail the trials it compares
        message = " ".join(f"{type(exc).__name__}: {exc}".split())
        print(f"glucotwin: warning: comparison report not written: {message}", file=sys.stderr)
        return
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB, {time.perf_counter() - tic:.1f} s), comparing "
          + ", ".join(d.name for d in directories))


def _trial_of_one(args, controller, patients, protocol, engine, out, format_tables, run_trial) -> dict:
    """One controller's trial into ``out`` (default runs/<controller>-<arm>): tables, notes, report."""
    from sim.trial.controllers import UserControllerFactory

    user = controller if isinstance(controller, UserControllerFactory) else None
    label = _directory_name(controller)
    if args.twin is not None:
        if controller != "mpc":
            raise CliError("--twin works with --controller mpc only")
        if not args.twin.is_dir():
            raise CliError(f"--twin {args.twin}: not a directory of learned twins")
        from sim.trial.controllers import LearnedTwinMPC

        missing = [p for p in patients if not (args.twin / f"{p}.json").exists()]
        if missing:
            raise CliError(f"--twin {args.twin}: no learned twin for {', '.join(missing[:5])}"
                           + (" ..." if len(missing) > 5 else ""))
        controller, label = LearnedTwinMPC(str(args.twin)), "mpc-learned"
    out_dir = out or Path("runs") / f"{label}-{args.arm}"
    if args.learn_days is not None:
        if label != "mpc":
            raise CliError("--learn-days works with --controller mpc only (and not with --twin)")
        from sim.learn.onboarding import run_onboarding

        out_dir = out or Path("runs") / f"mpc-learned-{args.arm}"
        result = run_onboarding(patients, protocol, args.learn_days, out_dir, workers=args.workers,
                                progress=not args.quiet)
        print(format_tables(result.summary, args.units))
        print(f"wrote history/, twins/, learning.json, {len(patients)} traces and summary.json to {out_dir}")
        if not args.no_report:
            from sim.report import report_after_run

            report_after_run(out_dir, units=args.units)
        return result.summary
    try:
        result = run_trial(controller, patients, protocol, out_dir=out_dir, workers=args.workers,
                           progress=not args.quiet, engine=engine,
                           controller_label=None if user is not None else label)
    except OSError as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:  # a user's controller that returned something simglucose cannot take
        from sim.trial.controllers import UserControllerError

        if isinstance(exc, UserControllerError):
            raise CliError(str(exc)) from None
        raise
    print(format_tables(result.summary, args.units))
    if args.twin is not None:
        from sim.learn.onboarding import write_learning_of_twins

        write_learning_of_twins(out_dir, args.twin, patients)
    if label == "mpc-oracle":
        print("note: mpc-oracle is NOT a fair controller: its twin is the simulator's own patient "
              "(an upper-bound reference, not a result)")
    elif label.startswith("ceiling-"):
        print(f"note: {controller} is NOT a fair controller: it runs on the simulator's true model and state "
              "(a ceiling, not a result)")
    elif user is not None:
        print(f"note: {user.spec} is a user controller: it runs with no glucotwin safety supervisor (its actions "
              "go to simglucose's pump as returned) and is given simglucose's policy info")
    print(f"wrote {len(patients)} traces and summary.json to {out_dir}")
    print(f"wrote simglucose's results layout to {out_dir / 'simglucose'} (<patient>.csv)")
    if not args.no_report:
        from sim.report import report_after_run  # never raises: a failed report is a one-line warning

        report_after_run(out_dir, units=args.units)
    return result.summary
