"""What the receiver keeps of uploaded documents, and what of them reaches the loop.

**De-duplication** follows Nightscout: entries by time + ``type`` (an
upsert), treatments by ``identifier`` when present, else ``created_at`` +
``eventType``; devicestatus and profile documents are inserted as they come
(profiles are listed newest ``startDate`` first, as Nightscout's profile API). A
re-uploaded entry or treatment updates the stored document and is *not*
handed to the loop again (a retried carb upload never doubles the carbs).

**Carbohydrates**: a treatment with ``carbs`` (not 0), or any ``Carb
Correction``, announces carbohydrates, whatever its ``eventType`` (``Meal
Bolus``, ``Snack Bolus``, xDrip+'s ``<none>`` ...), except the loop's own
uploads (``enteredBy: "glucotwin"``, :data:`LOOP_ENTERED_BY`), so a loop that
uploads to its own receiver does not announce its meals twice. Other
treatments are stored only.

Documents that are not usable become :class:`~sensors.reading.Rejected` items
with the reasons of :mod:`sensors.nightscout.entry`. Readings' source is
``"nightscout-api:<device>"`` (:data:`TRANSPORT`); the store does not judge
readings against the clock, the loop's validator does.
"""

from __future__ import annotations

import secrets
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any, Callable

from sensors._queue import BoundedItems
from sensors.files.nightscout import nightscout_number, nightscout_time, raw_json
from sensors.nightscout.entry import (CARB_EVENT_TYPES, TEMP_TARGET_EVENT, CarbAnnouncement, TempTargetTreatment,
                                      entry_to_reading, treatment_to_announcement, treatment_to_item)
from sensors.reading import GlucoseReading, Rejected

TRANSPORT = "nightscout-api"
LOOP_ENTERED_BY = "glucotwin"
MAX_STORED = 100_000
RAW_MAX_CHARS = 200
"""Raw text kept in a ``Rejected`` (longer is cut, with an ellipsis)."""

Item = GlucoseReading | Rejected | CarbAnnouncement


