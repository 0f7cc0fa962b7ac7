"""Configuration: the sections of config.yaml as typed, frozen dataclasses (`Config` and one class
per section, each setting with its default and bounds), and `from_dict`, the one place a mapping
of settings is validated into a Config (every key converted and bounded, the checks that span
sections, relative paths resolved) and handed to the rest of the app. Finding and reading the
file, and the secrets and model file settings point at, are `edge_app.config.files`.

Every problem is raised as a ConfigError whose message names the key and the fix, so the CLI can
print one line and exit with code 2 instead of a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from edge_app import resources
from edge_app.errors import AgecheckError


class ConfigError(AgecheckError):
    """A configuration problem, worded for the person editing config.yaml."""

    exit_code = 2


def _rng(lo: float | None = None, hi: float | None = None, **extra: Any) -> dict:
    return {"min": lo, "max": hi, **extra}


_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

# Any text setting longer than this is a paste accident (the longest real ones are paths).
MAX_TEXT = 4096


def _text(max_len: int = MAX_TEXT, **extra: Any) -> dict:
    return {"max_len": max_len, **extra}


@dataclass(frozen=True)
class CameraConfig:
    # Device index ("0"), a video file, or an RTSP/HTTP URL; kept as text so all three fit.
    source: str = "0"
    fps: float = field(default=15.0, metadata=_rng(1, 120))
    width: int = field(default=640, metadata=_rng(64, 8192))
    height: int = field(default=480, metadata=_rng(64, 8192))
    buffer_seconds: float = field(default=1.5, metadata=_rng(0.2, 10))
    loop: bool = False
    reconnect_max_seconds: float = field(default=10.0, metadata=_rng(0.1, 600))
    # An MJPG camera's (or video file's) kept frames stay JPEG bytes until a check decodes the
    # few it reads: the idle till no longer decodes every frame (issue 29). false: every kept
    # frame decoded by OpenCV as it arrives (the path before). Other formats are always decoded.
    keep_encoded: bool = True


@dataclass(frozen=True)
class TLSConfig:
    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


@dataclass(frozen=True)
class MQTTConfig:
    # A DNS name is at most 253 characters.
    host: str = field(default="127.0.0.1", metadata=_text(253))
    port: int = field(default=1883, metadata=_rng(1, 65535))
    keepalive: int = field(default=30, metadata=_rng(5, 3600))
    username: str | None = field(default=None, metadata=_text(256))
    # The password is never in config.yaml: a file path, or the name of a systemd credential
    # (read from $CREDENTIALS_DIRECTORY/<name>).
    password_file: str | None = None
    password_credential: str | None = None
    # MQTT allows long ids but brokers refuse or truncate them; a 70,000-character id used to
    # "run" without ever connecting.
    client_id: str | None = field(default=None, metadata=_text(128))
    # Back-off ceiling between reconnect attempts when the broker is unreachable.
    reconnect_max_seconds: float = field(default=10.0, metadata=_rng(0.5, 600))
    # The service's subscriptions (pos/scan, pos/sale, events/ack) live in a broker session kept
    # this long while the service is away, so scans published while it restarts still arrive.
    session_expiry_seconds: int = field(default=3600, metadata=_rng(0, 7 * 86400))
    tls: TLSConfig = field(default_factory=TLSConfig)


@dataclass(frozen=True)
class PolicyConfig:
    legal_age: int = field(default=18, metadata=_rng(10, 30))
    challenge_age: int = field(default=25, metadata=_rng(10, 40))
    # Years subtracted from the estimate before comparing it with challenge_age, on top of the
    # spread measured over frames.
    margin_years: float = field(default=0.0, metadata=_rng(0, 20))


@dataclass(frozen=True)
class FacesConfig:
    # Model that searches the whole frame: "full" finds small faces further from the camera;
    # keypoints always come from a short-range second look around the chosen face.
    detector: Literal["short", "full"] = "full"
    min_confidence: float = field(default=0.5, metadata=_rng(0.05, 0.99))
    output_size: int = field(default=112, metadata=_rng(32, 512))
    margin: float = field(default=0.0, metadata=_rng(-0.3, 1.0))
    # Quality gate.
    min_iod_px: float = field(default=20.0, metadata=_rng(0, 1000))
    min_sharpness: float = field(default=15.0, metadata=_rng(0, 1e6))
    max_yaw_deg: float = field(default=35.0, metadata=_rng(0, 90))
    max_pitch_deg: float = field(default=30.0, metadata=_rng(0, 90))
    min_brightness: float = field(default=40.0, metadata=_rng(0, 255))
    max_brightness: float = field(default=225.0, metadata=_rng(0, 255))
    max_image_pixels: int = field(default=40_000_000, metadata=_rng(1_000, 500_000_000))
    # Within one check, the whole frame is searched on the first frame and then at least every
    # this many frames; the frames between follow the shopper with one short-range look around
    # their last box (a few ms instead of ~10 for the full search). A lost track is searched
    # again at once. 1: every frame searched in full (the path before issue 29). One-photo paths
    # (training, `agecheck estimate`) always search in full.
    full_search_every: int = field(default=5, metadata=_rng(1, 100))


@dataclass(frozen=True)
class ModelConfig:
    # Default: the model shipped with agecheck (inside the package, or models/ in a checkout).
    path: str = field(default_factory=resources.default_model_path)
    threads: int = field(default=2, metadata=_rng(1, 64))


@dataclass(frozen=True)
class RestrictedItem:
    category: str = "alcohol"
    min_age: int = field(default=18, metadata=_rng(1, 30))


@dataclass(frozen=True)
class TriggersConfig:
    """Which POS scans start a check, and the local demo triggers (off by default)."""

    restricted_categories: tuple[RestrictedItem, ...] = (RestrictedItem(),)
    restricted_skus: tuple[str, ...] = ()
    # A repeat scan in the same transaction reuses the open result for this long.
    reuse_seconds: float = field(default=120.0, metadata=_rng(0, 3600))
    max_payload_bytes: int = field(default=4096, metadata=_rng(64, 1_000_000))
    # A pos/scan whose `ts` is older than this when it reaches the till (e.g. queued by the
    # broker while the service restarted) is recorded as a `missed` event instead of checked:
    # the shopper is gone and the camera would look at the next one.
    max_scan_age_seconds: float = field(default=20.0, metadata=_rng(1, 3600))
    # The POS's clock against the till's (edge_app.till.triggers.PosClock, docs/robustness.md "POS
    # clock"). A difference larger than this is named in `state` and the log, and scans are then
    # timed by the estimated offset instead of by the POS's `ts` as it is. Below
    # max_scan_age_seconds, or a clock that far behind could never be told from late scans.
    pos_clock_max_skew_seconds: float = field(default=5.0, metadata=_rng(0.5, 3600))
    # A POS clock behind the till's looks like late delivery (a scan the broker held back, which
    # the stale rule must catch): it is taken for skew only when this many scans in a row arrive
    # late by the same amount (within pos_clock_max_skew_seconds), spread over more than
    # pos_clock_max_skew_seconds of the till's time. A POS clock ahead is named at once.
    pos_clock_confirm_scans: int = field(default=3, metadata=_rng(2, 100))
    http_port: int | None = field(default=None, metadata=_rng(1, 65535))  # loopback only
    # The HTTP trigger's limits: connections served at once (more get 503), seconds a
    # connection may stay silent, and seconds to send a whole request (a slow drip is cut off).
    http_max_connections: int = field(default=8, metadata=_rng(1, 256))
    http_idle_timeout_seconds: float = field(default=5.0, metadata=_rng(0.1, 300))
    http_read_timeout_seconds: float = field(default=10.0, metadata=_rng(0.1, 300))
    # Optional shared token (`Authorization: Bearer <token>`): another local user's process can
    # reach a loopback port too. Like the MQTT password, never in config.yaml: a file, or the
    # name of a systemd credential.
    http_token_file: str | None = None
    http_token_credential: str | None = None
    stdin: bool = False


@dataclass(frozen=True)
class CheckConfig:
    time_budget_ms: int = field(default=1500, metadata=_rng(50, 30_000))
    lookback_seconds: float = field(default=1.0, metadata=_rng(0, 10))
    # Fresh frames required after the scan. 0: the ring buffer (the shopper at the moment of the
    # scan) is enough, and new frames are waited for only when it holds no usable face; waiting
    # for 3 new frames at 15 fps alone cost ~200 ms per check (issue 6).
    extra_frames: int = field(default=0, metadata=_rng(0, 100))
    min_frames: int = field(default=1, metadata=_rng(1, 100))
    # A borderline shopper uses all of them; at ~14 ms a frame with the four-pass model, 5 keeps
    # that worst case under the 120 ms scan-to-decision budget on 2 cores (6 did not, reliably).
    max_frames: int = field(default=5, metadata=_rng(1, 100))
    # Decide as soon as this many usable frames agree: every one of them, on its own, gives the
    # same decision as their aggregate. Borderline shoppers still get up to max_frames. 0: off.
    agree_frames: int = field(default=3, metadata=_rng(0, 100))
    # Use both cores for a check: the next frame's face look runs on a second thread while the
    # model reads the current one, and the model then runs on one thread fewer than the machine
    # has cores (at most model.threads), so the two do not fight for a core. Same frames in the
    # same order, so the same decision as false (one thread, the path before issue 29).
    parallel: bool = True


@dataclass(frozen=True)
class OutboxConfig:
    # Relative paths resolve against $STATE_DIRECTORY (systemd StateDirectory=) when set, else
    # against the directory of the config file.
    path: str = "outbox.sqlite3"
    # When full, the OLDEST undelivered event is dropped (logged with its event_id and counted
    # in the retained state) so the newest checks keep flowing once the broker is back.
    max_events: int = field(default=100_000, metadata=_rng(10, 10_000_000))
    # While the outbox cannot write (disk full), events wait in memory, at most this many (a check
    # is 1-2 KB), and are written when space returns; beyond it the oldest is lost, counted.
    memory_max_events: int = field(default=5000, metadata=_rng(10, 1_000_000))


@dataclass(frozen=True)
class DisplayConfig:
    enabled: bool = False
    always_on_top: bool = True
    width: int = field(default=640, metadata=_rng(200, 4000))
    height: int = field(default=300, metadata=_rng(120, 3000))
    position: Literal["top-right", "top-left", "bottom-right", "bottom-left", "center"] = "top-right"
    # How long an approve banner stays up; alerts stay until answered.
    approve_seconds: float = field(default=4.0, metadata=_rng(0.5, 120))
    # After an answer, the window shows what was recorded with an Undo button for this long.
    undo_seconds: float = field(default=5.0, metadata=_rng(1, 60))
    # An unanswered alert stays on the window's list (even after its sale) until answered or
    # this old; an expired alert is logged, and the integrity check has it if it was sold.
    alert_expire_seconds: float = field(default=1800.0, metadata=_rng(60, 86400))
    # The standalone `agecheck display` keeps the cashier's answers here until the broker has
    # them. A relative path is in the desktop user's state folder: $STATE_DIRECTORY (a systemd
    # unit's), else $XDG_STATE_HOME/agecheck, else ~/.local/state/agecheck.
    outbox_path: str = "display-outbox.sqlite3"
    # The standalone window's own broker login (e.g. a user that may only read alerts and
    # publish answers). The till's password is a systemd credential that a desktop session
    # cannot read, so the window gets its password from a file readable by the cashier's user.
    mqtt_username: str | None = field(default=None, metadata=_text(256))  # as mqtt.username
    mqtt_password_file: str | None = None
    # `agecheck display`: a window that has heard nothing of its till (the till's retained
    # `state`) this long after subscribing says "NOT CONNECTED TO TILL <till_id>: check the
    # login" on screen and in its log: a login the broker's ACL does not let read the till's
    # topics otherwise looks connected and simply never shows an alert.
    till_state_timeout_seconds: float = field(default=5.0, metadata=_rng(1, 120))


# Settings that existed once: an old config.yaml naming one gets why it went, not just "unknown".
RETIRED: dict[str, str] = {
    "display.take_focus": "removed: the window never takes the keyboard (answers are by touch or click, "
    "docs/cashier.md); delete the line",
    "display.key_delay_seconds": "removed with the keyboard answers (the window never gets keys, "
    "docs/cashier.md); delete the line",
}


@dataclass(frozen=True)
class IntegrityConfig:
    # After a pos/sale, how long an unanswered alert waits for the cashier's answer before it
    # becomes an integrity event (the answer and the sale travel different paths).
    grace_seconds: float = field(default=5.0, metadata=_rng(0, 3600))
    # Alerts whose transaction never reports a sale are forgotten after this long.
    forget_after_seconds: float = field(default=4 * 3600.0, metadata=_rng(60, 7 * 86400))


@dataclass(frozen=True)
class FeedConfig:
    db_path: str = "agecheck-feed.sqlite3"
    # Fixed client id + a session kept by the broker: events published while the feed is away
    # are delivered when it comes back. Default: mqtt.username when set (the secure broker keys
    # sessions on the login), else agecheck-feed-<store_id> (or -all-stores).
    client_id: str | None = field(default=None, metadata=_text(128))
    session_expiry_seconds: int = field(default=7 * 86400, metadata=_rng(0, 365 * 86400))
    # Bigger payloads are quarantined, not parsed.
    max_payload_bytes: int = field(default=65536, metadata=_rng(1024, 16 * 1024 * 1024))
    # Days in the report are calendar days in this IANA zone (e.g. Europe/London); null means
    # the timezone of the machine running the report.
    timezone: str | None = field(default=None, metadata=_text(128))


@dataclass(frozen=True)
class DashboardConfig:
    # Only this computer can open the dashboard unless host is set to another address (e.g.
    # 0.0.0.0); then a password is required: password_hash from `agecheck dashboard
    # --hash-password` (the password itself is never written in config.yaml).
    host: str = "127.0.0.1"
    port: int = field(default=8050, metadata=_rng(1, 65535))
    username: str = "manager"
    password_hash: str | None = None
    # How often an open page asks whether new events arrived (a tiny JSON request); it redraws
    # itself only when they did, keeping its filters and scroll position.
    refresh_seconds: float = field(default=10.0, metadata=_rng(1, 3600))


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


@dataclass(frozen=True)
class Config:
    store_id: str = "store-001"
    till_id: str = "till-01"
    camera: CameraConfig = field(default_factory=CameraConfig)
    mqtt: MQTTConfig = field(default_factory=MQTTConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    triggers: TriggersConfig = field(default_factory=TriggersConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)
    integrity: IntegrityConfig = field(default_factory=IntegrityConfig)
    feed: FeedConfig = field(default_factory=FeedConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return {int: "an integer", float: "a number", str: "text", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _short(value: Any, n: int = 60) -> str:
    """repr() cut short, so a pasted megabyte never becomes a megabyte-long error line."""
    text = repr(value)
    return text if len(text) <= n else text[:n] + f"... ({len(text)} characters)"


def _convert(value: Any, tp: Any, key: str, meta: dict) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _convert(value, args[0], key, meta)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: must be a mapping of settings, got {_short(value)}")
        return _build(tp, value, key)
    if origin is tuple:
        if value is None:
            value = []
        if not isinstance(value, list):
            raise ConfigError(f"{key}: must be a list, got {_short(value)}")
        item_tp = typing.get_args(tp)[0]
        return tuple(_convert(v, item_tp, f"{key}[{i}]", {}) for i, v in enumerate(value))
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}: must be {_type_name(tp)}, got {_short(value)}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, got {_short(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be an integer, got {_short(value)}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: must be a number, got {_short(value)}")
        value = float(value)
        # NaN passes every comparison below (and then e.g. switches a quality gate off), and
        # neither NaN nor infinity can be written into an event as JSON.
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
    elif tp is str:
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise ConfigError(f"{key}: must be text, got {_short(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}: must be text, got {value!r}")
        value = str(value)
        max_len = meta.get("max_len", MAX_TEXT)
        if not value.strip():
            raise ConfigError(f"{key}: must not be empty (leave the setting out to use the default)")
        if len(value) > max_len:
            raise ConfigError(f"{key}: is {len(value)} characters long, at most {max_len} allowed")
        if not value.isprintable():
            raise ConfigError(f"{key}: contains control characters (a stray tab, newline or NUL?)")
    lo, hi = meta.get("min"), meta.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"{key}: must be between {lo} and {hi}, got {value!r}")
    return value


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            where = f"{prefix}.{name}" if prefix else str(name)
            if where in RETIRED:
                raise ConfigError(f"{where}: {RETIRED[where]}")
            close = difflib.get_close_matches(str(name), list(fields), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown setting{hint}; allowed here: {', '.join(fields)}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            key = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _convert(data[name], hints[name], key, dict(f.metadata))
    return cls(**kwargs)


def _check(cfg: Config) -> None:
    for key in ("store_id", "till_id"):
        if not _ID.match(getattr(cfg, key)):
            raise ConfigError(
                f"{key}: use lower-case ASCII letters, digits, '-' or '_' (it becomes part of the "
                f"MQTT topic), got {getattr(cfg, key)!r}"
            )
    if cfg.policy.challenge_age < cfg.policy.legal_age:
        raise ConfigError(
            "policy.challenge_age: must be at least policy.legal_age "
            f"({cfg.policy.challenge_age} < {cfg.policy.legal_age})"
        )
    if cfg.faces.min_brightness >= cfg.faces.max_brightness:
        raise ConfigError("faces.min_brightness: must be below faces.max_brightness")
    if cfg.feed.timezone is not None:
        try:
            zoneinfo.ZoneInfo(cfg.feed.timezone)
        except IsADirectoryError:
            raise ConfigError(
                f"feed.timezone: {cfg.feed.timezone!r} is a region, not a timezone; name a zone in it "
                "(for example Europe/London), or null for this machine's timezone"
            ) from None
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            raise ConfigError(
                f"feed.timezone: {cfg.feed.timezone!r} is not a known IANA timezone "
                "(for example Europe/London), or null for this machine's timezone"
            ) from None
    if cfg.triggers.pos_clock_max_skew_seconds >= cfg.triggers.max_scan_age_seconds:
        raise ConfigError(
            "triggers.pos_clock_max_skew_seconds: must be below triggers.max_scan_age_seconds "
            f"({cfg.triggers.pos_clock_max_skew_seconds:g} >= {cfg.triggers.max_scan_age_seconds:g}): a POS clock "
            "behind by less than the skew bound but more than the scan age would make every scan stale"
        )
    if cfg.mqtt.password_file and cfg.mqtt.password_credential:
        raise ConfigError("mqtt.password_file: set either password_file or password_credential, not both")
    if cfg.triggers.http_token_file and cfg.triggers.http_token_credential:
        raise ConfigError("triggers.http_token_file: set either http_token_file or http_token_credential, not both")
    if cfg.display.mqtt_password_file and not (cfg.display.mqtt_username or cfg.mqtt.username):
        raise ConfigError(
            "display.mqtt_username: a password file is set for the window but no user name "
            "(set display.mqtt_username, or mqtt.username to share the till's)"
        )


def from_dict(data: dict | None, base_dir: Path | None = None) -> Config:
    """Validate a mapping (as read from YAML) into a Config. Relative paths resolve against
    base_dir (the directory of the YAML file)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("config: the file must hold a mapping of settings at the top level")
    cfg = _build(Config, data, "")
    _check(cfg)
    if base_dir is not None:
        model_path = Path(cfg.model.path)
        if not model_path.is_absolute():
            cfg = dataclasses.replace(
                cfg, model=dataclasses.replace(cfg.model, path=str((base_dir / model_path).resolve()))
            )
    outbox_path = Path(cfg.outbox.path)
    if not outbox_path.is_absolute():
        # systemd may pass several state directories separated by ':'; ours is the first.
        state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        root = Path(state_dir) if state_dir else base_dir
        if root is not None:
            cfg = dataclasses.replace(cfg, outbox=dataclasses.replace(cfg.outbox, path=str(root / outbox_path)))
    display_outbox = Path(cfg.display.outbox_path).expanduser()
    if not display_outbox.is_absolute():
        display_outbox = user_state_dir() / display_outbox
    cfg = dataclasses.replace(cfg, display=dataclasses.replace(cfg.display, outbox_path=str(display_outbox)))
    return cfg


def user_state_dir() -> Path:
    """The folder for a desktop program's state (the standalone cashier window's answers): the
    systemd unit's $STATE_DIRECTORY when there is one, else the XDG state folder."""
    state_dir = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
    if state_dir:
        return Path(state_dir)
    xdg = os.environ.get("XDG_STATE_HOME", "")
    # The XDG spec: a relative $XDG_STATE_HOME is invalid and must be ignored.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".local" / "state"
    return base / "agecheck"
