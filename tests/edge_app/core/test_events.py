"""The ack correction and the POS text fields in the event schema: what validate() accepts and
the message it gives for what it refuses; the typed events read and write the same bytes."""

from __future__ import annotations

import dataclasses
import re
import uuid

import pytest

from edge_app.core import event_bounds, event_parts, events, topics
from edge_app.core.words import Answer, Decision, GateReason, MissedReason, PolicyRule
from tests.edge_app.core.test_event_wire import check as pinned_check
from tests.edge_app.feed_util import ack_event, alert_event, check_event


def ack(**changes) -> dict:
    """A valid ack's wire dict with `changes` written over it (which may make it invalid)."""
    return {**ack_event(alert_event(check_event()), Answer.ID_CHECKED_OVER_AGE, seconds=1.5), **changes}


def missed(trigger: event_parts.TriggerInfo, **fields) -> events.MissedEvent:
    return events.MissedEvent(
        store_id="s",
        till_id="t",
        transaction_id=None,
        trigger=trigger,
        reason=MissedReason.STALE,
        **{"detail": "old", **fields},
    )


def test_a_plain_ack_and_a_correction_are_valid():
    first = events.validate(ack())
    assert "replaces_event_id" not in first
    undo = events.validate(ack(answer=Answer.UNDONE, replaces_event_id=first["event_id"]))
    assert undo["replaces_event_id"] == first["event_id"]
    events.validate(ack(answer="no_id_check", replaces_event_id=first["event_id"]))


@pytest.mark.parametrize(
    "extra, message",
    [
        ({"answer": Answer.UNDONE}, "needs replaces_event_id"),
        ({"replaces_event_id": "not-a-uuid"}, "replaces_event_id must be the event_id"),
        ({"replaces_event_id": 12}, "replaces_event_id must be the event_id"),
        ({"answer": "maybe"}, "answer must be one of"),
    ],
)
def test_bad_corrections_are_refused(extra, message):
    with pytest.raises(event_bounds.SchemaError, match=message):
        events.validate(ack(**extra))


def test_a_correction_cannot_name_itself():
    ev = ack()
    ev["replaces_event_id"] = ev["event_id"]
    with pytest.raises(event_bounds.SchemaError, match="names the event itself"):
        events.validate(ev)


def test_item_name_and_operator_travel_in_check_and_alert():
    c = check_event(operator_id="op-17")
    a = alert_event(c)
    a["operator_id"] = "op-17"
    assert events.validate(c)["trigger"]["name"] == "Lager 4x440ml"
    assert events.validate(a)["item"]["name"] == "Lager 4x440ml"


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("name", "Lager\x1b[2J", "item name contains control characters"),
        ("name", "x" * 129, "item name must be 1 to 128 characters"),
        ("name", 5, "item name must be text"),
        ("operator_id", "op\n1", "operator_id contains control characters"),
    ],
)
def test_bad_pos_text_is_refused(field, value, message):
    c = check_event()
    a = alert_event(c)
    if field == "name":
        c["trigger"]["name"] = value
        a["item"]["name"] = value
    else:
        c[field] = a[field] = value
    for ev in (c, a):
        with pytest.raises(event_bounds.SchemaError, match=message):
            events.validate(ev)


# -- typed events (each kind's bytes are pinned in test_event_wire.py) -------------------------------
def test_a_typed_check_writes_null_for_an_unknown_value_and_leaves_out_an_absent_operator():
    # The wire test's check, its operator and probability unknown, no face refused, one latency.
    typed = dataclasses.replace(
        pinned_check(),
        operator_id=None,
        p_over=None,
        latency_ms=event_parts.Latency(total=120.5),
        gate_rejections={},
    )
    assert '"p_over":null' in typed.encode().decode() and "operator_id" not in typed.to_dict()
    assert typed.to_dict()["gate_rejections"] == {} and typed.to_dict()["latency_ms"] == {"total": 120.5}


