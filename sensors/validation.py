"""Judging live readings against the clock and against the readings before them.

A live source (MQTT, serial) hands every parsed :class:`~sensors.reading.GlucoseReading`
to a :class:`ReadingValidator` before the loop sees it. The validator either passes
the reading through unchanged or returns a :class:`~sensors.reading.Rejected` whose
``reason`` starts with one of the fixed phrases in :data:`REASONS`:

``"glucose out of range"``
    the value is outside the plausible range ``min_mg_dl..max_mg_dl``, by default
    the one range of every reader (:data:`~sensors.reading.PLAUSIBLE_MIN_MG_DL`,
    39..501 mg/dL: what CGMs report as numbers; beyond it they say ``LOW``/``HIGH``),
    with the readers' wording (:func:`~sensors.reading.glucose_range_reason`), so a
    value a file reader rejects is rejected live too. A reading the sensor marked as
    clipped (``Low``/``High``, :attr:`GlucoseReading.clipped`) carries the sensor's
    limit, which lies in the range; a clipped value outside it is an error as well.
``"reading in the future"``
    measured more than ``max_future_s`` after *now* (a wrong sensor or host clock).
``"stale reading"``
    measured more than ``max_age_min`` before *now*: too old to act on.
``"duplicate"``
    the same subject and time as a recently accepted reading (a re-sent message,
    e.g. a QoS 1 redelivery after a reconnect), or, with ``min_interval_s`` > 0,
    closer than that to the last accepted one of the same subject. This is what
    keeps a flood of readings (a misbehaving uploader sending many readings with
    advancing times) from driving a decision per message: the live loop should set
    it from the CGM sample interval, see :meth:`ValidationSettings.for_sample_interval`.
``"out of order"``
    older than the last accepted reading of the subject (and not a duplicate).
``"implausible rate of change"``
    the change from the last accepted reading is faster than
    ``max_rate_mg_dl_per_min`` (beyond ``rate_noise_mg_dl`` of sensor noise). The
    rate is the change divided by the time between the two readings, so a large but
    physiological change after a gap is accepted; across gaps longer than
    ``rate_window_min`` (30 min) the check is not applied at all, so that a reading
    after a long gap always re-anchors the source. A clipped reading is judged by
    its bound (:attr:`GlucoseReading.bounds_mg_dl`): the true value of a ``LOW`` is
    at most the limit, so the fall from the last accepted reading is *at least*
    ``last - limit``; if even that least change is faster than physiology allows,
    the ``LOW`` is implausible (a ``LOW`` five minutes after 180 mg/dL is a sensor
    fault, e.g. a compression low), while a ``LOW`` at the end of a steady fall is
    accepted and reaches the safety supervisor, which suspends insulin on it. A
    ``HIGH`` likewise, with the least rise ``limit - last``; and a clipped *last*
    reading bounds the change the same way.

The history (last accepted reading, recently accepted times) is kept per subject.
A rejected reading never becomes the reference: after an implausible jump the next
readings are judged against the last accepted one until they agree with it or
``rate_window_min`` has passed.

``check`` never raises for any :class:`GlucoseReading` and any aware ``now``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sensors.reading import PLAUSIBLE_MAX_MG_DL, PLAUSIBLE_MIN_MG_DL, GlucoseReading, Rejected, glucose_range_reason

OUT_OF_RANGE = "glucose out of range"
IN_FUTURE = "reading in the future"
STALE = "stale reading"
DUPLICATE = "duplicate"
OUT_OF_ORDER = "out of order"
IMPLAUSIBLE_RATE = "implausible rate of change"
REASONS: tuple[str, ...] = (OUT_OF_RANGE, IN_FUTURE, STALE, DUPLICATE, OUT_OF_ORDER, IMPLAUSIBLE_RATE)
"""The fixed leading phrases of a validator's rejection reasons."""
ACCEPTED = "accepted"
"""The key of :attr:`ReadingValidator.counts` that counts accepted readings."""

_RAW_MAX_CHARS = 200
MIN_INTERVAL_FRACTION = 0.8
""":meth:`ValidationSettings.for_sample_interval` treats readings closer than this fraction of the CGM
sample interval as duplicates (a sensor's own times are regular to seconds; 20 % leaves room for an
uploader's rounding and a clock adjustment, and still admits at most one reading per interval in steady state)."""


