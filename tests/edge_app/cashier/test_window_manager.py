"""The cashier window on a till's desktop: Xvfb with a real window manager (openbox on its default
settings, and fluxbox), a POS window over most of the screen beside it that has the focus, and xdotool typing
digits, Enter and a barcode at scanner speed before, during and after every kind of banner. What
the cashier types or scans must always reach the POS, and nothing typed may ever be recorded as an
answer: the window can never hold the keyboard."""

from __future__ import annotations

import os
import queue

import pytest

from edge_app.cashier.isolated import WindowProcess
from edge_app.cashier.window import CashierDisplay
from edge_app.config import DisplayConfig
from tests.edge_app.feed_util import typed_alert as alert_event
from tests.edge_app.feed_util import typed_check as check_event
from tests.edge_app.wm_util import (
    WINDOW_MANAGERS,
    KeyedPos,
    all_keys_arrive,
    start_desktop,
    stop_desktop,
    type_into_pos,
)
from tests.edge_app.x11_util import click, wait_for, xdotool


@pytest.fixture(scope="module", params=sorted(WINDOW_MANAGERS))
def desktop(request):
    x, wm, desk, home = start_desktop(request.param)
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = desk.display
    try:
        yield desk
    finally:
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old
        stop_desktop(x, wm)


@pytest.fixture
def pos(desktop):
    p = KeyedPos()
    try:
        p.activate()
        yield p
    finally:
        p.close()


@pytest.fixture
def window(desktop):
    acks: queue.Queue = queue.Queue()
    conf = DisplayConfig(
        enabled=True, width=640, height=300, position="top-right", approve_seconds=2.0, undo_seconds=2.0
    )
    # In its own process, supervised, as the till service and `agecheck display` run it.
    d = WindowProcess(conf, "store-001", "till-01", acks.put).start()
    d.acks = acks
    try:
        yield d
    finally:
        d.shutdown()


def on_screen(d: CashierDisplay, **want):
    def ok():
        s = d.snapshot
        if not s.visible or s.drawn_at is None or not s.geometry or s.geometry[2] < 100:
            return None
        return s if all(getattr(s, k) == v for k, v in want.items()) else None

    return wait_for(ok, timeout=15, what=f"the banner on screen ({want})")


def gone(d: CashierDisplay) -> None:
    wait_for(lambda: not d.snapshot.visible, timeout=15, what="the window to go idle")


def no_answer_recorded(d: CashierDisplay) -> None:
    assert d.acks.empty(), f"typing into the POS was recorded as an answer: {d.acks.get_nowait()}"


ALERTS = [  # decision, camera, the banner's kind
    ("check_id", "up", "ask_id"),
    ("no_face", "up", "no_face"),
    ("no_face", "down", "camera_down"),
]


@pytest.mark.parametrize("decision,camera,kind", ALERTS)
def test_typing_and_scanning_reach_the_pos_through_an_alert(desktop, pos, window, decision, camera, kind):
    all_keys_arrive(pos, type_into_pos(pos), "before the alert")
    c = check_event(decision=decision, age=19.0 if decision == "check_id" else None, txn=f"T-{kind}", camera=camera)
    window.post(c, alert_event(c))
    on_screen(window, kind=kind, answerable=True)
    # At once, as a cashier scanning the next item would, and again a moment later.
    all_keys_arrive(pos, type_into_pos(pos), f"as the {kind} banner appeared")
    all_keys_arrive(pos, type_into_pos(pos), f"while the {kind} banner was up")
    no_answer_recorded(window)
    # A tap answers; the POS keeps the keyboard through "answer recorded" and after.
    click(on_screen(window, kind=kind).buttons["no_id_check"])
    ack = window.acks.get(timeout=10)
    assert ack.via == "click" and ack.transaction_id == f"T-{kind}"
    on_screen(window, kind="recorded")
    all_keys_arrive(pos, type_into_pos(pos), "while the answer was shown as recorded")
    gone(window)
    all_keys_arrive(pos, type_into_pos(pos), "after the banner went")
    no_answer_recorded(window)


