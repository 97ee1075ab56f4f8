"""The receiver's API secret, and the lockout of client addresses that guess it.

**Authentication**: every request except ``status`` needs the header
``api-secret: <SHA-1 hex of the API secret>`` (Nightscout's convention; xDrip+
sends it when its URL is ``http://SECRET@host:port/api/v1/``); otherwise 401.
Nightscout's access tokens (``?token=`` or ``Authorization: Bearer``) are not
supported: they are subjects with roles issued by a Nightscout admin, which a
receiver with one secret does not have. The secret must have at least
:data:`MIN_SECRET_CHARS` (12) characters, as Nightscout requires. The hash is a
password equivalent (see :mod:`sensors.nightscout.tls`).

**Wrong secrets** are rate-limited per client address: after
``lockout_failures`` (5) wrong ``api-secret`` values within ``lockout_window_s``
(5 min), every request of that address that needs the secret is answered 429
with ``Retry-After`` for ``lockout_s`` (5 min), *even with the correct secret*:
otherwise the lockout would still answer each guess, and guessing would go on.
A request without any secret is answered 401 and does not count (it is no
guess). Lockouts are logged with the address, never with the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict, deque
from typing import Callable

MIN_SECRET_CHARS = 12
LOCKOUT_FAILURES = 5
LOCKOUT_WINDOW_S = 300.0
LOCKOUT_S = 300.0
"""``LOCKOUT_FAILURES`` wrong secrets from one address within ``LOCKOUT_WINDOW_S`` lock it out for ``LOCKOUT_S``."""
MAX_TRACKED_ADDRESSES = 4096
"""Addresses whose wrong secrets are remembered (the oldest forgotten beyond), so memory stays bounded."""


def secret_sha1(api_secret: str) -> str:
    """The SHA-1 hex an uploader sends for ``api_secret``; ValueError when the secret is too short."""
    if not isinstance(api_secret, str) or len(api_secret) < MIN_SECRET_CHARS:
        raise ValueError(f"the Nightscout API secret must have at least {MIN_SECRET_CHARS} characters")
    return hashlib.sha1(api_secret.encode("utf-8")).hexdigest()


def secret_matches(header_value: str | None, sha1: str) -> bool:
    """Whether ``header_value`` is ``sha1`` (case and surrounding space ignored; constant time)."""
    if not header_value:
        return False
    return hmac.compare_digest(header_value.strip().lower().encode(), sha1.encode())


class AuthGuard:
    """Wrong secrets per client address, and the lockouts they cause (thread-safe, bounded)."""

    def __init__(self, failures: int, window_s: float, lockout_s: float, clock: Callable[[], float]) -> None:
        self.failures, self.window_s, self.lockout_s, self.clock = failures, window_s, lockout_s, clock
        self._lock = threading.Lock()
        self._wrong: OrderedDict[str, deque[float]] = OrderedDict()
        self._locked_until: dict[str, float] = {}

    def locked_for_s(self, address: str) -> float:
        """Seconds ``address`` stays locked out (0 when it is not)."""
        with self._lock:
            until = self._locked_until.get(address)
            if until is None:
                return 0.0
            left = until - self.clock()
            if left <= 0:
                del self._locked_until[address]
                return 0.0
            return left

    def wrong(self, address: str) -> bool:
        """Count a wrong secret from ``address``; True when it starts a lockout."""
        with self._lock:
            now = self.clock()
            times = self._wrong.pop(address, None) or deque()
            times.append(now)
            while times and now - times[0] > self.window_s:
                times.popleft()
            if len(times) >= self.failures:
                self._locked_until[address] = now + self.lockout_s
                return True
            self._wrong[address] = times
            while len(self._wrong) > MAX_TRACKED_ADDRESSES:
                self._wrong.popitem(last=False)
            while len(self._locked_until) > MAX_TRACKED_ADDRESSES:  # oldest lockout first (insertion order)
                self._locked_until.pop(next(iter(self._locked_until)))
            return False

    def right(self, address: str) -> None:
        """A correct secret (from an address not locked out) clears its wrong ones."""
        with self._lock:
            self._wrong.pop(address, None)


def judge_secret(guard: AuthGuard, sha1: str, address: str, header_value: str | None,
                 count: Callable[[str], None], log: Callable[[str], None]) -> tuple[str, float]:
    """Judge a request's ``api-secret`` from ``address``: ``("ok", 0)``, ``("missing", 0)``,
    ``("wrong", 0)`` or ``("locked", seconds left)``; counts wrong secrets and starts lockouts.

    ``count`` is told ``"locked_out"``, ``"wrong_secrets"`` and ``"lockouts"``;
    ``log`` gets one line when a lockout starts.
    """
    left = guard.locked_for_s(address)
    if left > 0:
        count("locked_out")
        return "locked", left
    if not header_value:
        return "missing", 0.0
    if secret_matches(header_value, sha1):
        guard.right(address)
        return "ok", 0.0
    count("wrong_secrets")
    if guard.wrong(address):
        count("lockouts")
        log(f"nightscout receiver: {guard.failures} wrong API secrets from {address} within "
            f"{guard.window_s:g} s; refusing its requests for {guard.lockout_s:g} s")
    return "wrong", 0.0
