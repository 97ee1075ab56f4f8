"""``glucotwin faults``: a fault campaign on one HIL patient (see :mod:`sim.hil.faults.campaign`).

    glucotwin faults [--patient adult#003] [--days D] [--seed N] [--out DIR] [--json FILE]

Runs the HIL harness (real mosquitto, loop process, pump firmware process) with
a fault-injecting serial relay instead of socat and injects, on a schedule drawn
from ``--seed``: CGM dropouts, spikes, compression lows, duplicated and
out-of-order entries, duplicated carb treatments, malformed MQTT messages, a
broker restart, serial frame drops / lost ACKs / corruption / duplication /
unplugging, and SIGKILLs of the loop process (some mid-cycle) followed by
restarts on the same journal. Prints a table and writes JSON (default
``DIR/faults.json``): faults injected by type, doses the pump executed,
duplicate doses, journal records lost, safety invariant violations, loop
restarts and whether the loop resumed, and TIR / <70 / <54 on true BG.

Exit status: 0 when duplicates, lost records and violations are all 0 and the
loop resumed after its last restart; 1 otherwise; 2 on a usage or setup error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sim.cli.args import CliError, non_negative_int, positive_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "faults",
        help="fault campaign: one HIL patient under CGM, MQTT, serial and loop-crash faults; checks the journal",
        description=(
            "Run one virtual patient through the hardware-in-the-loop harness while injecting faults on a "
            "seeded schedule (CGM dropouts, spikes, compression lows, duplicates, out-of-order and malformed "
            "messages, a broker restart, serial frame drops, lost ACKs, corruption, unplugging, and SIGKILLs "
            "of the loop process followed by restarts), then compare the pump's audit trail with the loop's "
            "journal. Exits 1 on any duplicate dose, lost journal record or safety invariant violation."
        ),
    )
    p.add_argument("--patient", default="adult#003", metavar="NAME", help="patient (default adult#003)")
    p.add_argument("--days", type=positive_float, default=1.0, help="simulated days (default 1; at least ~0.1)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the fault schedule (default 0)")
    p.add_argument("--arm", choices=("hcl", "fcl"), default="hcl", help="hcl (default) or fcl")
    p.add_argument("--out", type=Path, default=Path("runs/faults"), metavar="DIR", help="output directory")
    p.add_argument("--json", type=Path, default=None, metavar="FILE", help="write the figures here "
                   "(default DIR/faults.json)")
    p.add_argument("--verbose", action="store_true", help="print each loop kill and broker restart")
    p.set_defaults(handler=_cmd_faults)


def _cmd_faults(args: argparse.Namespace) -> int:
    try:
        from sim.trial.cohort import PATIENTS
        from sim.hil.faults.campaign import run_fault_campaign
        from sim.hil.faults.report import format_report
    except ImportError as exc:
        raise CliError(f"the fault campaign needs the simulator extra: pip install 'glucotwin[sim]' ({exc})") from None
    if args.patient not in PATIENTS:
        raise CliError(f"unknown patient: {args.patient}")
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if args.verbose else None
    try:
        result = run_fault_campaign(args.patient, args.days, args.seed, args.out, arm=args.arm, log=say)
    except (RuntimeError, ValueError, OSError) as exc:
        raise CliError(f"fault campaign failed: {exc}") from None
    print(format_report(result.report))
    path = args.json or args.out / "faults.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.report, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return 0 if result.ok else 1
