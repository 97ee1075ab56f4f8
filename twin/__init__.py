"""The patient twin: physiological model, clinical profile, state estimator.

Imports only numpy and scipy (DESIGN.md layering).
"""

from twin.profile import BasalSegment, PatientProfile, flat_basal

__all__ = ["BasalSegment", "PatientProfile", "flat_basal"]