@pytest.mark.parametrize(
    "make",
    [
        lambda: check_event(),
        lambda: alert_event(check_event()),
        lambda: {**ack(), "future_field": [1, 2]},  # a newer producer's field is kept, not dropped
        lambda: ack(answer=Answer.UNDONE, replaces_event_id=str(uuid.uuid4())),
        lambda: events.IntegrityEvent(
            store_id="s", till_id="t", transaction_id="T-2", alert_event_id=str(uuid.uuid4()), seconds_after_alert=3
        ).to_dict(),
        lambda: {
            **missed(event_parts.TriggerInfo(source="pos"), detail="12 s old", operator_id="op-7").to_dict(),
            "seq": 4,
            "publisher": "t",
        },
        # Odd parts (a numeric barcode, a rule this build has no word for, a newer key) come back as they came.
        lambda: {
            **check_event(),
            "trigger": {"sku": 501, "source": 3, "lane": "4"},
            "policy": {"rule": "newer", "legal_age": "18"},
            "latency_ms": {"total": 1.0, "gpu": 2.0},
        },
    ],
)
def test_reading_and_writing_an_event_changes_no_byte(make):
    d = events.validate(make())
    typed = events.from_dict(d)
    assert type(typed).KIND == d["kind"]
    assert typed.to_dict() == d and typed.encode() == events.encode(d)


def test_from_dict_gives_the_kinds_own_class_with_its_fields():
    a = events.from_dict(ack(operator_id="op-1"))
    assert isinstance(a, events.AckEvent) and a.answer == Answer.ID_CHECKED_OVER_AGE
    assert a.operator_id == "op-1" and a.replaces_event_id is None and a.decision_time_s == 1.5


@pytest.mark.parametrize(
    "bad, message",
    [
        ("not an event", "not a JSON object"),
        ({**ack(), "kind": "rumour"}, "unknown event kind"),
        ({k: v for k, v in ack().items() if k != "alert_event_id"}, "missing field 'alert_event_id'"),
        ({**ack(), "decision_time_s": "fast"}, "'decision_time_s' has the wrong type"),
    ],
)
def test_from_dict_names_what_is_wrong(bad, message):
    with pytest.raises(event_bounds.SchemaError, match=message):
        events.from_dict(bad)


def test_a_typed_event_is_validated_when_built():
    with pytest.raises(event_bounds.SchemaError, match="answer must be one of"):
        events.AckEvent(
            store_id="s",
            till_id="t",
            transaction_id="T-1",
            alert_event_id=str(uuid.uuid4()),
            answer="maybe",
            decision_time_s=1.0,
        )
    with pytest.raises(event_bounds.SchemaError, match="reason must be one of"):
        events.MissedEvent(
            store_id="s", till_id="t", transaction_id=None, trigger=event_parts.TriggerInfo(), reason="bored", detail=""
        )
    with pytest.raises(event_bounds.SchemaError, match="field 'trigger' must be a TriggerInfo"):
        events.MissedEvent(
            store_id="s",
            till_id="t",
            transaction_id=None,
            trigger={"source": "pos"},
            reason=MissedReason.STALE,
            detail="",
        )


def test_words_are_held_as_their_members():
    c = events.from_dict(check_event(decision="approve", age=40.0, gate_rejections={"blurred": 1}))
    assert type(c.decision) is Decision and type(c.policy.rule) is not str
    assert list(c.gate_rejections) == [GateReason.BLURRED] and type(next(iter(c.gate_rejections))) is GateReason
    built = events.AckEvent(
        store_id="s", till_id="t", transaction_id="T", alert_event_id="a", answer="no_id_check", decision_time_s=1.0
    )
    assert type(built.answer) is Answer


def test_gate_rejections_are_counts_of_gate_words():
    with pytest.raises(event_bounds.SchemaError, match="gate_rejections keys must be among"):
        events.validate(check_event(gate_rejections={"sleepy": 1}))
    with pytest.raises(event_bounds.SchemaError, match=re.escape("gate_rejections['blurred'] must be a count")):
        events.validate(check_event(gate_rejections={"blurred": -1}))


