"""Why a test skips: the missing program, the Debian package that has it, the line that installs it.

Tests run real components (a mosquitto broker, socat pseudo-terminals, openssl certificates,
headless chromium, systemd-analyze). Where one is missing the test skips, and pytest's ``-ra``
(pyproject addopts) prints this reason in the short summary, e.g.::

    SKIPPED [1] tests/test_hil.py: needs socat (not installed): sudo apt-get install socat

Only the reason text is built here; each test keeps its own skip condition.
"""

from __future__ import annotations

import os
import shutil

# program -> the Debian package that installs it
DEBIAN_PACKAGE = {
    "mosquitto": "mosquitto",
    "mosquitto_passwd": "mosquitto",
    "socat": "socat",
    "openssl": "openssl",
    "chromium": "chromium",
    "systemd-analyze": "systemd",
}
SIM_EXTRA = "pip install 'glucotwin[sim]'"


def _found(program: str) -> bool:
    if program == "mosquitto":  # also where Debian puts it outside a user's PATH
        from sim.hil.broker import find_mosquitto

        return find_mosquitto() is not None
    if program == "chromium":
        return bool(shutil.which("chromium") or shutil.which("chromium-browser") or os.path.exists("/usr/bin/chromium"))
    return shutil.which(program) is not None


def apt_install(*programs: str) -> str:
    """``sudo apt-get install ...`` for the Debian packages of ``programs``."""
    packages = list(dict.fromkeys(DEBIAN_PACKAGE[p] for p in programs))
    return "sudo apt-get install " + " ".join(packages)


def skip_reason(*programs: str, also: str = "") -> str:
    """``needs P (not installed): sudo apt-get install PKG``, naming the programs of ``programs``
    missing on this machine (all of them when none is: the condition was something else)."""
    for program in programs:
        if program not in DEBIAN_PACKAGE:
            raise KeyError(f"no Debian package known for {program!r}; add it to DEBIAN_PACKAGE")
    missing = [p for p in programs if not _found(p)] or list(programs)
    reason = f"needs {' and '.join(missing)} (not installed): {apt_install(*missing)}"
    return reason + (f"; {also}" if also else "")
