"""The live loop's configuration file (TOML), read into frozen, validated settings.

``glucotwin run --config FILE`` reads it. Example (``deploy/glucotwin.example.toml``)::

    [profile]                      # what the clinic knows; nothing else is used
    name = "me"
    weight_kg = 70
    total_daily_insulin_u = 40
    carb_ratio_g_per_u = 12
    correction_factor_mg_dl_per_u = 45
    age_years = 35
    target_mg_dl = 120
    basal = [{start = "00:00", rate_u_per_h = 0.8}, {start = "06:00", rate_u_per_h = 1.0}]
    timezone = "Europe/Paris"      # the schedules' clock (default UTC)
    # optional, by time of day (as the pump holds them); the single values above stay the day's reference
    carb_ratio_schedule = [{start = "00:00", g_per_u = 12}, {start = "06:00", g_per_u = 9}, {start = "11:00", g_per_u = 12}]
    correction_factor_schedule = [{start = "00:00", mg_dl_per_u = 50}, {start = "06:00", mg_dl_per_u = 45}]
    target_schedule = [{start = "00:00", mg_dl = 120}, {start = "07:00", mg_dl = 110}, {start = "22:00", mg_dl = 120}]

    [twin]                         # optional
    prior = "prior.json"           # population prior (default: the one shipped in twin/data)
    learned = "twin.json"          # the twin glucotwin learn fitted to this person (default: from the profile)

    [limits]                       # optional; defaults come from the profile
    max_basal_u_per_h = 3.0
    max_bolus_u = 5.0
    max_iob_u = 3.0

    [loop]
    cycle_min = 5                  # the CGM's sample period
    clock = "system"               # or "readings": lockstep on reading times (HIL)
    journal = "/var/lib/glucotwin/journal.sqlite"

    [mqtt]
    host = "127.0.0.1"
    port = 1883
    username = "loop"
    password_file = "/etc/glucotwin/mqtt.password"
    tls_ca_file = ""               # set to use TLS (port 8883)
    subject = "me"

    [sensor]
    transport = "mqtt"             # or "serial"
    port = "/dev/ttyACM0"          # serial only
    mode = "frames"                # serial only: "frames" or "text"

    [pump]
    transport = "serial"           # or "mqtt"
    port = "/dev/ttyUSB0"
    device_id = "pump-1"
    key_file = "/etc/glucotwin/pump.key"   # hex; per device; mode 0600

    [nightscout]                   # optional: upload to Nightscout, and/or receive CGM from uploaders
    url = "https://ns.example.org" # upload target
    api_secret_file = "/etc/glucotwin/nightscout.secret"   # the plain API_SECRET (sent as its SHA-1)
    upload = true
    upload_entries = true          # false when the CGM app already uploads its readings there
    receive = false                # true: the CGM source is a Nightscout-API receiver ([sensor] "nightscout")
    listen_host = "127.0.0.1"
    listen_port = 17580

    [advice]                       # optional: words to the person, never a dose
    enabled = true
    low_mg_dl = 70                 # carbs are advised to keep the forecast above this
    advise_within_min = 45         # once the low is this near
    max_carbs_g = 60
    site_check = true              # "check the infusion site" after an unexplained rise

Secrets are read from files, never written in the TOML itself.

Every key has a type and a hard range (:mod:`controller.loop.config.ranges`, the table behind
``deploy/CONFIG.md``); unknown sections and keys are errors. ``glucotwin run`` then runs
:func:`controller.loop.config.preflight.preflight` (secrets, files, devices) before anything connects.
"""

from __future__ import annotations

import dataclasses

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from controller.advice import AdviceSettings
from controller.loop.config.checks import SCHEDULE_VALUE_KEYS, check_config
from controller.loop.config.ranges import PUMP_MIN_KEY_BYTES, ConfigError
from controller.loop.runtime import LoopSettings
from controller.safety import SafetyLimits
from controller.twin_policy import ControlSettings
from twin.profile import BasalSegment, PatientProfile
from twin.schedule import ScheduleSegment, format_clock

