"""The cashier alert window, for real: a Tk window on an Xvfb screen, driven from another thread
the way the service drives it, read back with screenshots and answered with real key presses and
mouse clicks (xdotool), next to a second real window (a POS stand-in) that holds the focus."""

from __future__ import annotations

import dataclasses
import queue
import time

import numpy as np
import pytest

from edge_app.cashier.banner import STYLES
from edge_app.cashier.window import CashierDisplay
from edge_app.cashier.window_state import WindowSnapshot
from edge_app.config import DisplayConfig
from edge_app.core import events
from edge_app.core.state import Recording
from edge_app.core.words import ACK_ANSWERS, Answer
from tests.edge_app.feed_util import typed_alert as alert_event
from tests.edge_app.feed_util import typed_check as check_event
from tests.edge_app.x11_util import (  # noqa: F401
    PosWindow,
    click,
    dominant,
    hex_rgb,
    screenshot,
    share_of,
    tap,
    wait_for,
    xdotool,
    xvfb,
)


# -- the window ---------------------------------------------------------------------------------------
def make_window(**cfg) -> CashierDisplay:
    acks: queue.Queue = queue.Queue()
    failures = {"n": 0}

    def on_ack(ev):
        if failures["n"] > 0:
            failures["n"] -= 1
            raise OSError("disk full")
        acks.put(ev)

    conf = DisplayConfig(enabled=True, width=640, height=300, position="top-left", approve_seconds=1.0, **cfg)
    d = CashierDisplay(conf, "store-001", "till-01", on_ack).start_in_thread()
    d.acks = acks
    d.failures = failures
    return d


@pytest.fixture
def window(xvfb):
    d = make_window()
    yield d
    d.close()
    d.join(5)


def laid_out(s: WindowSnapshot) -> bool:
    """The window is placed and its answer buttons (if any) sit inside it, below its top. Tk can
    report a snapshot before it has laid the buttons out; they then read as 1x1 at y 0."""
    x, y, w, h = s.geometry or (0, 0, 0, 0)
    return w >= 100 and all(b[3] > 1 and y < b[1] < y + h for b in s.buttons.values())


def shown(
    d: CashierDisplay, answerable: bool | None = None, alert: events.AlertEvent | None = None, **want
) -> WindowSnapshot:
    def ok():
        s = d.snapshot
        if not s.visible or not laid_out(s) or s.drawn_at is None:
            return None
        if answerable is not None and s.answerable != answerable:
            return None
        if alert is not None and s.alert_event_id != alert.event_id:
            return None
        if any(getattr(s, k) != v for k, v in want.items()):
            return None
        return s

    return wait_for(ok, what=f"the banner on screen ({answerable=}, {want})")


def press(d: CashierDisplay, answer: str) -> None:
    tap(d, shown(d).buttons[answer])


def banner_pixels(snap: WindowSnapshot):
    return screenshot(snap.banner_box)


def visible_windows() -> list[str]:
    return xdotool("search", "--onlyvisible", "--classname", "agecheck").split()


def post_alert(d: CashierDisplay, decision="check_id", age=19.0, txn="T-500", **extra):
    c = check_event(decision=decision, age=age, txn=txn, **extra)
    a = alert_event(c)
    d.post(c, a)
    return c, a


def no_ack(d: CashierDisplay, wait: float = 0.5) -> None:
    with pytest.raises(queue.Empty):
        d.acks.get(timeout=wait)


def test_idle_window_shows_nothing(window):
    # Kept: nothing must change, and a change that does not come sends no event to wait on;
    # this is a few of the window's polls.
    time.sleep(0.3)
    assert window.snapshot.visible is False
    assert visible_windows() == []


STATES = [  # decision, camera, style, title, symbol
    ("check_id", "up", "ask_id", "ASK FOR ID", "✗"),
    ("no_face", "up", "no_face", "NO FACE SEEN — ASK FOR ID", "?"),
    ("no_face", "down", "camera_down", "CAMERA DOWN — ASK FOR ID — tell a supervisor", "!"),
    ("approve", "up", "ok", "OK — no ID needed", "✓"),
]


