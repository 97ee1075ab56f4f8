"""``glucotwin report``: one self-contained HTML report of a trial, HIL run or replay."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sim.cli.args import CliError, add_units_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report (AGP, time in ranges, metrics, traces) of a run",
        description=(
            "Write ONE self-contained HTML file (figures embedded, no external links) from a trial or "
            "HIL output directory (summary.json and trace CSVs): protocol and plant, Ambulatory Glucose "
            "Profile of the cohort and each group, time-in-ranges bars, metrics per patient on true BG "
            "and on CGM (mean, GMI, CV, TIR, ...), glycemic risk and variability (time in tight range, GRI, MAGE, "
            "MODD, CONGA-1, J-index) with the GRI grid, and every patient's trace. With --compare, other runs "
            "(another controller or arm) are compared by group and by patient. SOURCE may also be a "
            "replay report JSON (glucotwin replay --json) or a directory holding one: forecast scores, "
            "AGP and time in ranges of the readings, forecasts against readings. "
            "Research software, not a medical device."
        ),
    )
    p.add_argument("source", type=Path, metavar="DIR",
                   help="trial/HIL output directory, or a replay report JSON")
    p.add_argument("--out", type=Path, default=None, metavar="FILE",
                   help="the HTML file (default DIR/report.html; for a replay JSON, its name with .html)")
    p.add_argument("--compare", type=Path, nargs="+", default=[], metavar="DIR",
                   help="other trial/HIL output directories to compare with DIR (e.g. bb against mpc)")
    add_units_argument(p)
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from sim.report import ReportError, write_report

    tic = time.perf_counter()
    try:
        path = write_report(args.source, out=args.out, compare=args.compare, units=args.units)
    except ReportError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        raise CliError(f"cannot write the report: {exc.strerror or exc}") from None
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} kB, {time.perf_counter() - tic:.1f} s)")
    return 0
