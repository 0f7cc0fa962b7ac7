"""Config validation: every problem stops start-up with one line naming the key, exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from edge_app import config as C
from edge_app.config import files as F
from tests.helpers import REPO


def test_shipped_config_is_valid():
    cfg = F.load(REPO / "config.yaml")
    assert cfg.policy.challenge_age == 25
    assert cfg.model.path.endswith("age_resnet10_int8.tflite")


@pytest.mark.parametrize(
    "data, key, words",
    [
        ({"camra": {}}, "camra", "unknown setting"),
        ({"mqtt": {"prot": 1883}}, "mqtt.prot", "did you mean 'port'"),
        ({"mqtt": {"port": "abc"}}, "mqtt.port", "must be an integer"),
        ({"mqtt": {"port": 70000}}, "mqtt.port", "between 1 and 65535"),
        ({"policy": {"challenge_age": 16, "legal_age": 18}}, "policy.challenge_age", "at least"),
        ({"faces": {"detector": "huge"}}, "faces.detector", "one of"),
        ({"camera": {"loop": "yes"}}, "camera.loop", "true or false"),
        ({"store_id": "Store 1"}, "store_id", "lower-case"),
        (
            {"triggers": {"restricted_categories": [{"category": "alcohol", "min_age": "x"}]}},
            "triggers.restricted_categories[0].min_age",
            "integer",
        ),
        ({"camera": 5}, "camera", "mapping"),
        # Retired with the keyboard answers (issue 25): named, with why, not just "unknown".
        ({"display": {"key_delay_seconds": 0.7}}, "display.key_delay_seconds", "removed with the keyboard answers"),
        ({"display": {"till_state_timeout_seconds": 0}}, "display.till_state_timeout_seconds", "between 1 and 120"),
        ({"display": {"undo_seconds": 0}}, "display.undo_seconds", "between 1 and 60"),
        ({"display": {"alert_expire_seconds": 5}}, "display.alert_expire_seconds", "between 60 and 86400"),
        ({"display": {"take_focus": False}}, "display.take_focus", "never takes the keyboard"),
        ({"display": {"mqtt_password_file": "/etc/agecheck/display-pw"}}, "display.mqtt_username", "no user name"),
    ],
)
def test_bad_values_name_the_key(data, key, words):
    with pytest.raises(C.ConfigError) as exc:
        C.from_dict(data)
    msg = str(exc.value)
    assert msg.startswith(key + ":"), msg
    assert words in msg


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`agecheck ARGS` from the repository, in this environment or in `env` when given."""
    return subprocess.run(
        [sys.executable, "-m", "edge_app.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=120, env=env
    )


@pytest.mark.parametrize(
    "content, key",
    [
        ("mqtt:\n  port: seventy\n", "mqtt.port"),
        ("unknown_section: 1\n", "unknown_section"),
        ("policy:\n  legal_age: 200\n", "policy.legal_age"),
        ("mqtt: [unclosed\n", "not valid YAML"),
        ("mqtt:\n  port: 1883\n  host: a\n  port: 1884\n", "setting 'port' is given twice, at lines 2 and 4"),
        ("store_id: store-001\nmqtt: {}\nstore_id: store-002\n", "setting 'store_id' is given twice"),
        ("", "is empty"),
        ("# only a comment\n\n", "is empty"),
    ],
)
def test_cli_exits_2_with_one_line(tmp_path, content, key):
    p = tmp_path / "config.yaml"
    p.write_text(content)
    r = _run_cli("faces", "--config", str(p), "nothing.jpg")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert key in lines[0] and "Traceback" not in r.stderr


def test_cli_missing_config_file(tmp_path):
    r = _run_cli("faces", "--config", str(tmp_path / "nope.yaml"), "x.jpg")
    assert r.returncode == 2
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr


def test_relative_model_path_resolves_against_config_dir(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  path: m/x.tflite\n")
    assert F.load(p).model.path == str((tmp_path / "m" / "x.tflite").resolve())


def test_version():
    r = _run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith("agecheck ")


def _deep_yaml(n: int) -> str:
    return "camera: " + "[" * n + "]" * n + "\n"


# Values that passed validation and then broke at run time (issue 15): each must now stop
# `agecheck` with exit code 2 and one line that names the key.
RUNTIME_BREAKERS = [
    ("camera:\n  fps: .nan\n", "camera.fps: must be a finite number"),
    ("policy:\n  margin_years: .nan\n", "policy.margin_years: must be a finite number"),
    ("faces:\n  max_yaw_deg: .nan\n", "faces.max_yaw_deg: must be a finite number"),
    ("camera:\n  buffer_seconds: .inf\n", "camera.buffer_seconds: must be a finite number"),
    ("faces:\n  min_sharpness: -.inf\n", "faces.min_sharpness: must be a finite number"),
    ("mqtt:\n  host: ''\n", "mqtt.host: must not be empty"),
    ("mqtt:\n  host: '   '\n", "mqtt.host: must not be empty"),
    ("mqtt:\n  client_id: " + "x" * 70_000 + "\n", "mqtt.client_id: is 70000 characters long, at most 128"),
    ('camera:\n  source: "0\\n1"\n', "camera.source: contains control characters"),
    ('model:\n  path: "a\\0b"\n', "model.path: contains control characters"),
    (_deep_yaml(5000), "nested more than 32 levels deep at line 1"),
    ("mqtt:\n  port: " + "9" * 5000 + "\n", "holds a value that cannot be read"),
    ("feed:\n  timezone: Europe\n", "feed.timezone: 'Europe' is a region, not a timezone"),
    ("feed:\n  timezone: Not/A_Zone\n", "feed.timezone: 'Not/A_Zone' is not a known IANA timezone"),
    ("triggers:\n  restricted_skus: ['']\n", "triggers.restricted_skus[0]: must not be empty"),
    # The cashier window's settings (issue 16) and the disk-full memory bound get the same rules.
    ("display:\n  undo_seconds: .nan\n", "display.undo_seconds: must be a finite number"),
    ("display:\n  alert_expire_seconds: .inf\n", "display.alert_expire_seconds: must be a finite number"),
    ("display:\n  till_state_timeout_seconds: .nan\n", "display.till_state_timeout_seconds: must be a finite number"),
    ("display:\n  mqtt_username: ''\n", "display.mqtt_username: must not be empty"),
    ("display:\n  mqtt_username: " + "u" * 300 + "\n", "display.mqtt_username: is 300 characters long, at most 256"),
    ("display:\n  mqtt_password_file: '  '\n", "display.mqtt_password_file: must not be empty"),
    ('display:\n  outbox_path: "a\\tb"\n', "display.outbox_path: contains control characters"),
    ("outbox:\n  memory_max_events: .nan\n", "outbox.memory_max_events: must be an integer"),
    ("outbox:\n  memory_max_events: 5\n", "outbox.memory_max_events: must be between 10 and"),
]


@pytest.mark.parametrize(
    "content, words",
    RUNTIME_BREAKERS,
    ids=[w.split(":")[0] + "-" + str(i) for i, (_, w) in enumerate(RUNTIME_BREAKERS)],
)
def test_values_that_broke_at_run_time_exit_2_with_one_line(tmp_path, content, words):
    p = tmp_path / "config.yaml"
    p.write_text(content)
    r = _run_cli("report", "--config", str(p), "--db", str(tmp_path / "none.sqlite3"))
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr[-2000:]
    assert words in lines[0] and len(lines[0]) < 400, lines[0][:500]


def test_outbox_path_at_someone_elses_file_is_refused_and_left_alone(tmp_path):
    mine = tmp_path / "notes.txt"
    mine.write_text("the store manager's notes\n")
    p = tmp_path / "config.yaml"
    p.write_text(f"outbox:\n  path: {mine}\n")
    r = _run_cli("run", "--config", str(p))
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "outbox.path:" in lines[0] and "is not an agecheck outbox" in lines[0], r.stderr
    assert mine.read_text() == "the store manager's notes\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["config.yaml", "notes.txt"]


def test_http_token_comes_from_a_file_or_a_credential_never_both(tmp_path, monkeypatch):
    with pytest.raises(C.ConfigError, match="either http_token_file or http_token_credential"):
        C.from_dict({"triggers": {"http_token_file": "a", "http_token_credential": "b"}})
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    assert F.read_secret(str(token), None, "triggers.http_token") == "t0ken"
    with pytest.raises(C.ConfigError, match=r"^triggers.http_token_file: cannot read '.*nope' \(No such file"):
        F.read_secret(str(tmp_path / "nope"), None, "triggers.http_token")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(C.ConfigError, match=r"^triggers.http_token_credential: \$CREDENTIALS_DIRECTORY is not set"):
        F.read_secret(None, "agecheck-http", "triggers.http_token")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert F.read_secret(None, "token", "triggers.http_token") == "t0ken"


# -- where the config comes from: --config, $AGECHECK_CONFIG, /etc/agecheck/config.yaml ----------
def _yaml(path, store):
    path.write_text(f"store_id: {store}\n")
    return path


def test_locate_tries_flag_then_variable_then_system_file(tmp_path):
    flag, env, system = (
        _yaml(tmp_path / "a.yaml", "a"),
        _yaml(tmp_path / "b.yaml", "b"),
        _yaml(tmp_path / "c.yaml", "c"),
    )
    environ = {F.CONFIG_ENV: str(env)}
    assert F.locate(str(flag), False, environ, system) == flag
    assert F.locate(None, False, environ, system) == env
    assert F.locate(None, False, {}, system) == system
    assert F.load(F.locate(None, False, {}, system)).store_id == "c"
    assert F.locate(None, True, {}, tmp_path / "none.yaml") is None  # defaults, where allowed


def test_no_config_anywhere_says_where_it_looked(tmp_path):
    with pytest.raises(C.ConfigError) as exc:
        F.locate(None, False, {}, tmp_path / "etc.yaml")
    msg = str(exc.value)
    assert "--config: not given" in msg and "$AGECHECK_CONFIG: not set" in msg
    assert f"{tmp_path / 'etc.yaml'}: does not exist" in msg


def test_a_variable_pointing_nowhere_is_an_error_not_a_fallback(tmp_path):
    system = _yaml(tmp_path / "c.yaml", "c")
    with pytest.raises(C.ConfigError, match=r"\$AGECHECK_CONFIG points at .*missing.yaml"):
        F.locate(None, True, {F.CONFIG_ENV: str(tmp_path / "missing.yaml")}, system)


def test_the_service_needs_a_config_the_photo_tools_do_not(tmp_path):
    if F.SYSTEM_CONFIG.exists():
        pytest.skip(f"{F.SYSTEM_CONFIG} exists on this machine")
    env = {k: v for k, v in os.environ.items() if k != F.CONFIG_ENV}
    r = _run_cli("run", env=env)
    assert r.returncode == 2 and "no config file found" in r.stderr and str(F.SYSTEM_CONFIG) in r.stderr
    r = _run_cli("faces", str(tmp_path / "none.png"), env=env)
    assert r.returncode == 1 and "file does not exist" in r.stderr  # ran, on the built-in defaults
    env[F.CONFIG_ENV] = str(_yaml(tmp_path / "env.yaml", "Bad Store"))
    r = _run_cli("faces", str(tmp_path / "none.png"), env=env)
    assert r.returncode == 2 and "store_id" in r.stderr  # the variable's file was the one read


def test_display_outbox_is_in_the_users_state_folder(tmp_path, monkeypatch):
    """`agecheck display` runs as the desktop user: its answers never default to the config's
    folder (/etc/agecheck, not writable by that user)."""
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    cfg = C.from_dict({}, tmp_path / "etc")
    assert cfg.display.outbox_path == str(tmp_path / "xdg" / "agecheck" / "display-outbox.sqlite3")
    assert not hasattr(cfg.display, "take_focus") and cfg.display.till_state_timeout_seconds == 5.0
    monkeypatch.setenv("XDG_STATE_HOME", "relative/ignored")  # the XDG spec: only absolute paths count
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert C.from_dict({}).display.outbox_path == str(
        tmp_path / "home" / ".local" / "state" / "agecheck" / "display-outbox.sqlite3"
    )
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "unit"))  # a systemd --user unit's own
    assert C.from_dict({}).display.outbox_path == str(tmp_path / "unit" / "display-outbox.sqlite3")
    assert C.from_dict({"display": {"outbox_path": "/var/tmp/x.sqlite3"}}).display.outbox_path == "/var/tmp/x.sqlite3"


