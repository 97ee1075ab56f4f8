"""``glucotwin whatif`` on a real journal: the loop's SQLite journal written through the Journal class by the
real policy, read back read-only; the table, the files, and the journal left untouched."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone

import pytest

from controller.loop.config.live_config import load_config, load_twin, profile_to_toml
from controller.loop.journal import Journal
from controller.policy import ControlInput
from controller.twin_policy import TwinMPCPolicy
from sim.cli import main
from sim.trial.cohort import clinical_profile

T0 = datetime(2025, 1, 1, 6, 0, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def loop_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("loop")
    (d / "pump.key").write_text("00" * 32)
    (d / "loop.toml").write_text(profile_to_toml(clinical_profile("adult#003"))
                                 + '\n[loop]\njournal = "journal.sqlite"\n\n[pump]\ntransport = "mqtt"\nkey_file = "pump.key"\n')
    config = load_config(d / "loop.toml")
    policy = TwinMPCPolicy(load_twin(config), limits=config.limits)
    with Journal(d / "journal.sqlite") as journal:
        for k in range(30):  # 2.5 h of cycles as the runtime journals them, glucose drifting up
            t = T0 + timedelta(minutes=5 * k)
            inp = ControlInput(time=t, cgm_mg_dl=130.0 + 1.5 * k, announced_carbs_g=0.0, cycle_min=5.0)
            dose = policy.decide(inp, assume_delivered=False)
            journal.append("decision", t.isoformat(), {"input": inp.to_dict(), "dose": dose.to_dict()}, cycle=k + 1)
            journal.append("delivery", t.isoformat(), {"basal_u_per_h": dose.basal_u_per_h, "bolus_u": dose.bolus_u,
                                                       "minutes": 5.0}, cycle=k + 1)
            policy.record_delivery(t, dose.basal_u_per_h, 5.0, dose.bolus_u)
    return d, policy


def test_whatif_on_the_journal_prints_the_table_and_writes_the_plot(loop_dir, capsys):
    d, live = loop_dir
    digest = hashlib.sha256((d / "journal.sqlite").read_bytes()).hexdigest()
    out = d / "ask"
    assert main(["whatif", "--journal", str(d / "journal.sqlite"), "--carbs", "45", "--absorption", "fast",
                 "--horizon", "240", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "eat 45 g (fast) now" in text and "closed loop, with" in text and "open loop, without" in text
    assert "twin at 2025-01-01 08:25" in text  # the journal's last cycle
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["closed_loop"]["with"]["max_mg_dl"] > data["closed_loop"]["without"]["max_mg_dl"]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<img" in out.with_suffix(".html").read_text()
    # the twin rebuilt from the journal is the live one: same state as the policy that wrote it
    assert data["open_loop"]["without"]["glucose_mg_dl"][0] == pytest.approx(live.estimator.glucose_mg_dl, abs=0.01)
    assert hashlib.sha256((d / "journal.sqlite").read_bytes()).hexdigest() == digest  # read-only


def test_whatif_at_an_earlier_moment_and_its_refusals(loop_dir, capsys):
    d, _ = loop_dir
    j = str(d / "journal.sqlite")
    assert main(["whatif", "--journal", j, "--bolus", "1.5", "--when", "2025-01-01T07:00:00+00:00",
                 "--out", str(d / "early")]) == 0
    assert "twin at 2025-01-01 07:00" in capsys.readouterr().out
    assert main(["whatif", "--journal", j, "--exercise", "moderate", "--out", str(d / "x")]) == 2
    assert "no exercise term" in capsys.readouterr().err
    assert main(["whatif", "--journal", j, "--out", str(d / "x")]) == 2
    assert "say what to ask about" in capsys.readouterr().err
    assert main(["whatif", "--journal", str(d / "none.sqlite"), "--config", str(d / "loop.toml"), "--carbs", "20",
                 "--out", str(d / "x")]) == 2
    assert "no such journal" in capsys.readouterr().err


def test_whatif_check_smoke_scores_branches_of_a_real_simglucose_run(tmp_path, capsys):
    """One patient, one moment, HCL: the branches ran and every horizon is scored."""
    assert main(["whatif-check", "--patients", "adult#005", "--arms", "hcl", "--moments", "1",
                 "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["kind"] for r in rows] == ["meal", "bolus", "suspend"]
    meal = rows[0]
    assert meal["truth_with_120"] > meal["truth_without_120"] + 10  # the meal the branch ate raised true BG
    assert rows[1]["truth_with_120"] < rows[1]["truth_without_120"]  # the bolus lowered it
    k = summary["all"]["by_kind"]["all"]
    assert k["n"] == 3 and all(k[f"rmse_{h}"]["closed_loop_with"] > 0 for h in (30, 60, 120, 240))
    assert "effect of the action" in capsys.readouterr().out


def test_whatif_at_any_moment_of_a_trial_rebuilds_the_loop_that_ran(tmp_path, capsys):
    """A real simglucose trial of glucotwin's controller; the loop rebuilt from its trace decides its doses again."""
    out = tmp_path / "trial"
    assert main(["trial", "--patients", "adult#002", "--days", "0.15", "--quiet", "--no-report", "--workers", "1",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["whatif", "--trace", str(out / "adult#002.csv"), "--when", "2025-01-01T02:00:00", "--bolus", "1",
                 "--out", str(tmp_path / "ask")]) == 0
    text = capsys.readouterr().out
    assert "twin at 2025-01-01 02:00" in text and "bolus 1 U now" in text
    data = json.loads((tmp_path / "ask.json").read_text())
    assert data["open_loop"]["with"]["min_mg_dl"] < data["open_loop"]["without"]["min_mg_dl"]
    # a trace the rebuilt loop would not have written is refused, not answered
    csv = (out / "adult#002.csv").read_text().splitlines()
    head, rows = csv[0], csv[1:]
    cols = head.split(",")
    i = cols.index("bolus_u")
    cells = rows[5].split(",")
    cells[i] = "9.0"
    rows[5] = ",".join(cells)
    (out / "adult#002.csv").write_text("\n".join([head] + rows) + "\n")
    assert main(["whatif", "--trace", str(out / "adult#002.csv"), "--carbs", "20", "--out", str(tmp_path / "x")]) == 2
    assert "another version of glucotwin" in capsys.readouterr().err
