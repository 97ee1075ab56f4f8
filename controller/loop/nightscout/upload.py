"""The loop's side of the Nightscout upload: collect after each cycle, send in the background.

Documents are queued in the journal's file after each cycle and sent by a
background thread (:mod:`controller.loop.nightscout.uploader`), so a slow or
absent Nightscout never delays a cycle.
"""

from __future__ import annotations

import sys
import threading
from datetime import datetime, timedelta
from typing import Any, Callable, TextIO

from controller.loop.config.live_config import LiveConfig
from controller.loop.cycle_result import CycleResult
from controller.twin_policy import TwinMPCPolicy

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
        self._reported: set[str] = set()
        client = NightscoutClient(ns.url, ns.api_secret(), timeout_s=ns.timeout_s)
        self.client, self.device = client, ns.device
        self._degraded_posted: tuple[str, datetime] | None = None
        self.uploader = NightscoutUploader(config.journal_path, client, device=ns.device,
                                           upload_entries=ns.upload_entries, batch_size=ns.batch_size,
                                           max_backoff_s=ns.max_backoff_s, backfill_hours=ns.backfill_hours,
                                           log=lambda line: print(line, file=err, flush=True))
        self.uploader.start()

    def _guard(self, what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - uploading is never worth stopping the loop
            if what not in self._reported:
                self._reported.add(what)
                print(f"nightscout: {what} failed: {type(exc).__name__}: {exc}", file=self.err, flush=True)

    def cycle(self, result: CycleResult) -> None:
        def collect() -> None:
            forecast = None
            if result.forecast is not None:  # the runtime's forecast of this cycle (FORECAST_HORIZON_MIN)
                forecast = result.forecast.to_dict()
            self.uploader.collect({result.cycle: forecast} if forecast is not None else None)

        self._guard("collect", collect)
        if result.degraded:
            self._post_degraded(result)

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
