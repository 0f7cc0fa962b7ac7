"""The till service with its outbox on a real small tmpfs that fills up, the real model, a face
video as camera and a real Mosquitto: checks go on being answered (the listeners, i.e. the
cashier's screen, hear every event), the retained `state` says the till is not recording
(`degraded`, `outbox_write_errors`, `outbox_held`), the log has one line about it and no
traceback, the service's cashier window (real, on Xvfb) carries its NOT RECORDING mark, and when
the space comes back every event answered meanwhile reaches the broker and the mark goes."""

from __future__ import annotations

import logging

import pytest

from edge_app.config.files import load
from edge_app.core import events
from edge_app.core.pos import Item, Scan
from edge_app.core.state import TillState
from edge_app.till.service import Service
from edge_app.vision.faces import FacePipeline
from edge_app.vision.model import AgeModel
from tests.edge_app.disk_util import Filler, small_tmpfs
from tests.edge_app.service_util import Recorder, astronaut_video, service_config, wait_until
from tests.edge_app.x11_util import dominant, hex_rgb, screenshot, xvfb  # noqa: F401  (xvfb: fixture)
from tests.helpers import Calls


@pytest.fixture(scope="module")
def parts():
    cfg = load(None)
    with FacePipeline(cfg.faces) as pipe:
        yield pipe, AgeModel(cfg.model.path, cfg.model.threads)


def _state(rec: Recorder, pred, what: str) -> TillState:
    return TillState.decode(rec.wait_last("state", lambda p: pred(TillState.decode(p)), timeout=30, what=what))


def test_full_disk_loses_nothing_answered_and_says_so(tmp_path, mqtt_broker, parts, caplog, xvfb):
    from edge_app.cashier.drawing import NOT_RECORDING_BG
    from edge_app.cashier.isolated import attach as window_attach

    caplog.set_level(logging.INFO)
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        # The approval banner stays up long enough to be read back with its mark. Every check must
        # be an approval, or an unanswered alert would hold the screen: the astronaut sits near
        # the Challenge 25 threshold (either decision), so the challenge is the legal age itself,
        # where no calibrated gate is fitted and the age rule approves her whatever the frame.
        cfg = service_config(
            tmp_path,
            astronaut_video(tmp_path / "cam.avi"),
            mqtt_broker,
            outbox={"path": str(disk / "outbox.sqlite3")},
            policy={"legal_age": 18, "challenge_age": 18},
            display={"enabled": True, "position": "top-left", "approve_seconds": 60},
        )
        rec = Recorder(mqtt_broker.host, mqtt_broker.port)
        windows = []
        svc = Service(
            cfg, pipeline=parts[0], model=parts[1], plugins=(lambda s: windows.append(window_attach(s)) or windows[-1],)
        ).start()
        window = windows[0]
        filler = Filler(disk)
        try:
            shown: list = []  # what the cashier's window would have been told
            svc.listen(
                Calls(
                    on_event=lambda ev: (
                        shown.append(ev) if isinstance(ev, (events.CheckEvent, events.AlertEvent)) else None
                    )
                )
            )
            wait_until(lambda: svc.link.subscribed.is_set() and len(svc.capture.buffer) >= 10, 20, "subscribed, video")
            assert svc.submit(Scan(Item("5010677850100", "alcohol"), "T-before"), "pos").result.result(30)
            rec.wait_events("check", 1)
            _state(rec, lambda s: s.degraded is False and s.outbox_write_errors == 0, "recording")
            wait_until(lambda: window.snapshot.transaction_id == "T-before", 10, "the check on screen")
            assert window.snapshot.not_recording is None and window.snapshot.recording_box is None

            filler.fill()
            txns = [f"T-full-{i}" for i in range(4)]
            for txn in txns:
                outcome = svc.submit(Scan(Item("5010677850100", "alcohol"), txn), "pos").result.result(30)
                assert outcome.check.transaction_id == txn
            st = _state(rec, lambda s: s.degraded and s.outbox_held >= 1, "degraded in state")
            assert st.outbox_write_errors >= 1 and "full" in st.outbox_error, st
            assert st.outbox_held_dropped == 0
            wait_until(
                lambda: (
                    window.snapshot.transaction_id == txns[-1] and (window.snapshot.recording_box or (0, 0, 0))[2] > 1
                ),
                10,
                "the last check on screen with the NOT RECORDING mark",
            )
            assert "full" in window.snapshot.not_recording
            wait_until(
                lambda: dominant(screenshot(window.snapshot.recording_box))[0] == hex_rgb(NOT_RECORDING_BG),
                10,
                "the mark painted",
            )
            held = svc.writer.status().held
            answered = {e.event_id for e in shown if e.transaction_id in txns}
            assert held >= 1 and len(answered) >= len(txns)
            # While full: answered on screen, not at the broker.
            at_broker = {e["event_id"] for e in rec.events()}
            assert answered - at_broker, "nothing was held back by the full disk?"
        finally:
            filler.release()
        try:
            rec.wait_for(
                lambda m: answered <= {e["event_id"] for e in rec.events()}, 30, "every answered event at the broker"
            )
            st = _state(rec, lambda s: s.degraded is False and s.outbox_held == 0, "recording again")
            wait_until(
                lambda: window.snapshot.not_recording is None and window.snapshot.recording_box is None,
                10,
                "the mark gone",
            )
            assert st.outbox_held_dropped == 0 and st.outbox_error is None
            assert st.outbox_write_errors >= 1  # the count stays: something happened today
            # Numbered in order with no hole: the feed sees no gap.
            seqs = sorted(e["seq"] for e in rec.events() if e.get("publisher") == "till-01")
            assert seqs == list(range(1, len(seqs) + 1))
        finally:
            svc.stop()
            rec.close()
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    full = [r for r in caplog.records if r.levelno >= logging.ERROR and "held in memory" in r.getMessage()]
    assert len(full) == 1, [r.getMessage() for r in full]
    assert any("stores events again" in r.getMessage() for r in caplog.records)