def test_each_banner_state_on_screen(window, tmp_path):
    """Colour, symbol and words of every state, read back from the X server."""
    symbols = {}
    for decision, camera, style, title, symbol in STATES:
        c = check_event(
            decision=decision,
            age=None if decision == "no_face" else (19.0 if decision == "check_id" else 44.0),
            txn=f"T-{style}",
            camera=camera,
        )
        window.post(c, None if decision == "approve" else alert_event(c))
        bg, fg = hex_rgb(STYLES[style].bg), hex_rgb(STYLES[style].fg)
        snap = shown(window, kind=style)
        wait_for(lambda: dominant(banner_pixels(window.snapshot))[0] == bg, what=f"the {style} banner painted")
        img = banner_pixels(window.snapshot)
        img.save(tmp_path / f"banner-{style}.png")  # kept with the test's temp files for a look
        colour, share = dominant(img)
        assert colour == bg and share > 0.5, (style, colour, share)
        # The words and the symbol are really drawn in the text colour.
        wait_for(
            lambda: 0.04 < share_of(screenshot(window.snapshot.title_box), fg) < 0.7,
            timeout=5,
            what=f"the {style} title in {fg}",
        )
        sym = screenshot(window.snapshot.symbol_box)
        assert 0.02 < share_of(sym, fg) < 0.7, style
        symbols[style] = np.all(np.asarray(sym) == fg, axis=2)
        assert (snap.title, snap.symbol, snap.transaction_id) == (title, symbol, f"T-{style}")
        assert "Lager 4x440ml" in snap.item
        if decision == "approve":
            assert snap.buttons == {} and "Challenge 25" in snap.detail
            wait_for(lambda: not window.snapshot.visible, timeout=5, what="the approve banner to go away")
            assert visible_windows() == []
        else:
            assert set(snap.buttons) == set(ACK_ANSWERS)
            press(window, "no_id_check")
            assert window.acks.get(timeout=5).transaction_id == f"T-{style}"
            shown(window, kind="recorded")
    # Four different shapes: the symbol alone tells the states apart.
    masks = list(symbols.values())
    assert all(a.shape != b.shape or (a != b).mean() > 0.02 for i, a in enumerate(masks) for b in masks[i + 1 :])


def test_typing_into_the_pos_never_answers(xvfb):
    """The POS has the focus; an alert appears while the cashier types digits into it."""
    d = make_window()
    pos = PosWindow()
    try:
        pos.focus()
        xdotool("type", "--delay", "40", "12")
        wait_for(lambda: pos.text == "12", what="the POS to get the first digits")
        c, a = post_alert(d, txn="T-4001")
        # The pointer rests on the alert, as a hand near the screen might leave it.
        x, y, w, h = shown(d, answerable=True).title_box
        xdotool("mousemove", str(x + 5), str(y + 5))
        for _ in range(3):
            xdotool("type", "--delay", "120", "1231")
        wait_for(lambda: pos.text == "12" + "1231" * 3, what="every digit in the POS")
        no_ack(d, wait=1.0)
        assert d.snapshot.visible and d.snapshot.alert_event_id == a.event_id
        # A click still answers at once.
        press(d, "id_checked_under_age_refused")
        ack = d.acks.get(timeout=5)
        assert ack.answer == "id_checked_under_age_refused" and ack.via == "click"
        assert pos.text == "12" + "1231" * 3
    finally:
        pos.close()
        d.close()
        d.join(5)


def test_keys_never_answer_even_after_a_tap_on_the_banner(xvfb):
    """Tapping the banner gives the window no keyboard: keys 1/2/3 typed afterwards go to the POS,
    never into an answer (answers are by touch or click only)."""
    d = make_window()
    pos = PosWindow()
    try:
        pos.focus()
        _, a = post_alert(d, txn="T-61")
        snap = shown(d, answerable=True)
        click(snap.title_box)
        click(snap.symbol_box)
        xdotool("type", "--delay", "80", "123")
        wait_for(lambda: pos.text == "123", what="the keys in the POS")
        no_ack(d, wait=1.0)
        assert d.snapshot.alert_event_id == a.event_id
    finally:
        pos.close()
        d.close()
        d.join(5)


def test_the_keyboard_settings_are_gone():
    assert not hasattr(DisplayConfig(), "take_focus") and not hasattr(DisplayConfig(), "key_delay_seconds")


@pytest.mark.parametrize("answer", list(ACK_ANSWERS))
def test_click_answers_at_once(window, answer):
    c, a = post_alert(window, decision="no_face", age=None, txn="T-7")
    snap = shown(window, answerable=True)
    tap(window, snap.buttons[answer])
    ack = window.acks.get(timeout=5)
    assert isinstance(ack, events.AckEvent)
    wire = events.validate(ack.to_dict())
    assert ack.answer == answer and ack.via == "click" and "replaces_event_id" not in wire
    assert ack.alert_event_id == a.event_id and ack.check_event_id == c.event_id
    assert ack.till_id == "till-01" and 0 < ack.decision_time_s < 5


