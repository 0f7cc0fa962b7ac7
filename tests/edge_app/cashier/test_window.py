"""The cashier alert window, for real: a Tk window on an Xvfb screen, driven from another thread
the way the service drives it, read back with screenshots and answered with real key presses and
mouse clicks (xdotool)."""

from __future__ import annotations

import queue
import time

import pytest

from edge_app.core import events
from edge_app.config import DisplayConfig
from edge_app.cashier.window import COLOURS, CashierDisplay, banner_for
from tests.edge_app.feed_util import alert_event, check_event
from tests.edge_app.x11_util import dominant, hex_rgb, screenshot, share_of, wait_for, xdotool, xvfb  # noqa: F401


# -- the banner's words (no screen needed) ----------------------------------------------------------
def test_banner_texts():
    c = check_event(decision="check_id", age=21.0)
    b = banner_for(c, alert_event(c))
    assert (b.title, b.kind, b.bg) == ("CHECK ID", "check_id", COLOURS["check_id"][0])
    assert b.age_text == "Estimated age 19–23 – ask for ID"
    assert b.policy_text == "Challenge 25 · legal age 18"
    assert b.item_text == "Lager 4x440ml (alcohol)"
    a = banner_for(check_event(decision="approve", age=40.0))
    assert (a.title, a.needs_answer, a.age_text) == ("APPROVE", False, "Estimated age 38–42")
    n = banner_for(check_event(decision="no_face", age=None))
    assert (n.title, n.fg, n.age_text) == ("NO FACE", "#111111", "No usable face – ask for ID")
    # An alert on its own (its check lost): still a red banner with the band it carries.
    only = banner_for(None, alert_event(c))
    assert only.title == "CHECK ID" and "18-24" in only.age_text
    # An unknown decision errs on the side of asking for ID.
    assert banner_for({"decision": "maybe"}).kind == "check_id"


# -- the window ---------------------------------------------------------------------------------------
@pytest.fixture
def window(xvfb):
    acks: queue.Queue = queue.Queue()
    failures = {"n": 0}

    def on_ack(ev):
        if failures["n"] > 0:
            failures["n"] -= 1
            raise OSError("disk full")
        acks.put(ev)

    cfg = DisplayConfig(enabled=True, width=640, height=300, position="top-left", approve_seconds=1.0)
    d = CashierDisplay(cfg, "store-001", "till-01", on_ack).start_in_thread()
    d.acks = acks
    d.failures = failures
    yield d
    d.close()
    d.join(5)


def laid_out(s: dict) -> bool:
    """The window is placed and its answer buttons (if any) sit inside it, below its top. Tk can
    report a snapshot before it has laid the buttons out; they then read as 1x1 at y 0."""
    x, y, w, h = s.get("geometry", (0, 0, 0, 0))
    return w >= 100 and all(b[3] > 1 and y < b[1] < y + h for b in s.get("buttons", {}).values())


def shown(d: CashierDisplay, answerable: bool | None = None) -> dict:
    def ok():
        s = d.snapshot
        if not s.get("visible") or not laid_out(s):
            return None
        if answerable is not None and s.get("answerable") != answerable:
            return None
        return s
    return wait_for(ok, what="the banner on screen")


def banner_pixels(snap: dict):
    """Screenshot of the banner (the window above the answer buttons)."""
    x, y, w, h = snap["geometry"]
    top_of_buttons = min((b[1] for b in snap["buttons"].values()), default=y + h)
    return screenshot((x, y, w, top_of_buttons - y - 6))


def visible_windows() -> list[str]:
    return xdotool("search", "--onlyvisible", "--classname", "agecheck").split()


def post_alert(d: CashierDisplay, decision="check_id", age=19.0, txn="T-500"):
    c = check_event(decision=decision, age=age, txn=txn)
    a = alert_event(c)
    d.post(c, a)
    return c, a


def test_idle_window_shows_nothing(window):
    time.sleep(0.3)
    assert window.snapshot["visible"] is False
    assert visible_windows() == []


