"""The Nightscout receiver under load and abuse, over real sockets on loopback.

Covers: 300 concurrent uploads all answered (none reset, none lost after a 503
retry), slow-loris clients cut at the whole-request deadline without starving
well-behaved uploads, the connection cap answering 503, the lockout after
repeated wrong secrets (with a fake monotonic clock: no test waits minutes), the
warning on a non-loopback bind without TLS, and HTTPS with a self-signed
certificate made here with openssl.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sensors.nightscout.receiver import NightscoutReceiver
from sensors.nightscout.server import LISTEN_BACKLOG
from sensors.reading import GlucoseReading
from skip_reasons import skip_reason

SECRET = "correct horse battery"
HASH = hashlib.sha1(SECRET.encode()).hexdigest()
WRONG = hashlib.sha1(b"not the secret at all").hexdigest()
T0 = datetime(2026, 1, 1, 6, 0, tzinfo=UTC)


def entry(minutes: float, sgv: float = 120) -> dict[str, object]:
    t = T0 + timedelta(minutes=minutes)
    return {"type": "sgv", "sgv": sgv, "date": int(t.timestamp() * 1000), "device": "xDrip-DexcomG6"}


def post(receiver: NightscoutReceiver, body: object, secret: str | None = HASH, *, source: str | None = None,
         path: str = "/api/v1/entries", timeout_s: float = 20.0) -> tuple[int, dict[str, str], object]:
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=timeout_s,
                                      source_address=(source, 0) if source else None)
    try:
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers["api-secret"] = secret
        conn.request("POST", path, json.dumps(body).encode(), headers)
        response = conn.getresponse()
        data = response.read()
        return response.status, dict(response.getheaders()), json.loads(data or b"null")
    finally:
        conn.close()


def get(receiver: NightscoutReceiver, path: str, secret: str | None = HASH, *,
        source: str | None = None) -> tuple[int, dict[str, str], object]:
    conn = http.client.HTTPConnection("127.0.0.1", receiver.port, timeout=20,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request("GET", path, headers={"api-secret": secret} if secret else {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read() or b"null")
    finally:
        conn.close()


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- load ----------------------------------------------------------------------------------------


def test_300_concurrent_uploads_are_all_answered_and_none_is_lost():
    """300 uploaders posting at the same instant: every one gets an HTTP answer (200, or 503 with
    Retry-After when over the cap), no connection is reset, and after retrying a 503 every entry
    is stored and handed to the loop once."""
    n = 300
    receiver = NightscoutReceiver("127.0.0.1", 0, SECRET)
    receiver.start()
    try:
        assert receiver._server.request_queue_size == LISTEN_BACKLOG >= 128
        start = threading.Barrier(n)
        first: list[object] = [None] * n
        final: list[object] = [None] * n

        def upload(i: int) -> None:
            start.wait()
            for attempt in range(20):
                try:
                    status, headers, _ = post(receiver, [entry(i)])
                except OSError as err:  # a reset or refused connection: the defect
                    status, headers = f"{type(err).__name__}: {err}", {}
                if attempt == 0:
                    first[i] = status
                final[i] = status
                if status != 503:
                    return
                time.sleep(float(headers.get("Retry-After", "1")) / 10)

        threads = [threading.Thread(target=upload, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert all(s in (200, 503) for s in first), sorted({str(s) for s in first})
        assert final == [200] * n
        items = receiver.poll(1.0)
        while len(items) < n:
            more = receiver.poll(1.0)
            if not more:
                break
            items += more
        assert sorted(r.time for r in items if isinstance(r, GlucoseReading)) == \
            [T0 + timedelta(minutes=i) for i in range(n)]
        assert len(receiver.entries()) == n
    finally:
        receiver.close()


def _slow_loris(port: int, stop: threading.Event, out: dict[str, float], interval_s: float = 1.0) -> None:
    """A client sending a valid request start one byte per second, until the server cuts it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    began = time.monotonic()
    request = b"POST /api/v1/entries HTTP/1.1\r\nHost: x\r\napi-secret: " + HASH.encode() + b"\r\n"
    try:
        for byte in request * 10:
            if stop.is_set():
                return
            sock.send(bytes([byte]))
            sock.settimeout(interval_s)
            try:
                if sock.recv(1) == b"":  # the server closed the connection
                    out["cut_after_s"] = time.monotonic() - began
                    return
            except TimeoutError:
                pass
    except OSError:  # reset by the server
        out["cut_after_s"] = time.monotonic() - began
    finally:
        sock.close()


