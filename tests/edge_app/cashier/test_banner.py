"""The banner model without a screen: the words, symbols and colours for every state, the
estimate shown as a range, the item name, and the queue of unanswered alerts."""

from __future__ import annotations

import dataclasses

import pytest

from edge_app.cashier.banner import (
    STYLES,
    TITLES,
    AlertQueue,
    BannerKind,
    banner_for,
    contrast,
    estimate_text,
    item_text,
    recorded_banner,
    waiting_text,
)
from edge_app.core import event_bounds, events
from edge_app.core.event_parts import Product
from edge_app.core.words import Decision
from tests.edge_app.feed_util import check_event, typed_check
from tests.edge_app.feed_util import typed_alert as alert_event


def check(**kw) -> events.CheckEvent:
    return typed_check(**kw)


def calibrated(decision: str, low: float, high: float, **kw) -> events.CheckEvent:
    c = check_event(decision=decision, age=(low + high) / 2, p_over=0.3, **kw)
    c["age_low"], c["age_high"] = low, high
    c["policy"]["rule"] = "calibrated"
    return events.from_dict(c)


@pytest.mark.parametrize(
    "check, title, symbol, style",
    [
        (calibrated("check_id", 16.6, 25.8), "ASK FOR ID", "✗", "ask_id"),
        (calibrated("approve", 31.2, 44.9), "OK — no ID needed", "✓", "ok"),
        (check(decision="no_face", age=None, camera="up"), "NO FACE SEEN — ASK FOR ID", "?", "no_face"),
        (
            check(decision="no_face", age=None, camera="down"),
            "CAMERA DOWN — ASK FOR ID — tell a supervisor",
            "!",
            "camera_down",
        ),
        (
            check(decision="no_face", age=None, camera="starting"),
            "CAMERA DOWN — ASK FOR ID — tell a supervisor",
            "!",
            "camera_down",
        ),
    ],
)
def test_each_state_says_the_action_with_a_symbol(check, title, symbol, style):
    b = banner_for(check, alert_event(check))
    assert (b.title, b.symbol, b.kind, b.bg, b.fg) == (title, symbol, style, STYLES[style].bg, STYLES[style].fg)
    assert b.needs_answer == (style != "ok")
    assert b.transaction_id == "T-1"


def test_every_kind_has_its_style_and_title_and_no_face_is_the_decisions_word():
    assert set(STYLES) == set(TITLES) == set(BannerKind)
    assert BannerKind.NO_FACE == Decision.NO_FACE
    # A kind is its plain word (the window's snapshot and the screenshots compare it to text).
    assert [str(k) for k in BannerKind] == ["ok", "ask_id", "no_face", "camera_down", "recorded", "notice"]
    assert recorded_banner("no_id_check", "T-1").kind is BannerKind.RECORDED


def test_every_style_is_readable_and_distinct():
    for name, s in STYLES.items():
        assert contrast(s.fg, s.bg) >= 4.5, name
    # No two banners share a colour, and the four states a cashier acts on differ by symbol too,
    # except NO FACE / CAMERA DOWN (same action) which still differ by symbol.
    assert len({s.bg for s in STYLES.values()}) == len(STYLES)
    assert len({STYLES[k].symbol for k in ("ok", "ask_id", "no_face", "camera_down")}) == 4
    assert contrast("#ffffff", "#000000") == pytest.approx(21.0)
    assert contrast("#777777", "#777777") == pytest.approx(1.0)


def test_estimate_is_a_range_not_an_age():
    b = banner_for(calibrated("check_id", 16.6, 25.8))
    assert b.detail == "Camera estimate about 17–26 · Challenge 25"
    # The margin rule's low/high are only the spread between frames: the band is shown instead.
    margin = check(decision="check_id", age=19.4)
    assert margin.age_low == pytest.approx(17.4)
    assert estimate_text(margin) == "camera estimate about 18–24"
    assert estimate_text(check(decision="approve", age=70.0)) == "camera estimate 65 or over"
    assert estimate_text(check(decision="no_face", age=None)) == ""
    # An alert on its own (its check lost): the band it carries.
    assert estimate_text(None, alert_event(margin)) == "camera estimate about 18–24"


