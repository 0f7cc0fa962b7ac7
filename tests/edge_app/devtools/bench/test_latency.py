"""The bench's cashier: it answers an alert the way a cashier must now, with a real click on the
window's "ID checked – over age" button (keys count only while the window has the focus, which it
never takes), so the next check's banner is shown instead of being held behind the alert."""

from __future__ import annotations

import queue

from edge_app.cashier.window import CashierDisplay
from edge_app.config import DisplayConfig
from edge_app.devtools.bench.latency import press_answer
from tests.edge_app.feed_util import typed_alert as alert_event
from tests.edge_app.feed_util import typed_check as check_event
from tests.edge_app.x11_util import PosWindow, wait_for, xvfb  # noqa: F401


def test_the_bench_answers_an_alert_by_click(xvfb):
    acks: queue.Queue = queue.Queue()
    conf = DisplayConfig(enabled=True, width=640, height=300, position="top-left")
    d = CashierDisplay(conf, "store-001", "till-01", acks.put).start_in_thread()
    pos = PosWindow()  # another window holds the keyboard focus, as the till's POS does
    try:
        pos.focus()
        c = check_event(decision="check_id", age=19.0, txn="bench-0001")
        a = alert_event(c)
        d.post(c, a)
        wait_for(
            lambda: (
                (s := d.snapshot).answerable
                and s.alert_event_id == a.event_id
                and s.drawn_at
                and all(b[3] > 1 for b in s.buttons.values())
            ),
            what="the alert drawn with its buttons",
        )
        press_answer(d)
        ack = acks.get(timeout=5)
        assert (ack.alert_event_id, ack.answer, ack.via) == (a.event_id, "id_checked_over_age", "click")
        assert d.snapshot.alert_event_id != a.event_id  # press_answer waited for it to go
        assert pos.text == ""  # nothing was typed into the POS
    finally:
        pos.close()
        d.close()
        d.join(5)
