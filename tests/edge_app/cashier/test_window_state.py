"""The alert window's state machine without a screen: which banner is shown when, the answers and
Undo as ack events, the double-tap guard, alerts answered elsewhere, expiry and stale events. Time
is passed in, so each rule is checked at exact moments (the Tk window on Xvfb: test_window.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from edge_app.cashier.banner import BannerKind
from edge_app.cashier.window_state import DOUBLE_TAP_S, STALE_SECONDS, WindowState
from edge_app.config import DisplayConfig
from edge_app.core import events
from edge_app.core.state import Recording
from edge_app.core.words import AckVia, Answer, Decision
from tests.edge_app.feed_util import typed_alert, typed_check

CFG = DisplayConfig(approve_seconds=4.0, undo_seconds=6.0, alert_expire_seconds=60.0)


def state() -> WindowState:
    return WindowState(CFG, "store-001", "till-01")


def raise_alert(s: WindowState, now: float, txn: str = "T-1", **kw) -> events.AlertEvent:
    check = typed_check(txn=txn, decision=Decision.CHECK_ID, **kw)
    alert = typed_alert(check)
    assert s.handle(check, time.time(), now) and s.handle(alert, time.time(), now)
    return alert


def test_an_answer_becomes_an_ack_and_undo_puts_the_alert_back():
    s = state()
    alert = raise_alert(s, 100.0)
    view = s.view(100.0)
    assert view.banner.kind == BannerKind.ASK_ID and view.pending.alert == alert
    ack = s.answer_ack(view.pending, Answer.ID_CHECKED_OVER_AGE, AckVia.CLICK, 103.25)
    assert (ack.alert_event_id, ack.check_event_id, ack.decision_time_s) == (alert.event_id, alert.check_event_id, 3.25)
    s.sending(ack)
    s.answered(view.pending, ack, 103.25)
    assert len(s.alerts) == 0 and s.view(104.0).banner.kind == BannerKind.RECORDED
    # The broker brings this window's own ack back: it is not an answer from elsewhere.
    assert not s.handle(ack, time.time(), 104.0)
    fix = s.undo_ack(105.0)
    assert fix.answer == Answer.UNDONE and fix.replaces_event_id == ack.event_id
    s.undone(105.0)
    assert s.recent is None and s.view(105.0).pending.alert_event_id == alert.event_id


def test_the_undo_offer_runs_out():
    s = state()
    raise_alert(s, 0.0)
    p = s.view(0.0).pending
    s.answered(p, s.answer_ack(p, Answer.NO_ID_CHECK, AckVia.CLICK, 1.0), 1.0)
    assert s.next_change(1.0) == 1.0 + CFG.undo_seconds
    s.tick(1.0 + CFG.undo_seconds)
    assert s.view(1.0 + CFG.undo_seconds) is None and s.undo_ack(8.0) is None


def test_a_second_tap_right_after_an_answer_is_ignored_and_counted():
    s = state()
    raise_alert(s, 0.0)
    p = s.view(0.0).pending
    s.answered(p, s.answer_ack(p, Answer.ID_CHECKED_OVER_AGE, AckVia.CLICK, 1.0), 1.0)
    assert s.double_tap(1.0 + DOUBLE_TAP_S / 2) and s.taps_ignored == 1
    assert not s.double_tap(1.0 + DOUBLE_TAP_S) and s.taps_ignored == 1


def test_the_shopper_in_front_first_then_earlier_sales_as_sale_done():
    s = state()
    raise_alert(s, 0.0, txn="T-1")
    ok = typed_check(txn="T-2", decision=Decision.APPROVE, age=50.0)
    assert s.handle(ok, time.time(), 1.0)
    view = s.view(1.0)
    assert view.banner.kind == BannerKind.OK and s.others_waiting(view, 1.0) == 1
    s.tick(1.0 + CFG.approve_seconds)
    later = s.view(1.0 + CFG.approve_seconds)
    assert later.pending is not None and later.banner.sale_done and later.banner.transaction_id == "T-1"


def test_an_approval_does_not_cover_the_same_sale_s_alert():
    s = state()
    alert = raise_alert(s, 0.0, txn="T-9")
    assert s.handle(typed_check(txn="T-9", decision=Decision.APPROVE, age=50.0), time.time(), 1.0)
    assert s.approve is None and s.view(1.0).pending.alert_event_id == alert.event_id


def test_an_answer_given_on_another_display_takes_the_alert_off():
    s = state()
    alert = raise_alert(s, 0.0)
    other = events.AckEvent(
        store_id="store-001",
        till_id="till-01",
        transaction_id="T-1",
        alert_event_id=alert.event_id,
        answer=Answer.NO_ID_CHECK,
        decision_time_s=2.0,
    )
    assert s.handle(other, time.time(), 1.0)
    assert s.view(1.0) is None
    assert not s.handle(alert, time.time(), 2.0)  # redelivered: answered already


def test_alerts_expire_and_stale_or_foreign_events_are_not_shown():
    s = state()
    raise_alert(s, 0.0)
    s.tick(CFG.alert_expire_seconds)
    assert s.expired == 1 and s.view(CFG.alert_expire_seconds) is None
    old = (datetime.now(UTC) - timedelta(seconds=STALE_SECONDS + 5)).isoformat()
    assert not s.handle(typed_check(decision=Decision.APPROVE, ts=old), time.time(), 1.0)
    assert not s.handle(typed_check(till="till-02"), time.time(), 1.0)


def test_the_not_recording_mark_and_the_notice():
    s = state()
    assert s.set_recording(Recording(degraded=True, outbox_error="No space left on device"))
    assert s.not_recording == "No space left on device"
    assert not s.set_recording(Recording(degraded=True, outbox_error="No space left on device"))
    assert s.set_recording(Recording()) and s.not_recording is None
    assert s.set_notice("NOT CONNECTED TO TILL till-01") and s.view(0.0).banner.kind == BannerKind.NOTICE
