"""The glucose reading type, the record of skipped input, and a read outcome.

Every source (file replay, MQTT, serial, simulator) produces
:class:`GlucoseReading` values. A reader never raises on bad input: what it
cannot turn into a reading becomes a :class:`Rejected` record with a reason,
in the spirit of LoopKit's CGM managers, where unreliable data is a normal
outcome and not an exception. :class:`ReadResult` carries both.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, NamedTuple

MG_DL_PER_MMOL_L = 18.0182
"""Glucose: mg/dL per mmol/L (molar mass of glucose 180.16 g/mol / 10)."""

SENSOR_LOW_MG_DL = 40.0
SENSOR_HIGH_MG_DL = 400.0
"""Dexcom's reporting range. A 'Low' ('High') reading is stored as 40 (400) mg/dL with ``clipped=True``."""

PLAUSIBLE_MIN_MG_DL = 39.0
PLAUSIBLE_MAX_MG_DL = 501.0
"""The one plausible glucose range of every reader and of the live validator: [39, 501] mg/dL.

CGMs report 40..400 mg/dL (Dexcom G6/G7, Medtronic Guardian, Eversense) or
40..500 (FreeStyle Libre) and flag anything beyond as ``LOW``/``HIGH``, which the
readers turn into a *clipped* reading at the limit (:attr:`GlucoseReading.clipped`).
So an unclipped number outside the widest reporting range is not a measurement
but a data error (a unit mix-up, a sensor error code, a corrupted message), and
every path rejects it with the same reason (:func:`glucose_range_reason`). The
one mg/dL of margin on each side admits the limits themselves after a unit
round trip (exports in mmol/L have one decimal: Dexcom's 40 is 2.2 mmol/L = 39.6
mg/dL, Libre's 500 is 27.8 mmol/L = 500.9 mg/dL) and a simulated sensor that
saturates at 39 (simglucose). Clipped readings must lie in the range too: their
value is a sensor's limit, and every sensor's limits lie inside it.
"""

CLIPPED_LOW_BELOW_MG_DL = 200.0
"""A clipped reading below this is a ``LOW`` (true glucose at most its value), at or above it a ``HIGH``
(at least its value): sensors' low limits are about 40 mg/dL, their high limits 400 or 500."""


def glucose_range_reason(glucose_mg_dl: float, low_mg_dl: float = PLAUSIBLE_MIN_MG_DL,
                         high_mg_dl: float = PLAUSIBLE_MAX_MG_DL) -> str | None:
    """Why ``glucose_mg_dl`` is not plausible (``"glucose out of range: ..."``), or ``None`` if it is.

    The one wording of the range rejection, used by the file readers, the serial
    and Nightscout parsers and the live validator (with its configured limits).
    """
    if not (low_mg_dl <= glucose_mg_dl <= high_mg_dl):
        return f"glucose out of range: {glucose_mg_dl:g} mg/dL is outside {low_mg_dl:g}..{high_mg_dl:g}"
    return None



def fields_from_dict(cls: type, data: Any, what: str, required: tuple[str, ...]) -> dict[str, Any]:
    """The keyword arguments of dataclass ``cls`` from JSON data, ``time`` parsed from ISO 8601.

    Raises ValueError naming ``what`` on a non-object, unknown or missing keys, or a bad time.
    """
    if not isinstance(data, dict):
        raise ValueError(f"a {what} must be a JSON object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {what} keys: {', '.join(unknown)}")
    missing = [k for k in required if k not in data]
    if missing:
        raise ValueError(f"{what} is missing: {', '.join(missing)}")
    t = data["time"]
    if not isinstance(t, str):
        raise ValueError(f"{what} time must be an ISO 8601 string, got {t!r}")
    try:
        time = datetime.fromisoformat(t)
    except ValueError:
        raise ValueError(f"{what} time is not ISO 8601: {t!r}") from None
    return {**data, "time": time}

