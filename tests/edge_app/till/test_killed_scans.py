"""Every scan leaves a record even when the service is killed: `agecheck run` as a real process,
killed with SIGKILL ten times (no shutdown code runs) while a POS publishes scans every 0.4 s to a
real Mosquitto and the manager's real feed stores every event. The service acknowledges a scan to
the broker only once its check or `missed` event is in the outbox, so the scans it held when it
died are delivered again to the next process; at the end every scan has a record in the feed."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
import time

import pytest
import yaml

from edge_app.config import from_dict
from edge_app.core.pos import Item, Scan
from edge_app.manager.feed import Feed
from tests.edge_app.feed_util import Publisher
from tests.edge_app.service_util import REPO, Recorder, astronaut_video, start_service, wait_until

ROOT = "agecheck/v1/store-001/till-01"
MODEL = REPO / "models" / "age_resnet10_int8.tflite"
KILLS = 10


def test_no_scan_lost_across_sigkills(tmp_path, mqtt_broker):
    if not MODEL.is_file():
        pytest.skip(f"the shipped model {MODEL} is missing")

    data = {
        "store_id": "store-001",
        "till_id": "till-01",
        "camera": {
            "source": str(astronaut_video(tmp_path / "cam.avi")),
            "loop": True,
            "fps": 10,
            "reconnect_max_seconds": 0.5,
        },
        # Each check waits for 6 fresh frames (~0.6 s), longer than the POS takes between scans:
        # scans queue up, so every kill finds some waiting for their check.
        "check": {"extra_frames": 6, "time_budget_ms": 3000},
        "mqtt": {"host": "127.0.0.1", "port": mqtt_broker.port, "keepalive": 5, "reconnect_max_seconds": 1},
        "model": {"path": str(MODEL), "threads": 1},
        "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
        # A restart on a busy test machine takes seconds: redelivered scans are still checked.
        "triggers": {"max_scan_age_seconds": 120},
    }
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(data))
    log = tmp_path / "service.log"
    feed = Feed(from_dict(data, REPO), tmp_path / "feed.sqlite3", out=io.StringIO()).start()
    assert feed.subscribed.wait(15)
    rec = Recorder(mqtt_broker.host, mqtt_broker.port)  # only to see each process subscribe

    def records() -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for txn, kind in feed.store.db.query(
            "SELECT transaction_id, kind FROM events WHERE kind IN ('check', 'missed')"
        ):
            out.setdefault(txn, []).append(kind)
        return out

    def up(mark: int, what: str) -> None:
        rec.wait_for(
            lambda m: any(
                t.endswith("/state") and json.loads(p).get("mqtt_subscribed") is True for t, p, _ in m[mark:]
            ),
            120,
            what,
        )

    sent: list[str] = []
    stop = threading.Event()
    pos = Publisher(mqtt_broker.port)

    def pos_loop() -> None:
        i = 0
        while not stop.wait(0.4):
            pos.raw(f"{ROOT}/pos/scan", Scan(Item("5010677850100", "alcohol"), f"K-{i}", sent_at=time.time()).encode())
            sent.append(f"K-{i}")
            i += 1

    proc = start_service(cfg_path, log)
    pos_thread = threading.Thread(target=pos_loop, daemon=True)
    held_at_kill: list[int] = []  # scans sent but not yet recorded when each process was killed
    try:
        mark = len(rec.messages)
        up(mark, "the service subscribed")
        pos_thread.start()
        for n in range(KILLS):
            # Killed while it works: after it has recorded a scan of this run, a little later each time.
            before = len(records())
            wait_until(lambda: len(records()) > before, 60, f"a record from process {n + 1}")
            time.sleep(0.2 * (n % 4))
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(10) == -signal.SIGKILL
            held_at_kill.append(len(set(sent) - set(records())))
            mark = len(rec.messages)
            proc = start_service(cfg_path, log)
            up(mark, f"the service back after kill {n + 1}")
        stop.set()
        pos_thread.join(10)
        try:
            wait_until(lambda: set(sent) <= set(records()), 60, "a record for every scan")
        except AssertionError:
            pass  # the assertion below names the scans without one
    finally:
        stop.set()
        pos.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        rec.close()
    got = records()
    feed.stop()
    missing = [t for t in sent if t not in got]
    assert not missing, f"{len(missing)} of {len(sent)} scans left no record: {missing}\n{log.read_text()[-3000:]}"
    # The kills hit a service with scans in hand (or the test proves nothing).
    assert sum(held_at_kill) >= KILLS, held_at_kill
    assert len(sent) > 3 * KILLS
