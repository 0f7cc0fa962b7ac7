"""The simulation kit: its X server (a real Xvfb that a real X client reads the screen from, of
the size asked for, gone after stop(); a clear error where Xvfb is not installed) and its POS
(scans of the demo item and their sales, on a real broker, as the till's POS sends them)."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import ImageGrab

from edge_app.devtools.sim import DEMO_ITEM, SimulatedPos, Xvfb
from edge_app.till.triggers import parse_scan
from tests.edge_app.service_util import Recorder


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (apt-get install xvfb)")
def test_xvfb_serves_a_screen_of_the_size_asked_until_stopped():
    # PIL's grab is a short-lived X client of its own (Tk would keep its connection for the
    # life of the process and abort it once the server is gone).
    with Xvfb(800, 600) as x:
        assert x.display and x.display.startswith(":")
        proc = x.proc
        assert ImageGrab.grab(xdisplay=x.display).size == (800, 600)
    assert x.proc is None and proc.poll() is not None
    with pytest.raises(OSError):
        ImageGrab.grab(xdisplay=x.display)


def test_a_missing_xvfb_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no Xvfb on this PATH
    with pytest.raises(FileNotFoundError, match="apt-get install xvfb"):
        Xvfb().start()


def test_simulated_pos_scans_then_sells_each_transaction(mqtt_broker):
    rec = Recorder(mqtt_broker.host, mqtt_broker.port)
    pos = SimulatedPos(
        mqtt_broker.host, mqtt_broker.port, "store-9", "till-3", every_s=0.4, sale_after_s=0.1, first_after_s=0.0
    ).start()
    try:
        msgs = rec.wait_for(lambda m: sum(t.endswith("/pos/sale") for t, _, _ in m) >= 2, 10, "two sales")
    finally:
        pos.stop()
        rec.close()
    root = "agecheck/v1/store-9/till-3/"
    seq = [(t[len(root) :], json.loads(p)["transaction_id"]) for t, p, _ in msgs]
    assert seq[:4] == [
        ("pos/scan", "demo-0001"),
        ("pos/sale", "demo-0001"),
        ("pos/scan", "demo-0002"),
        ("pos/sale", "demo-0002"),
    ]
    # The till's own parser takes the scans: the demo item, restricted, in its transaction.
    scan = parse_scan(msgs[0][1], 4096)
    assert scan.item == DEMO_ITEM and scan.transaction_id == "demo-0001" and pos.scans >= 2
