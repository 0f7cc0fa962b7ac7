"""`agecheck run` as a real process: killed with SIGKILL while its events wait in the outbox
(broker down), restarted under a systemd-like notify socket, it delivers them; it tells systemd
READY and feeds the watchdog; SIGTERM stops it cleanly with `offline` retained. Bad config
stops it with one line and exit code 2. And the README's main job, `agecheck run --demo`."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
import yaml

from edge_app.config import ConfigError
from edge_app.config.files import load
from edge_app.devtools.sim import free_port
from edge_app.till.service import Service
from tests.edge_app.service_util import REPO, Recorder, astronaut_video, retained, service_config, wait_until

ROOT = "agecheck/v1/store-001/till-01"


def _env(**extra) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "STATE_DIRECTORY", "CREDENTIALS_DIRECTORY")
    }
    env.update(extra)
    return env


def _start(cfg_path: Path, log: Path, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "edge_app.cli", "run", "--config", str(cfg_path)],
        cwd=REPO,
        env=_env(**env),
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _wait_http(port: int, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    def up() -> bool:
        assert proc.poll() is None, f"service exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            conn.getresponse().read()
            return True
        except OSError:
            return False

    try:
        wait_until(up, timeout, "the service's HTTP trigger", step=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}:\n{log.read_text()[-3000:]}") from None


def _scan(port: int, txn: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request(
        "POST", "/scan", body=json.dumps({"transaction_id": txn}), headers={"Content-Type": "application/json"}
    )
    r = conn.getresponse()
    body = json.loads(r.read())
    assert r.status == 200, body
    return body


def test_sigkill_with_events_in_the_outbox_then_restart_delivers_them(tmp_path, mqtt_broker):
    rec = Recorder(mqtt_broker.host, mqtt_broker.port, topic=f"{ROOT}/events/#")  # persistent session
    mqtt_broker.stop()
    video = astronaut_video(tmp_path / "cam.avi")
    http_port = free_port()
    outbox = tmp_path / "state" / "outbox.sqlite3"
    cfg = {
        "camera": {"source": str(video), "loop": True, "reconnect_max_seconds": 0.5},
        "mqtt": {"port": mqtt_broker.port, "keepalive": 5, "reconnect_max_seconds": 1},
        "model": {"path": str(REPO / "models" / "age_resnet10_int8.tflite")},
        "outbox": {"path": str(outbox)},
        "triggers": {"http_port": http_port},
    }
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log = tmp_path / "service.log"

    # 1. Broker down: two checks end up in the outbox only; then the process is killed outright.
    proc = _start(cfg_path, log)
    try:
        _wait_http(http_port, proc, log)
        results = [_scan(http_port, f"K-{i}") for i in (1, 2)]
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    want = [r["check"]["event_id"] for r in results] + [r["alert"]["event_id"] for r in results if r["alert"]]
    db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
    stored = [row[0] for row in db.execute("SELECT event_id FROM events ORDER BY seq")]
    db.close()
    assert set(stored) == set(want), "both checks (and their alerts) wait in the outbox"

    # 2. Broker back; restart under a systemd-like notify socket with a watchdog.
    mqtt_broker.start()
    sock_dir = tempfile.mkdtemp(prefix="sd-")
    sock_path = str(Path(sock_dir) / "notify")
    sd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sd.bind(sock_path)
    notes: list[str] = []

    def listen() -> None:
        sd.settimeout(0.5)
        while True:
            try:
                notes.append(sd.recv(4096).decode())
            except TimeoutError:
                continue
            except OSError:
                return

    threading.Thread(target=listen, daemon=True).start()
    proc = _start(cfg_path, log, NOTIFY_SOCKET=sock_path, WATCHDOG_USEC="2000000")
    try:
        got = rec.wait_for(
            lambda m: {json.loads(p)["event_id"] for _, p, _ in m} >= set(want), 90, "the events from the killed run"
        )
        delivered = [json.loads(p)["event_id"] for _, p, _ in got]
        assert [e for e in dict.fromkeys(delivered) if e in stored] == stored  # oldest first
        wait_until(lambda: any(n.startswith("READY=1") for n in notes), 30, "READY=1")
        wait_until(lambda: sum(n == "WATCHDOG=1" for n in notes) >= 2, 10, "watchdog pings")
        _wait_http(http_port, proc, log)
        db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True)
        wait_until(lambda: db.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0, 10, "outbox empty")
        db.close()
        assert retained(mqtt_broker.host, mqtt_broker.port, f"{ROOT}/availability") == b"online"
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
    sd.close()
    assert rc == 0, log.read_text()[-3000:]
    assert any(n.startswith("STOPPING=1") for n in notes)
    assert retained(mqtt_broker.host, mqtt_broker.port, f"{ROOT}/availability") == b"offline"
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    assert "received SIGTERM" in text and "stopped;" in text
    rec.close()


@pytest.mark.parametrize(
    "section, key, words",
    [
        (
            {"mqtt": {"username": "till", "password_credential": "mqtt-password"}},
            "mqtt.password_credential",
            "CREDENTIALS_DIRECTORY is not set",
        ),
        ({"model": {"path": "/nonexistent/model.tflite"}}, "model.path", "does not exist"),
        ({"faces": {"output_size": 64}}, "faces.output_size", "does not match the model's input size"),
    ],
)
def test_service_config_problems_name_the_key(tmp_path, monkeypatch, section, key, words):
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = service_config(tmp_path, tmp_path / "none.avi", None, **section)
    with pytest.raises(ConfigError) as ei:
        Service(cfg)
    assert str(ei.value).startswith(key) and words in str(ei.value)


def test_outbox_and_http_port_problems_name_the_key(tmp_path):
    from edge_app.vision.faces import FacePipeline
    from edge_app.vision.model import AgeModel

    cfg0 = load(None)
    (tmp_path / "file").write_text("x")
    with FacePipeline(cfg0.faces) as pipe:
        model = AgeModel(cfg0.model.path)
        cfg = service_config(tmp_path, tmp_path / "none.avi", None, outbox={"path": str(tmp_path / "file" / "o.db")})
        with pytest.raises(ConfigError, match=r"^outbox\.path: cannot create the folder"):
            Service(cfg, pipeline=pipe, model=model)
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            cfg = service_config(tmp_path, tmp_path / "none.avi", None, triggers={"http_port": busy.getsockname()[1]})
            with pytest.raises(ConfigError, match=r"^triggers\.http_port: cannot listen on 127\.0\.0\.1"):
                Service(cfg, pipeline=pipe, model=model).start()


def test_bad_config_file_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "config.yaml"
    bad.write_text("camera:\n  sorce: 0\n")
    r = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "run", "--config", str(bad)],
        cwd=REPO,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "camera.sorce" in lines[0] and "did you mean 'source'" in lines[0]


def test_demo_runs_with_nothing_configured_and_stops_on_ctrl_c(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_app.cli", "run", "--demo"],
        cwd=tmp_path,
        env=_env(PYTHONPATH=str(REPO)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=(tmp_path / "demo.log").open("wb"),
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        wait_until(lambda: sum(" check " in ln for ln in lines) >= 2 or proc.poll() is not None, 120, "two demo checks")
        assert proc.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground process group
        rc = proc.wait(30)
    reader.join(5)
    checks = [ln for ln in lines if " check " in ln]
    assert rc == 0, (tmp_path / "demo.log").read_text()[-3000:]
    assert any("mosquitto_sub -h 127.0.0.1" in ln for ln in lines)
    # e.g. "12:00:03 check   1  txn demo-0001  APPROVE  age 33.9 (band 25-34)  -> OK to sell ..."
    assert all(any(d in ln for d in ("APPROVE", "CHECK ID", "NO FACE")) for ln in checks)
    first = checks[0]
    assert "demo-0001" in first and ("age " in first or "NO FACE" in first)
    if "age " in first:
        age = float(first.split("age ")[1].split()[0])
        assert 15 <= age <= 70
    assert lines[-1].startswith("agecheck demo: stopped after")
    assert not list(tmp_path.iterdir()) or {p.name for p in tmp_path.iterdir()} == {"demo.log"}