@pytest.mark.parametrize("decision, age", [("check_id", 19.0), ("no_face", None), ("approve", 44.0)])
def test_banner_colour_and_text_on_screen(window, decision, age, tmp_path):
    c = check_event(decision=decision, age=age, txn="T-501")
    window.post(c, None if decision == "approve" else alert_event(c))
    bg, fg = (hex_rgb(x) for x in COLOURS[decision])
    wait_for(lambda: dominant(banner_pixels(shown(window)))[0] == bg, what="the banner painted")
    img = banner_pixels(shown(window))
    img.save(tmp_path / f"banner-{decision}.png")  # kept with the test's temp files for a look
    colour, share = dominant(img)
    assert colour == bg and share > 0.6, (colour, share)
    # The title is really drawn: its box holds a good amount of text-coloured pixels.
    wait_for(lambda: 0.04 < share_of(screenshot(window.snapshot["title_box"]), fg) < 0.6,
             timeout=5, what=f"the title text in {fg} inside {window.snapshot.get('title_box')}")
    snap = window.snapshot
    assert snap["title"] == {"check_id": "CHECK ID", "no_face": "NO FACE", "approve": "APPROVE"}[decision]
    assert "Challenge 25" in snap["info"] and "Lager" in snap["info"]
    if decision == "approve":
        assert snap["buttons"] == {}
        wait_for(lambda: not window.snapshot["visible"], timeout=5, what="the approve banner to go away")
        assert visible_windows() == []
    else:
        assert set(snap["buttons"]) == set(events.ACK_ANSWERS)


@pytest.mark.parametrize("key, answer", [("1", "id_checked_over_age"), ("2", "id_checked_under_age_refused"),
                                         ("3", "no_id_check")])
def test_key_answers_the_alert(window, key, answer):
    c, a = post_alert(window, txn=f"T-6{key}")
    shown(window, answerable=True)
    time.sleep(0.2)  # the cashier takes a moment
    xdotool("key", key)  # a real key press (XTEST) into the focused window
    ack = window.acks.get(timeout=5)
    events.validate(ack)
    assert ack["kind"] == "ack" and ack["answer"] == answer and ack["via"] == "key"
    assert ack["alert_event_id"] == a["event_id"] and ack["check_event_id"] == c["event_id"]
    assert ack["transaction_id"] == f"T-6{key}" and ack["till_id"] == "till-01"
    assert 0.15 < ack["decision_time_s"] < 5
    wait_for(lambda: not window.snapshot["visible"], what="the window to hide after the answer")
    assert window.acks.empty()


def test_click_answers_the_alert(window):
    _, a = post_alert(window, decision="no_face", age=None)
    snap = shown(window, answerable=True)
    x, y, w, h = snap["buttons"]["id_checked_under_age_refused"]
    xdotool("mousemove", "--sync", str(x + w // 2), str(y + h // 2))
    xdotool("click", "1")
    ack = window.acks.get(timeout=5)
    assert ack["answer"] == "id_checked_under_age_refused" and ack["via"] == "click"
    assert ack["alert_event_id"] == a["event_id"]


def test_answer_waits_for_the_alert_event(window):
    c = check_event(decision="check_id", age=17.0, txn="T-700")
    window.on_event(c)  # the check first; its alert comes a moment later
    shown(window, answerable=False)
    xdotool("key", "1")
    wait_for(lambda: "not registered" in (window.snapshot.get("status") or ""), what="the 'press again' note")
    assert window.acks.empty()
    a = alert_event(c)
    window.on_event(a)
    shown(window, answerable=True)
    xdotool("key", "1")
    assert window.acks.get(timeout=5)["alert_event_id"] == a["event_id"]


def test_a_failed_save_keeps_the_alert(window):
    window.failures["n"] = 1
    _, a = post_alert(window, txn="T-800")
    shown(window, answerable=True)
    xdotool("key", "2")
    wait_for(lambda: "NOT saved" in (window.snapshot.get("status") or ""), what="the error on screen")
    assert window.snapshot["visible"] and window.acks.empty()
    xdotool("key", "2")
    assert window.acks.get(timeout=5)["alert_event_id"] == a["event_id"]


def test_approve_does_not_hide_an_unanswered_alert(window):
    _, a = post_alert(window, txn="T-900")
    shown(window, answerable=True)
    window.post(check_event(decision="approve", age=50.0, txn="T-901"))
    time.sleep(0.4)
    assert window.snapshot["title"] == "CHECK ID" and window.snapshot["alert_event_id"] == a["event_id"]
    xdotool("key", "1")
    assert window.acks.get(timeout=5)["transaction_id"] == "T-900"


def test_other_tills_and_stale_events_are_ignored(window):
    window.post(check_event(till="till-02", decision="check_id", age=18.0))
    old = check_event(decision="check_id", age=18.0, ts="2020-01-01T10:00:00.000Z")
    window.post(old, alert_event(old))
    time.sleep(0.4)
    assert window.snapshot["visible"] is False
