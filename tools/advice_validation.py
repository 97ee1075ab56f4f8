"""Issue 19's advice validation: each case with and without the virtual patient following the advice.

    python tools/advice_validation.py --out runs/advice [--workers 2] [--least-every 1] [--seed-offset-shift 0]

Cases (30 patients, glucotwin's default controller ``mpc`` with its default advice settings):

- ``fcl``: the public FCL protocol, ``glucotwin trial --arm fcl`` (3 days, seed offset 0);
- ``sensitive``: HCL with patients 40 % more insulin-sensitive than their profile,
  ``glucotwin trial --arm hcl --days 2 --seed-offset 5000 --scale Vmx=1.4 --scale kp3=1.4``.

Each case runs once without following (``DIR/<case>/without``, what ``glucotwin trial`` writes) and
once with ``--follow-advice`` (``DIR/<case>/with``, plus ``advice_events.json``: for every
``least_every``-th carb advice event, the least rescue in 5-g steps, eaten at the advice, that keeps
true BG >= 70 mg/dL from 30 to 120 min after it, measured on copies of the run). Prints and writes
``DIR/advice_validation.md``. ``--seed-offset-shift 7000`` moves every seed offset (for tuning on
seeds that are never reported).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

CASES = {
    "fcl": dict(arm="fcl", days=3.0, seed_offset=0, physiology_scale=()),
    "sensitive": dict(arm="hcl", days=2.0, seed_offset=5000, physiology_scale=(("Vmx", 1.4), ("kp3", 1.4))),
}
COMMANDS = {
    "fcl": "glucotwin trial --arm fcl",
    "sensitive": "glucotwin trial --arm hcl --days 2 --seed-offset 5000 --scale Vmx=1.4 --scale kp3=1.4",
}


def main() -> int:
    from sim.trial.advice_validation import compare, markdown, run_follow
    from sim.trial.cohort import PATIENTS
    from sim.trial.protocol import TrialProtocol
    from sim.trial.run import run_trial

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--least-every", type=int, default=1, help="measure the least sufficient rescue of every k-th event (0: none)")
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--patients", nargs="+", default=None)
    ap.add_argument("--seed-offset-shift", type=int, default=0)
    ap.add_argument("--reuse", action="store_true", help="keep runs already written (summary.json present)")
    args = ap.parse_args()
    patients = args.patients or list(PATIENTS)
    report = []
    for case in args.cases:
        kw = dict(CASES[case])
        kw["seed_offset"] += args.seed_offset_shift
        without, with_ = args.out / case / "without", args.out / case / "with"
        if not (args.reuse and (without / "summary.json").exists()):
            run_trial("mpc", patients, TrialProtocol(**kw), out_dir=without, workers=args.workers, progress=False)
        if not (args.reuse and (with_ / "advice_events.json").exists()):
            run_follow("mpc", patients, TrialProtocol(follow_advice=True, **kw), with_, workers=args.workers,
                       least_every=args.least_every)
        result = compare(without, with_)
        (args.out / case / "comparison.json").write_text(json.dumps(result, indent=2))
        command = COMMANDS[case] + (f" (seed offset shifted by {args.seed_offset_shift})" if args.seed_offset_shift else "")
        report.append(markdown(result, f"{case}: `{command}` without / with `--follow-advice`"))
        print(report[-1], flush=True)
    (args.out / "advice_validation.md").write_text("\n".join(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
