"""Integrity events from real `pos/sale` messages over a real Mosquitto, produced by the real till
service (its integrity plug-in, outbox and MQTT link) and stored by the real manager feed. The
camera plays a blank video, so every check ends `no_face` and raises an alert without any face
photo being needed. With the cashier window on (under Xvfb), the answers are real clicks, and an
Undo is a real correction that the feed stores and the integrity check honours."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from edge_app.cashier.window_state import WindowSnapshot
from edge_app.config import from_dict
from edge_app.core import events
from edge_app.core.pos import Item, Sale, Scan
from edge_app.core.times import now_iso
from edge_app.core.words import Answer
from edge_app.manager.feed import Feed
from tests.edge_app.broker_util import Broker
from tests.edge_app.feed_util import Publisher, db_query, wait_until
from tests.edge_app.x11_util import click, tap, wait_for, xvfb  # noqa: F401

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
    return from_dict(
        {
            "mqtt": {"host": "127.0.0.1", "port": port, "reconnect_max_seconds": 1},
            "camera": {
                "source": str(blank_video(tmp / "blank.avi")),
                "loop": True,
                "fps": 15,
                "width": 320,
                "height": 240,
            },
            "check": {"time_budget_ms": 400, "extra_frames": 2},
            "outbox": {"path": str(tmp / "outbox.sqlite3")},
            "integrity": {"grace_seconds": 0.5},
            "display": {"enabled": display, "position": "top-left"},
            "model": {"path": str(MODEL), "threads": 1},
        },
        REPO,
    )


class Till:
    """A running service plus the manager's feed, both on the test broker."""

    def __init__(self, tmp: Path, broker: Broker, display: bool) -> None:
        from edge_app.till.service import Service

        self.cfg = service_config(tmp, broker.port, display)
        self.db = tmp / "feed.sqlite3"
        self.feed = Feed(self.cfg, self.db, out=io.StringIO()).start()
        assert self.feed.subscribed.wait(10)
        from edge_app.cashier.isolated import attach

        self.windows: list = []

        def window_plugin(svc):
            self.windows.append(attach(svc))
            return self.windows[-1]

        # The command line hands the window to the service when display.enabled is true.
        self.service = Service(self.cfg, plugins=[window_plugin] if display else []).start()
        # Subscribed, not merely connected: a scan published before the broker has the
        # service's pos/scan subscription would be lost.
        wait_until(self.service.link.subscribed.is_set, what="the service to subscribe to its POS topics")
        self.pub = Publisher(broker.port)

    def scan(self, txn: str) -> dict:
        self.pub.raw(f"{POS}/scan", Scan(Item("5000112637922", "alcohol"), txn).encode())
        wait_until(lambda: self.stored("alert", txn), timeout=20, what=f"the alert for {txn} in the feed")
        return self.stored("alert", txn)[0]

    def on_screen(self, alert: dict, **want) -> WindowSnapshot:
        """The window's state once it shows this alert (or, with kind=..., that view)."""
        w = self.windows[0]

        def ok():
            s = w.snapshot
            if not (s.visible and s.drawn_at):
                return None
            if want.get("kind") is None and s.alert_event_id != alert["event_id"]:
                return None
            return s if all(getattr(s, k) == v for k, v in want.items()) else None

        return wait_for(ok, timeout=10, what=f"the window showing {alert['transaction_id']} {want}")

    def answer(self, alert: dict, answer: str) -> None:
        tap(self.windows[0], self.on_screen(alert, answerable=True).buttons[answer])

    def sale(self, txn: str) -> None:
        self.pub.raw(f"{POS}/sale", Sale(txn, pos_ts=now_iso()).encode())

    def stored(self, kind: str, txn: str) -> list[dict]:
        return [
            json.loads(r[0])
            for r in db_query(self.db, "SELECT payload FROM events WHERE kind = ? AND transaction_id = ?", kind, txn)
        ]

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
            # The malformed sale was sent last, so once it is rejected the other two were handled.
            wait_until(lambda: till.service.counts["pos_rejected"] == 1, timeout=10, what="the malformed sale rejected")
            # Kept: proving that nothing follows means letting the 0.5 s grace period run out (with
            # room for delivery to the feed); there is no event to wait on for an event that must not exist.
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
            till.answer(alert, "no_id_check")
            wait_until(lambda: till.stored("ack", "T-201"), timeout=10, what="the answer in the feed")
            ack = till.stored("ack", "T-201")[0]
            assert ack["answer"] == "no_id_check" and ack["alert_event_id"] == alert["event_id"]
            till.sale("T-201")
            wait_until(lambda: till.stored("integrity", "T-201"), timeout=10, what="the integrity event")
            assert till.stored("integrity", "T-201")[0]["reason"] == "answered_no_id_check"

            # ID checked, then the sale: no integrity event.
            alert = till.scan("T-202")
            till.answer(alert, "id_checked_over_age")
            wait_until(lambda: till.stored("ack", "T-202"), timeout=10, what="the second answer")
            till.sale("T-202")

            # "ID checked" pressed by mistake and taken back with Undo, then the sale: the
            # correction reaches the feed and the sale is an integrity event after all.
            alert = till.scan("T-203")
            till.answer(alert, "id_checked_over_age")
            tap(till.windows[0], till.on_screen(alert, kind="recorded").undo)
            wait_until(lambda: len(till.stored("ack", "T-203")) == 2, timeout=10, what="the correction in the feed")
            first, fix = sorted(till.stored("ack", "T-203"), key=lambda a: a["ts"])
            assert fix["answer"] == Answer.UNDONE and fix["replaces_event_id"] == first["event_id"]
            assert till.feed.store.answer_for(alert["event_id"]) is None  # the feed shows it unanswered
            till.on_screen(alert, answerable=True)  # and the window shows the alert again
            till.sale("T-203")
            wait_until(lambda: till.stored("integrity", "T-203"), timeout=10, what="the integrity event for T-203")
            assert till.stored("integrity", "T-203")[0]["reason"] == "unanswered"
            # T-202's grace period ran out before T-203's and the outbox delivers in order, so an
            # integrity event for T-202 would be in the feed by now.
            assert till.stored("integrity", "T-202") == []
        finally:
            till.close()