def iso_z(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms(t: datetime) -> int:
    return int(round(t.timestamp() * 1000))


def _parse_iso(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        t = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def clip(text: str) -> str:
    return text if len(text) <= RAW_MAX_CHARS else text[: RAW_MAX_CHARS - 1] + "\u2026"


class Collection:
    """Documents of one collection: insertion-ordered, keyed for de-duplication, bounded."""

    def __init__(self, time_field: str, max_stored: int) -> None:
        self.time_field = time_field
        self.max_stored = max_stored
        self.docs: OrderedDict[Any, dict[str, Any]] = OrderedDict()

    def upsert(self, key: Any, doc: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store ``doc`` under ``key``; returns (stored doc, whether it is new)."""
        old = self.docs.get(key)
        if old is not None:
            doc["_id"] = old["_id"]
            self.docs[key] = doc
            return doc, False
        doc.setdefault("_id", secrets.token_hex(12))
        self.docs[key] = doc
        while len(self.docs) > self.max_stored:
            self.docs.popitem(last=False)
        return doc, True

    def newest(self, count: int, keep: Callable[[dict[str, Any]], bool] | None = None) -> list[dict[str, Any]]:
        docs = [d for d in self.docs.values() if keep is None or keep(d)]
        docs.sort(key=lambda d: d["_sort"], reverse=True)
        return [{k: v for k, v in d.items() if k != "_sort"} for d in docs[:count]]


class DocumentStore:
    """The collections (thread-safe); new readings, announcements and rejections go to ``queue``.

    ``subject`` is given to the readings and announcements; ``clock`` dates
    documents that carry no usable time.
    """

    def __init__(self, queue: BoundedItems[Item], subject: str, clock: Callable[[], datetime],
                 max_stored: int) -> None:
        self.queue = queue
        self.subject = subject
        self.clock = clock
        self.lock = threading.Lock()
        self.entries = Collection("date", max_stored)
        self.treatments = Collection("created_at", max_stored)
        self.devicestatus = Collection("created_at", max_stored)
        self.profile = Collection("startDate", max_stored)

    def collection(self, name: str) -> Collection:
        return {"entries": self.entries, "treatments": self.treatments, "devicestatus": self.devicestatus,
                "profile": self.profile}[name]

    def newest(self, collection: str, count: int, sgv_only: bool = False) -> list[dict[str, Any]]:
        store = self.collection(collection)
        with self.lock:
            return store.newest(count, (lambda d: d.get("type") == "sgv") if sgv_only else None)

    def receive(self, collection: str, document: Any) -> tuple[list[dict[str, Any]], int]:
        """Store a decoded body's documents; returns (stored docs, how many were rejected)."""
        docs = document if isinstance(document, list) else [document]
        stored: list[dict[str, Any]] = []
        rejected = 0
        handler = {"entries": self._entry, "treatments": self._treatment, "devicestatus": self._status,
                   "profile": self._profile}[collection]
        with self.lock:
            for doc in docs:
                try:
                    outcome = handler(doc)
                except Exception as err:  # noqa: BLE001 - a hostile document must not kill the request
                    outcome = Rejected(clip(raw_json(doc)), None,
                                       f"malformed {collection[:-1] if collection != 'entries' else 'entry'}: "
                                       f"{type(err).__name__}")
                if isinstance(outcome, Rejected):
                    rejected += 1
                    if collection not in ("devicestatus", "profile"):
                        self.queue.put(outcome)
                elif outcome is not None:
                    stored.append({k: v for k, v in outcome.items() if k != "_sort"})
        return stored, rejected

    def reject_body(self, collection: str, raw: str, reason: str) -> None:
        if collection not in ("devicestatus", "profile"):
            self.queue.put(Rejected(clip(raw), None, reason))

    def _entry(self, doc: Any) -> dict[str, Any] | Rejected | None:
        if not isinstance(doc, dict):
            return Rejected(clip(raw_json(doc)), None, "malformed entry: not a JSON object")
        kind = doc.get("type")
        if kind is None or kind == "sgv" or not isinstance(kind, str):
            reading = entry_to_reading(doc, subject=self.subject, transport=TRANSPORT)
            if isinstance(reading, Rejected):
                return reading
            time = reading.time
            kind = "sgv"
        else:  # mbg, cal, sensor ...: kept for readers of the API, not glucose for the loop
            when = nightscout_time(doc.get("date"), doc.get("dateString"))
            if isinstance(when, str):
                return Rejected(clip(raw_json(doc)), None, when)
            time, reading = when, None
        stored = {**{k: v for k, v in doc.items() if k != "_id"}, "type": kind, "sysTime": iso_z(time),
                  "utcOffset": 0, "_sort": epoch_ms(time)}
        stored.setdefault("date", epoch_ms(time))
        result, new = self.entries.upsert((stored["sysTime"], kind), stored)
        if new and reading is not None:
            self.queue.put(reading)
        return result

    def _treatment(self, doc: Any) -> dict[str, Any] | Rejected | None:
        if not isinstance(doc, dict):
            return Rejected(clip(raw_json(doc)), None, "malformed treatment: not a JSON object")
        announcement: CarbAnnouncement | TempTargetTreatment | None = None
        if doc.get("eventType") == TEMP_TARGET_EVENT:  # for the loop's controller (controller.temp_target)
            parsed_target = treatment_to_item(doc, subject=self.subject, transport=TRANSPORT)
            if isinstance(parsed_target, Rejected):
                return parsed_target
            announcement = parsed_target
        elif announces_carbs(doc):
            parsed = treatment_to_announcement(
                doc if doc.get("eventType") in CARB_EVENT_TYPES else {**doc, "eventType": "Carb Correction"},
                subject=self.subject, transport=TRANSPORT)
            if isinstance(parsed, Rejected):
                return parsed
            announcement = parsed
        time = _parse_iso(doc.get("created_at"))
        if time is None:
            when = nightscout_time(doc.get("date"), None)
            time = when if isinstance(when, datetime) else self.clock()
        stored = {**{k: v for k, v in doc.items() if k != "_id"}, "created_at": iso_z(time), "utcOffset": 0,
                  "_sort": epoch_ms(time)}
        identifier = doc.get("identifier")
        key = ("identifier", identifier) if isinstance(identifier, str) and identifier else \
            (stored["created_at"], str(doc.get("eventType")))
        result, new = self.treatments.upsert(key, stored)
        if new and announcement is not None:
            self.queue.put(announcement)
        return result

    def _status(self, doc: Any) -> dict[str, Any] | Rejected | None:
        if not isinstance(doc, dict):
            return Rejected(clip(raw_json(doc)), None, "malformed devicestatus: not a JSON object")
        time = _parse_iso(doc.get("created_at")) or self.clock()
        stored = {**{k: v for k, v in doc.items() if k != "_id"}, "created_at": iso_z(time), "utcOffset": 0,
                  "_sort": epoch_ms(time)}
        result, _ = self.devicestatus.upsert(secrets.token_hex(12), stored)
        return result

    def _profile(self, doc: Any) -> dict[str, Any] | Rejected | None:
        """A profile record: stored as sent (``created_at`` added when missing, as Nightscout does)."""
        if not isinstance(doc, dict):
            return Rejected(clip(raw_json(doc)), None, "malformed profile: not a JSON object")
        start = _parse_iso(doc.get("startDate")) or _parse_iso(doc.get("created_at")) or self.clock()
        stored = {**{k: v for k, v in doc.items() if k != "_id"}, "_sort": epoch_ms(start)}
        stored.setdefault("created_at", iso_z(self.clock()))
        result, _ = self.profile.upsert(secrets.token_hex(12), stored)
        return result


def announces_carbs(doc: dict[str, Any]) -> bool:
    """Whether a treatment announces carbohydrates to the loop (see the module docstring)."""
    if doc.get("enteredBy") == LOOP_ENTERED_BY:
        return False
    carbs = doc.get("carbs")
    if doc.get("eventType") == "Carb Correction":
        return True
    if carbs is None or carbs == "":
        return False
    return nightscout_number(carbs) != 0