def test_slow_loris_clients_are_cut_at_the_deadline_and_do_not_starve_uploads():
    """Clients trickling a request one byte per second are cut at the 2-s request deadline (a
    per-recv timeout would hold them for ever), and uploads meanwhile are answered promptly; with
    as many slow clients as workers, uploads wait at most about one deadline."""
    workers, deadline_s = 8, 2.0
    receiver = NightscoutReceiver("127.0.0.1", 0, SECRET, workers=workers, request_deadline_s=deadline_s)
    receiver.start()
    stop = threading.Event()
    try:
        outs = [dict() for _ in range(workers - 2)]
        threads = [threading.Thread(target=_slow_loris, args=(receiver.port, stop, o)) for o in outs]
        for t in threads:
            t.start()
        time.sleep(0.5)  # the slow clients hold their workers
        for i in range(10):  # two free workers: uploads pass at once
            began = time.monotonic()
            assert post(receiver, [entry(i)])[0] == 200
            assert time.monotonic() - began < 1.0
        for t in threads:
            t.join(deadline_s + 5)
        cuts = [o.get("cut_after_s") for o in outs]
        assert all(c is not None and c < deadline_s + 1.5 for c in cuts), cuts
        assert receiver.deadline_cuts == len(outs)

        # as many slow clients as workers: an upload is served once the deadline frees a worker
        outs = [dict() for _ in range(workers)]
        threads = [threading.Thread(target=_slow_loris, args=(receiver.port, stop, o)) for o in outs]
        for t in threads:
            t.start()
        time.sleep(0.5)
        began = time.monotonic()
        assert post(receiver, [entry(20)])[0] == 200
        assert time.monotonic() - began < deadline_s + 1.5
        for t in threads:
            t.join(deadline_s + 5)
        assert all(o.get("cut_after_s") is not None for o in outs)
    finally:
        stop.set()
        receiver.close()


def test_connections_beyond_the_cap_are_answered_503_at_once():
    receiver = NightscoutReceiver("127.0.0.1", 0, SECRET, workers=2, max_connections=2, request_deadline_s=5.0)
    receiver.start()
    idle = [socket.create_connection(("127.0.0.1", receiver.port)) for _ in range(2)]
    try:
        time.sleep(0.3)  # both admitted, each holding a worker while sending nothing
        began = time.monotonic()
        status, headers, body = post(receiver, [entry(0)])
        assert (status, headers["Retry-After"], body["busy"]) == (503, "1", True)
        assert time.monotonic() - began < 1.0
        assert receiver.busy == 1 and receiver.poll(0.0) == []
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the workers see the closed connections
        status = post(receiver, [entry(1)])[0]
        if status == 200:
            break
        time.sleep(0.05)
    assert status == 200
    receiver.close()


# --- wrong secrets ---------------------------------------------------------------------------------


