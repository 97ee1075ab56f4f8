"""Malformed MQTT payloads: what the campaign's second client sends to the loop's CGM topic.

Random bytes, bad UTF-8, truncated or wrong JSON, NaN, oversize and deeply
nested payloads: none of them is a reading with a usable time, and the loop's
MQTT source must reject each one without stopping.
"""

from __future__ import annotations

import json
import random


def malformed_payload(rng: random.Random) -> bytes:
    """A payload the loop's MQTT source must reject (never a reading with a usable time)."""
    choice = rng.randrange(12)
    if choice == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
    if choice == 1:
        return b"\xff\xfe" + bytes(rng.randrange(128, 256) for _ in range(rng.randint(1, 40)))
    if choice == 2:
        return json.dumps({"type": "sgv", "sgv": 120, "date": 1735689600000}).encode()[: rng.randint(1, 40)]
    if choice == 3:
        return rng.choice([b"42", b"\"sgv\"", b"null", b"true", b"[]", b"{}", b"[1, 2, 3]"])
    if choice == 4:
        return json.dumps({"type": "sgv", "sgv": rng.randint(40, 400)}).encode()  # no time
    if choice == 5:
        return json.dumps({"type": "sgv", "sgv": "high", "date": "yesterday"}).encode()
    if choice == 6:
        return b'{"type": "sgv", "sgv": NaN, "date": 1735689600000}'
    if choice == 7:
        return b"[" * 5000 + b"]" * 5000
    if choice == 8:
        return b'{"sgv": "' + b"9" * (70 * 1024) + b'"}'
    if choice == 9:
        return json.dumps([{"type": "mbg"}, {"sgv": None}, 17]).encode()
    if choice == 10:
        return json.dumps({"type": "sgv", "sgv": 120, "dateString": "not a time"}).encode()
    return "{\"sgv\": \"\u00e9\u6f22\", \"date\": {}}".encode()
