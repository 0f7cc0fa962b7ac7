"""Which cashier answers stand once corrections (Undo) are read: the rule the integrity check,
the feed and the report share."""

from __future__ import annotations

import pytest

from edge_app.core import events
from edge_app.core.answers import covered, current_answer, standing
from edge_app.core.words import Answer


def ack(alert_id: str, answer: str, ts: str, replaces: events.AckEvent | None = None) -> events.AckEvent:
    ev = events.AckEvent(
        store_id="s",
        till_id="t",
        transaction_id="T-1",
        alert_event_id=alert_id,
        answer=answer,
        decision_time_s=1.0,
        ts=ts,
        replaces_event_id=replaces.event_id if replaces else None,
    )
    return ev


A, B = "alert-a", "alert-b"


def test_undo_withdraws_and_a_new_answer_stands():
    first = ack(A, "id_checked_over_age", "2026-01-01T10:00:01Z")
    undo = ack(A, Answer.UNDONE, "2026-01-01T10:00:03Z", replaces=first)
    again = ack(A, "no_id_check", "2026-01-01T10:00:05Z")
    assert standing([first]) == {A: [first]}
    assert standing([first, undo]) == {A: []}
    assert current_answer([first, undo]) is None
    # Any order, redelivered copies counted once.
    assert standing([again, undo, first, first]) == {A: [again]}
    assert current_answer([first, undo, again]) == "no_id_check"


def test_a_correction_with_an_answer_replaces_in_place():
    first = ack(A, "no_id_check", "2026-01-01T10:00:01Z")
    fix = ack(A, "id_checked_under_age_refused", "2026-01-01T10:00:02Z", replaces=first)
    assert current_answer([first, fix]) == "id_checked_under_age_refused"
    assert covered(a.answer for a in standing([first, fix])[A])


def test_a_correction_of_another_alert_changes_nothing():
    mine = ack(A, "id_checked_over_age", "2026-01-01T10:00:01Z")
    theirs = ack(B, Answer.UNDONE, "2026-01-01T10:00:02Z", replaces=mine)
    assert standing([mine, theirs]) == {A: [mine], B: []}


def test_covered():
    assert covered(["no_id_check", "id_checked_over_age"])
    assert not covered(["no_id_check", None])


def test_the_current_answer_is_the_answer_word():
    first = ack(A, "id_checked_over_age", "2026-01-01T10:00:01Z")
    assert current_answer([first]) is Answer.ID_CHECKED_OVER_AGE
    assert current_answer([]) is None


def test_only_typed_acks_are_read():
    # A stored payload is decoded (and a bad one set aside) by the caller, never read here as a dict.
    first = ack(A, "id_checked_over_age", "2026-01-01T10:00:01Z")
    with pytest.raises(TypeError, match="takes AckEvents, got dict"):
        standing([first, first.to_dict()])