def test_five_wrong_secrets_lock_the_address_out():
    clock, log = FakeMonotonic(), []
    receiver = NightscoutReceiver("127.0.0.1", 0, SECRET, monotonic=clock, log=log.append)
    receiver.start()
    attacker = "127.0.0.2"  # another loopback address, as a second client on the network
    try:
        for _ in range(3):  # requests without any secret are no guesses and do not count
            assert post(receiver, [entry(0)], secret=None, source=attacker)[0] == 401
        for i in range(4):
            clock.now += 10
            assert post(receiver, [entry(0)], secret=WRONG, source=attacker)[0] == 401
        assert log == [] and receiver.lockouts == 0
        assert post(receiver, [entry(0)], secret=WRONG, source=attacker)[0] == 401  # the fifth
        assert receiver.lockouts == 1 and receiver.wrong_secrets == 5
        assert len(log) == 1 and attacker in log[0] and "5 wrong API secrets" in log[0]
        assert SECRET not in log[0] and HASH not in log[0] and WRONG not in log[0]

        # locked out: even the right secret is refused, and the answer says why and for how long
        status, headers, body = post(receiver, [entry(0)], source=attacker)
        assert status == 429 and headers["Retry-After"] == "300"
        assert "too many wrong API secrets" in body["description"] and "whatever the secret" in body["description"]
        assert get(receiver, "/api/v1/verifyauth", source=attacker)[0] == 429
        assert get(receiver, "/api/v1/entries.json", source=attacker)[0] == 429
        status, _, body = get(receiver, "/api/v1/status.json", source=attacker)  # no secret needed, no oracle
        assert status == 200 and body["authorized"] is False
        assert receiver.poll(0.0) == []
        # other addresses are not affected
        assert post(receiver, [entry(1)], source="127.0.0.1")[0] == 200
        clock.now += 299
        assert post(receiver, [entry(2)], source=attacker)[0] == 429
        clock.now += 2
        assert post(receiver, [entry(2)], source=attacker)[0] == 200
        assert [r.time for r in receiver.poll(1.0)] == [T0 + timedelta(minutes=1), T0 + timedelta(minutes=2)]

        # wrong secrets spread wider than the 5-minute window (at most 4 within any 300 s) do not lock
        for _ in range(8):
            clock.now += 100.1
            assert post(receiver, [entry(3)], secret=WRONG, source=attacker)[0] == 401
        assert receiver.lockouts == 1
    finally:
        receiver.close()


@settings(max_examples=200)
@given(st.lists(st.tuples(st.sampled_from(["wrong", "missing", "right-elsewhere"]),
                          st.floats(min_value=0, max_value=200)), max_size=60))
def test_a_guesser_gets_at_most_five_verdicts_per_lockout_period(steps):
    """Whatever the rhythm of guesses, one address without the secret gets at most 5 "wrong"
    answers within any 300-s span (the rest are refused before the secret is even looked at)."""
    clock = FakeMonotonic()
    receiver = NightscoutReceiver("127.0.0.1", 0, SECRET, monotonic=clock, log=lambda _: None)
    wrong_at: list[float] = []
    for kind, advance_s in steps:
        clock.now += advance_s
        if kind == "right-elsewhere":
            assert receiver.check_secret("192.0.2.7", HASH) == ("ok", 0.0)
            continue
        verdict, _ = receiver.check_secret("192.0.2.66", WRONG if kind == "wrong" else None)
        if verdict == "wrong":
            wrong_at.append(clock.now)
    for i, t in enumerate(wrong_at):
        assert sum(1 for u in wrong_at[i:] if u < t + 300.0) <= 5


# --- exposure and TLS -----------------------------------------------------------------------------


