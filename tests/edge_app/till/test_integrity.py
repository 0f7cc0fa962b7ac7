"""Integrity tracker and pos/sale parser: the rules, with explicit times (no sleeping)."""

from __future__ import annotations

import threading

import pytest

from edge_app.core import event_bounds, event_parts, events
from edge_app.core.pos import PosMessageError, Sale
from edge_app.core.words import Answer
from edge_app.till.integrity import IntegrityMonitor, IntegrityTracker

T0 = 1_700_000_000.0


def alert(txn: str | None = "T-1", decision: str = "check_id") -> events.AlertEvent:
    ev = events.AlertEvent(
        store_id="store-001",
        till_id="till-01",
        transaction_id=txn,
        check_event_id="c-" + str(txn),
        decision=decision,
        age_band="18-24",
        item=event_parts.Product(sku="5000", category="alcohol"),
    )
    return ev


def ack(alert_ev: events.AlertEvent, answer: str, replaces: events.AckEvent | None = None) -> events.AckEvent:
    ev = events.AckEvent(
        store_id="store-001",
        till_id="till-01",
        transaction_id=alert_ev.transaction_id,
        alert_event_id=alert_ev.event_id,
        answer=answer,
        decision_time_s=2.0,
        replaces_event_id=replaces.event_id if replaces else None,
    )
    return ev


def tracker(grace: float = 5.0) -> IntegrityTracker:
    return IntegrityTracker("store-001", "till-01", grace_seconds=grace, forget_after_seconds=3600)


def test_unanswered_alert_sale_gives_event_after_grace():
    tr = tracker(grace=5)
    a = alert()
    tr.on_alert(a, when=T0)
    assert tr.on_sale("T-1", when=T0 + 12) == []  # the cashier still has the grace period
    assert tr.poll(T0 + 16.9) == []
    out = tr.poll(T0 + 17)
    assert len(out) == 1
    ev = out[0]
    assert isinstance(ev, events.IntegrityEvent) and events.validate(ev.to_dict())["kind"] == "integrity"
    assert ev.alert_event_id == a.event_id
    assert ev.transaction_id == "T-1" and ev.till_id == "till-01" and ev.store_id == "store-001"
    assert ev.seconds_after_alert == pytest.approx(12.0)
    assert ev.reason == "unanswered" and ev.answer is None
    assert tr.poll(T0 + 100) == []  # returned once
    assert tr.open_alerts == 0


def test_answer_inside_grace_period_cancels():
    tr = tracker(grace=5)
    a = alert()
    tr.on_alert(a, when=T0)
    tr.on_sale("T-1", when=T0 + 3)
    tr.on_ack(ack(a, "id_checked_over_age"), when=T0 + 4)  # pressed just after the sale
    assert tr.poll(T0 + 60) == []


@pytest.mark.parametrize("answer", ["id_checked_over_age", "id_checked_under_age_refused"])
def test_id_check_before_sale_is_no_event(answer):
    tr = tracker(grace=0)
    a = alert()
    tr.on_alert(a, when=T0)
    tr.on_ack(ack(a, answer), when=T0 + 2)
    assert tr.on_sale("T-1", when=T0 + 9) == []
    assert tr.open_alerts == 0


def test_no_id_check_answer_counts_as_not_checked():
    tr = tracker(grace=0)
    a = alert(decision="no_face")
    tr.on_alert(a, when=T0)
    tr.on_ack(ack(a, "no_id_check"), when=T0 + 1)
    out = tr.on_sale("T-1", when=T0 + 4)
    assert len(out) == 1
    assert out[0].reason == "answered_no_id_check" and out[0].answer == "no_id_check"
    assert out[0].decision == "no_face"


def test_no_id_check_does_not_undo_a_recorded_check():
    tr = tracker(grace=0)
    a = alert()
    tr.on_alert(a, when=T0)
    tr.on_ack(ack(a, "id_checked_over_age"), when=T0 + 1)
    tr.on_ack(ack(a, "no_id_check"), when=T0 + 2)
    assert tr.on_sale("T-1", when=T0 + 3) == []