@dataclass(frozen=True)
class GlucoseReading:
    """One sensor glucose value.

    Attributes
    ----------
    time: when the value was measured; timezone-aware. An aware time in another
        zone is converted to UTC (same instant); a naive time is refused.
    glucose_mg_dl: glucose, mg/dL; finite and > 0. When ``clipped`` is true it is
        the sensor's range limit, and the true value is at or beyond it.
    source: where the value came from, e.g. ``"iglu"``, ``"clarity:Android G6"``,
        ``"nightscout:xDrip-DexcomG6"``, ``"sim"``: format or transport, then the
        device if known.
    subject: whose glucose it is (iglu ``id``); ``""`` when the source holds one person.
    trend: the sensor's trend arrow as the source names it (Nightscout ``direction``,
        e.g. ``"Flat"``, ``"FortyFiveUp"``), or ``None``.
    noise: the sensor's noise level (Nightscout ``noise``, 0..4; 1 is clean), or ``None``.
    clipped: the sensor reported ``Low`` or ``High`` (outside its range) rather
        than a number; ``glucose_mg_dl`` then holds the range limit (40 or 400).
        The safety supervisor treats such a value as outside the sensor's range.
    """

    time: datetime
    glucose_mg_dl: float
    source: str
    subject: str = ""
    trend: str | None = None
    noise: int | None = None
    clipped: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.time, datetime):
            raise ValueError(f"reading time must be a datetime, got {type(self.time).__name__}")
        if self.time.tzinfo is None or self.time.utcoffset() is None:
            raise ValueError(
                f"reading time must be timezone-aware (UTC), got naive {self.time.isoformat()}"
            )
        if self.time.tzinfo is not UTC:
            object.__setattr__(self, "time", self.time.astimezone(UTC))
        g = self.glucose_mg_dl
        if isinstance(g, bool) or not isinstance(g, numbers.Real):
            raise ValueError(f"glucose_mg_dl must be a number, got {g!r}")
        g = float(g)
        if not math.isfinite(g) or g <= 0.0:
            raise ValueError(f"glucose_mg_dl must be finite and positive, got {g!r}")
        object.__setattr__(self, "glucose_mg_dl", g)
        if not isinstance(self.source, str) or not self.source:
            raise ValueError(f"reading source must be a non-empty string, got {self.source!r}")
        if not isinstance(self.subject, str):
            raise ValueError(f"reading subject must be a string, got {self.subject!r}")
        if self.trend is not None and not isinstance(self.trend, str):
            raise ValueError(f"reading trend must be a string or None, got {self.trend!r}")
        if self.noise is not None and (
            isinstance(self.noise, bool) or not isinstance(self.noise, numbers.Integral) or self.noise < 0
        ):
            raise ValueError(f"reading noise must be a non-negative integer or None, got {self.noise!r}")
        if self.noise is not None:
            object.__setattr__(self, "noise", int(self.noise))
        if not isinstance(self.clipped, bool):
            raise ValueError(f"reading clipped must be a bool, got {self.clipped!r}")

    @property
    def bounds_mg_dl(self) -> tuple[float, float]:
        """What the true glucose can be: ``(g, g)`` for a number; ``(0, g)`` for a clipped
        ``LOW`` (at most its value); ``(g, inf)`` for a clipped ``HIGH`` (at least its value).

        LOW and HIGH are told apart by :data:`CLIPPED_LOW_BELOW_MG_DL`.
        """
        g = self.glucose_mg_dl
        if not self.clipped:
            return g, g
        return (0.0, g) if g < CLIPPED_LOW_BELOW_MG_DL else (g, math.inf)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; ``time`` as ISO 8601 with ``+00:00``."""
        return {
            "time": self.time.isoformat(),
            "glucose_mg_dl": self.glucose_mg_dl,
            "source": self.source,
            "subject": self.subject,
            "trend": self.trend,
            "noise": self.noise,
            "clipped": self.clipped,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GlucoseReading:
        """Inverse of :meth:`to_dict`. Raises ValueError on missing or unknown keys or bad values."""
        return cls(**fields_from_dict(cls, data, "glucose reading", ("time", "glucose_mg_dl", "source")))


@dataclass(frozen=True)
class Rejected:
    """Input a reader skipped, and why.

    Attributes
    ----------
    raw: the skipped input (a CSV line, a JSON entry), truncated to 200 characters;
        personal fields (Clarity patient info) are redacted.
    line: 1-based line number in the file, or ``None`` when the input has no lines
        (an entry of a JSON array).
    reason: why it was skipped, starting with a fixed phrase: ``"duplicate"``,
        ``"conflicting glucose"``, ``"missing glucose"``, ``"non-numeric glucose"``,
        ``"glucose out of range"``, ``"sensor error code"``, ``"missing time"``,
        ``"unparseable time"``, ``"implausible time"``, ``"nonexistent local time"``,
        ``"malformed row"``, ``"malformed entry"``, ``"not a glucose reading"``.
    """

    raw: str
    line: int | None
    reason: str

    def __post_init__(self) -> None:
        if not isinstance(self.raw, str):
            raise ValueError(f"rejected raw must be a string, got {self.raw!r}")
        if self.line is not None and (isinstance(self.line, bool) or not isinstance(self.line, int) or self.line < 1):
            raise ValueError(f"rejected line must be a positive integer or None, got {self.line!r}")
        if not isinstance(self.reason, str) or not self.reason:
            raise ValueError(f"rejected reason must be a non-empty string, got {self.reason!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"raw": self.raw, "line": self.line, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rejected:
        if not isinstance(data, dict) or set(data) != {"raw", "line", "reason"}:
            raise ValueError(f"a rejected record needs exactly the keys raw, line, reason, got {data!r}")
        return cls(raw=data["raw"], line=data["line"], reason=data["reason"])


class ReadResult(NamedTuple):
    """What a reader returns: the readings it accepted and the input it rejected.

    A tuple, so ``readings, rejected = read_cgm_file(path)`` works.
    Readings are sorted by subject, then time; rejections by line.
    """

    readings: list[GlucoseReading]
    rejected: list[Rejected]
