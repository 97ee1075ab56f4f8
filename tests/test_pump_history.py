"""The pump's delivery history (issue 15, item 2): persisted, authenticated, queried over a real pty.

The virtual pump is the pure state machine; its history is checked as a property over
arbitrary command sequences and persist/restore points, and end to end with the real
``pump_device`` process killed and restarted between a bolus and the query.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.protocol import Command, Nak, NakReason, decode_reply
from firmware_bridge.protocol.history import HistoryPage, HistoryQuery
from firmware_bridge.pump_link import PumpLink
from firmware_bridge.virtual_pump import PumpSettings, VirtualPump
from test_pump_link import DEV, KEY, bolus, host, make_link, now_ms, serial_pump, socat  # noqa: F401

T0 = 1_795_428_000_000
SETTINGS = PumpSettings(DEV, 5.0, 10.0, 300.0, 1.0)


def query(pump: VirtualPump, seq: int, since_ms: int, start: int = 0, key: bytes = KEY,
          device: str = DEV) -> HistoryPage | Nak:
    t = pump.clock_ms or T0
    return decode_reply(pump.handle(HistoryQuery(seq, device, t, t + 60_000, since_ms, start).encode(key), t), KEY)


def all_entries(pump: VirtualPump, since_ms: int, seq: int) -> tuple[list, HistoryPage]:
    entries, start = [], 0
    while True:
        page = query(pump, seq, since_ms, start)
        assert isinstance(page, HistoryPage)
        entries += page.entries
        start += len(page.entries)
        if not page.entries or start >= page.total:
            return entries, page


commands = st.lists(st.tuples(st.sampled_from(["bolus", "temp", "cancel", "suspend", "resume", "replay", "expired"]),
                              st.floats(0.0, 12.0), st.integers(0, 90), st.integers(0, 600_000),
                              st.booleans()), max_size=40)


@given(commands)
@settings(max_examples=150, deadline=None)
def test_the_history_holds_exactly_what_was_executed_across_restarts(ops):
    pump = VirtualPump(SETTINGS, KEY)
    pump.power_on(T0)
    t, seq, executed = T0, 0, {}
    for kind, amount, minutes, step_ms, restart in ops:
        t += step_ms
        seq += 1
        use = seq - 1 if kind == "replay" and seq > 1 else seq
        expires = t - 1 if kind == "expired" else t + 60_000
        issued = min(t, expires)
        if kind == "bolus":
            cmd = Command.bolus(use, DEV, amount, issued, expires)
        elif kind == "temp":
            cmd = Command.temp_basal(use, DEV, amount / 4, max(minutes, 1), issued, expires)
        elif kind == "cancel":
            cmd = Command.temp_basal(use, DEV, 0.0, 0, issued, expires)
        elif kind == "suspend":
            cmd = Command.suspend(use, DEV, issued, expires)
        else:
            cmd = Command.resume(use, DEV, issued, expires)
        reply = decode_reply(pump.handle(cmd.encode(KEY), t), KEY)
        if not isinstance(reply, Nak):
            executed[cmd.seq] = reply.bolus_milli_u if kind == "bolus" else None
        if restart:  # persisted and restored at this point (as pump_device does before replying)
            pump = VirtualPump(SETTINGS, KEY, json.loads(json.dumps(pump.state)))
            pump.power_on(t)
    entries, page = all_entries(pump, T0, seq + 1)
    assert page.covers_since  # a pump that has kept its log since it was new covers any time
    assert [e.seq for e in entries] == sorted(executed)
    for e in entries:
        if executed[e.seq] is not None:
            assert e.kind == "bolus" and e.bolus_milli_u == executed[e.seq]
    # read only: the history query consumed no dose and delivered nothing
    before = pump.state
    query(pump, seq + 2, T0)
    assert {k: v for k, v in pump.state.items() if k != "last_seq"} == \
        {k: v for k, v in before.items() if k != "last_seq"}


def test_unauthenticated_wrong_device_or_malformed_queries_are_refused():
    pump = VirtualPump(SETTINGS, KEY)
    pump.power_on(T0)
    pump.handle(Command.bolus(1, DEV, 1.0, T0, T0 + 60_000).encode(KEY), T0)
    bad_tag = query(pump, 2, 0, key=bytes(32))
    assert isinstance(bad_tag, Nak) and bad_tag.reason == NakReason.BAD_TAG
    wrong = query(pump, 3, 0, device="pump-other")
    assert isinstance(wrong, Nak) and wrong.reason == NakReason.WRONG_DEVICE
    body = bytearray(HistoryQuery(4, DEV, T0, T0 + 60_000, 0, 0).encode(KEY))
    malformed = decode_reply(pump.handle(bytes(body[:-40]), T0), KEY)
    assert isinstance(malformed, Nak) and malformed.reason == NakReason.MALFORMED
    ok = query(pump, 5, 0)
    assert isinstance(ok, HistoryPage) and ok.total == 1 and ok.entries[0].bolus_milli_u == 1000


def test_a_version_1_state_file_loads_and_its_log_does_not_claim_the_past():
    pump = VirtualPump(SETTINGS, KEY)
    pump.power_on(T0)
    pump.handle(Command.bolus(1, DEV, 2.0, T0, T0 + 60_000).encode(KEY), T0)
    old = pump.state
    v1 = {k: v for k, v in old.items() if k not in ("history", "log_start_ms")} | {"state_version": 1}
    migrated = VirtualPump(SETTINGS, KEY, v1)
    migrated.power_on(T0 + 60_000)
    assert migrated.last_seq == 1 and migrated.bolus_delivered_total_u == pytest.approx(2.0)
    earlier = query(migrated, 2, T0 - 3_600_000)
    assert isinstance(earlier, HistoryPage) and not earlier.covers_since and earlier.total == 0
    later = query(migrated, 3, T0 + 1)
    assert isinstance(later, HistoryPage) and later.covers_since


def test_history_over_a_real_pty_survives_a_pump_sigkill(serial_pump, host):  # noqa: F811
    link = make_link(host)
    since = now_ms() - 1000
    for units in (1.5, 0.75):
        outcome = link.send(bolus(link, units))
        assert outcome.status == "ack"
    serial_pump.kill()
    serial_pump.start()
    history = PumpLink(host, DEV, KEY, reply_timeout_s=0.4, retries=2, next_seq=link.next_seq).query_history(since)
    assert history.covers_since
    assert [e.bolus_u for e in history.entries if e.kind == "bolus"] == [1.5, 0.75]
