"""The HIL harness end to end: patient, loop and pump firmware as separate processes.

A real mosquitto on loopback, a real socat pseudo-terminal pair, the real
`glucotwin run` loop process and the reference pump firmware process. The
result must equal the in-process trial sample for sample (same patient, seed,
controller, prior), and the journal must hold every step.
"""

from __future__ import annotations

from pathlib import Path

import shutil

import numpy as np
import pytest

from controller.loop.journal import Journal
from sim.hil.broker import find_mosquitto
from sim.hil.rig import run_hil
from sim.trial.protocol import TrialProtocol
from sim.trial.run import run_trial
from skip_reasons import skip_reason

pytestmark = pytest.mark.skipif(find_mosquitto() is None or shutil.which("socat") is None,
                                reason=skip_reason("mosquitto", "socat"))


def test_hil_equals_the_in_process_trial_and_journals_everything(tmp_path, monkeypatch):
    protocol = TrialProtocol(arm="hcl", days=0.3)  # 7.2 h: breakfast announced and bolused
    monkeypatch.chdir(tmp_path)  # a relative --out, as a user types it
    hil = run_hil(["adult#003"], protocol, Path("hil"), progress=False)
    trial = run_trial("mpc", ["adult#003"], protocol, out_dir=tmp_path / "trial", workers=1, progress=False)
    a, b = hil.runs[0].trace, trial.runs[0].trace
    assert len(a.bg_mg_dl) == len(b.bg_mg_dl) == 145
    np.testing.assert_array_equal(a.bg_mg_dl, b.bg_mg_dl)
    np.testing.assert_array_equal(a.insulin_u[:-1], b.insulin_u[:-1])
    assert np.nansum(a.insulin_u) > 0 and np.nanmax(a.carbs_g) > 0  # a meal happened and insulin flowed

    assert (tmp_path / "hil" / "summary.json").exists() and (tmp_path / "hil" / "adult#003.csv").exists()
    with Journal(tmp_path / "hil" / "adult-003.journal.sqlite", read_only=True) as journal:
        counts = journal.counts()
        assert counts["reading"] == counts["decision"] == counts["delivery"] == 144
        assert counts["command"] == counts["reply"] >= 144
        assert counts.get("announcement", 0) >= 1
        assert journal.unanswered_commands() == []
        replies = [e.payload["status"] for e in journal.events("reply")]
        assert set(replies) == {"ack"}
        # each cycle: decision, then its commands and replies, then the delivery
        last = [e.kind for e in journal.events() if e.cycle == journal.max_cycle()]
        assert last[0] == "decision" and last.index("command") < last.index("reply") < last.index("delivery")
