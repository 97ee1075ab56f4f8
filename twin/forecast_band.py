"""A calibrated prediction band from a forecaster's own recent errors (adaptive conformal).

:class:`ConformalBand` keeps, per horizon, the errors (truth - forecast,
mg/dL) of the forecasts whose outcome has already been observed, over the
last ``history_min`` minutes. The band of a new forecast is the forecast plus
the empirical ``alpha/2`` and ``1 - alpha/2`` quantiles of those errors
(split-conformal style), where ``alpha`` starts at ``1 - coverage`` and is
adapted online as in adaptive conformal inference (Gibbs & Candès 2021):
after each observed outcome, ``alpha += gamma * (alpha_nominal - missed)``,
so a band that misses too often widens and one that covers too often
narrows. Over a long stream the share of outcomes inside the band then
tends to the nominal coverage whatever the errors' distribution, as long as
the errors change slowly. Before ``min_errors`` errors the band is the prior
``±z × prior_rate × horizon`` of :mod:`twin.forecaster`.

Only outcomes that are already observed are used, so the band never peeks
at the future. Pure numpy and the standard library.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np


@dataclass(frozen=True)
class BandSettings:
    """Settings of :class:`ConformalBand`.

    coverage: nominal central coverage, in (0, 1).
    history_min: errors older than this (by the time their outcome was seen) are forgotten.
    min_errors: errors needed before the band is empirical.
    gamma: step of the online adaptation of ``alpha`` (0 turns it off).
    prior_rate_sd_mg_dl_per_min: the prior band's rate of change SD.
    """

    coverage: float = 0.8
    history_min: float = 24 * 60.0
    min_errors: int = 20
    gamma: float = 0.005
    prior_rate_sd_mg_dl_per_min: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 < self.coverage < 1.0):
            raise ValueError(f"band coverage must be in (0, 1), got {self.coverage!r}")
        if not (self.history_min > 0.0 and self.min_errors >= 1):
            raise ValueError("band history_min must be positive and min_errors at least 1")
        if not (0.0 <= self.gamma < 0.5):
            raise ValueError(f"band gamma must be in [0, 0.5), got {self.gamma!r}")
        if not (self.prior_rate_sd_mg_dl_per_min > 0.0):
            raise ValueError("band prior_rate_sd_mg_dl_per_min must be positive")


class ConformalBand:
    """The band of one horizon, learned from that horizon's observed errors."""

    def __init__(self, horizon_min: float, settings: BandSettings) -> None:
        self.horizon_min = float(horizon_min)
        self.settings = settings
        self.alpha = 1.0 - settings.coverage
        self._z = NormalDist().inv_cdf(0.5 + settings.coverage / 2.0)
        self._errors: deque[tuple[float, float]] = deque()  # (minute observed, truth - forecast)

    def learn(self, t_min: float, error_mg_dl: float, missed: bool) -> None:
        """An outcome seen at ``t_min``: its forecast's error and whether its band missed it."""
        s = self.settings
        self._errors.append((t_min, float(error_mg_dl)))
        while self._errors and self._errors[0][0] < t_min - s.history_min:
            self._errors.popleft()
        if len(self._errors) >= s.min_errors:
            nominal = 1.0 - s.coverage
            self.alpha = float(np.clip(self.alpha + s.gamma * (nominal - float(missed)), 0.002, 0.998))

    @property
    def errors(self) -> int:
        return len(self._errors)

    def interval(self, forecast_mg_dl: float) -> tuple[float, float]:
        """(lower, upper) around a forecast, always containing it and finite."""
        s = self.settings
        if len(self._errors) < s.min_errors:
            half = self._z * s.prior_rate_sd_mg_dl_per_min * self.horizon_min
            return forecast_mg_dl - half, forecast_mg_dl + half
        err = np.fromiter((e for _, e in self._errors), float, len(self._errors))
        tail = self.alpha / 2.0
        low, high = np.quantile(err, [tail, 1.0 - tail])
        return forecast_mg_dl + min(float(low), 0.0), forecast_mg_dl + max(float(high), 0.0)