def test_typing_reaches_the_pos_through_an_ok_banner(desktop, pos, window):
    window.post(check_event(decision="approve", age=44.0, txn="T-ok"))
    on_screen(window, kind="ok")
    all_keys_arrive(pos, type_into_pos(pos), "during the OK banner")
    gone(window)
    all_keys_arrive(pos, type_into_pos(pos), "after the OK banner")
    no_answer_recorded(window)


def test_typing_reaches_the_pos_through_a_queue_of_alerts(desktop, pos, window):
    for n in range(3):
        c = check_event(decision="check_id", age=19.0, txn=f"T-q{n}")
        window.post(c, alert_event(c))
        all_keys_arrive(pos, type_into_pos(pos), f"as alert {n + 1} of 3 came")
    on_screen(window, waiting="+2 more alerts waiting")
    all_keys_arrive(pos, type_into_pos(pos), "while three alerts waited")
    no_answer_recorded(window)


def test_the_window_manager_cannot_give_the_window_the_keyboard(desktop, pos, window):
    """Alt-Tab, and a request to activate the window (what a taskbar or pager sends), leave
    the keyboard with the POS; the window is in no task list to be chosen from."""
    c = check_event(decision="check_id", age=19.0, txn="T-alt")
    window.post(c, alert_event(c))
    snap = on_screen(window, kind="ask_id")
    xdotool("key", "alt+Tab")
    all_keys_arrive(pos, type_into_pos(pos), "after Alt-Tab")
    cashier = [w for w in xdotool("search", "--onlyvisible", "--classname", "agecheck").split()]
    assert cashier, "the window is on screen"
    for w in cashier:
        xdotool("windowactivate", w)  # no --sync: a window manager that refuses never answers
    all_keys_arrive(pos, type_into_pos(pos), "after asking the window manager to activate the window")
    no_answer_recorded(window)
    assert window.snapshot.alert_event_id == snap.alert_event_id


def test_closing_the_window_loses_no_alert(desktop, pos, window):
    """The window's X client killed (xkill, or a window manager's force-close) and its process
    killed outright: the program that runs it goes on, a new window comes by itself, and the
    unanswered alert is on it again, answerable; the POS keeps the keyboard throughout."""
    c1 = check_event(decision="check_id", age=19.0, txn="T-k1")
    a1 = alert_event(c1)
    window.post(c1, a1)
    c2 = check_event(decision="no_face", age=None, txn="T-k2")
    a2 = alert_event(c2)
    window.post(c2, a2)
    on_screen(window, alert_event_id=a2.event_id)
    click(on_screen(window, alert_event_id=a2.event_id).buttons["id_checked_over_age"])
    assert window.acks.get(timeout=10).alert_event_id == a2.event_id
    shown = on_screen(window, alert_event_id=a1.event_id)
    # There is nothing to close it with: the window manager does not decorate it.
    wid = xdotool("search", "--onlyvisible", "--classname", "agecheck").split()[0]
    first_pid = window.pid
    xdotool("windowkill", wid)
    wait_for(lambda: window.restarts >= 1, timeout=20, what="the window to be started again")
    assert window.pid != first_pid
    snap = on_screen(window, alert_event_id=a1.event_id, answerable=True)
    assert snap.transaction_id == "T-k1" and snap.queued == 1  # the answered one stays answered
    all_keys_arrive(pos, type_into_pos(pos), "after the window came back")
    # And when its process is killed outright.
    os.kill(window.pid, 9)
    wait_for(lambda: window.restarts >= 2, timeout=20, what="the window to be started again")
    snap = on_screen(window, alert_event_id=a1.event_id, answerable=True)
    click(snap.buttons["no_id_check"])
    ack = window.acks.get(timeout=10)
    assert ack.alert_event_id == a1.event_id and ack.answer == "no_id_check"
    no_answer_recorded(window)
    assert shown.transaction_id == "T-k1"
