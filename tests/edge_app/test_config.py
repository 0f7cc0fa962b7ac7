"""Config validation: every problem stops start-up with one line naming the key, exit code 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_app import config as C
from tests.helpers import REPO


def test_shipped_config_is_valid():
    cfg = C.load(REPO / "config.yaml")
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
        ({"triggers": {"restricted_categories": [{"category": "alcohol", "min_age": "x"}]}},
         "triggers.restricted_categories[0].min_age", "integer"),
        ({"camera": 5}, "camera", "mapping"),
    ],
)
def test_bad_values_name_the_key(data, key, words):
    with pytest.raises(C.ConfigError) as exc:
        C.from_dict(data)
    msg = str(exc.value)
    assert msg.startswith(key + ":"), msg
    assert words in msg


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge_app.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize(
    "content, key",
    [
        ("mqtt:\n  port: seventy\n", "mqtt.port"),
        ("unknown_section: 1\n", "unknown_section"),
        ("policy:\n  legal_age: 200\n", "policy.legal_age"),
        ("mqtt: [unclosed\n", "not valid YAML"),
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
    assert C.load(p).model.path == str((tmp_path / "m" / "x.tflite").resolve())


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
    ("camera:\n  source: \"0\\n1\"\n", "camera.source: contains control characters"),
    ("model:\n  path: \"a\\0b\"\n", "model.path: contains control characters"),
    (_deep_yaml(5000), "nested more than 32 levels deep at line 1"),
    ("mqtt:\n  port: " + "9" * 5000 + "\n", "holds a value that cannot be read"),
    ("feed:\n  timezone: Europe\n", "feed.timezone: 'Europe' is a region, not a timezone"),
    ("feed:\n  timezone: Not/A_Zone\n", "feed.timezone: 'Not/A_Zone' is not a known IANA timezone"),
    ("triggers:\n  restricted_skus: ['']\n", "triggers.restricted_skus[0]: must not be empty"),
]


@pytest.mark.parametrize("content, words", RUNTIME_BREAKERS, ids=[w.split(":")[0] + "-" + str(i)
                                                                  for i, (_, w) in enumerate(RUNTIME_BREAKERS)])
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
    assert C.read_secret(str(token), None, "triggers.http_token") == "t0ken"
    with pytest.raises(C.ConfigError, match=r"^triggers.http_token_file: cannot read '.*nope' \(No such file"):
        C.read_secret(str(tmp_path / "nope"), None, "triggers.http_token")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(C.ConfigError, match=r"^triggers.http_token_credential: \$CREDENTIALS_DIRECTORY is not set"):
        C.read_secret(None, "agecheck-http", "triggers.http_token")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert C.read_secret(None, "token", "triggers.http_token") == "t0ken"