def _finite_number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ValidationSettings:
    """What a live reading must satisfy to reach the loop.

    Attributes
    ----------
    min_mg_dl, max_mg_dl: plausible range; a value outside it is ``"glucose out of
        range"``. Default the readers' one range, 39..501 mg/dL
        (:data:`~sensors.reading.PLAUSIBLE_MIN_MG_DL`): CGMs report 40..400 (Dexcom)
        or 40..500 (Libre) as numbers and flag the rest as LOW/HIGH.
    max_future_s: a reading measured more than this after *now* is ``"reading in the future"``.
    max_age_min: a reading measured more than this before *now* is ``"stale reading"``
        (15 min: the age at which the safety supervisor stops automatic dosing).
    max_rate_mg_dl_per_min: the fastest plausible change between two readings.
    rate_noise_mg_dl: a change this small passes whatever the time between the
        readings (sensor noise between readings a minute apart).
    rate_window_min: the rate check applies only when the last accepted reading is
        at most this old (relative to the new one); after a longer gap the new
        reading is accepted whatever its value (within the range).
    min_interval_s: a reading closer than this after the last accepted one of its
        subject is a ``"duplicate"`` (0: only readings with exactly the same time are).
        The live loop should use :meth:`for_sample_interval` (0.8 x the CGM sample
        interval, 240 s for a 5-minute sensor), so that a flood of readings cannot
        drive more than about one control decision per sample interval.
    duplicate_memory: how many accepted reading times per subject are remembered
        to recognise re-sent readings (288: one day of 5-minute readings).
    confirm_level_shift: after this many consecutive readings that the rate check
        rejected but that agree with each other (each within the rate limit of the
        one before), the last of them is accepted and becomes the new reference:
        the level really moved, or the old reference was wrong (a compression low
        that slipped through). 0 never re-anchors.
    """

    min_mg_dl: float = PLAUSIBLE_MIN_MG_DL
    max_mg_dl: float = PLAUSIBLE_MAX_MG_DL
    max_future_s: float = 120.0
    max_age_min: float = 15.0
    max_rate_mg_dl_per_min: float = 10.0
    rate_noise_mg_dl: float = 5.0
    rate_window_min: float = 30.0
    min_interval_s: float = 0.0
    duplicate_memory: int = 288
    confirm_level_shift: int = 2

    def __post_init__(self) -> None:
        for name in ("min_mg_dl", "max_mg_dl", "max_future_s", "max_age_min", "max_rate_mg_dl_per_min",
                     "rate_noise_mg_dl", "rate_window_min", "min_interval_s"):
            value = _finite_number(name, getattr(self, name))
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")
            object.__setattr__(self, name, value)
        if not 0 < self.min_mg_dl < self.max_mg_dl:
            raise ValueError(
                f"need 0 < min_mg_dl < max_mg_dl, got {self.min_mg_dl:g} and {self.max_mg_dl:g}"
            )
        if self.max_age_min <= 0:
            raise ValueError(f"max_age_min must be > 0, got {self.max_age_min:g}")
        if self.max_rate_mg_dl_per_min <= 0:
            raise ValueError(f"max_rate_mg_dl_per_min must be > 0, got {self.max_rate_mg_dl_per_min:g}")
        n = self.duplicate_memory
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"duplicate_memory must be a positive integer, got {n!r}")
        k = self.confirm_level_shift
        if isinstance(k, bool) or not isinstance(k, int) or k < 0 or k == 1:
            raise ValueError(f"confirm_level_shift must be 0 (off) or an integer >= 2, got {k!r}")

    @classmethod
    def for_sample_interval(cls, sample_interval_s: float, **overrides: Any) -> ValidationSettings:
        """Settings for a CGM that samples every ``sample_interval_s`` seconds (300 for Dexcom G6/G7):
        ``min_interval_s`` is :data:`MIN_INTERVAL_FRACTION` of it; other fields from ``overrides``."""
        interval = _finite_number("sample_interval_s", sample_interval_s)
        if interval <= 0:
            raise ValueError(f"sample_interval_s must be > 0, got {interval:g}")
        return cls(**{"min_interval_s": MIN_INTERVAL_FRACTION * interval, **overrides})