def test_undo_corrects_the_answer(window):
    _, a = post_alert(window, txn="T-800")
    press(window, "id_checked_over_age")
    first = window.acks.get(timeout=5)
    # What was recorded, with Undo, for a few seconds.
    snap = shown(window, kind="recorded")
    assert snap.detail == "ID checked – over age" and "T-800" in snap.undo_text
    tap(window, snap.undo)
    fix = window.acks.get(timeout=5)
    events.validate(fix.to_dict())
    assert fix.answer == Answer.UNDONE and fix.replaces_event_id == first.event_id
    assert fix.alert_event_id == a.event_id and fix.transaction_id == "T-800"
    # The alert is back, answerable again.
    shown(window, answerable=True, alert=a, kind="ask_id")
    assert window.snapshot.undo is None
    press(window, "id_checked_under_age_refused")
    again = window.acks.get(timeout=5)
    assert again.answer == "id_checked_under_age_refused" and again.alert_event_id == a.event_id


def test_undo_is_offered_for_a_few_seconds(xvfb):
    d = make_window(undo_seconds=1.0)
    try:
        post_alert(d, txn="T-801")
        press(d, "no_id_check")
        d.acks.get(timeout=5)
        shown(d, kind="recorded")
        wait_for(lambda: not d.snapshot.visible, timeout=5, what="the confirmation to go")
        assert visible_windows() == []
    finally:
        d.close()
        d.join(5)


def test_two_alerts_in_a_row_are_both_answerable(window):
    _, a1 = post_alert(window, txn="T-3001")
    shown(window, alert=a1)
    _, a2 = post_alert(window, decision="no_face", age=None, txn="T-3002")
    snap = shown(window, answerable=True, alert=a2, waiting="+1 more alert waiting")
    assert wait_for(lambda: window.snapshot.waiting_box, what="the count on screen")
    # The count is drawn: dark text on its white patch.
    assert share_of(screenshot(window.snapshot.waiting_box), (0, 0, 0)) > 0.03
    tap(window, snap.buttons["id_checked_over_age"])
    assert window.acks.get(timeout=5).alert_event_id == a2.event_id
    # The first one comes back on top, with the Undo for the second below it.
    snap = shown(window, answerable=True, alert=a1, waiting="")
    assert "T-3002" in snap.undo_text
    tap(window, snap.buttons["no_id_check"])
    assert window.acks.get(timeout=5).alert_event_id == a1.event_id


def test_answer_waits_for_the_alert_event(window):
    c = check_event(decision="check_id", age=17.0, txn="T-700")
    window.on_event(c)  # the check first; its alert comes a moment later
    snap = shown(window, answerable=False)
    tap(window, snap.buttons["id_checked_over_age"])  # disabled: nothing happens
    no_ack(window, wait=0.3)
    a = alert_event(c)
    window.on_event(a)
    press(window, "id_checked_over_age")
    assert window.acks.get(timeout=5).alert_event_id == a.event_id


def test_a_failed_save_keeps_the_alert(window):
    window.failures["n"] = 1
    _, a = post_alert(window, txn="T-801")
    press(window, "id_checked_under_age_refused")
    wait_for(lambda: "NOT saved" in (window.snapshot.status or ""), what="the error on screen")
    assert window.snapshot.visible and window.acks.empty()
    press(window, "id_checked_under_age_refused")
    assert window.acks.get(timeout=5).alert_event_id == a.event_id


def test_an_approval_of_the_same_sale_does_not_hide_its_alert(window):
    _, a = post_alert(window, txn="T-900")
    shown(window, answerable=True)
    window.post(check_event(decision="approve", age=50.0, txn="T-900"))  # a second item, same shopper
    # Kept: nothing must change, and a change that does not come sends no event to wait on;
    # this is a few of the window's polls.
    time.sleep(0.4)
    assert window.snapshot.title == "ASK FOR ID" and window.snapshot.alert_event_id == a.event_id
    press(window, "id_checked_over_age")
    assert window.acks.get(timeout=5).transaction_id == "T-900"


def test_an_alert_answered_elsewhere_leaves_the_list(window):
    _, a1 = post_alert(window, txn="T-910")
    _, a2 = post_alert(window, txn="T-911")
    shown(window, alert=a2, waiting="+1 more alert waiting")
    other = events.AckEvent(
        store_id="store-001",
        till_id="till-01",
        transaction_id="T-911",
        alert_event_id=a2.event_id,
        answer="id_checked_over_age",
        decision_time_s=2.0,
    )
    window.on_event(other)
    shown(window, alert=a1, waiting="")
    window.on_event(
        dataclasses.replace(alert_event(check_event(txn="T-911")), event_id=a2.event_id)
    )  # redelivered: not back
    # Kept: nothing must change, and a change that does not come sends no event to wait on;
    # this is a few of the window's polls.
    time.sleep(0.3)
    assert window.snapshot.alert_event_id == a1.event_id and window.snapshot.waiting == ""