def test_an_undone_id_check_no_longer_covers_the_sale():
    tr = tracker(grace=0)
    a = alert()
    tr.on_alert(a, when=T0)
    first = ack(a, "id_checked_over_age")  # pressed by accident
    tr.on_ack(first, when=T0 + 1)
    tr.on_ack(ack(a, Answer.UNDONE, replaces=first), when=T0 + 2)  # Undo
    out = tr.on_sale("T-1", when=T0 + 3)
    assert len(out) == 1 and out[0].reason == "unanswered"


def test_undo_then_a_new_answer():
    tr = tracker(grace=0)
    a = alert()
    tr.on_alert(a, when=T0)
    wrong = ack(a, "no_id_check")
    tr.on_ack(wrong, when=T0 + 1)
    tr.on_ack(ack(a, Answer.UNDONE, replaces=wrong), when=T0 + 2)
    tr.on_ack(ack(a, "id_checked_under_age_refused"), when=T0 + 3)
    assert tr.on_sale("T-1", when=T0 + 4) == []


def test_undo_pressed_just_after_the_sale_counts():
    tr = tracker(grace=5)
    a = alert()
    tr.on_alert(a, when=T0)
    first = ack(a, "id_checked_over_age")
    tr.on_ack(first, when=T0 + 1)
    assert tr.on_sale("T-1", when=T0 + 2) == []
    tr.on_ack(ack(a, Answer.UNDONE, replaces=first), when=T0 + 3)
    out = tr.poll(T0 + 7)
    assert len(out) == 1 and out[0].alert_event_id == a.event_id
    # Covered and not undone: nothing, and the transaction is forgotten once judged.
    b = alert("T-2")
    tr.on_alert(b, when=T0)
    tr.on_ack(ack(b, "id_checked_over_age"), when=T0 + 1)
    tr.on_sale("T-2", when=T0 + 2)
    assert tr.poll(T0 + 8) == [] and tr.open_alerts == 0


def test_a_correction_arriving_before_the_answer_it_names():
    tr = tracker(grace=0)
    a = alert()
    first = ack(a, "id_checked_over_age")
    tr.on_ack(ack(a, Answer.UNDONE, replaces=first), when=T0)  # both before the alert, out of order
    tr.on_alert(a, when=T0 + 0.1)
    tr.on_ack(first, when=T0 + 0.2)
    assert len(tr.on_sale("T-1", when=T0 + 1)) == 1


def test_a_correction_cannot_withdraw_another_alerts_answer():
    tr = tracker(grace=0)
    a, b = alert("T-1"), alert("T-2")
    tr.on_alert(a, when=T0)
    tr.on_alert(b, when=T0)
    ok = ack(a, "id_checked_over_age")
    tr.on_ack(ok, when=T0 + 1)
    tr.on_ack(ack(b, Answer.UNDONE, replaces=ok), when=T0 + 2)  # names T-1's answer
    assert tr.on_sale("T-1", when=T0 + 3) == []


def test_two_alerts_one_event_naming_the_first():
    tr = tracker(grace=0)
    a1, a2 = alert(), alert()
    tr.on_alert(a1, when=T0)
    tr.on_alert(a2, when=T0 + 30)
    tr.on_alert(a2, when=T0 + 31)  # QoS 1 redelivery is not a third alert
    out = tr.on_sale("T-1", when=T0 + 40)
    assert len(out) == 1
    assert out[0].alert_event_id == a1.event_id
    assert out[0].alert_count == 2
    assert out[0].seconds_after_alert == pytest.approx(40)


def test_ack_before_alert_is_kept():
    tr = tracker(grace=0)
    a = alert()
    tr.on_ack(ack(a, "id_checked_over_age"), when=T0)
    tr.on_alert(a, when=T0 + 0.1)
    assert tr.on_sale("T-1", when=T0 + 5) == []


def test_an_ack_with_a_word_that_is_no_answer_never_reaches_the_tracker():
    # Refused when it is built, in the process as on the wire: the tracker sees only Answers.
    with pytest.raises(event_bounds.SchemaError, match="answer must be one of"):
        events.AckEvent(
            store_id="store-001",
            till_id="till-01",
            transaction_id="T-1",
            alert_event_id=alert().event_id,
            answer="id_checked_probably",
            decision_time_s=1.0,
        )


