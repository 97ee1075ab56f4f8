"""ReportError, and the one-line warning of a report that could not be written."""

from __future__ import annotations

import sys


class ReportError(Exception):
    """An input the report cannot be built from (one line, for the CLI)."""


def _warn(exc: BaseException) -> None:
    message = " ".join(f"{type(exc).__name__}: {exc}".split())
    print(f"glucotwin: warning: report not written: {message}", file=sys.stderr)