# -- the item and the rule, read through one class each -----------------------------------------------
def test_the_item_and_the_rule_are_read_as_attributes():
    c = events.from_dict(check_event())
    a = events.from_dict(alert_event(check_event()))
    assert (
        c.trigger.product
        == a.item
        == event_parts.Product(sku="5000112637922", category="alcohol", name="Lager 4x440ml")
    )
    assert c.policy == event_parts.PolicyInfo(legal_age=18, challenge_age=25, margin_years=0.0)
    assert not c.policy.calibrated
    m = events.from_dict(missed(event_parts.TriggerInfo(event_parts.Product(sku="9"), source="pos")).to_dict())
    assert m.trigger.product.sku == "9" and m.trigger.product.min_age is None


@pytest.mark.parametrize(
    "box, want",
    [
        (
            {"sku": 5010677850100, "min_age": "18", "name": 7},
            event_parts.Product(sku="5010677850100"),
        ),  # a numeric barcode
        ({"sku": True, "min_age": True, "category": ["alcohol"]}, event_parts.Product()),
        ("not an object", event_parts.Product()),
        (None, event_parts.Product()),
    ],
)
def test_an_odd_item_reads_as_what_is_usable(box, want):
    got = event_parts.Product.from_dict(box)
    assert got == want and got.known == (want != event_parts.Product())


def test_an_odd_policy_reads_as_what_is_usable():
    got = event_parts.PolicyInfo.from_dict({"legal_age": "18", "challenge_age": 25.0, "rule": 1, "min_frames": 2.5})
    assert got == event_parts.PolicyInfo(challenge_age=25.0)
    assert event_parts.PolicyInfo.from_dict([]) == event_parts.PolicyInfo()


def test_an_item_written_through_its_class_is_the_same_json():
    lager = {"sku": "501", "category": "alcohol", "min_age": 18, "name": "Lager"}
    assert event_parts.Product.from_dict(lager).to_dict() == lager
    assert event_parts.Product(sku="501", category="alcohol").to_dict() == {"sku": "501", "category": "alcohol"}
    pol = {"legal_age": 18, "challenge_age": 25, "margin_years": 0.0, "min_frames": 3, "rule": PolicyRule.MARGIN}
    assert event_parts.PolicyInfo.from_dict(pol).to_dict() == pol
    # Readers leave the wire alone: the event's dict is still the one it was read from.
    d = events.validate(alert_event(check_event()))
    typed = events.from_dict(d)
    assert typed.item.name == "Lager 4x440ml" and typed.encode() == events.encode(d)


# -- the scan behind a check, and how long the check took ------------------------------------------
def test_the_trigger_is_read_and_written_through_one_class():
    wire = {
        "source": "pos",
        "received_ts": "2025-01-01T12:00:00.000+00:00",
        "sent_ts": "2025-01-01T11:59:59+00:00",
        "sku": "501",
        "category": "alcohol",
        "min_age": 18,
    }
    info = event_parts.TriggerInfo.from_dict(wire)
    assert info == event_parts.TriggerInfo(
        event_parts.Product(sku="501", category="alcohol", min_age=18),
        source="pos",
        received_ts=wire["received_ts"],
        sent_ts=wire["sent_ts"],
    )
    assert info.to_dict() == wire
    # What the POS did not say stays out of the JSON (no nulls), as it did before the class.
    assert event_parts.TriggerInfo(event_parts.Product(sku="9"), source="http").to_dict() == {
        "source": "http",
        "sku": "9",
    }
    assert event_parts.TriggerInfo.from_dict({"source": 3, "received_ts": None}) == event_parts.TriggerInfo()
    assert event_parts.TriggerInfo.from_dict("nope") == event_parts.TriggerInfo()


def test_a_check_and_a_missed_event_read_their_trigger_and_total():
    c = events.from_dict(check_event())
    assert c.trigger.source == "pos" and c.trigger.product.sku == "5000112637922"
    assert c.latency_ms.total == 120.0
    assert dataclasses.replace(c, latency_ms=event_parts.Latency(queue=1.0)).latency_ms.total is None
    m = events.from_dict(missed(event_parts.TriggerInfo(source="stdin", sent_ts="x")).to_dict())
    assert m.trigger == event_parts.TriggerInfo(source="stdin", sent_ts="x")


