"""Integrity events from real `pos/sale` messages over a real Mosquitto, produced by the real till
service (its integrity plug-in, outbox and MQTT link) and stored by the real manager feed. The
camera plays a blank video, so every check ends `no_face` and raises an alert without any face
photo being needed. With the cashier window on (under Xvfb), the answers are real key presses."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from edge_app.core import events
from edge_app.config import from_dict
from edge_app.manager.feed import Feed
from tests.edge_app.broker_util import Broker
from tests.edge_app.feed_util import Publisher, db_query, wait_until
from tests.edge_app.x11_util import wait_for, xdotool, xvfb  # noqa: F401

REPO = Path(__file__).resolve().parents[3]
MODEL = REPO / "models" / "age_resnet10_int8.tflite"
POS = "agecheck/v1/store-001/till-01/pos"


def blank_video(path: Path) -> Path:
    import cv2
    import numpy as np

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (320, 240))
    frame = np.full((240, 320, 3), 128, np.uint8)  # an empty grey till: no face to find
    for _ in range(30):
        w.write(frame)
    w.release()
    return path


def service_config(tmp: Path, port: int, display: bool):
    if not MODEL.is_file():
        pytest.skip(f"the shipped model {MODEL} is missing")
    return from_dict({
        "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_max_seconds": 1},
        "camera": {"source": str(blank_video(tmp / "blank.avi")), "loop": True, "fps": 15,
                   "width": 320, "height": 240},
        "check": {"time_budget_ms": 400, "extra_frames": 2},
        "outbox": {"path": str(tmp / "outbox.sqlite3")},
        "integrity": {"grace_seconds": 0.5},
        "display": {"enabled": display, "position": "top-left"},
        "model": {"path": str(MODEL), "threads": 1},
    }, REPO)


class Till:
    """A running service plus the manager's feed, both on the test broker."""

    def __init__(self, tmp: Path, broker: Broker, display: bool) -> None:
        from edge_app.till.service import Service

        self.cfg = service_config(tmp, broker.port, display)
        self.db = tmp / "feed.sqlite3"
        self.feed = Feed(self.cfg, self.db, out=io.StringIO()).start()
        assert self.feed.subscribed.wait(10)
        from edge_app.cashier.window import attach

        # The command line hands the window to the service when display.enabled is true.
        self.service = Service(self.cfg, plugins=[attach] if display else []).start()
        # Subscribed, not merely connected: a scan published before the broker has the
        # service's pos/scan subscription would be lost.
        wait_until(self.service.link.subscribed.is_set, what="the service to subscribe to its POS topics")
        self.pub = Publisher(broker.port)

    def scan(self, txn: str) -> dict:
        self.pub.raw(f"{POS}/scan", json.dumps({"sku": "5000112637922", "category": "alcohol",
                                                  "transaction_id": txn}))
        wait_until(lambda: self.stored("alert", txn), timeout=20, what=f"the alert for {txn} in the feed")
        return self.stored("alert", txn)[0]

    def sale(self, txn: str) -> None:
        self.pub.raw(f"{POS}/sale", json.dumps({"transaction_id": txn, "ts": events.now_iso()}))

    def stored(self, kind: str, txn: str) -> list[dict]:
        return [json.loads(r[0]) for r in db_query(
            self.db, "SELECT payload FROM events WHERE kind = ? AND transaction_id = ?", kind, txn)]

    def close(self) -> None:
        self.pub.close()
        self.service.stop()
        self.feed.stop()


def test_integrity_event_from_a_real_pos_sale(tmp_path):
    with Broker() as broker:
        till = Till(tmp_path, broker, display=False)
        try:
            alert = till.scan("T-100")
            assert alert["decision"] == "no_face"
            t_sale = time.time()
            till.sale("T-100")
            wait_until(lambda: till.stored("integrity", "T-100"), timeout=15, what="the integrity event in the feed")
            ev = events.validate(till.stored("integrity", "T-100")[0])
            assert ev["alert_event_id"] == alert["event_id"]
            assert ev["till_id"] == "till-01" and ev["store_id"] == "store-001"
            assert ev["reason"] == "unanswered" and ev["grace_seconds"] == 0.5
            alert_t = events_time(alert["ts"])
            assert 0 < ev["seconds_after_alert"] <= t_sale - alert_t + 1.0
            assert events_time(ev["ts"]) >= t_sale + 0.4  # not before the grace period ran out

            # A sale with no alert, a repeated sale and a malformed one: nothing more, no crash.
            till.sale("T-none")
            till.sale("T-100")
            till.pub.raw(f"{POS}/sale", b'{"transaction_id": ')
            time.sleep(1.5)
            assert db_query(till.db, "SELECT COUNT(*) FROM events WHERE kind='integrity'") == [(1,)]
            assert till.service.counts["pos_rejected"] == 1
            assert till.service.link.connected
        finally:
            till.close()


def events_time(ts: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def test_service_with_cashier_window(xvfb, tmp_path):
    """display.enabled: the window is attached to the service; its answers go through the
    service's outbox and decide whether the sale is an integrity event."""
    with Broker() as broker:
        till = Till(tmp_path, broker, display=True)
        try:
            # "No ID check" pressed, then the sale: an integrity event that says so.
            alert = till.scan("T-201")
            wait_for(lambda: xdotool("search", "--onlyvisible", "--classname", "agecheck"), what="the window")
            time.sleep(0.3)
            xdotool("key", "3")
            wait_until(lambda: till.stored("ack", "T-201"), timeout=10, what="the answer in the feed")
            ack = till.stored("ack", "T-201")[0]
            assert ack["answer"] == "no_id_check" and ack["alert_event_id"] == alert["event_id"]
            till.sale("T-201")
            wait_until(lambda: till.stored("integrity", "T-201"), timeout=10, what="the integrity event")
            assert till.stored("integrity", "T-201")[0]["reason"] == "answered_no_id_check"

            # ID checked, then the sale: no integrity event.
            till.scan("T-202")
            wait_for(lambda: xdotool("search", "--onlyvisible", "--classname", "agecheck"), what="the window")
            time.sleep(0.3)
            xdotool("key", "1")
            wait_until(lambda: till.stored("ack", "T-202"), timeout=10, what="the second answer")
            till.sale("T-202")
            time.sleep(1.5)
            assert till.stored("integrity", "T-202") == []
        finally:
            till.close()
