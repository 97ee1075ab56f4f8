"""The virtual cohort, its clinical profiles, and the PatientProfile type."""

import pytest

from sim.trial.cohort import PATIENTS, clinical_profile, group_of, patient_index, patients_in_group, simulator_parameters
from twin.profile import BasalSegment, PatientProfile, flat_basal


def test_benchmark_order_of_the_30_patients():
    assert len(PATIENTS) == 30
    assert PATIENTS[0] == "adolescent#001" and PATIENTS[10] == "adult#001" and PATIENTS[29] == "child#010"
    assert patient_index("adult#001") == 11
    assert group_of("child#004") == "child"
    assert patients_in_group("adult") == [f"adult#{i:03d}" for i in range(1, 11)]


def test_unknown_patient_and_group_are_clear_errors():
    with pytest.raises(ValueError, match="unknown patient 'adult#011'"):
        patient_index("adult#011")
    with pytest.raises(ValueError, match="unknown group"):
        patients_in_group("elderly")


def test_clinical_profile_is_quest_plus_weight_and_programmed_basal():
    profile = clinical_profile("adult#001")
    row = simulator_parameters("adult#001")
    assert profile.carb_ratio_g_per_u == 10
    assert profile.correction_factor_mg_dl_per_u == pytest.approx(8.77310657487)
    assert profile.total_daily_insulin_u == pytest.approx(50.416652)
    assert profile.age_years == 61
    assert profile.weight_kg == pytest.approx(row["BW"])
    # programmed basal: u2ss * BW / 6000 U/min, as U/h
    assert profile.basal_u_per_h_at(0) == pytest.approx(row["u2ss"] * row["BW"] / 6000 * 60)
    assert profile.daily_basal_u == pytest.approx(24 * profile.basal_u_per_h_at(0))


def test_profile_validation_and_schedule():
    base = dict(name="p", weight_kg=70, total_daily_insulin_u=40, carb_ratio_g_per_u=10,
                correction_factor_mg_dl_per_u=40, age_years=30)
    p = PatientProfile(**base, basal_schedule=(BasalSegment(0, 0.8), BasalSegment(360, 1.2), BasalSegment(1200, 0.9)))
    assert p.basal_u_per_h_at(0) == 0.8
    assert p.basal_u_per_h_at(359.9) == 0.8
    assert p.basal_u_per_h_at(360) == 1.2
    assert p.basal_u_per_h_at(1440 + 1300) == 0.9
    assert p.daily_basal_u == pytest.approx(0.8 * 6 + 1.2 * 14 + 0.9 * 4)
    assert PatientProfile.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match="weight_kg"):
        PatientProfile(**{**base, "weight_kg": -3}, basal_schedule=flat_basal(1.0))
    with pytest.raises(ValueError, match="start at minute 0"):
        PatientProfile(**base, basal_schedule=(BasalSegment(60, 1.0),))
    with pytest.raises(ValueError, match="increasing"):
        PatientProfile(**base, basal_schedule=(BasalSegment(0, 1.0), BasalSegment(0, 2.0)))
    with pytest.raises(ValueError, match="basal rate"):
        BasalSegment(0, float("nan"))
    with pytest.raises(ValueError, match="incomplete"):
        PatientProfile.from_dict({"name": "x"})