def test_the_service_listener_takes_typed_alerts_and_acks():
    tr = tracker(grace=0)
    a = alert()
    tr.on_event(a)
    tr.on_event(ack(a, "no_id_check"))
    tr.on_event(
        events.IntegrityEvent(
            store_id="store-001",
            till_id="till-01",
            transaction_id="T-1",
            alert_event_id=a.event_id,
            seconds_after_alert=1.0,
        )
    )  # not for the tracker
    assert tr.open_alerts == 1
    out = tr.on_sale("T-1")
    assert len(out) == 1 and out[0].reason == "answered_no_id_check" and out[0].alert_event_id == a.event_id


def test_sale_without_alert_duplicate_sale_and_other_transactions():
    tr = tracker(grace=0)
    assert tr.on_sale("T-9", when=T0) == []
    a = alert("T-2")
    tr.on_alert(a, when=T0)
    assert len(tr.on_sale("T-2", when=T0 + 1)) == 1
    assert tr.on_sale("T-2", when=T0 + 2) == []  # a redelivered pos/sale


def test_alert_without_transaction_is_not_tracked_and_old_alerts_are_forgotten():
    tr = tracker(grace=0)
    tr.on_alert(alert(None), when=T0)
    assert tr.open_alerts == 0
    tr.on_alert(alert("T-old"), when=T0)
    tr.on_alert(alert("T-new"), when=T0 + 4000)  # past forget_after_seconds=3600
    assert tr.open_alerts == 1
    assert tr.on_sale("T-old", when=T0 + 4001) == []


def test_thread_safety_many_transactions():
    tr = tracker(grace=0)
    alerts = [alert(f"T-{i}") for i in range(400)]
    results: list[dict] = []
    lock = threading.Lock()

    def worker(chunk):
        for a in chunk:
            tr.on_alert(a, when=T0)
            if int(a.transaction_id[2:]) % 2:
                tr.on_ack(ack(a, "id_checked_over_age"), when=T0 + 1)
            out = tr.on_sale(a.transaction_id, when=T0 + 2)
            with lock:
                results.extend(out)

    threads = [threading.Thread(target=worker, args=(alerts[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 200
    assert len({r.transaction_id for r in results}) == 200
    assert tr.open_alerts == 0


def test_monitor_retries_a_failed_publish():
    tr = tracker(grace=0)
    published: list[events.IntegrityEvent] = []
    fail = [True]

    def publish(ev):
        if fail[0]:
            raise OSError("outbox full")
        published.append(ev)

    mon = IntegrityMonitor(tr, publish)
    a = alert()
    mon.on_event(a)
    assert mon.on_sale_payload(b'{"transaction_id": "T-1"}').transaction_id == "T-1"
    assert published == []
    fail[0] = False
    mon.tick()
    assert [p.alert_event_id for p in published] == [a.event_id]
    assert mon.on_sale_payload(b"not json") is None  # logged and dropped


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"{", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "must be a JSON object"),
        (b"{}", "missing field 'transaction_id'"),
        (b'{"transaction_id": ""}', "is empty"),
        (b'{"transaction_id": true}', "must be text"),
        (b'{"transaction_id": {"a": 1}}', "must be text"),
        (b'{"transaction_id": "T", "ts": 5}', "'ts' must be text"),
        (b'{"transaction_id": "' + b"x" * 200 + b'"}', "longer than 128"),
        (b'{"transaction_id": "T", "pad": "' + b"x" * 5000 + b'"}', "more than the 4096 allowed"),
    ],
)
def test_sale_errors(payload, message):
    with pytest.raises(PosMessageError, match=message):
        Sale.from_payload(payload, 4096)


def test_sale_ok():
    s = Sale.from_payload('{"transaction_id": 1234, "ts": "2025-01-01T10:00:00Z", "total": 12.5}')
    assert s.transaction_id == "1234" and s.pos_ts == "2025-01-01T10:00:00Z"
