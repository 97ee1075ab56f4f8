"""Example messages for PROTOCOL.md (regenerate: ``python -m firmware_bridge.examples``).

All use the test key 000102...1f (32 bytes), device ``pump-0001`` and fixed
times, so the bytes are reproducible; ``tests/test_pump_protocol.py`` checks
that PROTOCOL.md shows exactly these bytes.
"""

from __future__ import annotations

from .framing import encode_frame
from .protocol import Command
from .virtual_pump import PumpSettings, VirtualPump

EXAMPLE_KEY = bytes(range(32))
EXAMPLE_DEVICE = "pump-0001"
EXAMPLE_T0_MS = 1_700_000_000_000


def example_messages() -> list[tuple[str, bytes]]:
    """(title, message body) pairs; replies are what the reference pump answers."""
    t0 = EXAMPLE_T0_MS
    pump = VirtualPump(PumpSettings(EXAMPLE_DEVICE, max_rate_u_per_h=5.0, max_bolus_u=10.0, reservoir_u=300.0,
                                    scheduled_basal_u_per_h=1.0), EXAMPLE_KEY)
    pump.power_on(t0)
    temp = Command.temp_basal(1, EXAMPLE_DEVICE, 1.5, 30, t0, t0 + 60_000).encode(EXAMPLE_KEY)
    bolus = Command.bolus(2, EXAMPLE_DEVICE, 2.345, t0 + 1_000, t0 + 61_000).encode(EXAMPLE_KEY)
    big = Command.bolus(3, EXAMPLE_DEVICE, 12.0, t0 + 2_000, t0 + 62_000).encode(EXAMPLE_KEY)
    status = Command.status(4, EXAMPLE_DEVICE, t0 + 3_000, t0 + 33_000).encode(EXAMPLE_KEY)
    examples = [("TEMP_BASAL seq 1: 1.5 U/h for 30 min", temp)]
    examples.append(("ACK to seq 1", pump.handle(temp, t0)))
    examples.append(("BOLUS seq 2: 2.345 U (the pump delivers 2.34 U: 0.01 U increments, rounded down)", bolus))
    examples.append(("ACK to seq 2", pump.handle(bolus, t0 + 1_000)))
    examples.append(("BOLUS seq 3: 12 U, above the pump's 10 U max", big))
    examples.append(("NAK over_limit to seq 3", pump.handle(big, t0 + 2_000)))
    examples.append(("STATUS seq 4", status))
    examples.append(("STATUS_REPLY to seq 4", pump.handle(status, t0 + 3_000)))
    return examples


def main() -> None:
    for title, body in example_messages():
        print(f"{title} ({len(body)} bytes)\n  body:  {body.hex()}\n  frame: {encode_frame(body).hex()}\n")


if __name__ == "__main__":
    main()