class _SubjectHistory:
    """What the validator remembers of one subject's accepted readings."""

    __slots__ = ("last", "recent", "shift", "shift_count")

    def __init__(self) -> None:
        self.last: GlucoseReading | None = None
        self.recent: OrderedDict[datetime, GlucoseReading] = OrderedDict()
        self.shift: GlucoseReading | None = None  # the last reading the rate check rejected
        self.shift_count = 0  # how many consecutive rejected readings agree with each other


class ReadingValidator:
    """Accepts or rejects live readings one at a time (see the module docstring).

    Parameters
    ----------
    settings: the limits; default :class:`ValidationSettings()`.
    clock: returns the current time (aware UTC); used by :meth:`check` when it is
        called without ``now``.

    Attributes
    ----------
    counts: readings seen, by outcome: ``"accepted"`` and each phrase of :data:`REASONS`.
    """

    def __init__(self, settings: ValidationSettings | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        if settings is None:
            settings = ValidationSettings()
        if not isinstance(settings, ValidationSettings):
            raise ValueError(f"settings must be ValidationSettings, got {type(settings).__name__}")
        if clock is not None and not callable(clock):
            raise ValueError("clock must be a callable returning an aware datetime")
        self.settings = settings
        self.clock = clock
        self.counts: dict[str, int] = {ACCEPTED: 0, **{reason: 0 for reason in REASONS}}
        self.level_shifts = 0  # readings accepted as a confirmed level shift (also counted as accepted)
        self._history: dict[str, _SubjectHistory] = {}

    def last_accepted(self, subject: str = "") -> GlucoseReading | None:
        """The most recent reading accepted for ``subject``, or None."""
        history = self._history.get(subject)
        return history.last if history else None

    def reset(self) -> None:
        """Forget every subject's history (the counts are kept)."""
        self._history.clear()

    def remember(self, payload: dict[str, Any]) -> None:
        """Take a reading accepted before a restart (its journaled ``to_dict``) into the history.

        It is not judged and not counted: it was judged when it arrived. A restarted
        loop calls this for the readings that ran its replayed cycles, so that the
        first reading after the restart meets the same rate and duplicate checks as
        any other. Raises ValueError when ``payload`` is not a reading.
        """
        self._remember(GlucoseReading.from_dict(payload))

    def check(self, reading: GlucoseReading, now: datetime | None = None) -> GlucoseReading | Rejected:
        """``reading`` itself when accepted, else a :class:`Rejected` saying why.

        ``now`` defaults to the injected clock. Raises ValueError only for a
        programming error: ``reading`` not a GlucoseReading, or no usable ``now``.
        """
        if not isinstance(reading, GlucoseReading):
            raise ValueError(f"check needs a GlucoseReading, got {type(reading).__name__}")
        if now is None:
            if self.clock is None:
                raise ValueError("check needs now= or a validator constructed with a clock")
            now = self.clock()
        if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
            raise ValueError(f"now must be a timezone-aware datetime, got {now!r}")

        reason = self._reason(reading, now)
        if reason is not None and reason.startswith(IMPLAUSIBLE_RATE) and self._confirms_level_shift(reading):
            reason = None
            self.level_shifts += 1
        if reason is None:
            self._remember(reading)
            self.counts[ACCEPTED] += 1
            return reading
        phrase = next(p for p in REASONS if reason.startswith(p))
        self.counts[phrase] += 1
        return Rejected(_raw(reading), None, reason)

    # --- the rules -------------------------------------------------------------
    def _reason(self, r: GlucoseReading, now: datetime) -> str | None:
        s = self.settings
        g = r.glucose_mg_dl
        out_of_range = glucose_range_reason(g, s.min_mg_dl, s.max_mg_dl)
        if out_of_range is not None:
            return out_of_range

        ahead_s = (r.time - now).total_seconds()
        if ahead_s > s.max_future_s:
            return f"{IN_FUTURE}: {ahead_s:.0f} s after now (limit {s.max_future_s:g} s)"
        age_min = -ahead_s / 60.0
        if age_min > s.max_age_min:
            return f"{STALE}: {age_min:.1f} min old (limit {s.max_age_min:g} min)"

        history = self._history.get(r.subject)
        if history is None or history.last is None:
            return None
        last = history.last
        seen = history.recent.get(r.time)
        if seen is not None:
            if (seen.glucose_mg_dl, seen.clipped) == (g, r.clipped):
                return f"{DUPLICATE}: already accepted a reading at {r.time.isoformat()}"
            return (f"{DUPLICATE} time with a different glucose: {g:g} mg/dL at {r.time.isoformat()}, "
                    f"accepted {seen.glucose_mg_dl:g} mg/dL")
        gap_s = (r.time - last.time).total_seconds()
        if gap_s < 0:
            return f"{OUT_OF_ORDER}: {r.time.isoformat()} is before the last accepted {last.time.isoformat()}"
        if gap_s < s.min_interval_s:
            return (f"{DUPLICATE}: {gap_s:.0f} s after the last accepted reading "
                    f"(min interval {s.min_interval_s:g} s)")

        gap_min = gap_s / 60.0
        if gap_min > s.rate_window_min:
            return None
        change = least_change_mg_dl(last, r)
        if change <= s.rate_noise_mg_dl + s.max_rate_mg_dl_per_min * gap_min:
            return None
        rate = change / gap_min if gap_min > 0 else math.inf
        least = "at least " if r.clipped or last.clipped else ""
        return (f"{IMPLAUSIBLE_RATE}: {_shown(last)} -> {_shown(r)} mg/dL in {gap_min:.1f} min "
                f"({least}{rate:.1f} mg/dL/min > {s.max_rate_mg_dl_per_min:g})")

    def _confirms_level_shift(self, r: GlucoseReading) -> bool:
        """Record a rate-rejected reading; True when it completes a run of agreeing ones."""
        s = self.settings
        history = self._history[r.subject]  # a rate rejection implies an accepted reference
        prev = history.shift
        agrees = False
        if prev is not None:
            gap_min = (r.time - prev.time).total_seconds() / 60.0
            agrees = 0 < gap_min <= s.rate_window_min and least_change_mg_dl(prev, r) \
                <= s.rate_noise_mg_dl + s.max_rate_mg_dl_per_min * gap_min
        history.shift_count = history.shift_count + 1 if agrees else 1
        history.shift = r
        return s.confirm_level_shift >= 2 and history.shift_count >= s.confirm_level_shift

    def _remember(self, r: GlucoseReading) -> None:
        history = self._history.setdefault(r.subject, _SubjectHistory())
        history.shift, history.shift_count = None, 0
        if history.last is None or r.time > history.last.time:
            history.last = r
        history.recent[r.time] = r
        while len(history.recent) > self.settings.duplicate_memory:
            history.recent.popitem(last=False)


def least_change_mg_dl(a: GlucoseReading, b: GlucoseReading) -> float:
    """The smallest change in true glucose between two readings that their values allow (mg/dL, >= 0).

    Two numbers: their difference. A clipped reading stands for an interval
    (:attr:`GlucoseReading.bounds_mg_dl`): a fall from 150 to ``LOW`` (40) is at
    least 110; ``LOW`` to ``LOW`` may be no change at all.
    """
    low_a, high_a = a.bounds_mg_dl
    low_b, high_b = b.bounds_mg_dl
    return max(0.0, low_b - high_a, low_a - high_b)


def _shown(r: GlucoseReading) -> str:
    if not r.clipped:
        return f"{r.glucose_mg_dl:g}"
    return f"{'LOW' if r.bounds_mg_dl[0] == 0.0 else 'HIGH'} ({r.glucose_mg_dl:g})"


def _raw(reading: GlucoseReading) -> str:
    text = (f"{reading.time.isoformat()} {reading.glucose_mg_dl:g} mg/dL"
            f"{' (clipped)' if reading.clipped else ''} from {reading.source}")
    if reading.subject:
        text += f" for {reading.subject}"
    return text if len(text) <= _RAW_MAX_CHARS else text[: _RAW_MAX_CHARS - 1] + "\u2026"