def test_item_name_rather_than_sku():
    def text(item: dict) -> str:
        return item_text(Product.from_dict(item))

    assert text({"sku": "5010677850100", "name": "Lager 4x440ml", "min_age": 18}) == "Lager 4x440ml · 18+"
    assert text({"sku": "5010677850100", "category": "alcohol"}) == "SKU 5010677850100"
    assert text({"sku": "1", "name": "   ", "min_age": 21}) == "SKU 1 · 21+"
    long = text({"sku": "1", "name": "Single malt " * 10})
    assert len(long) == 48 and long.endswith("…")
    assert item_text(None) == "" and text({}) == ""
    c = check()
    assert banner_for(c, alert_event(c)).item_text == "Lager 4x440ml"
    # The alert's item wins; an alert that carries none shows what the check's trigger says.
    bare = events.from_dict({**alert_event(c).to_dict(), "item": {}})
    assert banner_for(check(txn="T-2"), bare).item_text == "Lager 4x440ml"
    assert banner_for(None, bare).item_text == ""


def test_unknown_decision_asks_for_id_and_recorded_banner():
    # No check holds a word it does not know: one is refused when it is built, so the banner is
    # never handed one to mistake for an approval.
    with pytest.raises(event_bounds.SchemaError, match="decision must be one of"):
        dataclasses.replace(check(), decision="maybe")
    with pytest.raises(ValueError):
        banner_for(None, None)
    r = recorded_banner("id_checked_under_age_refused", "T-9")
    assert (r.title, r.detail, r.needs_answer) == ("Answer recorded", "ID checked – under age / refused", False)
    assert waiting_text(0) == "" and waiting_text(1) == "+1 more alert waiting" and waiting_text(3).startswith("+3")


def test_queue_shows_the_newest_and_keeps_the_others():
    q = AlertQueue(expire_seconds=600)
    c1, c2 = check(txn="T-1"), check(txn="T-2", decision="no_face", age=None)
    a1, a2 = alert_event(c1), alert_event(c2)
    q.add_check(c1, 0.0)
    q.add_alert(a1, 0.1)
    assert q.current(0.2).alert_event_id == a1.event_id and q.waiting(0.2) == 0
    q.add_check(c2, 1.0)
    q.add_alert(a2, 1.1)
    assert q.current(1.2).alert_event_id == a2.event_id and q.waiting(1.2) == 1
    assert q.add_check(check(txn="T-3", decision="approve", age=50.0), 1.5) is None  # never queued
    p2 = q.remove_alert(a2.event_id)
    assert q.current(2.0).alert_event_id == a1.event_id and q.waiting(2.0) == 0
    back = q.restore(p2, 3.0)  # Undo: on top again, still timed from its arrival
    assert q.current(3.0) is back and back.added == 1.0 and q.waiting(3.0) == 1
    assert q.remove_alert("no-such-alert") is None


def test_an_alert_without_its_check_waits_a_moment_then_shows():
    q = AlertQueue(expire_seconds=600, alert_without_check_seconds=1.5)
    c = check(txn="T-7")
    a = alert_event(c)
    q.add_alert(a, 10.0)
    assert q.current(10.5) is None and q.next_change(10.5) == 11.5
    assert q.current(11.5).alert is a
    # ... or shows at once with its check when that comes in time.
    q2 = AlertQueue(expire_seconds=600)
    q2.add_alert(a, 10.0)
    q2.add_check(c, 10.2)
    assert q2.current(10.2).check is c and q2.current(10.2).alert is a and len(q2) == 1


def test_unanswered_alerts_expire():
    q = AlertQueue(expire_seconds=60)
    c = check()
    q.add_check(c, 0.0)
    q.add_alert(alert_event(c), 0.0)
    assert q.expire(59.9) == [] and q.next_change(1.0) == 60.0
    gone = q.expire(60.0)
    assert [p.key for p in gone] == [c.event_id] and len(q) == 0 and q.current(61) is None


def test_the_alert_alone_tells_a_camera_fault():
    """The alert carries the camera's state too: without its check (late or lost), or with a check
    that does not say, a camera fault is still not shown as a shopper out of view."""
    a = events.from_dict({**alert_event(check(decision="no_face", age=None)).to_dict(), "camera": "down"})
    assert banner_for(None, a).kind == "camera_down"
    assert banner_for(check(decision="no_face", age=None), a).kind == "camera_down"
    assert banner_for(check(decision="no_face", age=None, camera="up"), a).kind == "no_face"  # the check's word first
