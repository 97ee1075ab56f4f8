"""Reports show the cached references (ceilings, the previous design) beside a run on their protocol."""

from sim.report.references import PUBLIC, load_references, references_section


def _summary(**protocol):
    bg = {"in_range_70_180": 90.0, "below_70": 0.5, "below_54": 0.0}
    return {"protocol": {"arm": "hcl", **PUBLIC, **protocol},
            "patients": {"adult#001": {"group": "adult", "bg": bg}},
            "groups": {"adult": {"bg": bg}}, "cohort": {"bg": bg}}


def test_every_arm_has_the_causal_ceiling_with_all_30_patients_and_the_cohort():
    for arm in ("hcl", "fcl"):
        ceiling = next(t for t in load_references(arm) if t.name == "ceiling-causal")
        patients = [p for p in ceiling.patients if "#" in p]
        assert len(patients) == 30 and "all" in ceiling.patients
        assert all(0 <= m["tir"] <= 100 and 0 <= m["below_54"] <= m["below_70"] for m in ceiling.patients.values())
        assert "ceiling-causal" in ceiling.provenance and f"arm {arm}" in ceiling.provenance


def test_a_public_protocol_run_is_shown_beside_the_ceiling_with_its_gap():
    ceiling = next(t for t in load_references("hcl") if t.name == "ceiling-causal")
    html = references_section(_summary())
    ref = ceiling.patients["adult#001"]
    assert f"{ref['tir']:.1f} / {ref['below_70']:.1f} / {ref['below_54']:.1f}" in html
    assert f"<td>{ref['tir'] - 90.0:.1f}</td>" in html
    assert "NOT fair" in html and "mpc-previous" in html


def test_another_protocol_is_not_compared_and_says_why():
    html = references_section(_summary(seed_offset=7000, sensor="GuardianRT"))
    assert "Nothing is compared" in html and "seed_offset 7000" in html and "GuardianRT" in html
    assert "<table>" not in html