# -- topics and the one decoder ------------------------------------------------------------------------
def test_each_kind_has_one_topic_leaf():
    assert topics.event_leaf(events.AckEvent) == "events/ack"
    assert topics.event_leaf("check") == topics.event_leaf(events.from_dict(check_event())) == "events/check"
    assert topics.event_leaf() == "events/#"
    assert topics.event_topic("store-001", "till-01", events.AlertEvent) == "agecheck/v1/store-001/till-01/events/alert"
    with pytest.raises(ValueError, match="unknown event kind 'rumour'"):
        topics.event_leaf("rumour")


def test_decode_event_reads_bytes_into_the_typed_event():
    d = check_event()
    got = events.decode_event(events.encode(d))
    assert isinstance(got, events.CheckEvent) and got.to_dict() == d


@pytest.mark.parametrize(
    "payload, error, message",
    [
        (b"[1, 2]", "PayloadError", "must be a JSON object, got list"),
        (b"[" * 100, "PayloadError", "nested more than"),
        (b'{"n": ' + b"1" * 60 + b"}", "PayloadError", "a number of 60 characters"),
        (b'{"kind": "check"}', "SchemaError", "missing field 'event_id'"),
    ],
)
def test_decode_event_names_what_is_wrong(payload, error, message):
    from edge_app.core import payloads

    with pytest.raises(
        {"PayloadError": payloads.PayloadError, "SchemaError": event_bounds.SchemaError}[error], match=message
    ):
        events.decode_event(payload)


def test_decode_event_keeps_the_callers_size_limit():
    from edge_app.core import payloads

    big = events.encode(check_event())
    with pytest.raises(payloads.PayloadError, match=f"payload is {len(big)} bytes, more than the 100 allowed"):
        events.decode_event(big, payloads.Limits(max_bytes=100))


# -- bounds (issue 26): what the feed used to store, or could not store and wedged on -------------
def _with(**changes) -> dict:
    ev = check_event()
    ev.update(changes)
    return ev


@pytest.mark.parametrize(
    "bad, message",
    [
        (_with(age=1e300), "field 'age' is 1e+300, outside 0 to 130"),
        (_with(age_low=-3.0), "field 'age_low' is -3, outside 0 to 130"),
        (_with(ts="yesterday"), "field 'ts' is not an ISO 8601 time"),
        (_with(ts="1970-01-01T00:00:00Z"), "before 2000-01-01"),
        (_with(ts="2999-01-01T00:00:00Z"), "more than a day ahead"),
        (_with(decision="sure"), "decision must be one of approve, check_id, no_face"),
        (_with(transaction_id="T" * 60_000), "'transaction_id' is 60000 characters, more than 128"),
        (_with(transaction_id="T-1\x00"), "'transaction_id' contains a NUL character"),
        (_with(till_id="till\x1b"), "'till_id' contains control characters"),
        (_with(transaction_id="T-\ud800"), "not valid Unicode text"),
        (_with(seq=2**63, publisher="till-01"), "outside a 64-bit integer"),
        (_with(age_band="ancient"), "field 'age_band' must be one of"),
        (_with(reason="x" * 1001), "'reason' is 1001 characters, more than 1000"),
        (_with(frames_used=-1), "field 'frames_used' is -1"),
        (_with(p_over=1.5), "field 'p_over' is 1.5, outside 0 to 1"),
        ({**ack(), "decision_time_s": 1e12}, "field 'decision_time_s'"),
        ({**alert_event(check_event()), "decision": "perhaps"}, "alert event: decision must be one of"),
        (_with(latency_ms={"total": 2**64}), "'latency_ms.total' is 18446744073709551616, outside a 64-bit"),
        (_with(extra_note="a\x00b"), "'extra_note' contains a NUL"),
    ],
)
def test_values_outside_their_bounds_are_refused_with_the_field_named(bad, message):
    with pytest.raises(event_bounds.SchemaError, match=re.escape(message)):
        events.validate(bad)


def test_the_bounds_themselves_are_accepted():
    for ev in (
        _with(age=0.0, age_low=0.0, age_high=130.0),
        _with(seq=2**63 - 1, publisher="till-01"),
        _with(transaction_id="T" * 128),
        _with(ts="2000-01-01T00:00:00Z"),
        _with(decision="no_face", age=None),
        _with(detail="line one\nline two"),
    ):
        events.validate(ev)
