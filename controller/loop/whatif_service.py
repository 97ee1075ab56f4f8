"""What-if over MQTT in ``glucotwin run``: signed questions in, answers out, never a dose.

Topics (relative to ``{prefix}/{subject}``):

- ``whatif/request``: the app publishes a question, with MQTT 5's *response
  topic* and *correlation data* properties;
- ``whatif/response/<anything>``: the loop publishes the answer there (QoS 1),
  with the request's correlation data. A response topic anywhere else is
  refused: the loop's broker user may write pump commands, and a question must
  never be able to make it write there.

A question is JSON::

    {"time": "2026-12-07T18:30:00+00:00", "nonce": "a1b2...",
     "actions": [{"kind": "meal", "carbs_g": 60, "absorption": "fast", "at_min": 0},
                 {"kind": "bolus", "units_u": 2},
                 {"kind": "temp_basal", "rate_u_per_h": 0, "duration_min": 60}],
     "horizon_min": 360,
     "signature": "<hex HMAC-SHA256 over the canonical JSON of every other field>"}

The canonical JSON is ``json.dumps(fields, sort_keys=True, separators=(",", ":"))``
of the object without ``signature``. The key is ``[mqtt] whatif_key_file``
(hex, at least 16 bytes); without it the service does not start. A question
is refused, with the reason in the answer, when its signature is missing or
wrong, when its time is more than :data:`MAX_SKEW_S` from the loop's clock,
when its nonce was seen before (replay), when the service is busy
(:data:`MAX_QUEUED`), or when its actions are invalid. Broker authentication
and ACL (deploy/mosquitto/acl: only the subject's app writes the request
topic) come first; the signature says the question came from the person's
app even on a broker others share.

The answers are computed in the service's own thread on a *copy* of the
policy the runtime hands over after each cycle (:meth:`WhatIfService.update`),
so a question never waits for a cycle, a cycle never waits for a question,
and nothing the what-if does can touch the live policy or the pump (this
module imports no pump port; tested). The two still share the CPU: the
service computes at most one question per :data:`MIN_GAP_S`, and ``glucotwin
bench`` measures what a flood of questions costs the cycle.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import queue
import threading
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable

from controller.twin_policy import TwinMPCPolicy
from controller.whatif import closed_loop
from twin.whatif import Bolus, Meal, TempBasal

MAX_SKEW_S = 300.0
MAX_QUEUED = 2
MIN_GAP_S = 1.0
"""At most one question computed per this many seconds: the service shares the CPU (and Python's
interpreter lock) with the control cycle, and a flood of questions must not slow it down much
(``glucotwin bench``: ``whatif_cycle_ratio``)."""
MIN_KEY_BYTES = 16
NONCES_KEPT = 1024


def canonical(fields: dict[str, Any]) -> bytes:
    return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def sign(key: bytes, fields: dict[str, Any]) -> str:
    """The signature an app puts in a question (``fields`` without ``signature``)."""
    return hmac.new(key, canonical(fields), hashlib.sha256).hexdigest()


def read_key(path: str) -> bytes:
    with open(path) as handle:
        text = handle.read().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path}: the what-if key must be hex") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(f"{path}: the what-if key must be at least {MIN_KEY_BYTES} bytes")
    return key


class Refused(ValueError):
    pass


def parse_actions(items: Any) -> list:
    if not isinstance(items, list) or not 1 <= len(items) <= 8:
        raise Refused("actions must be a list of 1..8 actions")
    out = []
    for item in items:
        if not isinstance(item, dict):
            raise Refused("each action must be an object")
        kind = item.get("kind")
        try:
            at = float(item.get("at_min", 0.0))
            if kind == "meal":
                out.append(Meal(float(item["carbs_g"]), at, str(item.get("absorption", "medium")),
                                bool(item.get("announced", True))))
            elif kind == "bolus":
                out.append(Bolus(float(item["units_u"]), at))
            elif kind == "temp_basal":
                out.append(TempBasal(float(item["rate_u_per_h"]), float(item["duration_min"]), at))
            else:
                raise Refused(f"unknown action kind {kind!r} (meal, bolus, temp_basal; exercise is not in the model)")
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, Refused):
                raise
            raise Refused(f"bad {kind} action: {exc}") from None
    return out


class WhatIfService:
    """Verifies questions and answers them on the latest policy copy, in its own thread."""

    def __init__(self, key: bytes, base: str, publish: Callable[[str, bytes, bytes | None], None],
                 clock: Callable[[], datetime]) -> None:
        self.key, self.base, self.publish, self.clock = key, base, publish, clock
        self.request_topic = f"{base}/whatif/request"
        self.response_prefix = f"{base}/whatif/response/"
        self._policy: TwinMPCPolicy | None = None
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=MAX_QUEUED)
        self._nonces: deque[str] = deque(maxlen=NONCES_KEPT)
        self.answered = self.refused = 0
        self._thread = threading.Thread(target=self._work, name="glucotwin-whatif", daemon=True)
        self._thread.start()

    # --- runtime side -----------------------------------------------------------------------
    def update(self, policy: TwinMPCPolicy) -> None:
        """After a cycle: the policy as it is now, copied (the service never holds the live one)."""
        snapshot = copy.deepcopy(policy)
        with self._lock:
            self._policy = snapshot

    # --- MQTT side ----------------------------------------------------------------------------
    def on_message(self, payload: bytes, response_topic: str | None, correlation: bytes | None) -> None:
        """A question arrived (called from the MQTT thread; returns at once)."""
        if not response_topic or not response_topic.startswith(self.response_prefix) \
                or any(c in response_topic for c in "+#"):
            self.refused += 1  # no answer at all: the loop writes only under whatif/response/
            return
        try:
            actions, horizon = self.verify(payload)
        except Refused as exc:
            self._answer(response_topic, correlation, {"error": f"refused: {exc}"})
            return
        try:
            self._queue.put_nowait((actions, horizon, response_topic, correlation))
        except queue.Full:
            self._answer(response_topic, correlation, {"error": "refused: busy, ask again shortly"})

    def verify(self, payload: bytes) -> tuple[list, float]:
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise Refused("not JSON") from None
        if not isinstance(data, dict):
            raise Refused("not a JSON object")
        signature = data.pop("signature", None)
        if not isinstance(signature, str) or not hmac.compare_digest(signature, sign(self.key, data)):
            raise Refused("bad signature")
        try:
            sent = datetime.fromisoformat(str(data.get("time")))
        except ValueError:
            raise Refused("time must be an ISO date-time") from None
        if sent.tzinfo is None:
            sent = sent.replace(tzinfo=timezone.utc)
        if abs((self.clock() - sent).total_seconds()) > MAX_SKEW_S:
            raise Refused(f"time is more than {MAX_SKEW_S:g} s from the loop's clock")
        nonce = data.get("nonce")
        if not isinstance(nonce, str) or not 8 <= len(nonce) <= 64:
            raise Refused("nonce must be a string of 8..64 characters")
        if nonce in self._nonces:
            raise Refused("replayed (nonce seen before)")
        self._nonces.append(nonce)
        horizon = float(data.get("horizon_min", 360.0))
        if not 30.0 <= horizon <= 720.0:
            raise Refused("horizon_min must be within 30..720")
        return parse_actions(data.get("actions")), round(horizon / 5.0) * 5.0

    def _answer(self, topic: str, correlation: bytes | None, body: dict[str, Any]) -> None:
        if "error" in body:
            self.refused += 1
        else:
            self.answered += 1
        self.publish(topic, json.dumps(body).encode(), correlation)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            actions, horizon, topic, correlation = item
            with self._lock:
                policy = self._policy
            if policy is None or policy.estimator is None or policy.estimator.readings_accepted == 0:
                self._answer(topic, correlation, {"error": "refused: the twin has no accepted CGM reading yet"})
                continue
            try:
                answer = closed_loop(policy, actions, horizon_min=horizon)
            except ValueError as exc:
                self._answer(topic, correlation, {"error": f"refused: {exc}"})
                continue
            self._answer(topic, correlation, answer.to_dict())
            time.sleep(MIN_GAP_S)

    def close(self) -> None:
        try:
            self._queue.put(None, timeout=1.0)
        except queue.Full:
            return  # the daemon thread ends with the process
        self._thread.join(timeout=5.0)
