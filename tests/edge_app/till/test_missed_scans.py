"""Every scan leaves a record: `agecheck run` as a real process, restarted again and again (SIGTERM)
against a real Mosquitto while a POS publishes scans without pause. The service keeps a
persistent MQTT session, so scans published while it is down arrive when it is back; each scan
ends up as a check event or as a `missed` event saying why (stale, queue full, shutdown)."""

from __future__ import annotations

import json
import signal
import threading
from datetime import UTC, datetime, timedelta

import yaml

from edge_app.core.pos import Item, Scan
from tests.edge_app.feed_util import Publisher
from tests.edge_app.service_util import REPO, Recorder, astronaut_video, start_service, wait_until

ROOT = "agecheck/v1/store-001/till-01"
RESTARTS = 10


def _records(rec: Recorder) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for ev in rec.events():
        if ev.get("kind") in ("check", "missed"):
            out.setdefault(ev["transaction_id"], []).append(ev)
    return out


def test_every_scan_has_a_record_across_restarts(tmp_path, mqtt_broker):
    rec = Recorder(mqtt_broker.host, mqtt_broker.port)  # persistent session: misses nothing
    cfg = {
        "camera": {"source": str(astronaut_video(tmp_path / "cam.avi")), "loop": True, "reconnect_max_seconds": 0.5},
        "mqtt": {"port": mqtt_broker.port, "keepalive": 5, "reconnect_max_seconds": 1},
        "model": {"path": str(REPO / "models" / "age_resnet10_int8.tflite")},
        "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
        # Long enough for a restart on a busy test machine; the stale case below is older still.
        "triggers": {"max_scan_age_seconds": 120},
    }
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log = tmp_path / "service.log"

    def subscribed(p: bytes) -> bool:
        return json.loads(p).get("mqtt_subscribed") is True

    proc = start_service(cfg_path, log)
    rec.wait_last("state", subscribed, 120, "the service subscribed")

    sent: list[str] = []
    while_down: list[str] = []  # published while no service process was subscribed
    stop = threading.Event()
    pos = Publisher(mqtt_broker.port)

    def scan(txn: str, ts: datetime | None = None, name: str | None = None, operator_id: str | None = None) -> None:
        sent_at = (ts or datetime.now(UTC)).timestamp()
        pos.raw(
            f"{ROOT}/pos/scan", Scan(Item("5010677850100", "alcohol", name=name), txn, operator_id, sent_at).encode()
        )
        sent.append(txn)

    def pos_loop() -> None:
        i = 0
        while not stop.wait(0.4):
            scan(f"R-{i}")
            i += 1

    pos_thread = threading.Thread(target=pos_loop, daemon=True)
    pos_thread.start()
    try:
        for n in range(RESTARTS):
            stop.wait(1.0)  # a few scans while it runs
            mark = len(rec.messages)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(60) == 0, log.read_text()[-3000:]
            # Down: the POS goes on scanning; the broker keeps them in the service's session.
            rec.wait_for(
                lambda m: any(t.endswith("/availability") and p == b"offline" for t, p, _ in m[mark:]), 30, "offline"
            )
            down_from = len(sent)
            stop.wait(1.0)
            mark = len(rec.messages)  # the old process says nothing after `offline`
            proc = start_service(cfg_path, log)
            rec.wait_for(
                lambda m: any(t.endswith("/state") and subscribed(p) for t, p, _ in m[mark:]),
                120,
                f"the service back after restart {n + 1}",
            )
            while_down.extend(sent[down_from:])
        stop.set()
        pos_thread.join(10)

        # A scan that waited at the broker far longer than the shopper stays at the till.
        mark = len(rec.messages)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        scan("R-stale", datetime.now(UTC) - timedelta(seconds=600), name="Lager 4x440ml", operator_id="C-7")
        proc = start_service(cfg_path, log)
        wait_until(lambda: set(sent) <= set(_records(rec)), 180, "a record for every scan")
    finally:
        stop.set()
        pos.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    records = _records(rec)
    assert len(sent) > 3 * RESTARTS
    missing = [t for t in sent if t not in records]
    assert not missing, f"{len(missing)} of {len(sent)} scans left no record: {missing}"
    stale = records["R-stale"]
    assert [e["kind"] for e in stale] == ["missed"] and stale[0]["reason"] == "stale"
    assert "max_scan_age_seconds" in stale[0]["detail"] and stale[0]["trigger"]["sent_ts"]
    # What the cashier and the manager know the scan by travels with the record of it, too.
    assert (stale[0]["trigger"]["name"], stale[0]["operator_id"]) == ("Lager 4x440ml", "C-7")
    # Scans published while the service was down arrived when it was back: checked, or (when it
    # was stopped again before their turn) recorded as missed at shutdown.
    assert len(while_down) >= RESTARTS
    checked_after_downtime = [t for t in while_down if any(e["kind"] == "check" for e in records[t])]
    assert len(checked_after_downtime) >= len(while_down) // 2, (len(checked_after_downtime), len(while_down))
    reasons = {e["reason"] for t, evs in records.items() if t != "R-stale" for e in evs if e["kind"] == "missed"}
    assert reasons <= {"shutdown"}, reasons
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]
    rec.close()
