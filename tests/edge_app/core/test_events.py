"""The ack correction and the POS text fields in the event schema: what validate() accepts and
the message it gives for what it refuses."""

from __future__ import annotations

import pytest

from edge_app.core import events
from tests.edge_app.feed_util import alert_event, check_event


def ack(**extra) -> dict:
    a = alert_event(check_event())
    return events.new_event("ack", "store-001", "till-01", "T-1", alert_event_id=a["event_id"],
                            answer=extra.pop("answer", "id_checked_over_age"), decision_time_s=1.5, **extra)


def test_a_plain_ack_and_a_correction_are_valid():
    first = events.validate(ack())
    assert "replaces_event_id" not in first
    undo = events.validate(ack(answer=events.ACK_UNDONE, replaces_event_id=first["event_id"]))
    assert undo["replaces_event_id"] == first["event_id"]
    events.validate(ack(answer="no_id_check", replaces_event_id=first["event_id"]))


@pytest.mark.parametrize("extra, message", [
    ({"answer": events.ACK_UNDONE}, "needs replaces_event_id"),
    ({"replaces_event_id": "not-a-uuid"}, "replaces_event_id must be the event_id"),
    ({"replaces_event_id": 12}, "replaces_event_id must be the event_id"),
    ({"answer": "maybe"}, "answer must be one of"),
])
def test_bad_corrections_are_refused(extra, message):
    with pytest.raises(events.SchemaError, match=message):
        events.validate(ack(**extra))


def test_a_correction_cannot_name_itself():
    ev = ack()
    ev["replaces_event_id"] = ev["event_id"]
    with pytest.raises(events.SchemaError, match="names the event itself"):
        events.validate(ev)


def test_item_name_and_operator_travel_in_check_and_alert():
    c = check_event(operator_id="op-17")
    a = alert_event(c)
    a["operator_id"] = "op-17"
    assert events.validate(c)["trigger"]["name"] == "Lager 4x440ml"
    assert events.validate(a)["item"]["name"] == "Lager 4x440ml"


@pytest.mark.parametrize("field, value, message", [
    ("name", "Lager\x1b[2J", "item name contains control characters"),
    ("name", "x" * 129, "item name must be 1 to 128 characters"),
    ("name", 5, "item name must be text"),
    ("operator_id", "op\n1", "operator_id contains control characters"),
])
def test_bad_pos_text_is_refused(field, value, message):
    c = check_event()
    a = alert_event(c)
    if field == "name":
        c["trigger"]["name"] = value
        a["item"]["name"] = value
    else:
        c[field] = a[field] = value
    for ev in (c, a):
        with pytest.raises(events.SchemaError, match=message):
            events.validate(ev)
