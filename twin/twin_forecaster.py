"""The twin as a :class:`~twin.forecaster.Forecaster`, for replaying CGM files.

CGM files carry no insulin or meal records, so the twin assumes the person
received the programmed basal of their profile throughout, no boluses and no
announced carbohydrates: every meal and bolus shows up in the estimator's
disturbance and sensitivity states instead.
"""

from __future__ import annotations

from datetime import datetime
from typing import Callable, Sequence

from twin.estimator import EstimatorSettings, TwinEstimator
from twin.forecaster import ForecastPoint
from twin.personalize import PopulationPrior, Twin, default_prior, personalize
from twin.profile import PatientProfile

INSULIN_ASSUMPTION = (
    "the profile's programmed basal throughout, no boluses, no announced meals "
    "(meals and boluses appear in the estimator's disturbance and sensitivity states)"
)
_Z_90 = 1.6448536269514722  # central 90 % band, as the baselines


class TwinForecaster:
    """Forecasts from the twin estimator fed only with CGM readings."""

    name = "twin"

    def __init__(self, twin: Twin, settings: EstimatorSettings | None = None) -> None:
        self.twin = twin
        self.settings = settings
        self.estimator: TwinEstimator | None = None

    def reset(self) -> None:
        self.estimator = None

    def observe(self, time: datetime, glucose_mg_dl: float) -> None:
        if self.estimator is None:
            self.estimator = TwinEstimator(self.twin, time, self.settings)
            self.estimator.set_basal(self.twin.profile.basal_u_per_h_at(time))
        self.estimator.set_basal(self.twin.profile.basal_u_per_h_at(time))
        self.estimator.update(time, glucose_mg_dl)

    def forecast(self, horizons_min: Sequence[float]) -> list[ForecastPoint]:
        if self.estimator is None or self.estimator.readings_accepted == 0 or not horizons_min:
            return []
        fc = self.estimator.forecast(horizon_min=max(horizons_min), step_min=5.0, band_z=_Z_90)
        points = []
        for h in horizons_min:
            value, low, high = fc.at(h)
            points.append(ForecastPoint(h, value, min(low, value), max(high, value)))
        return points


def twin_forecaster_factory(profile: PatientProfile, prior: PopulationPrior | None = None,
                            settings: EstimatorSettings | None = None,
                            twin: Twin | None = None) -> Callable[[], TwinForecaster]:
    """Personalize once (or use the given ``twin``, e.g. a learned one); each call of the result gives a
    fresh forecaster (one per subject)."""
    twin = twin if twin is not None else personalize(profile, prior or default_prior())
    return lambda: TwinForecaster(twin, settings)



