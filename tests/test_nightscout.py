"""Nightscout: the receiver (a glucose source and a Nightscout stand-in), the journal -> document
mapping, the uploader's outbox (offline, restart, backoff), and a HIL run uploading end to end."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest

from controller.loop.journal import Journal
from controller.loop.nightscout.docs import CycleEvents, cycle_documents, pred_bgs, reading_entry
from controller.loop.nightscout.uploader import NightscoutClient, NightscoutUploader, PostResult, api_secret_hash
from controller.loop.ports import PumpOrder, PumpOutcome
from controller.loop.runtime import ClosedLoop, LoopSettings
from controller.twin_policy import TwinMPCPolicy
from sensors.nightscout.entry import CarbAnnouncement, reading_to_entry
from sensors.nightscout.receiver import NightscoutReceiver
from sensors.reading import GlucoseReading, Rejected
from twin.personalize import default_prior, personalize
from twin.profile import PatientProfile, flat_basal
from skip_reasons import skip_reason

SECRET = "correct horse battery"
T0 = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)
PROFILE = PatientProfile("ns", 70.0, 40.0, 12.0, 45.0, 35.0, flat_basal(0.8), 120.0)

TREATMENT_KEYS = {"eventType", "created_at", "enteredBy"}
IOB_KEYS = {"iob", "timestamp"}
SUGGESTED_KEYS = {"temp", "rate", "duration", "reason", "deliverAt", "timestamp", "bg", "IOB", "sensitivityRatio"}


def http(method: str, url: str, body: object = None, secret: str | None = SECRET, raw: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, object, dict[str, str]]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    h = {"Content-Type": "application/json", **(headers or {})}
    if secret is not None:
        h["api-secret"] = hashlib.sha1(secret.encode()).hexdigest()
    request = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null"), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null"), dict(err.headers)


@pytest.fixture
def receiver():
    r = NightscoutReceiver("127.0.0.1", 0, SECRET)
    r.start()
    yield r
    r.close()


def entry(minutes: float, sgv: object = 120, **extra: object) -> dict[str, object]:
    t = T0 + timedelta(minutes=minutes)
    return {"type": "sgv", "sgv": sgv, "date": int(t.timestamp() * 1000),
            "dateString": t.isoformat().replace("+00:00", "Z"), "device": "xDrip-DexcomG6", **extra}


# --- the receiver -------------------------------------------------------------------------------


def test_receiver_needs_the_sha1_of_the_api_secret(receiver):
    url = f"{receiver.url}/api/v1/entries"
    assert http("POST", url, [entry(0)], secret=None)[0] == 401
    assert http("POST", url, [entry(0)], secret="wrong secret, long enough")[0] == 401
    plain = {"api-secret": SECRET}  # the plain secret is not the header value
    assert http("POST", url, [entry(0)], secret=None, headers=plain)[0] == 401
    assert http("GET", f"{receiver.url}/api/v1/entries.json", secret=None)[0] == 401
    assert http("POST", f"{receiver.url}/api/v1/treatments", [{}], secret=None)[0] == 401
    assert http("POST", f"{receiver.url}/api/v1/devicestatus", [{}], secret=None)[0] == 401
    assert receiver.poll(0.0) == [] and receiver.entries() == []
    status, body, _ = http("GET", f"{receiver.url}/api/v1/status.json", secret=None)
    assert status == 200 and body["status"] == "ok" and body["authorized"] is False
    status, body, _ = http("GET", f"{receiver.url}/api/v1/verifyauth")
    assert status == 200 and body["message"]["canWrite"] is True
    assert http("POST", url, [entry(0)])[0] == 200
    with pytest.raises(ValueError, match="12 characters"):
        NightscoutReceiver("127.0.0.1", 0, "short")


def test_entries_in_readings_out(receiver):
    status, stored, headers = http("POST", f"{receiver.url}/api/v1/entries.json",
                                   [entry(0, 100, direction="Flat", noise=1), entry(5, 39)])
    assert status == 200 and len(stored) == 2 and all(len(d["_id"]) == 24 for d in stored)
    assert headers["X-Glucotwin-Rejected"] == "0"
    assert http("POST", f"{receiver.url}/api/v1/entries", entry(10, 131.5))[0] == 200  # one object
    items = receiver.poll(1.0)
    assert [type(i) for i in items] == [GlucoseReading] * 3
    a, low, c = items
    assert (a.time, a.glucose_mg_dl, a.trend, a.noise) == (T0, 100.0, "Flat", 1)
    assert a.source == "nightscout-api:xDrip-DexcomG6"
    assert low.clipped and low.glucose_mg_dl == 40.0
    assert c.time == T0 + timedelta(minutes=10) and c.glucose_mg_dl == 131.5
    # a re-upload (xDrip+ retrying) is stored once and not handed to the loop again
    assert http("POST", f"{receiver.url}/api/v1/entries", [entry(10, 131.5)])[0] == 200
    assert receiver.poll(0.2) == []
    status, newest, _ = http("GET", f"{receiver.url}/api/v1/entries.json?count=2")
    assert status == 200 and [d["sgv"] for d in newest] == [131.5, 39]
    assert len(http("GET", f"{receiver.url}/api/v1/entries/sgv.json?count=50")[1]) == 3
    # a calibration is stored (for readers of the API) but is not glucose for the loop
    assert http("POST", f"{receiver.url}/api/v1/entries", [{"type": "cal", "date": entry(11)["date"],
                                                             "slope": 1000}])[0] == 200
    assert receiver.poll(0.2) == [] and len(receiver.entries()) == 4


def test_carb_treatments_become_announcements_once(receiver):
    meal = {"eventType": "Meal Bolus", "carbs": 45, "insulin": 3.0, "created_at": "2026-01-01T07:00:00Z",
            "enteredBy": "xdrip"}
    snack = {"eventType": "<none>", "carbs": "12", "created_at": "2026-01-01T07:30:00.000Z"}
    own = {"eventType": "Meal Bolus", "carbs": 60, "insulin": 4, "created_at": "2026-01-01T08:00:00.000Z",
           "enteredBy": "glucotwin"}  # the loop's own upload: never announced back to it
    basal = {"eventType": "Temp Basal", "absolute": 1.2, "rate": 1.2, "duration": 30,
             "created_at": "2026-01-01T08:05:00.000Z"}
    status, stored, _ = http("POST", f"{receiver.url}/api/v1/treatments", [meal, snack, own, basal])
    assert status == 200 and len(stored) == 4
    items = receiver.poll(1.0)
    assert [type(i) for i in items] == [CarbAnnouncement, CarbAnnouncement]
    assert (items[0].carbs_g, items[0].time, items[0].source) == (45.0, T0 + timedelta(hours=1), "nightscout-api:xdrip")
    assert items[1].carbs_g == 12.0
    assert http("POST", f"{receiver.url}/api/v1/treatments", [meal])[0] == 200  # retried upload
    assert receiver.poll(0.2) == [] and len(receiver.treatments()) == 4
    assert {d["created_at"] for d in receiver.treatments()} >= {"2026-01-01T07:00:00.000Z"}


def test_a_temporary_target_posted_as_a_treatment_reaches_the_loop_once(receiver):
    from sensors.nightscout.entry import TempTargetTreatment

    tt = {"eventType": "Temporary Target", "reason": "Eating Soon", "targetBottom": 90, "targetTop": 90,
          "duration": 45, "units": "mg/dl", "created_at": "2026-01-01T07:00:00.000Z", "enteredBy": "careportal"}
    assert http("POST", f"{receiver.url}/api/v1/treatments", [tt])[0] == 200
    items = receiver.poll(1.0)
    assert [type(i) for i in items] == [TempTargetTreatment]
    assert items[0].time == T0 + timedelta(hours=1) and items[0].treatment["duration"] == 45
    assert items[0].source == "nightscout-api:careportal"
    assert http("POST", f"{receiver.url}/api/v1/treatments", [tt])[0] == 200  # a retried upload
    assert receiver.poll(0.2) == []


def test_malformed_documents_are_rejected_with_reasons(receiver):
    url = f"{receiver.url}/api/v1/entries"
    bad = [entry(0, "abc"), entry(5, 5), {"type": "sgv", "sgv": 100}, "not an object", entry(10, 5000)]
    status, stored, headers = http("POST", url, bad + [entry(15, 110)])
    assert status == 200 and [d["sgv"] for d in stored] == [110] and headers["X-Glucotwin-Rejected"] == "5"
    items = receiver.poll(1.0)
    rejected = [i for i in items if isinstance(i, Rejected)]
    assert [r.reason.split(" ")[0] for r in rejected] == ["non-numeric", "sensor", "missing", "malformed", "glucose"]
    assert [type(i) for i in items].count(GlucoseReading) == 1
    # not JSON / not an object or array / not UTF-8: 400 and a rejection for the loop's journal
    assert http("POST", url, raw=b"{sgv: 1")[0] == 400
    assert http("POST", url, raw=b"42")[0] == 400
    assert http("POST", url, raw=b"\xff\xfe")[0] == 400
    reasons = [i.reason for i in receiver.poll(1.0)]
    assert reasons == ["malformed message: not valid JSON", "malformed message: expected a JSON object or array, "
                       "got int", "malformed message: not UTF-8"]
    # bodies are size-limited
    small = NightscoutReceiver("127.0.0.1", 0, SECRET, max_body_bytes=200)
    with small:
        status, body, _ = http("POST", f"{small.url}/api/v1/entries", [entry(k) for k in range(10)])
        assert status == 413 and "200 bytes" in body["description"]
        assert small.poll(0.5)[0].reason.startswith("malformed message: ")
    treatments = [{"eventType": "Carb Correction", "created_at": "2026-01-01T07:00:00Z"},
                  {"eventType": "Meal Bolus", "carbs": "lots", "created_at": "2026-01-01T07:05:00Z"},
                  {"eventType": "Meal Bolus", "carbs": 900, "created_at": "2026-01-01T07:10:00Z"}]
    status, stored, _ = http("POST", f"{receiver.url}/api/v1/treatments", treatments)
    assert status == 200 and stored == []
    assert [i.reason.split(":")[0] for i in receiver.poll(1.0)] == ["missing carbs", "non-numeric carbs \"lots\"",
                                                                     "carbs out of range"]
    assert http("GET", f"{receiver.url}/api/v1/nothing")[0] == 404
    assert http("GET", f"{receiver.url}/api/v1/entries.json?count=x")[0] == 400


# --- the mapping -------------------------------------------------------------------------------


def cycle_events(bolus_u: float = 0.0, carbs_g: float = 0.0, temp_status: str = "ack") -> CycleEvents:
    t = T0.isoformat()
    decision = {"input": {"time": t, "cgm_mg_dl": 181.4, "announced_carbs_g": carbs_g, "cycle_min": 5.0},
                "dose": {"basal_u_per_h": 1.25, "bolus_u": bolus_u, "reason": "MPC: temp basal up",
                         "diagnostics": {"iob_u": 0.5, "sensitivity_factor": 0.8}}}
    commands = [PumpOrder(1, "temp_basal", T0, T0 + timedelta(minutes=2), rate_u_per_h=1.25,
                          duration_min=30.0).to_dict()]
    replies = {1: (t, PumpOutcome(1, temp_status, rate_u_per_h=1.25 if temp_status == "ack" else 0.8,
                                  reason="" if temp_status == "ack" else "limit").to_dict())}
    if bolus_u:
        commands.append(PumpOrder(2, "bolus", T0, T0 + timedelta(minutes=2), bolus_u=bolus_u).to_dict())
        replies[2] = (t, PumpOutcome(2, "ack", bolus_u=bolus_u, rate_u_per_h=1.25).to_dict())
    delivery = {"basal_u_per_h": 1.25, "bolus_u": bolus_u, "minutes": 5.0}
    return CycleEvents(7, decision, delivery, commands, replies)


def forecast(carb_effect: float = 0.0) -> dict[str, list[float]]:
    h = [float(m) for m in range(0, 181, 5)]
    return {"horizons_min": h, "glucose_mg_dl": [181.0 - 0.3 * m + carb_effect for m in h],
            "carb_effect_mg_dl": [carb_effect] * len(h)}


def test_entries_have_exactly_nightscout_fields():
    reading = GlucoseReading(T0, 123.4, "mqtt:xDrip-DexcomG6", trend="Flat", noise=1)
    doc = reading_entry(reading.to_dict())
    assert set(doc) == {"type", "sgv", "date", "dateString", "device", "direction", "noise"}
    assert doc == reading_to_entry(reading)  # the same as the sensors side writes
    assert doc["dateString"] == "2026-01-01T06:00:00.000Z" and doc["sgv"] == 123
    assert set(reading_entry(GlucoseReading(T0, 40.0, "sim", clipped=True).to_dict())) == \
        {"type", "sgv", "date", "dateString", "device"}


def test_treatments_have_exactly_nightscout_fields():
    docs = {d["eventType"]: d for c, _, d in cycle_documents(cycle_events()) if c == "treatments"}
    assert set(docs) == {"Temp Basal"}
    assert set(docs["Temp Basal"]) == TREATMENT_KEYS | {"absolute", "rate", "duration"}
    assert (docs["Temp Basal"]["absolute"], docs["Temp Basal"]["duration"]) == (1.25, 30)
    assert docs["Temp Basal"]["created_at"] == "2026-01-01T06:00:00.000Z"

    docs = {d["eventType"]: d for c, _, d in cycle_documents(cycle_events(bolus_u=0.4)) if c == "treatments"}
    assert set(docs) == {"Temp Basal", "Correction Bolus"}
    assert set(docs["Correction Bolus"]) == TREATMENT_KEYS | {"insulin"} and docs["Correction Bolus"]["insulin"] == 0.4

    meal = cycle_documents(cycle_events(bolus_u=3.2, carbs_g=45))
    docs = {d["eventType"]: d for c, _, d in meal if c == "treatments"}
    assert set(docs) == {"Temp Basal", "Meal Bolus"}
    assert set(docs["Meal Bolus"]) == TREATMENT_KEYS | {"insulin", "carbs"}
    assert (docs["Meal Bolus"]["insulin"], docs["Meal Bolus"]["carbs"]) == (3.2, 45)

    docs = {d["eventType"]: d for c, _, d in cycle_documents(cycle_events(carbs_g=20, temp_status="nak"))
            if c == "treatments"}
    assert set(docs) == {"Carb Correction"}  # refused temp basal: none uploaded; carbs without a bolus
    assert set(docs["Carb Correction"]) == TREATMENT_KEYS | {"carbs"}


def test_devicestatus_is_openaps_shaped():
    docs = cycle_documents(cycle_events(bolus_u=3.2, carbs_g=45), forecast(carb_effect=30.0))
    (status,) = [d for c, _, d in docs if c == "devicestatus"]
    assert set(status) == {"device", "created_at", "openaps", "loop"}  # no pump status given: no "pump"
    assert status["device"] == "openaps://glucotwin" and status["created_at"] == "2026-01-01T06:00:00.000Z"
    assert set(status["openaps"]) == {"iob", "suggested", "enacted"}
    assert set(status["openaps"]["iob"]) == IOB_KEYS | {"time"} and status["openaps"]["iob"]["iob"] == 3.7  # 0.5 + bolus
    suggested, enacted = status["openaps"]["suggested"], status["openaps"]["enacted"]
    assert set(suggested) == SUGGESTED_KEYS | {"units", "predBGs", "eventualBG"}
    assert set(enacted) == SUGGESTED_KEYS | {"units", "predBGs", "eventualBG", "received"}
    assert enacted["received"] is True and enacted["rate"] == 1.25 and enacted["units"] == 3.2
    assert (suggested["temp"], suggested["bg"], suggested["duration"], suggested["sensitivityRatio"]) == \
        ("absolute", 181, 30, 1.25)
    preds = suggested["predBGs"]
    assert set(preds) == {"IOB", "COB"} and len(preds["IOB"]) == 37
    assert preds["COB"][0] == 211 and preds["IOB"][0] == 181 and preds["IOB"][-1] == 127
    assert all(isinstance(v, int) for v in preds["IOB"]) and suggested["eventualBG"] == preds["COB"][-1]
    # no forecast: no predBGs; a refused temp basal is "not enacted", with the pump's reason
    (status,) = [d for c, _, d in cycle_documents(cycle_events(temp_status="nak")) if c == "devicestatus"]
    enacted = status["openaps"]["enacted"]
    assert enacted["received"] is False and "not enacted: pump nak (limit)" in enacted["reason"]
    assert "predBGs" not in status["openaps"]["suggested"]
    # predBGs are clamped to OpenAPS' 39..401 and resampled to 5 minutes
    fc = {"horizons_min": [0.0, 10.0, 20.0], "glucose_mg_dl": [30.0, 200.0, 600.0]}
    assert pred_bgs(fc) == {"IOB": [39, 115, 200, 400, 401]}


# --- the uploader ---------------------------------------------------------------------------------


class MemoryPump:
    def __init__(self) -> None:
        self.seq = 0

    def allocate_seq(self) -> int:
        self.seq += 1
        return self.seq

    def execute(self, order: PumpOrder) -> PumpOutcome:
        return PumpOutcome(order.seq, "ack", bolus_u=order.bolus_u,
                           rate_u_per_h=order.rate_u_per_h if order.kind == "temp_basal" else None)

    def resolve(self, order: PumpOrder) -> PumpOutcome:
        return self.execute(order)


class Feed:
    """A real ClosedLoop (twin, MPC, supervisor) on an in-memory pump, fed readings by hand."""

    def __init__(self, journal: Journal) -> None:
        self.items: list[object] = []
        self.now = T0
        policy = TwinMPCPolicy(personalize(PROFILE, default_prior()))
        self.loop = ClosedLoop(policy, self, MemoryPump(), journal, lambda: self.now, LoopSettings(cycle_min=5.0))

    def poll(self, timeout_s: float) -> list[object]:
        items, self.items = self.items, []
        return items

    def close(self) -> None:
        pass

    def run(self, start: int, n: int, carbs_at: int | None = None) -> None:
        for k in range(start, start + n):
            self.now = T0 + timedelta(minutes=5 * k)
            if k == carbs_at:
                self.items.append(CarbAnnouncement(self.now, 50.0, "test:phone"))
            self.items.append(GlucoseReading(self.now, 150.0 + 4 * k, "test:cgm"))
            self.loop.step(0.0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_no_duplicates(receiver: NightscoutReceiver) -> None:
    entries, treatments, statuses = receiver.entries(), receiver.treatments(), receiver.devicestatus()
    assert len({e["date"] for e in entries}) == len(entries)
    assert len({(t["created_at"], t["eventType"]) for t in treatments}) == len(treatments)
    assert len({s["created_at"] for s in statuses}) == len(statuses)


def test_offline_then_online_everything_once_and_a_restart_resumes(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    journal = Journal(tmp_path / "j.sqlite")
    feed = Feed(journal)
    feed.run(0, 12, carbs_at=6)
    uploader = NightscoutUploader(journal.path, NightscoutClient(url, SECRET, timeout_s=2.0), log=lambda _: None)
    assert uploader.collect() > 0
    assert uploader.send_pending() is False  # nobody listens: queued, backing off
    assert uploader.failures == 1 and uploader.pending()["devicestatus"] == 12
    counts = journal.counts()
    with NightscoutReceiver("127.0.0.1", port, SECRET) as receiver:
        assert uploader.flush(30.0) is True and uploader.pending() == {}
        assert len(receiver.entries()) == counts["reading"] == 12
        assert len(receiver.devicestatus()) == counts["delivery"] == 12
        kinds = [t["eventType"] for t in receiver.treatments()]
        assert kinds.count("Temp Basal") == 12 and kinds.count("Meal Bolus") == 1
        (meal,) = [t for t in receiver.treatments() if t["eventType"] == "Meal Bolus"]
        assert meal["carbs"] == 50 and meal["insulin"] > 0
        uploader.close()

        # a restart: nothing is queued again, nothing is sent twice
        again = NightscoutUploader(journal.path, NightscoutClient(url, SECRET), log=lambda _: None)
        assert again.collect() == 0 and again.pending() == {}
        feed.run(12, 3)  # the loop goes on: only the new cycles go out
        new_boluses = sum(1 for e in journal.events("delivery") if e.cycle > 12 and e.payload["bolus_u"] > 0)
        assert again.collect() == 3 * 3 + new_boluses  # entry, temp basal, devicestatus per cycle
        assert again.flush(10.0) is True
        assert len(receiver.devicestatus()) == 15 and len(receiver.entries()) == 15
        assert_no_duplicates(receiver)
        again.close()
    journal.close()


def test_a_crash_mid_upload_loses_nothing_and_duplicates_nothing(tmp_path):
    with NightscoutReceiver("127.0.0.1", 0, SECRET) as receiver, Journal(tmp_path / "j.sqlite") as journal:
        feed = Feed(journal)
        feed.run(0, 10)
        client = NightscoutClient(receiver.url, SECRET)
        first = NightscoutUploader(journal.path, client, batch_size=4, log=lambda _: None)
        first.collect()
        total = sum(first.pending().values())
        calls = {"n": 0}

        class Dies:
            def post(self, collection, docs):
                calls["n"] += 1
                if calls["n"] > 2:
                    raise KeyboardInterrupt  # the process dies mid-upload
                return client.post(collection, docs)

        first.post = Dies()
        with pytest.raises(KeyboardInterrupt):
            first.send_pending()
        stored = receiver.entries() + receiver.treatments() + receiver.devicestatus()
        assert len(stored) == 8  # two batches of 4 went out
        # the process is gone; a new one opens the same journal
        second = NightscoutUploader(journal.path, client, log=lambda _: None)
        assert second.collect() == 0 and sum(second.pending().values()) == total - 8
        assert second.flush(10.0)
        assert len(receiver.entries()) == 10 and len(receiver.devicestatus()) == 10
        boluses = sum(1 for e in journal.events("delivery") if e.payload["bolus_u"] > 0)
        assert len(receiver.treatments()) == 10 + boluses == total - 20
        assert_no_duplicates(receiver)
        second.close()


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


class Flaky:
    def __init__(self, answers: list[int]) -> None:
        self.answers = answers
        self.batches: list[list[dict]] = []

    def post(self, collection, docs):
        status = self.answers.pop(0) if self.answers else 200
        if 200 <= status < 300:
            self.batches.append(docs)
        return PostResult(status, f"HTTP {status}")


def test_retries_back_off_exponentially_with_an_injected_clock(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        Feed(journal).run(0, 2)
        clock = FakeClock()
        poster = Flaky([0, 503, 429, 401, 0, 0, 0, 0, 0, 0])
        up = NightscoutUploader(journal.path, poster, base_backoff_s=1.0, max_backoff_s=60.0, clock=clock,
                                sleep=clock.sleep, log=lambda _: None)
        up.collect()
        assert up.send_pending() is False and up.next_attempt_at == clock.t + 1.0
        assert up.send_pending() is None  # not time yet: no request
        assert up.flush(1000.0) is True
        assert clock.sleeps == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0, 60.0]
        assert up.failures == 0 and up.pending() == {}
        boluses = sum(1 for e in journal.events("delivery") if e.payload["bolus_u"] > 0)
        assert sum(len(b) for b in poster.batches) == 2 + 2 + boluses + 2  # entries, treatments, devicestatus
        up.close()


def test_a_document_the_server_refuses_is_isolated_not_retried_forever(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        Feed(journal).run(0, 4)

        class Picky:
            def __init__(self):
                self.accepted = []

            def post(self, collection, docs):
                if collection == "entries" and any(d["sgv"] == 158 for d in docs):  # the second reading
                    return PostResult(400, "HTTP 400: bad sgv")
                self.accepted += docs
                return PostResult(200)

        picky = Picky()
        up = NightscoutUploader(journal.path, picky, log=lambda _: None)
        up.collect()
        assert up.send_pending() is True and up.failures == 0
        boluses = sum(1 for e in journal.events("delivery") if e.payload["bolus_u"] > 0)
        assert len(picky.accepted) == 3 + (4 + boluses) + 4  # entries less the refused one, treatments, statuses
        (refused,) = up.rejected()
        assert refused[0] == "entries" and refused[1]["sgv"] == 158 and "bad sgv" in refused[2]
        up.close()


def test_a_batch_too_large_for_the_server_is_split(tmp_path):
    with NightscoutReceiver("127.0.0.1", 0, SECRET, max_body_bytes=4000) as receiver, \
            Journal(tmp_path / "j.sqlite") as journal:
        Feed(journal).run(0, 8)
        up = NightscoutUploader(journal.path, NightscoutClient(receiver.url, SECRET), log=lambda _: None)
        up.collect()
        assert up.send_pending() is True and up.rejected() == []
        assert len(receiver.entries()) == len(receiver.devicestatus()) == 8  # 413, halved until they fit
        assert_no_duplicates(receiver)
        up.close()


def test_first_use_on_an_old_journal_uploads_only_the_backfill(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        Feed(journal).run(0, 12)  # one hour
        up = NightscoutUploader(journal.path, Flaky([]), backfill_hours=0.25, log=lambda _: None)
        up.collect()
        assert up.pending()["entries"] == up.pending()["devicestatus"] == 4  # 06:40 .. 06:55
        up.close()
        again = NightscoutUploader(journal.path, Flaky([]), backfill_hours=0.25, log=lambda _: None)
        assert again.collect() == 0  # the cursor exists now: backfill applies to the first use only
        again.close()


def test_fully_closed_loop_announcements_are_uploaded_as_carbs_with_a_note(tmp_path):
    payload = {**CarbAnnouncement(T0, 30.0, "mqtt:phone").to_dict(), "ignored": "fcl"}
    with Journal(tmp_path / "j.sqlite") as journal:
        journal.append("announcement", T0.isoformat(), payload)  # as controller/loop/live.py journals it in FCL
        hcl = CarbAnnouncement(T0, 20.0, "mqtt:phone").to_dict()
        journal.append("announcement", T0.isoformat(), hcl)  # HCL: the cycle that uses it uploads it
        poster = Flaky([])
        up = NightscoutUploader(tmp_path / "j.sqlite", poster, log=lambda _: None)
        assert up.collect() == 1 and up.send_pending() is True
        up.close()
    ((doc,),) = poster.batches
    assert set(doc) == TREATMENT_KEYS | {"carbs", "notes"}
    assert (doc["eventType"], doc["carbs"], doc["notes"]) == ("Carb Correction", 30, "announced; not used by the "
                                                                                      "loop (fcl)")


def test_the_uploader_keeps_the_journal_api_working(tmp_path):
    with Journal(tmp_path / "j.sqlite") as journal:
        feed = Feed(journal)
        feed.run(0, 3)
        up = NightscoutUploader(journal.path, Flaky([]), log=lambda _: None)
        up.collect()
        feed.run(3, 2)
        assert journal.counts()["decision"] == 5 and journal.max_cycle() == 5
        assert [e.kind for e in journal.events("delivery")] == ["delivery"] * 5
        up.close()
    assert api_secret_hash("x" * 12) == hashlib.sha1(b"x" * 12).hexdigest()


# --- configuration and wiring -----------------------------------------------------------------------


def config_data(tmp_path, nightscout: dict | None, sensor: str = "mqtt") -> dict:
    (tmp_path / "ns.secret").write_text(SECRET + "\n")
    data = {"profile": {"name": "x", "weight_kg": 70, "total_daily_insulin_u": 40, "carb_ratio_g_per_u": 12,
                        "correction_factor_mg_dl_per_u": 45, "age_years": 30,
                        "basal": [{"start": "00:00", "rate_u_per_h": 0.8}]},
            "pump": {"port": "/dev/ttyUSB0", "key_file": "k"}, "sensor": {"transport": sensor}}
    if nightscout is not None:
        data["nightscout"] = nightscout
    return data


def test_the_nightscout_section_is_optional_and_checked(tmp_path):
    from controller.loop.config.live_config import ConfigError, parse_config

    assert parse_config(config_data(tmp_path, None)).nightscout is None
    secret = str(tmp_path / "ns.secret")
    ns = parse_config(config_data(tmp_path, {"url": "https://ns.example.org", "api_secret_file": secret})).nightscout
    assert ns.upload and ns.upload_entries and not ns.receive and ns.api_secret() == SECRET
    for section, sensor, message in [
        ({"url": "https://ns.example.org"}, "mqtt", "api_secret_file"),
        ({"api_secret_file": secret}, "mqtt", "upload needs url"),
        ({"url": "ftp://x", "api_secret_file": secret}, "mqtt", "upload needs url"),
        ({"url": "https://me:pw@ns.example.org", "api_secret_file": secret}, "mqtt", "not in the url"),
        ({"upload": False, "colour": "red"}, "mqtt", "colour"),
        ({"upload": False, "receive": True, "api_secret_file": secret}, "mqtt", "go together"),
        ({"upload": False}, "nightscout", "go together"),
        ({"upload": False, "receive": True, "api_secret_file": secret, "listen_port": 0}, "nightscout", "listen_port"),
        ({"upload": "yes"}, "mqtt", "true or false"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_config(config_data(tmp_path, section, sensor))


def test_sensor_transport_nightscout_runs_the_receiver(tmp_path):
    from controller.loop.config.live_config import parse_config
    from controller.loop.sources import build_source

    port = free_port()
    section = {"upload": False, "receive": True, "api_secret_file": str(tmp_path / "ns.secret"),
               "listen_port": port}
    config = parse_config(config_data(tmp_path, section, sensor="nightscout"))
    source = build_source(config, lambda: T0)
    try:
        assert isinstance(source, NightscoutReceiver) and source.port == port
        assert http("POST", f"http://127.0.0.1:{port}/api/v1/entries", [entry(0, 99)])[0] == 200
        (reading,) = source.poll(2.0)
        assert reading.glucose_mg_dl == 99.0
    finally:
        source.close()


# --- end to end: a HIL loop process uploads to the receiver -------------------------------------


@pytest.mark.skipif(shutil.which("socat") is None, reason=skip_reason("socat", "mosquitto"))
def test_hil_loop_uploads_to_nightscout(tmp_path):
    from sim.hil.broker import find_mosquitto
    from sim.hil.rig import run_hil
    from sim.hil.nightscout import NightscoutTarget
    from sim.trial.protocol import TrialProtocol

    if find_mosquitto() is None:
        pytest.skip(skip_reason("mosquitto"))
    protocol = TrialProtocol(arm="hcl", days=0.1, start=datetime(2025, 1, 1, 5, 0))  # breakfast is announced
    with NightscoutReceiver("127.0.0.1", 0, SECRET) as receiver:
        run_hil(["adult#003"], protocol, tmp_path, progress=False,
                nightscout=NightscoutTarget(receiver.url, SECRET))
        entries, treatments, statuses = receiver.entries(), receiver.treatments(), receiver.devicestatus()
    with Journal(tmp_path / "adult-003.journal.sqlite") as journal:
        counts = journal.counts()
        deliveries = list(journal.events("delivery"))
        carbs = sum(e.payload["input"]["announced_carbs_g"] for e in journal.events("decision"))
        pending = journal._db.execute("SELECT COUNT(*) FROM nightscout_outbox").fetchone()[0]
    assert pending == 0
    assert len(entries) == counts["reading"] == 48
    assert all(set(e) >= {"type", "sgv", "date", "dateString", "device"} and e["type"] == "sgv" for e in entries)
    assert len(statuses) == len(deliveries) == counts["decision"]
    kinds = [t["eventType"] for t in treatments]
    assert kinds.count("Temp Basal") == len(deliveries)
    boluses = [t for t in treatments if t["eventType"] in ("Meal Bolus", "Correction Bolus")]
    assert len(boluses) == sum(1 for d in deliveries if d.payload["bolus_u"] > 0) >= 1
    assert kinds.count("Meal Bolus") >= 1
    assert sum(t.get("carbs", 0) for t in treatments) == pytest.approx(carbs, abs=0.1) and carbs > 0
    assert sum(t["insulin"] for t in boluses) == pytest.approx(sum(d.payload["bolus_u"] for d in deliveries),
                                                               abs=1e-6)
    for s in statuses:
        assert s["device"] == "openaps://glucotwin" and set(s["openaps"]) == {"iob", "suggested", "enacted"}
        assert s["openaps"]["enacted"]["received"] is True
        assert set(s["openaps"]["iob"]) >= IOB_KEYS
    with_preds = [s for s in statuses if "predBGs" in s["openaps"]["suggested"]]
    assert len(with_preds) == len(statuses)
    assert all(len(s["openaps"]["suggested"]["predBGs"]["IOB"]) == 37 for s in with_preds)
    assert_no_duplicates(receiver)