def test_a_non_loopback_bind_without_tls_warns():
    log: list[str] = []
    exposed = NightscoutReceiver("0.0.0.0", 0, SECRET, log=log.append)
    exposed.start()
    try:
        assert exposed.insecure_warning is not None and "plain HTTP" in exposed.insecure_warning
        assert log == [exposed.insecure_warning] and "0.0.0.0" in log[0]
    finally:
        exposed.close()
    log.clear()
    local = NightscoutReceiver("127.0.0.1", 0, SECRET, log=log.append)
    local.start()
    try:
        assert local.insecure_warning is None and log == []
    finally:
        local.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip(skip_reason("openssl"))
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_an_https_upload_works_with_a_self_signed_certificate(certificate):
    cert, key = certificate
    log: list[str] = []
    receiver = NightscoutReceiver("0.0.0.0", 0, SECRET, tls_cert_file=cert, tls_key_file=key, log=log.append)
    receiver.start()
    try:
        assert receiver.insecure_warning is None and log == []  # exposed, but encrypted
        assert receiver.tls_context.minimum_version == ssl.TLSVersion.TLSv1_2
        url = f"https://127.0.0.1:{receiver.port}/api/v1/entries"
        assert receiver.url.startswith("https://")
        client = ssl.create_default_context(cafile=str(cert))
        request = urllib.request.Request(url, json.dumps([entry(0, 99)]).encode(), method="POST",
                                         headers={"api-secret": HASH, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=client, timeout=10) as response:
            assert response.status == 200
        [reading] = receiver.poll(1.0)
        assert reading.glucose_mg_dl == 99.0
        # plain HTTP on the TLS port gets no answer, and a client that only speaks TLS 1.1 is refused
        with pytest.raises((http.client.HTTPException, OSError)):
            post(receiver, [entry(1)], timeout_s=5)
        old = ssl.create_default_context(cafile=str(cert))
        with pytest.warns(DeprecationWarning):  # the point: a client stuck on a deprecated version
            old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, OSError)):
            with socket.create_connection(("127.0.0.1", receiver.port), timeout=5) as raw:
                with old.wrap_socket(raw, server_hostname="localhost"):
                    pass
        assert receiver.poll(0.2) == []
    finally:
        receiver.close()


def test_a_trickled_tls_handshake_is_cut_at_the_deadline(certificate):
    cert, key = certificate
    receiver = NightscoutReceiver("127.0.0.1", 0, SECRET, tls_cert_file=cert, tls_key_file=key,
                                  request_deadline_s=1.0)
    receiver.start()
    try:
        out: dict[str, float] = {}
        stop = threading.Event()
        # a TLS record header then bytes of a ClientHello, one every 0.3 s
        sock = socket.create_connection(("127.0.0.1", receiver.port), timeout=10)
        began = time.monotonic()
        try:
            for byte in b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40):
                sock.send(bytes([byte]))
                sock.settimeout(0.3)
                try:
                    if sock.recv(1) == b"":
                        out["cut_after_s"] = time.monotonic() - began
                        break
                except TimeoutError:
                    pass
        except OSError:
            out["cut_after_s"] = time.monotonic() - began
        finally:
            sock.close()
            stop.set()
        assert out.get("cut_after_s") is not None and out["cut_after_s"] < 2.0, out
        deadline = time.monotonic() + 2
        while receiver.deadline_cuts == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert receiver.deadline_cuts == 1
    finally:
        receiver.close()


def test_tls_needs_both_files_and_readable_ones(certificate, tmp_path):
    cert, key = certificate
    with pytest.raises(ValueError, match="both tls_cert_file and tls_key_file"):
        NightscoutReceiver("127.0.0.1", 0, SECRET, tls_cert_file=cert)
    with pytest.raises(ValueError, match="is not a file"):
        NightscoutReceiver("127.0.0.1", 0, SECRET, tls_cert_file=tmp_path / "none.pem", tls_key_file=key)
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match="cannot load the TLS certificate"):
        NightscoutReceiver("127.0.0.1", 0, SECRET, tls_cert_file=tmp_path / "junk.pem", tls_key_file=key)


@pytest.mark.parametrize("kwargs, match", [
    ({"workers": 0}, "workers"), ({"max_connections": 4, "workers": 8}, "max_connections"),
    ({"backlog": -1}, "backlog"), ({"request_deadline_s": float("nan")}, "request_deadline_s"),
    ({"lockout_failures": True}, "lockout_failures"), ({"lockout_s": 0}, "lockout_s"),
])
def test_limits_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        NightscoutReceiver("127.0.0.1", 0, SECRET, **kwargs)
