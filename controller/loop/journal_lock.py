"""One loop per journal: an exclusive OS lock on ``<journal>.lock``.

Two loops writing one journal both dose (each restores the other's insulin only
in part, and their cycle numbers collide), so the journal's writer takes an
exclusive ``fcntl.flock`` on a lock file beside it for as long as it is open.
The kernel drops the lock when the holding process dies, even by SIGKILL, so a
crashed loop never blocks its own restart; a stale lock file is harmless.

The lock file holds a line naming the holder (pid, host, start time) so that a
refused second loop can say who has the journal. The lock is advisory: it
binds glucotwin processes (``glucotwin run``, ``glucotwin journal salvage``),
which all take it; readers (reports, ``journal check``) open the journal read
only and need none. It does not reach across machines: a second Pi restored
from a backup has its own journal, and only the pump's own limits and history
guard against it (README, "One loop per pump").
"""

from __future__ import annotations

import fcntl
import os
import socket
from datetime import UTC, datetime
from pathlib import Path


class JournalLocked(RuntimeError):
    """Another process holds the journal (the message names it and the holder)."""


class JournalLock:
    """An exclusive, non-blocking lock on ``path`` + ``.lock``, held until :meth:`release`."""

    def __init__(self, journal_path: Path) -> None:
        self.path = Path(str(journal_path) + ".lock")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # BlockingIOError: held; others (e.g. ENOLCK) refuse too rather than share
            holder = _read_holder(fd)
            os.close(fd)
            raise JournalLocked(f"journal {journal_path} is in use by another loop ({holder}); "
                                f"one loop per journal: stop that one first") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {datetime.now(UTC).isoformat(timespec='seconds')}\n".encode())
        os.fsync(fd)
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 200).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"