def test_an_unanswered_alert_expires(xvfb):
    d = make_window(alert_expire_seconds=1.0)  # (config.yaml allows 60 s at least)
    try:
        post_alert(d, txn="T-920")
        shown(d, answerable=True)
        wait_for(lambda: not d.snapshot.visible, timeout=5, what="the alert to expire")
        assert d.snapshot.expired == 1 and d.snapshot.queued == 0
    finally:
        d.close()
        d.join(5)


def test_other_tills_and_stale_events_are_ignored(window):
    window.post(check_event(till="till-02", decision="check_id", age=18.0))
    old = check_event(decision="check_id", age=18.0, ts="2020-01-01T10:00:00.000Z")
    window.post(old, alert_event(old))
    # Kept: nothing must change, and a change that does not come sends no event to wait on;
    # this is a few of the window's polls.
    time.sleep(0.4)
    assert window.snapshot.visible is False


def test_not_recording_mark_while_the_outbox_cannot_write(window):
    """The service says its outbox cannot write: a small black NOT RECORDING mark sits on the
    banner (the banner keeps its colour and stays answerable); it goes when recording resumes."""
    from edge_app.cashier.drawing import NOT_RECORDING_BG

    window.set_recording(Recording(degraded=True, outbox_error="No space left on device"))
    c = check_event(decision="check_id", age=19.0, txn="T-norec")
    window.post(c, alert_event(c))
    snap = shown(window, answerable=True, not_recording="No space left on device")
    wait_for(lambda: window.snapshot.recording_box and window.snapshot.recording_box[2] > 1, what="the mark laid out")
    snap = window.snapshot
    mark, banner = snap.recording_box, snap.banner_box
    # Small, inside the banner's top line.
    assert mark[2] * mark[3] < 0.06 * banner[2] * banner[3], (mark, banner)
    assert banner[1] <= mark[1] and mark[1] + mark[3] <= banner[1] + banner[3] // 3
    black, white = hex_rgb(NOT_RECORDING_BG), (255, 255, 255)
    wait_for(lambda: dominant(screenshot(window.snapshot.recording_box))[0] == black, what="the mark painted")
    img = screenshot(window.snapshot.recording_box)
    assert 0.01 < share_of(img, white) < 0.6  # its words, drawn (anti-aliased: few pure white pixels)
    colour, share = dominant(banner_pixels(window.snapshot))
    assert colour == hex_rgb(STYLES["ask_id"].bg) and share > 0.5  # the instruction is still the banner
    press(window, "id_checked_over_age")
    assert window.acks.get(timeout=5).answer == "id_checked_over_age"

    window.set_recording(Recording(degraded=False, outbox_error=None))
    wait_for(
        lambda: window.snapshot.not_recording is None and window.snapshot.recording_box is None, what="the mark gone"
    )
    c2 = check_event(decision="check_id", age=19.0, txn="T-rec")
    window.post(c2, alert_event(c2))
    snap = shown(window, answerable=True, alert=None, transaction_id="T-rec")
    assert snap.recording_box is None and snap.not_recording is None


def test_the_window_takes_typed_events_only(window):
    """A wire dict is a caller's bug: refused on the caller's thread with the type it wanted, and
    the window goes on showing typed events."""
    c = check_event(decision="check_id", age=19.0, txn="T-typed")
    with pytest.raises(TypeError, match="CheckEvent"):
        window.post(c.to_dict())
    with pytest.raises(TypeError, match="AlertEvent"):
        window.post(c, alert_event(c).to_dict())
    with pytest.raises(TypeError, match="Recording"):
        window.set_recording({"degraded": True, "outbox_error": "disk full"})
    window.on_event(
        events.IntegrityEvent(
            store_id="store-001",
            till_id="till-01",
            transaction_id="T-typed",
            alert_event_id=c.event_id,
            seconds_after_alert=1.0,
        )
    )  # not for the window
    a = alert_event(c)
    window.post(c, a)
    snap = shown(window, answerable=True, alert=a)
    assert snap.transaction_id == "T-typed" and "Lager 4x440ml" in snap.item and snap.not_recording is None
