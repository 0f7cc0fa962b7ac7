"""A POS clock that is off, with real parts: `agecheck run` as a process, a real Mosquitto, a POS
publishing `pos/scan` with its own (wrong) `ts`. Before, a POS clock ahead switched the stale rule
off (a scan the broker held back was checked on the next shopper) and one more than
max_scan_age_seconds behind made every scan `missed: stale`. Now the skew is named once in the
retained `state` and the log, scans are aged on the till's clock, and both times are recorded."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import yaml

from edge_app.core.pos import Item, Scan
from edge_app.core.times import parse_ts
from tests.edge_app.feed_util import Publisher
from tests.edge_app.service_util import REPO, Recorder, astronaut_video, wait_until

ROOT = "agecheck/v1/store-001/till-01"
LAGER = Item("5010677850100", "alcohol", name="Lager 4x440ml")
BREAD = Item("5000000000009", "bakery")  # not restricted: still tells the till about the POS clock


def _records(rec: Recorder) -> dict[str, dict]:
    return {ev["transaction_id"]: ev for ev in rec.events() if ev.get("kind") in ("check", "missed")}


def test_a_skewed_pos_clock_is_named_and_scans_are_checked_on_the_tills_clock(tmp_path, mqtt_broker):
    rec = Recorder(mqtt_broker.host, mqtt_broker.port)
    cfg = {
        "camera": {"source": str(astronaut_video(tmp_path / "cam.avi")), "loop": True, "reconnect_max_seconds": 0.5},
        "mqtt": {"port": mqtt_broker.port, "keepalive": 5, "reconnect_max_seconds": 1},
        "model": {"path": str(REPO / "models" / "age_resnet10_int8.tflite")},
        "outbox": {"path": str(tmp_path / "outbox.sqlite3")},
        "triggers": {"max_scan_age_seconds": 20, "pos_clock_max_skew_seconds": 5, "pos_clock_confirm_scans": 3},
    }
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    log = tmp_path / "service.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge_app.cli", "run", "--config", str(cfg_path)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )
    pos = Publisher(mqtt_broker.port)

    def state() -> dict:
        return json.loads(rec.last("state") or b"{}")

    def scan(txn: str, item: Item, pos_clock: float, late: float = 0.0) -> None:
        """A scan made `late` s ago, stamped by a POS clock `pos_clock` s ahead of the till's."""
        pos.raw(f"{ROOT}/pos/scan", Scan(item, txn, "C-7", time.time() + pos_clock - late).encode())

    def record(txn: str) -> dict:
        wait_until(lambda: txn in _records(rec), 60, f"a record of {txn}")
        return _records(rec)[txn]

    try:
        rec.wait_last("state", lambda p: json.loads(p).get("mqtt_subscribed") is True, 120, "the service subscribed")

        # -- a POS clock 60 s behind -----------------------------------------------------------------
        # The first late scan cannot be told from one the broker held back: stale, saying how a
        # clock behind would be established.
        scan("B-first", LAGER, -60)
        first = record("B-first")
        assert (first["kind"], first["reason"]) == ("missed", "stale"), first
        assert "pos_clock_confirm_scans" in first["detail"]
        # Scans in a row (any item) late by the same 60 s, over more than 5 s: the clock is behind.
        for i in range(3):
            time.sleep(2.6)
            scan(f"B-bread-{i}", BREAD, -60)
        st = json.loads(
            rec.wait_last(
                "state",
                lambda p: (json.loads(p).get("pos_clock_skew") or "").find("behind") > 0,
                30,
                "state naming the POS clock behind",
            )
        )
        assert -61 <= st["pos_clock_ahead_s"] <= -59 and "60 s behind the till's" in st["pos_clock_skew"], st
        # Now a scan from that POS is checked, with both times recorded.
        scan("B-checked", LAGER, -60)
        checked = record("B-checked")
        assert checked["kind"] == "check", checked
        trig = checked["trigger"]
        lag = (parse_ts(trig["received_ts"]) - parse_ts(trig["sent_ts"])).total_seconds()
        assert 59 <= lag <= 62, trig
        # One the broker held back 40 s on that clock is still stale.
        scan("B-held", LAGER, -60, late=40)
        held = record("B-held")
        assert (held["kind"], held["reason"]) == ("missed", "stale") and "skewed" in held["detail"], held

        # -- the same POS clock set 120 s ahead ------------------------------------------------------
        # Plainly skew (a scan cannot arrive before it was sent): named at once, the scan checked.
        scan("A-checked", LAGER, 120)
        assert record("A-checked")["kind"] == "check"
        st = json.loads(
            rec.wait_last(
                "state",
                lambda p: (json.loads(p).get("pos_clock_skew") or "").find("ahead") > 0,
                30,
                "state naming the POS clock ahead",
            )
        )
        assert 119 <= st["pos_clock_ahead_s"] <= 121, st
        # Before, a clock ahead hid this one's 30 s at the broker (its age read -90 s): checked on
        # whoever stood at the till by then.
        scan("A-held", LAGER, 120, late=30)
        held = record("A-held")
        assert (held["kind"], held["reason"]) == ("missed", "stale"), held
        for i in range(3):
            scan(f"A-more-{i}", LAGER, 120)
            assert record(f"A-more-{i}")["kind"] == "check"
    finally:
        pos.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        rec.close()
    text = log.read_text()
    # Named once each in the log, not per scan.
    assert text.count("s behind the till's") == 1 and text.count("s ahead of the till's") == 1, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
