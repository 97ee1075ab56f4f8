"""``glucotwin hil``: the hardware-in-the-loop harness (patient, loop and pump as processes)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sim.cli.args import CliError, add_units_argument, positive_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hil",
        help="hardware-in-the-loop run: virtual patient -> MQTT -> loop -> serial -> virtual pump firmware",
        description=(
            "Run virtual patients against the live loop in separate processes: the patient (simglucose "
            "patient and sensor) publishes CGM over MQTT, the loop process (glucotwin run) decides and "
            "commands the reference virtual pump firmware over a serial pseudo-terminal pair, and the "
            "pump's deliveries drive the patient. A lockstep simulated clock runs far faster than real "
            "time. Writes the trial's traces and summary.json plus each loop's SQLite journal and logs. "
            "Without --broker a private mosquitto is started on a free loopback port."
        ),
    )
    p.add_argument("--patients", nargs="+", metavar="NAME", default=["adult#003"],
                   help="patients (default adult#003)")
    p.add_argument("--arm", choices=("hcl", "fcl"), default="hcl", help="hcl (default) or fcl")
    p.add_argument("--days", type=positive_float, default=1.0, help="simulated days (default 1)")
    p.add_argument("--seed-offset", type=int, default=0, metavar="K", help="patient k uses seed k + K")
    p.add_argument("--sensor", choices=("Dexcom", "GuardianRT"), default="Dexcom", help="simglucose CGM")
    p.add_argument("--broker", default=None, metavar="URL", help="use this broker (mqtt://host:port)")
    p.add_argument("--out", type=Path, default=Path("runs/hil"), metavar="DIR", help="output directory")
    p.add_argument("--pump-increment", type=positive_float, default=0.001, metavar="U",
                   help="the virtual pump's bolus (U) and rate (U/h) resolution; default 0.001, the protocol's; "
                        "0.05 models a typical patch pump")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--nightscout", default=None, metavar="URL",
                   help="the loop uploads entries, treatments and devicestatus to this Nightscout (API secret from "
                        "--nightscout-secret-file or $NIGHTSCOUT_API_SECRET)")
    p.add_argument("--nightscout-secret-file", type=Path, default=None, metavar="FILE",
                   help="file holding the Nightscout API secret")
    p.add_argument("--nightscout-receiver", action="store_true",
                   help="upload to a local Nightscout-API receiver; what it got goes to <out>/nightscout-received.json")
    p.add_argument("--no-report", action="store_true", help="do not write report.html (glucotwin report) to --out")
    add_units_argument(p)
    p.set_defaults(handler=_cmd_hil)


def _cmd_hil(args: argparse.Namespace) -> int:
    try:
        from sim.trial.cohort import PATIENTS
        from sim.hil.rig import hil_summary_extra, run_hil
        from sim.trial.protocol import TrialProtocol
        from sim.trial.summary import format_tables
    except ImportError as exc:
        raise CliError(f"the HIL harness needs the simulator extra: pip install 'glucotwin[sim]' ({exc})") from None
    unknown = [p for p in args.patients if p not in PATIENTS]
    if unknown:
        raise CliError(f"unknown patient(s): {', '.join(unknown)}")
    try:
        protocol = TrialProtocol(arm=args.arm, days=args.days, seed_offset=args.seed_offset, sensor=args.sensor)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    from sim.hil.nightscout import finish_local_receiver, target_from_cli

    try:
        receiver, target = target_from_cli(args.nightscout, args.nightscout_secret_file, args.nightscout_receiver)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    try:
        result = run_hil(args.patients, protocol, args.out, broker=args.broker, progress=not args.quiet,
                         pump_increment_u=args.pump_increment, nightscout=target)
    except (RuntimeError, ValueError, OSError) as exc:
        raise CliError(f"HIL run failed: {exc}") from None
    finally:
        if receiver is not None:
            print(finish_local_receiver(receiver, args.out))
    print(format_tables(result.summary, args.units))
    counts = hil_summary_extra(args.out, args.patients)
    for patient, c in counts.items():
        print(f"journal {patient}: " + ", ".join(f"{k} {v}" for k, v in sorted(c.items())))
    print(f"wrote traces, summary.json and journals to {args.out}")
    if not args.no_report:
        from sim.report import report_after_run  # never raises: a failed report is a one-line warning

        report_after_run(args.out, units=args.units)
    return 0
