"""``glucotwin bench``: the figures of BENCHMARK.md's compute table, measured in one run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from sim.cli.args import CliError, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="measure twin fidelity and speed against simglucose, and forecast accuracy",
        description=(
            "Twin model vs simglucose (BG RMSE over 3 days, all 30 patients, identical inputs), "
            "twin speed-up over simglucose (measured side by side), and twin forecast RMSE at 30 and "
            "60 minutes in fully-closed-loop runs (glucotwin's MPC, unannounced meals) of all 30 patients, "
            "the control cycle's compute time inside closed-loop runs, and the live loop's footprint "
            "(startup_s: glucotwin run --help; loop_rss_mb: the loop process with MQTT and serial attached, "
            "in a HIL run). Takes about 5 minutes on 2 cores."
        ),
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="write the figures as flat JSON keys")
    p.add_argument("--quick", action="store_true", help="3 patients, half a day: a smoke run, not the benchmark")
    p.add_argument("--workers", type=positive_int, default=None, metavar="N", help="worker processes for trials")
    p.set_defaults(handler=_cmd_bench)


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.json is not None:
        try:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.touch()
        except OSError as exc:
            raise CliError(f"cannot write {args.json}: {exc.strerror or exc}") from None
    try:
        from sim.bench.figures import format_bench, run_bench
    except ImportError as exc:
        raise CliError(f"bench needs the simulator extra: pip install 'glucotwin[sim]' ({exc})") from None
    result = run_bench(quick=args.quick, workers=args.workers)
    print(format_bench(result))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
