"""``glucotwin population``: closed loop on a large virtual population (plant: the batch twin)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sim.cli.args import CliError, add_units_argument, non_negative_int, positive_float, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "population",
        help="closed loop on a virtual population around simglucose's 30 patients (plant: glucotwin batch twin)",
        description=(
            "Generate a seeded virtual population (physiology varied log-normally around simglucose's 30 "
            "patients, each with a consistent steady state and clinical profile) and run it in closed loop. "
            "The plant is glucotwin's batch twin (UVA/Padova 2008), NOT simglucose; meals, CGM noise and "
            "pump follow simglucose's models. Prints the distribution of time in range, below 70 and below 54 "
            "over the population and the throughput; writes summary.json and patients.csv to --out."
        ),
    )
    p.add_argument("--size", type=positive_int, default=100, metavar="N", help="virtual patients (default 100)")
    p.add_argument("--seed", type=non_negative_int, default=0, metavar="S",
                   help="population seed: physiology, meals and CGM noise (default 0)")
    p.add_argument("--days", type=positive_float, default=1.0, help="simulated days (fractions allowed; default 1)")
    p.add_argument("--controller", choices=("mpc", "bb", "basal"), default="mpc",
                   help="mpc (glucotwin, default), bb (simglucose's basal-bolus rule on the clinical profile) "
                        "or basal (programmed basal only: the plant's throughput)")
    p.add_argument("--arm", choices=("hcl", "fcl"), default="hcl",
                   help="hcl: meal information at meal time; fcl: none (default hcl)")
    p.add_argument("--sensor", choices=("Dexcom", "GuardianRT", "Navigator"), default="Dexcom",
                   help="simglucose CGM noise model and sample period (default Dexcom, 3 min)")
    p.add_argument("--workers", type=positive_int, default=None, metavar="W",
                   help="worker processes (default: number of cores)")
    p.add_argument("--engine", choices=("local", "dask"), default=None,
                   help="local worker processes (default) or Dask distributed; results are identical")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (implies --engine dask)")
    p.add_argument("--chunk", type=positive_int, default=None, metavar="K",
                   help="patients per job, simulated as one batch (default: about 4 jobs per worker, at most 128)")
    p.add_argument("--scaling", action="store_true",
                   help="also run the same population on 1 worker first and report the speedup to --workers")
    p.add_argument("--traces", action="store_true", help="also write traces.npz (glucose, CGM, insulin, carbs)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="output directory (default runs/population-<controller>-<arm>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_units_argument(p)
    p.set_defaults(handler=_cmd_population)


def _cmd_population(args: argparse.Namespace) -> int:
    try:
        from sim.population import PopulationSpec, format_population_tables, run_population
    except ImportError as exc:
        raise CliError(f"populations need the simulator extra: pip install 'glucotwin[sim]' ({exc})") from None
    try:
        spec = PopulationSpec(size=args.size, seed=args.seed, days=args.days, controller=args.controller,
                              arm=args.arm, sensor=args.sensor)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    engine = args.engine or ("dask" if args.scheduler else "local")
    out_dir = args.out or Path("runs") / f"population-{args.controller}-{args.arm}"
    try:
        result = run_population(spec, workers=args.workers, engine=engine, scheduler=args.scheduler,
                                out_dir=out_dir, progress=not args.quiet, chunk_size=args.chunk,
                                traces=args.traces, scaling=args.scaling)
    except (OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(format_population_tables(result.summary, args.units))
    written = "summary.json, patients.csv" + (" and traces.npz" if args.traces else "")
    print(f"wrote {written} to {out_dir}")
    return 0
