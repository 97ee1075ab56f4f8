"""The loop's side of the Nightscout upload: collect after each cycle, send in the background.

Documents are queued in the journal's file after each cycle and sent by a
background thread (:mod:`controller.loop.nightscout.uploader`), so a slow or
absent Nightscout never delays a cycle.

After each cycle, in the loop's thread, it gathers what the journal does not
hold (:class:`~controller.loop.nightscout.devicestatus.CycleExtras`): the
cycle's twin forecast, the twin's forecast with a zero temp (``predBGs.ZT``),
the twin's carbohydrate on board, the pump's status (one STATUS query through
the loop's pump link, only after a cycle whose commands the pump answered, so
a silent pump costs no wait; :mod:`.pump_status`) and the device's battery
(:mod:`.battery`). On its first cycle it queues the profile if it changed
(:mod:`.profile`).
"""

from __future__ import annotations

import sys
import threading
from datetime import datetime, timedelta
from typing import Any, Callable, TextIO

from controller.loop.config.live_config import LiveConfig
from controller.loop.cycle_result import CycleResult
from controller.loop.nightscout.battery import read_battery
from controller.loop.nightscout.devicestatus import CycleExtras
from controller.loop.nightscout.insulin import InsulinCurve
from controller.loop.nightscout.profile import content_hash, profile_document, profile_store
from controller.loop.nightscout.pump_status import read_pump_status
from controller.twin_policy import TwinMPCPolicy
from twin.model_state import MG_PER_G, State

FORECAST_HORIZON_MIN = 180.0
UPLOAD_FLUSH_S = 5.0


class NightscoutUpload:
    """The loop's side of the Nightscout upload: collect after each cycle (with the twin's
    forecast, for ``predBGs``), send in the background, flush on the way out. Never raises
    into the loop: a failure is printed once per kind and the loop goes on."""

    def __init__(self, config: LiveConfig, policy: TwinMPCPolicy, err: TextIO = sys.stderr) -> None:
        from controller.loop.nightscout.uploader import (
            NightscoutClient,
            NightscoutUploader,
        )

        ns = config.nightscout
        if ns is None:
            raise ValueError("NightscoutUpload needs a [nightscout] section")
        self.policy = policy
        self.err = err
        self.pump: Any = None
        """the loop's pump port (``PumpLinkPort``), set by the composition root: the pump's status"""
        self.read_battery: Callable[[], dict[str, Any] | None] = read_battery
        self._profile_store = profile_store(config.profile, config.limits.iob_action_duration_min / 60.0,
                                           config.profile.timezone or "UTC")
        self._profile_checked = False
        self._reported: set[str] = set()
        client = NightscoutClient(ns.url, ns.api_secret(), timeout_s=ns.timeout_s)
        self.client, self.device = client, ns.device
        self._degraded_posted: tuple[str, datetime] | None = None
        profile = config.profile
        curve = InsulinCurve(config.limits.iob_action_duration_min, config.limits.iob_peak_min,
                             lambda t: profile.basal_u_per_h_at(t))
        self.uploader = NightscoutUploader(config.journal_path, client, device=ns.device,
                                           upload_entries=ns.upload_entries, batch_size=ns.batch_size,
                                           max_backoff_s=ns.max_backoff_s, backfill_hours=ns.backfill_hours,
                                           log=lambda line: print(line, file=err, flush=True), insulin=curve)
        self.uploader.start()

    def _guard(self, what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - uploading is never worth stopping the loop
            if what not in self._reported:
                self._reported.add(what)
                print(f"nightscout: {what} failed: {type(exc).__name__}: {exc}", file=self.err, flush=True)

    def cycle(self, result: CycleResult) -> None:
        if not self._profile_checked:
            self._profile_checked = True
            self._guard("profile", lambda: self.uploader.queue_profile(
                profile_document(self._profile_store, result.time), content_hash(self._profile_store)))
        extras = self.extras(result)
        self._guard("collect", lambda: self.uploader.collect(extras={result.cycle: extras}))
        if result.degraded:
            self._post_degraded(result)

    def extras(self, result: CycleResult) -> CycleExtras:
        """What the live loop knows of the cycle that just ran (each part on its own: one that
        fails is left out, reported once)."""
        forecast = zero_temp = cob = pump = battery = None
        if result.forecast is not None:  # the runtime's forecast of this cycle (FORECAST_HORIZON_MIN)
            forecast = self._try("forecast", lambda: result.forecast.to_dict())
            horizon = float(result.forecast.horizons_min[-1])
            zero_temp = self._try("zero-temp forecast", lambda: self.policy.estimator.forecast(
                horizon, basal_u_per_h=0.0).to_dict())
        cob = self._try("carbs on board", lambda: twin_carbs_on_board_g(self.policy.estimator))
        if self.pump is not None and result.outcomes and all(o.status in ("ack", "nak") for o in result.outcomes):
            pump = self._try("pump status", lambda: read_pump_status(self.pump))
        battery = self._try("battery", self.read_battery)
        return CycleExtras(forecast, zero_temp, cob, pump, battery)

    def _try(self, what: str, fn: Callable[[], Any]) -> Any:
        out: list[Any] = [None]
        self._guard(what, lambda: out.__setitem__(0, fn()))
        return out[0]

    def _post_degraded(self, result: CycleResult) -> None:
        """The loop's trouble straight to Nightscout (``loop.failureReason``, as Loop reports it):
        a journal that cannot be written cannot queue the upload either. On a change, then at
        most every 30 min; in the background, never delaying the cycle."""
        last = self._degraded_posted
        if last is not None and last[0] == result.degraded and result.time - last[1] < timedelta(minutes=30):
            return
        self._degraded_posted = (result.degraded, result.time)
        doc = {"device": self.device, "created_at": result.time.isoformat(),
               "loop": {"timestamp": result.time.isoformat(), "failureReason": result.degraded},
               "openaps": {"suggested": {"timestamp": result.time.isoformat(), "reason": result.dose.reason}}}
        threading.Thread(target=self._guard, args=("degraded status", lambda: self.client.post("devicestatus", [doc])),
                         daemon=True).start()

    def collect(self) -> None:
        self._guard("collect", self.uploader.collect)

    def close(self) -> None:
        self._guard("collect", self.uploader.collect)
        self._guard("close", lambda: self.uploader.close(flush_timeout_s=UPLOAD_FLUSH_S))


def twin_carbs_on_board_g(estimator: Any) -> float | None:
    """Carbohydrate on board in the twin, grams: in the stomach and gut (the model's
    ``Q_STO1 + Q_STO2 + Q_GUT``, mg), announced and not yet eaten (the meal queue, eaten at
    5 g/min), and announced since the last update. None before the twin exists. Meals not
    announced are not here: the twin sees them as its disturbance (``predBGs.UAM``)."""
    if estimator is None:
        return None
    x = estimator.x
    gut_mg = float(x[State.Q_STO1] + x[State.Q_STO2] + x[State.Q_GUT])
    planned = float(estimator.meal.planned_g.sum())
    return max(gut_mg / MG_PER_G + planned + float(estimator.pending_carbs_g), 0.0)
