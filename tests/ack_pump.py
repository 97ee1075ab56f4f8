"""A stand-in pump port for loop tests that are about something else: it acknowledges every order."""

from __future__ import annotations


class AckPump:
    def __init__(self) -> None:
        self.seq = 0

    def allocate_seq(self) -> int:
        self.seq += 1
        return self.seq

    def execute(self, order):
        from controller.loop.ports import PumpOutcome

        return PumpOutcome(order.seq, "ack", bolus_u=order.bolus_u,
                           rate_u_per_h=order.rate_u_per_h if order.kind == "temp_basal" else None)

    def resolve(self, order):
        return self.execute(order)
