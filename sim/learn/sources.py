"""Read a person's history for ``glucotwin learn``: a trial trace, the loop's journal, a Nightscout export, a CGM file.

:func:`load_history` picks the reader by what the path is:

- a **trial trace** (``glucotwin trial``'s per-patient CSV: ``time, bg_mg_dl,
  cgm_mg_dl, carbs_g, insulin_u``): the CGM, the insulin delivered and the
  carbohydrates eaten (the simulator's meals: a person who recorded every meal);
- the loop's **journal** (SQLite): readings, deliveries (basal over the cycle's
  minutes, boluses) and meal announcements; the profile from the newest
  decision record;
- a **Nightscout export**: a directory with ``entries.json`` and optionally
  ``treatments.json`` (``insulin``, ``carbs``, ``Temp Basal`` with ``rate`` /
  ``absolute`` and ``duration``) and ``profile.json``; outside temp basals the
  profile's programmed basal is assumed;
- any **CGM file** ``glucotwin replay`` reads (iglu, Clarity, Nightscout
  entries): CGM only; insulin is the profile's programmed basal, no carbs.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from twin.learning.history import History, build_history
from twin.profile import PatientProfile


@dataclass(frozen=True)
class LoadedHistory:
    history: History
    kind: str                            # "trace", "journal", "nightscout", "cgm file (<format>)"
    profile: PatientProfile | None       # what the source itself says, when it does


def _time(text: str) -> datetime:
    t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


def is_trace(path: Path) -> bool:
    if path.suffix.lower() != ".csv":
        return False
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        header = handle.readline().strip().split(",")
    return {"time", "cgm_mg_dl", "carbs_g", "insulin_u"} <= set(header)


def is_sqlite(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(16) == b"SQLite format 3\x00"


def read_trace(path: Path, profile: PatientProfile | None = None) -> History:
    cgm, insulin, carbs = [], [], []
    with open(path, newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            t = _time(row["time"])
            if row.get("cgm_mg_dl"):
                cgm.append((t, float(row["cgm_mg_dl"])))
            if row.get("insulin_u"):
                insulin.append((t, float(row["insulin_u"])))
            if row.get("carbs_g"):
                carbs.append((t, float(row["carbs_g"])))
    return build_history(cgm, insulin, carbs, profile=profile)


def read_journal(path: Path, profile: PatientProfile | None = None) -> tuple[History, PatientProfile | None]:
    """A journal's readings, deliveries and announcements (read-only; a running loop may hold it)."""
    db = sqlite3.connect(f"file:{os.fspath(path)}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT kind, time, payload FROM events WHERE kind IN "
                          "('reading', 'delivery', 'announcement', 'decision') ORDER BY id").fetchall()
    finally:
        db.close()
    cgm, insulin, carbs = [], [], []
    found: PatientProfile | None = None
    for kind, time_text, payload_text in rows:
        payload = json.loads(payload_text)
        if kind == "reading":
            cgm.append((_time(payload["time"]), float(payload["glucose_mg_dl"])))
        elif kind == "delivery":
            start = _time(time_text)
            minutes = float(payload.get("minutes") or 5.0)
            rate = float(payload.get("basal_u_per_h") or 0.0)
            for m in range(int(round(minutes))):
                insulin.append((start + timedelta(minutes=m), rate / 60.0))
            if payload.get("bolus_u"):
                insulin.append((start, float(payload["bolus_u"])))
        elif kind == "announcement" and "ignored" not in payload:
            carbs.append((_time(payload.get("time", time_text)), float(payload.get("carbs_g", 0.0))))
        elif kind == "decision":
            found = _profile_in(payload) or found
    if not cgm:
        raise ValueError(f"{path}: the journal holds no readings")
    return build_history(cgm, insulin if insulin else None, carbs, profile=profile or found), found


