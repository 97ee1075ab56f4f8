"""``glucotwin journal check|salvage FILE``: inspect or rebuild a damaged journal."""

from __future__ import annotations

import argparse
from pathlib import Path

from sim.cli.args import CliError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("journal", help="check or salvage a loop journal (SQLite)",
                       description="Check a journal (read only, safe beside a running loop) or salvage a damaged "
                                   "one: every valid event is kept in a fresh journal at FILE, the damaged file is "
                                   "moved aside as FILE.damaged-<time>, never deleted. Start the loop again after a "
                                   "salvage: it asks the pump for the deliveries the journal lost.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (("check", "report what is wrong; exit 0 when the journal is sound, 1 when damaged"),
                       ("salvage", "rebuild FILE from its valid events (no loop may be running on it)")):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("file", type=Path, metavar="FILE")
        a.set_defaults(handler=_cmd)


def _cmd(args: argparse.Namespace) -> int:
    from controller.loop.journal_salvage import check, salvage

    if not args.file.exists():
        raise CliError(f"journal {args.file} does not exist")
    if args.action == "check":
        report = check(args.file)
        print("\n".join(report.lines()))
        return 0 if report.ok else 1
    result = salvage(args.file)
    print(f"journal {args.file}: kept {result.kept} events, dropped {len(result.dropped)}; "
          f"the damaged file is at {result.damaged_copy}")
    for line in result.dropped[:20]:
        print(f"dropped: {line}")
    return 0