if TYPE_CHECKING:
    from twin.personalize import PopulationPrior, Twin


@dataclass(frozen=True)
class MqttEndpoint:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str = ""
    password_file: str = ""
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    client_id: str = ""
    subject: str = "default"
    topic_prefix: str = "glucotwin"
    whatif_key_file: str = ""

    def password(self) -> str:
        return _read_secret(self.password_file, "[mqtt] password_file") if self.password_file else ""


@dataclass(frozen=True)
class SensorEndpoint:
    transport: str = "mqtt"
    port: str = ""
    baudrate: int = 115200
    mode: str = "frames"


@dataclass(frozen=True)
class NightscoutEndpoint:
    """The optional ``[nightscout]`` section (controller/loop/nightscout/uploader.py, sensors/nightscout/receiver.py).

    url, api_secret_file: the Nightscout to upload to and its API secret (a file holding the plain
        secret; it is sent as its SHA-1 in the ``api-secret`` header).
    upload: upload entries, treatments and devicestatus from the journal (needs url and api_secret_file).
    upload_entries: include the CGM entries (false when the CGM app uploads them itself).
    receive: run the Nightscout-API receiver as the CGM source (``[sensor] transport = "nightscout"``),
        on listen_host:listen_port, authenticated by listen_api_secret_file (default: api_secret_file).
    device: the devicestatus ``device`` (the name of Nightscout's OpenAPS pill).
    timeout_s, batch_size, max_backoff_s: HTTP timeout, documents per POST, longest wait between retries.
    backfill_hours: on first use, how much of an existing journal to upload.
    """

    url: str = ""
    api_secret_file: str = ""
    upload: bool = True
    upload_entries: bool = True
    receive: bool = False
    listen_host: str = "127.0.0.1"
    listen_port: int = 17580
    listen_api_secret_file: str = ""
    device: str = "openaps://glucotwin"
    timeout_s: float = 10.0
    batch_size: int = 100
    max_backoff_s: float = 300.0
    backfill_hours: float = 24.0

    def __post_init__(self) -> None:
        for name in ("upload", "upload_entries", "receive"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        port = self.listen_port
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            raise ValueError(f"listen_port must be an integer 1..65535, got {port!r}")
        for name in ("timeout_s", "max_backoff_s", "backfill_hours"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value <= 0:
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if self.upload:
            from urllib.parse import urlparse

            parsed = urlparse(self.url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                raise ValueError(f"upload needs url = \"https://host[:port]\", got {self.url!r}")
            if parsed.username or parsed.password:
                raise ValueError("put the API secret in api_secret_file, not in the url")
            if not self.api_secret_file:
                raise ValueError("upload needs api_secret_file (a file holding the API secret)")
        if self.receive and not (self.listen_api_secret_file or self.api_secret_file):
            raise ValueError("receive needs listen_api_secret_file or api_secret_file")

    def api_secret(self) -> str:
        return _read_secret(self.api_secret_file, "[nightscout] api_secret_file")

    def listen_api_secret(self) -> str:
        if self.listen_api_secret_file:
            return _read_secret(self.listen_api_secret_file, "[nightscout] listen_api_secret_file")
        return self.api_secret()


@dataclass(frozen=True)
class PumpEndpoint:
    transport: str = "serial"
    port: str = ""
    baudrate: int = 115200
    device_id: str = "pump-1"
    key_file: str = ""
    reply_timeout_s: float = 1.0
    retries: int = 3

    def key(self) -> bytes:
        text = _read_secret(self.key_file, "[pump] key_file")
        try:
            key = bytes.fromhex(text)
        except ValueError:
            raise ConfigError(f"[pump] key_file = {self.key_file!r}: the file must hold the key in hex") from None
        if len(key) < PUMP_MIN_KEY_BYTES:
            raise ConfigError(f"[pump] key_file = {self.key_file!r}: the key is too short ({len(key)} bytes; "
                              f"need >= {PUMP_MIN_KEY_BYTES}, e.g. 32 random bytes: openssl rand -hex 32)")
        return key


@dataclass(frozen=True)
class LiveConfig:
    profile: PatientProfile
    limits: SafetyLimits
    loop: LoopSettings
    clock: str
    arm: str
    journal_path: Path
    mqtt: MqttEndpoint
    sensor: SensorEndpoint
    pump: PumpEndpoint
    publish_cycles: bool = True
    prior_path: Path | None = None
    learned_path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    nightscout: NightscoutEndpoint | None = None
    advice: AdviceSettings | None = field(default_factory=AdviceSettings)  # None: [advice] enabled = false

    def control_settings(self) -> ControlSettings:
        """The controller's settings this config asks for (the defaults, with its ``[advice]``)."""
        return ControlSettings(advice=self.advice)


def load_config(path: str | Path) -> LiveConfig:
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(data, base=path.parent)


def parse_config(data: dict[str, Any], base: Path = Path(".")) -> LiveConfig:
    """Check a parsed TOML mapping against :data:`controller.loop.config.ranges.SETTINGS` and build the settings.

    Every key is type- and range-checked (hard limits that cannot be configured away; see
    ``deploy/CONFIG.md``); unknown sections and keys are errors. No file is read here:
    :func:`controller.loop.config.preflight.preflight` checks secrets, files and devices.
    """
    v = check_config(data)
    p, lim, loop = v["profile"], v["limits"], dict(v["loop"])
    try:
        profile = PatientProfile(
            name=p["name"], weight_kg=p["weight_kg"], total_daily_insulin_u=p["total_daily_insulin_u"],
            carb_ratio_g_per_u=p["carb_ratio_g_per_u"], correction_factor_mg_dl_per_u=p["correction_factor_mg_dl_per_u"],
            age_years=p["age_years"], target_mg_dl=p["target_mg_dl"],
            basal_schedule=tuple(BasalSegment(start, rate) for start, rate in p["basal"]),
            **{key: tuple(ScheduleSegment(start, value) for start, value in p[key] or ())
               for key in ("carb_ratio_schedule", "correction_factor_schedule", "target_schedule")},
            timezone=p["timezone"])
    except ValueError as exc:
        raise ConfigError(f"[profile]: {exc}") from None
    try:
        limits = SafetyLimits.for_profile(profile, **lim)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[limits]: {exc}") from None
    clock, arm, journal = loop.pop("clock"), loop.pop("arm"), loop.pop("journal")
    publish_cycles = loop.pop("publish_cycles")
    try:
        settings = LoopSettings(**loop)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[loop]: {exc}") from None
    mqtt = _section(MqttEndpoint, v["mqtt"], "mqtt")
    sensor = _section(SensorEndpoint, v["sensor"], "sensor")
    pump = _section(PumpEndpoint, v["pump"], "pump")
    nightscout = _section(NightscoutEndpoint, v["nightscout"], "nightscout") if "nightscout" in v else None
    receive = nightscout is not None and nightscout.receive
    if (sensor.transport == "nightscout") != receive:
        raise ConfigError("[sensor] transport \"nightscout\" and [nightscout] receive = true go together")
    if sensor.transport == "serial" and not sensor.port:
        raise ConfigError("[sensor] transport 'serial' needs port (the serial device, e.g. \"/dev/ttyACM0\")")
    if pump.transport == "serial" and not pump.port:
        raise ConfigError("[pump] transport 'serial' needs port (the serial device, e.g. \"/dev/ttyUSB0\")")
    if mqtt.password_file and not mqtt.username:
        raise ConfigError("[mqtt] password_file is set but username is empty (the broker needs both)")
    if bool(mqtt.tls_cert_file) != bool(mqtt.tls_key_file):
        raise ConfigError("[mqtt] tls_cert_file and tls_key_file go together (a client certificate needs its key)")
    if (mqtt.tls_cert_file or mqtt.tls_key_file) and not mqtt.tls_ca_file:
        raise ConfigError("[mqtt] a client certificate needs tls_ca_file (TLS is on only with a CA)")
    journal_path = Path(journal)
    if not journal_path.is_absolute():
        journal_path = base / journal_path
    prior = v["twin"]["prior"]
    prior_path = None
    if prior is not None:
        prior_path = Path(prior) if Path(prior).is_absolute() else base / prior
    learned = v["twin"]["learned"]
    learned_path = None
    if learned is not None:
        learned_path = Path(learned) if Path(learned).is_absolute() else base / learned
    adv = dict(v["advice"])
    advice = _section(AdviceSettings, adv, "advice") if adv.pop("enabled") else None
    return LiveConfig(profile, limits, settings, clock, arm, journal_path, mqtt, sensor, pump, publish_cycles,
                      prior_path, learned_path, data, nightscout=nightscout, advice=advice)


def load_prior(config: LiveConfig) -> "PopulationPrior":
    """The configured population prior, or the shipped one."""
    import json

    from twin.personalize import PopulationPrior, default_prior

    if config.prior_path is None:
        return default_prior()
    try:
        return PopulationPrior.from_dict(json.loads(config.prior_path.read_text()))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"[twin] prior {config.prior_path}: cannot be read ({exc})") from None


def load_twin(config: LiveConfig) -> "Twin":
    """The loop's twin: the learned one (``[twin] learned``) if configured, else personalized from the profile.

    A learned twin must have been fitted for this ``[profile]`` (same weight and basal schedule: the
    twin's steady state is built on them); otherwise the loop refuses to start rather than dose on a
    model of someone else's settings.
    """
    from twin.personalize import personalize

    if config.learned_path is None:
        return personalize(config.profile, load_prior(config))
    from twin.learning.learned import load_learned_twin

    try:
        twin = load_learned_twin(config.learned_path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"[twin] learned {config.learned_path}: cannot be read ({exc})") from None
    mine, theirs = config.profile, twin.profile
    if (abs(mine.weight_kg - theirs.weight_kg) > 1e-6 or mine.basal_schedule != theirs.basal_schedule):
        raise ConfigError(f"[twin] learned {config.learned_path}: fitted for a profile with weight "
                          f"{theirs.weight_kg} kg and basal {theirs.daily_basal_u:.2f} U/day, not this [profile] "
                          f"({mine.weight_kg} kg, {mine.daily_basal_u:.2f} U/day); run glucotwin learn again")
    return dataclasses.replace(twin, profile=mine)


def _section(cls: type, values: dict[str, Any], name: str) -> Any:
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{name}]: {exc}") from None


def profile_to_toml(profile: PatientProfile) -> str:
    """The ``[profile]`` section for a profile (used by the HIL harness to write a loop config)."""
    lines = ["[profile]", f"name = {_toml_str(profile.name)}"]
    for key in ("weight_kg", "total_daily_insulin_u", "carb_ratio_g_per_u", "correction_factor_mg_dl_per_u",
                "age_years", "target_mg_dl"):
        value = float(getattr(profile, key))
        if not math.isfinite(value):
            raise ValueError(f"{key} is not finite")
        lines.append(f"{key} = {value!r}")
    segments = ", ".join(f"{{start = \"{s.start_min // 60:02d}:{s.start_min % 60:02d}\", "
                         f"rate_u_per_h = {s.rate_u_per_h!r}}}" for s in profile.basal_schedule)
    lines.append(f"basal = [{segments}]")
    if profile.timezone:
        lines.append(f"timezone = {_toml_str(profile.timezone)}")
    for key in ("carb_ratio_schedule", "correction_factor_schedule", "target_schedule"):
        schedule = getattr(profile, key)
        if schedule:
            vkey = SCHEDULE_VALUE_KEYS[key]
            items = ", ".join(f"{{start = \"{format_clock(s.start_min)}\", {vkey} = {float(s.value)!r}}}" for s in schedule)
            lines.append(f"{key} = [{items}]")
    return "\n".join(lines) + "\n"


def _toml_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _read_secret(path: str, where: str) -> str:
    """The stripped text of a secret file; ConfigError naming ``where`` (the key) if it cannot be read."""
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"{where} = {path!r}: cannot read the file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where} = {path!r}: the file is not text") from None