def test_a_config_found_through_the_variable_gets_the_same_depth_limit(tmp_path):
    """`locate` only finds the file; `load` reads it with the depth-limited loader whichever way
    it was found."""
    p = tmp_path / "deep.yaml"
    p.write_text(_deep_yaml(5000))
    with pytest.raises(C.ConfigError, match="nested more than 32 levels deep at line 1"):
        F.load(F.locate(None, False, {F.CONFIG_ENV: str(p)}, tmp_path / "none.yaml"))
    env = {k: v for k, v in os.environ.items() if k != F.CONFIG_ENV}
    env[F.CONFIG_ENV] = str(p)
    r = _run_cli("report", "--db", str(tmp_path / "none.sqlite3"), env=env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "nested more than 32 levels deep" in lines[0], r.stderr[-2000:]


def test_the_pos_clock_bound_must_be_below_the_scan_age():
    # A POS clock behind by more than the scan age but less than the skew bound could never be
    # told from late scans: every scan would be stale.
    with pytest.raises(
        C.ConfigError,
        match=r"triggers.pos_clock_max_skew_seconds: must be below "
        r"triggers.max_scan_age_seconds \(30 >= 20\)",
    ):
        C.from_dict({"triggers": {"max_scan_age_seconds": 20, "pos_clock_max_skew_seconds": 30}})
    cfg = C.from_dict({"triggers": {"pos_clock_max_skew_seconds": 8, "pos_clock_confirm_scans": 4}})
    assert (cfg.triggers.pos_clock_max_skew_seconds, cfg.triggers.pos_clock_confirm_scans) == (8.0, 4)
