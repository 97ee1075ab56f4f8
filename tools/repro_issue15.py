"""Issue 15 repro: run from a checkout (cwd) of glucotwin; prints one line per item."""
import json, os, resource, secrets, signal, sqlite3, subprocess, sys, time
from datetime import UTC, datetime, timedelta
from pathlib import Path
sys.path.insert(0, os.getcwd())
from sensors.mqtt_source import MqttCgmPublisher, MqttSettings
from sensors.reading import GlucoseReading
from sim.hil.broker import Mosquitto

CONFIG = open(os.path.join(os.path.dirname(__file__), "repro_issue15.toml.tmpl")).read()
tmp = Path(sys.argv[1]); tmp.mkdir(parents=True, exist_ok=True)

def wait(pred, t, what=""):
    end = time.monotonic() + t
    while time.monotonic() < end:
        if pred(): return True
        time.sleep(0.05)
    return False

def count(path, kind="decision"):
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        n = db.execute("SELECT COUNT(*) FROM events WHERE kind=?", (kind,)).fetchone()[0]; db.close(); return n
    except Exception:
        return 0

with Mosquitto() as broker:
    pump_tty, host_tty = tmp / "pump.tty", tmp / "host.tty"
    procs = [subprocess.Popen(["socat", f"pty,raw,echo=0,link={pump_tty}", f"pty,raw,echo=0,link={host_tty}"])]
    key = tmp / "pump.key"; key.write_text(secrets.token_hex(32))
    def new_pump():
        """A pump with a fresh state: items 7 and 10 backdate readings, which the history of doses that
        earlier items' loops gave (booked by each new journal since item 2's fix) would refuse as out of order."""
        for p in [p for p in procs if getattr(p, "is_pump", False)]:
            p.kill(); p.wait()
        (tmp / "pump.json").unlink(missing_ok=True); (tmp / "pump.ready").unlink(missing_ok=True)
        p = subprocess.Popen([sys.executable, "-m", "firmware_bridge.pump_device", "--port", str(pump_tty),
            "--device-id", "pump-1", "--key-file", str(key), "--state-file", str(tmp / "pump.json"), "--scheduled-basal",
            "0.8", "--max-rate", "3.2", "--ready-file", str(tmp / "pump.ready")], stdout=open(tmp / "pump.log", "ab"),
            stderr=subprocess.STDOUT)
        p.is_pump = True; procs.append(p)
        wait(lambda: (tmp / "pump.ready").exists(), 30)
    new_pump()
    sensor = MqttCgmPublisher(MqttSettings(host=broker.host, port=broker.port, client_id="s", subject="bench"))
    sensor.start()
    def config(journal, extra=""):
        p = tmp / f"{journal.stem}.toml"
        p.write_text(CONFIG.format(journal=journal, port=broker.port, host_tty=host_tty, key=key).replace("[loop]\n", "[loop]\n" + extra))
        return p
    def start(cfg, log):
        ready = tmp / "ready"; ready.unlink(missing_ok=True)
        p = subprocess.Popen([sys.executable, "-m", "sim.cli", "run", "--config", str(cfg), "--ready-file", str(ready)],
                             stdout=open(tmp / log, "ab"), stderr=subprocess.STDOUT)
        wait(lambda: ready.exists() or p.poll() is not None, 60); procs.append(p); return p
    def stop(p):
        p.send_signal(signal.SIGTERM)
        try: return p.wait(15)
        except subprocess.TimeoutExpired: p.kill(); p.wait(); return "hung (killed)"
    # 1: two loops on one journal
    j1 = tmp / "one.sqlite"; c1 = config(j1)
    a = start(c1, "one.log")
    b = subprocess.Popen([sys.executable, "-m", "sim.cli", "run", "--config", str(c1)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        out, err = b.communicate(timeout=15); second = f"second loop exited {b.returncode}: {err.strip()[-160:]}"
    except subprocess.TimeoutExpired:
        b.kill(); second = "second loop RUNNING on the same journal after 15 s"
    print("item 1:", second)
    now = datetime.now(UTC) - timedelta(minutes=14)
    for k, g in enumerate((250.0, 265.0, 279.0)):
        sensor.publish_reading(GlucoseReading(now + timedelta(minutes=5 * k), g, "r"))
    wait(lambda: count(j1) >= 3, 30)
    stop(a)
    db = sqlite3.connect(f"file:{j1}?mode=ro", uri=True)
    given = sum(json.loads(p)["bolus_u"] for (p,) in db.execute("SELECT payload FROM events WHERE kind='delivery'"))
    db.close()
    # 2: a new journal
    j2 = tmp / "two.sqlite"; a = start(config(j2), "two.log")
    line = next(l for l in (tmp / "two.log").read_text().splitlines() if "IOB" in l)
    print(f"item 2: {given:.2f} U given in the last 15 min; new journal start line: IOB {line.split('IOB ')[1].split(' U')[0]} U")
    stop(a)
    # 6: corrupt journal
    j3 = tmp / "three.sqlite"; j3.write_bytes(b"\x00garbage" * 2000)
    r = subprocess.run([sys.executable, "-m", "sim.cli", "run", "--config", str(config(j3))], capture_output=True, text=True, timeout=60)
    print(f"item 6: exit {r.returncode}, stderr {len(r.stderr.strip().splitlines())} line(s), traceback {'Traceback' in r.stderr}: {r.stderr.strip().splitlines()[-1][:140]}")
    # 7: full disk
    new_pump()
    j4 = tmp / "four.sqlite"; a = start(config(j4), "four.log")
    t0 = datetime.now(UTC) - timedelta(minutes=9)
    sensor.publish_reading(GlucoseReading(t0, 200.0, "r")); wait(lambda: count(j4) >= 1, 20)
    lim = resource.prlimit(a.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(a.pid, resource.RLIMIT_FSIZE, (4096, lim[1]))
    sensor.publish_reading(GlucoseReading(t0 + timedelta(minutes=5), 210.0, "r")); time.sleep(5)
    alive = a.poll() is None
    if alive: resource.prlimit(a.pid, resource.RLIMIT_FSIZE, lim)
    log = (tmp / "four.log").read_text()
    print(f"item 7: loop alive after a failed append: {alive}; exit {a.poll()}; 'DEGRADED' printed: {'DEGRADED' in log}")
    if alive: stop(a)
    # 8: year-ahead reading, lockstep clock
    j5 = tmp / "five.sqlite"; a = start(config(j5, 'clock = "readings"\n'), "five.log")
    n = datetime.now(UTC)
    sensor.publish_reading(GlucoseReading(n, 150.0, "r")); wait(lambda: count(j5) >= 1, 20)
    sensor.publish_reading(GlucoseReading(n + timedelta(days=365), 150.0, "r")); time.sleep(3)
    tic = time.monotonic(); code = stop(a)
    print(f"item 8: after a reading a year ahead, SIGTERM -> exit {code} in {time.monotonic() - tic:.1f} s")
    # 10: flood
    new_pump()
    j6 = tmp / "six.sqlite"; a = start(config(j6), "six.log")
    base = datetime.now(UTC) - timedelta(seconds=30)
    for s in range(300):
        sensor.publish_reading(GlucoseReading(base + timedelta(milliseconds=100 * s), 150.0 + s % 5, "f"))
    wait(lambda: count(j6, "reading") >= 300, 60); time.sleep(2)
    print(f"item 10: 300 readings within 30 s -> {count(j6)} decisions")
    stop(a)
    # 3: an authenticated host (no loop running) sends 29 boluses of 10 U to a new pump; the pump's own limits
    new_pump()
    from firmware_bridge.protocol import Command, load_key_file
    from firmware_bridge.pump_link import PumpLink
    from firmware_bridge.serial_transport import SerialTransport
    rogue = SerialTransport(str(host_tty)); link = PumpLink(rogue, "pump-1", load_key_file(key), reply_timeout_s=1.0)
    link.sync(); t = int(time.time() * 1000)
    outs = [link.send(Command.bolus(link.allocate_seq(), "pump-1", 10.0, t, t + 60_000)) for _ in range(29)]
    given3 = sum(o.delivered_bolus_u for o in outs if o.status == "ack")
    why = sorted({o.nak.detail for o in outs if o.nak is not None})
    print(f"item 3: 29 x 10 U -> {sum(o.status == 'ack' for o in outs)} executed ({given3:.1f} U), refused: {why}")
    rogue.close()
    sensor.close()
    for p in procs:
        if p.poll() is None: p.kill()
# item 10 LOW after a jump
from controller.policy import Dose
from controller.safety import SafetySupervisor
from twin.profile import PatientProfile, flat_basal
sup = SafetySupervisor(PatientProfile("p", 70, 40, 12, 45, 35, flat_basal(0.8), 120.0))
T = datetime(2026, 1, 1, 6, 0)
for m, g in ((0, 150.0), (5, 146.0), (10, 40.0)):
    sup.observe(T + timedelta(minutes=m), g)
d = sup.bound(Dose(0.8, 0.0, "p"), T + timedelta(minutes=10), 5.0).dose
print(f"item 10: 150, 146, then LOW 40 mg/dL -> basal {d.basal_u_per_h:.2f} U/h")
