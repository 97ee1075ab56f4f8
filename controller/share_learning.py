"""How much insulin beyond the basal this person tolerates, learned from CGM.

Clinical settings are often wrong for the person they were written for: on
simglucose some children fall low hours after every full meal bolus, while
some adolescents stay above 180 mg/dL for hours under the supervisor's
correction limit. The supervisor therefore scales two of its limits by a
learned share, in the manner of a clinician adjusting a carb ratio or a
maximum insulin on board (or OpenAPS autotune), with nothing but CGM
readings and meal announcements:

* the **meal share** (``windows="meals"``): meal insulin is limited to
  ``share x carbs on board / carb ratio``; each announced meal opens a window;
* the **correction share** (``windows="clock"``): the correction limit
  (maximum insulin on board) is scaled by it; each window is simply the next
  ``high_window_min`` of readings.

The rules, the same for both:

* a **low** (``low_readings`` consecutive readings at or below ``low_mg_dl``; for the
  meal share, within ``low_window_min`` of an announced meal) lowers the share
  by ``step_down``, once per low episode (the episode ends when glucose is
  back above ``rearm_mg_dl``). A low reached by a drop faster than
  ``artefact_drop_mg_dl_per_min`` between two readings does not count: glucose
  does not fall that fast, a sensor compressed under a sleeping body does;
* a **window that stayed high** (it ends at the next meal or after
  ``high_window_min``; at least ``high_share`` of its readings above
  ``high_mg_dl`` and none at or below ``no_low_above_mg_dl``) raises it by
  ``step_up``. The raise waits until ``low_window_min`` after the window
  opened and is dropped if a low episode began in the meantime or in the
  ``quiet_min`` before: a slow insulin absorber peaks high and falls low hours
  later, and must not be dosed harder for the peak. The first day of readings
  counts as not quiet: a share rises only after a whole day of CGM without a
  low.

The share stays within ``[lowest, highest]``; every change is kept with its
reason. Pure and clock-free: times are passed in.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

MAX_CHANGES_KEPT = 100
"""The newest share changes a learner keeps with their reasons (a live loop runs for months)."""


@dataclass(frozen=True)
class ShareLearningSettings:
    """Rules of the learner (see the module docstring)."""

    initial: float = 0.8
    lowest: float = 0.4
    highest: float = 1.0
    step_down: float = 0.85
    step_up: float = 1.1
    low_mg_dl: float = 70.0
    rearm_mg_dl: float = 100.0
    low_window_min: float = 480.0
    high_window_min: float = 360.0
    high_mg_dl: float = 180.0
    high_share: float = 1.0 / 3.0
    no_low_above_mg_dl: float = 90.0
    min_readings: int = 20
    quiet_min: float = 1440.0
    low_readings: int = 3
    artefact_drop_mg_dl_per_min: float = 8.0
    windows: str = "meals"

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if name == "windows":
                if value not in ("meals", "clock"):
                    raise ValueError(f"windows must be 'meals' or 'clock', got {value!r}")
            elif not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if not (self.lowest <= self.initial <= self.highest):
            raise ValueError("need lowest <= initial <= highest")
        if not (self.step_down < 1.0 < self.step_up):
            raise ValueError("step_down must be below 1 and step_up above 1")
        if not self.high_share <= 1.0:
            raise ValueError("high_share is a share of readings (<= 1)")


@dataclass(frozen=True)
class ShareChange:
    """One change of the learned share, and why."""

    time: datetime
    before: float
    after: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(), "before": self.before, "after": self.after, "reason": self.reason}


@dataclass
class _Window:
    start: datetime
    carbs_g: float
    readings: int = 0
    above: int = 0
    nadir_mg_dl: float = math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"start": self.start.isoformat(), "carbs_g": self.carbs_g, "readings": self.readings,
                "above": self.above, "nadir_mg_dl": None if math.isinf(self.nadir_mg_dl) else self.nadir_mg_dl}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "_Window":
        return cls(datetime.fromisoformat(d["start"]), float(d["carbs_g"]), int(d["readings"]), int(d["above"]),
                   math.inf if d["nadir_mg_dl"] is None else float(d["nadir_mg_dl"]))


@dataclass
class ShareLearner:
    """A learned share of one of the supervisor's limits (see the module docstring)."""

    settings: ShareLearningSettings = field(default_factory=ShareLearningSettings)
    share: float = float("nan")
    window: _Window | None = None
    pending_raises: list[_Window] = field(default_factory=list)
    last_meal: datetime | None = None
    low_readings_in_row: int = 0
    in_low_episode: bool = False
    last_low: datetime | None = None
    first_reading: datetime | None = None
    last_reading: tuple[datetime, float] | None = None
    suspect_low: bool = False
    changes: deque[ShareChange] = field(default_factory=lambda: deque(maxlen=MAX_CHANGES_KEPT))

    def __post_init__(self) -> None:
        if math.isnan(self.share):
            self.share = self.settings.initial

    # --- inputs -------------------------------------------------------------------------
    def announce(self, time: datetime, carbs_g: float) -> None:
        """An announced meal: for the meal share, closes the previous window and opens one for this meal."""
        if not (carbs_g > 0 and math.isfinite(carbs_g)):
            return
        self.last_meal = time
        if self.settings.windows != "meals":
            return
        self._close()
        self.window = _Window(time, float(carbs_g))

    def observe(self, time: datetime, glucose_mg_dl: float | None) -> None:
        """A CGM reading (None or non-finite readings are ignored)."""
        if glucose_mg_dl is None or not math.isfinite(glucose_mg_dl):
            return
        s = self.settings
        if self.first_reading is None:
            self.first_reading = time
        w = self.window
        if w is not None and time - w.start >= timedelta(minutes=s.high_window_min):
            self._close()
            w = None
        if w is None and s.windows == "clock":
            w = self.window = _Window(time, 0.0)
        if w is not None and time >= w.start:
            w.readings += 1
            w.above += glucose_mg_dl > s.high_mg_dl
            w.nadir_mg_dl = min(w.nadir_mg_dl, glucose_mg_dl)
        self._watch_lows(time, glucose_mg_dl)
        self._settle_raises(time)

    # --- rules --------------------------------------------------------------------------
    def _watch_lows(self, time: datetime, glucose: float) -> None:
        s = self.settings
        if glucose > s.rearm_mg_dl:
            self.in_low_episode = False
            self.suspect_low = False
        if self.last_reading is not None:
            t0, g0 = self.last_reading
            minutes = (time - t0).total_seconds() / 60.0
            if minutes > 0 and (g0 - glucose) / minutes > s.artefact_drop_mg_dl_per_min:
                self.suspect_low = True  # an implausibly fast fall: the lows that follow are the sensor's
        self.last_reading = (time, glucose)
        if self.suspect_low:
            self.low_readings_in_row = 0
            return
        self.low_readings_in_row = self.low_readings_in_row + 1 if glucose <= s.low_mg_dl else 0
        if self.low_readings_in_row >= s.low_readings and not self.in_low_episode:
            self.in_low_episode = True
            self.last_low = time
            lower = max(self.share * s.step_down, s.lowest)
            if s.windows == "clock":
                self._change(time, lower, f"low {glucose:.0f} mg/dL")
            elif self.last_meal is not None and time - self.last_meal <= timedelta(minutes=s.low_window_min):
                minutes = (time - self.last_meal).total_seconds() / 60.0
                self._change(time, lower, f"low {glucose:.0f} mg/dL {minutes:.0f} min after an announced meal")

    def _close(self) -> None:
        """Stop counting the current meal's readings; a high meal waits to see whether a low follows."""
        s = self.settings
        w, self.window = self.window, None
        if w is None or w.readings < s.min_readings:
            return
        if w.above / w.readings >= s.high_share and w.nadir_mg_dl > s.no_low_above_mg_dl:
            self.pending_raises.append(w)

    def _settle_raises(self, time: datetime) -> None:
        s = self.settings
        wait = timedelta(minutes=s.low_window_min)
        while self.pending_raises and time - self.pending_raises[0].start >= wait:
            w = self.pending_raises.pop(0)
            calm_from = w.start - timedelta(minutes=s.quiet_min)
            quiet = (self.first_reading is not None and self.first_reading <= calm_from
                     and (self.last_low is None or self.last_low < calm_from))
            if quiet:
                what = f"after {w.carbs_g:.0f} g at {w.start:%H:%M}" if s.windows == "meals" else \
                    f"in the {s.high_window_min / 60:.0f} h from {w.start:%H:%M}"
                self._change(time, min(self.share * s.step_up, s.highest),
                             f"{100 * w.above / w.readings:.0f} % of readings above {s.high_mg_dl:g} mg/dL {what} "
                             f"(lowest {w.nadir_mg_dl:.0f}), no low since {s.quiet_min / 60:.0f} h before")

    def _change(self, time: datetime, new: float, reason: str) -> None:
        if new != self.share:
            self.changes.append(ShareChange(time, self.share, new, reason))
            self.share = new

    # --- state (decision records) --------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return None if t is None else t.isoformat()

        return {
            "share": self.share,
            "window": None if self.window is None else self.window.to_dict(),
            "pending_raises": [w.to_dict() for w in self.pending_raises],
            "last_meal": iso(self.last_meal),
            "low_readings_in_row": self.low_readings_in_row,
            "in_low_episode": self.in_low_episode,
            "last_low": iso(self.last_low),
            "first_reading": iso(self.first_reading),
            "last_reading": None if self.last_reading is None else [iso(self.last_reading[0]), self.last_reading[1]],
            "suspect_low": self.suspect_low,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], settings: ShareLearningSettings) -> "ShareLearner":
        def when(key: str) -> datetime | None:
            return None if data[key] is None else datetime.fromisoformat(data[key])

        return cls(settings, float(data["share"]),
                   None if data["window"] is None else _Window.from_dict(data["window"]),
                   [_Window.from_dict(w) for w in data["pending_raises"]], when("last_meal"),
                   int(data["low_readings_in_row"]), bool(data["in_low_episode"]), when("last_low"),
                   when("first_reading"),
                   None if data["last_reading"] is None else (datetime.fromisoformat(data["last_reading"][0]),
                                                               float(data["last_reading"][1])),
                   bool(data["suspect_low"]))