def _profile_in(data: Any) -> PatientProfile | None:
    """The first clinical profile nested anywhere in a decision payload."""
    if isinstance(data, dict):
        if "carb_ratio_g_per_u" in data and "basal_schedule" in data:
            try:
                return PatientProfile.from_dict(data)
            except ValueError:
                return None
        for value in data.values():
            found = _profile_in(value)
            if found is not None:
                return found
    elif isinstance(data, list):
        for value in data:
            found = _profile_in(value)
            if found is not None:
                return found
    return None


def _ns_time(doc: dict[str, Any]) -> datetime | None:
    for key in ("created_at", "dateString", "timestamp"):
        if isinstance(doc.get(key), str):
            try:
                return _time(doc[key])
            except ValueError:
                continue
    for key in ("date", "mills"):
        if isinstance(doc.get(key), (int, float)):
            return datetime.fromtimestamp(doc[key] / 1000.0, tz=timezone.utc)
    return None


def read_nightscout(directory: Path, profile: PatientProfile | None) -> History:
    """``entries.json`` (+ ``treatments.json``) of a Nightscout export; ``profile`` supplies the basal."""
    entries = json.loads((directory / "entries.json").read_text())
    cgm = [(t, float(e["sgv"])) for e in entries if "sgv" in e and (t := _ns_time(e)) is not None]
    treatments_path = directory / "treatments.json"
    if not treatments_path.exists():
        return build_history(cgm, None, None, profile=profile)
    if profile is None:
        raise ValueError(f"{directory}: a Nightscout export with treatments needs the profile's basal (--profile)")
    treatments = json.loads(treatments_path.read_text())
    boluses, carbs, temps = [], [], []
    for doc in treatments:
        t = _ns_time(doc)
        if t is None:
            continue
        if doc.get("insulin"):
            boluses.append((t, float(doc["insulin"])))
        if doc.get("carbs"):
            carbs.append((t, float(doc["carbs"])))
        if doc.get("eventType") == "Temp Basal" and doc.get("duration") is not None:
            rate = doc.get("absolute", doc.get("rate"))
            if rate is not None:
                temps.append((t, float(doc["duration"]), float(rate)))
    insulin = list(boluses)
    first, last = min(t for t, _ in cgm), max(t for t, _ in cgm)
    temps.sort()
    minute = first.replace(second=0, microsecond=0)
    while minute <= last:
        rate = profile.basal_u_per_h_at(minute)
        for start, duration, temp_rate in temps:
            if start <= minute < start + timedelta(minutes=duration):
                rate = temp_rate
        insulin.append((minute, rate / 60.0))
        minute += timedelta(minutes=1)
    return build_history(cgm, insulin, carbs, profile=profile)


def load_history(path: str | os.PathLike[str], profile: PatientProfile | None = None, *, cgm_format: str = "auto",
                 tz: str = "UTC", cgm_units: str | None = None) -> LoadedHistory:
    """The history at ``path`` (module docstring). ``profile``: the person's, when the source lacks one.
    ``cgm_format``, ``tz``, ``cgm_units``: how to read a CGM file (as ``glucotwin replay`` reads one)."""
    path = Path(path)
    if path.is_dir():
        if not (path / "entries.json").exists():
            raise ValueError(f"{path}: a Nightscout export directory needs entries.json")
        return LoadedHistory(read_nightscout(path, profile), "nightscout", None)
    if is_sqlite(path):
        history, found = read_journal(path, profile)
        return LoadedHistory(history, "journal", found)
    if is_trace(path):
        return LoadedHistory(read_trace(path, profile), "trace", None)
    from sim.forecast.replay import load_cgm_file

    loaded = load_cgm_file(path, format=cgm_format, tz=tz, units=cgm_units)
    readings = loaded.result.readings
    subjects = {r.subject for r in readings}
    if len(subjects) > 1:
        first = readings[0].subject
        readings = [r for r in readings if r.subject == first]
    if profile is None:
        raise ValueError(f"{path}: a CGM-only file needs a profile for the assumed basal")
    history = build_history([(r.time, r.glucose_mg_dl) for r in readings], None, None, profile=profile)
    return LoadedHistory(history, f"cgm file ({loaded.format})", None)
