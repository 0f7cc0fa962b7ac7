"""The till's retained state document: the keys on the wire are pinned (monitoring tools read
them), it reads back what it wrote, and a state from an older or a broken till reads as defaults
rather than failing."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from edge_app.core import events, payloads
from edge_app.core.state import LastCheck, Quarantined, TillState
from tests.edge_app.feed_util import check_event

# Spelled here on purpose: this is the wire a monitoring tool reads, and a rename must fail here.
STATE_KEYS = {
    "ts",
    "status",
    "heartbeat_s",
    "version",
    "model_id",
    "camera",
    "camera_detail",
    "outbox_depth",
    "outbox_max",
    "outbox_full",
    "outbox_dropped",
    "degraded",
    "outbox_write_errors",
    "outbox_held",
    "outbox_held_max",
    "outbox_held_dropped",
    "outbox_error",
    "mqtt_subscribed",
    "mqtt_error",
    "security_warnings",
    "last_seq",
    "checks",
    "messages_quarantined",
    "scans_missed",
    "pos_clock_ahead_s",
    "pos_clock_skew",
    "last_quarantined",
    "last_check",
    "started",
}
LAST_CHECK_KEYS = {"event_id", "ts", "transaction_id", "decision", "age", "age_band"}
QUARANTINED_KEYS = {"ts", "topic", "reason"}


def full_state() -> TillState:
    check = events.from_dict(check_event(txn="T-9", decision="check_id", age=22.5))
    return TillState(
        ts="2025-05-01T10:00:00.000Z",
        status="online",
        heartbeat_s=30.0,
        version="1.2.3",
        model_id="m-1",
        camera="down",
        camera_detail="device not found",
        outbox_depth=3,
        outbox_max=10_000,
        outbox_full=False,
        outbox_dropped=1,
        degraded=True,
        outbox_write_errors=2,
        outbox_held=1,
        outbox_held_max=500,
        outbox_held_dropped=0,
        outbox_error="No space left on device",
        mqtt_subscribed=True,
        mqtt_error=None,
        security_warnings=("no TLS",),
        last_seq=41,
        checks=7,
        messages_quarantined=2,
        scans_missed={"stale": 1, "queue_full": 0},
        last_check=LastCheck.of(check),
        pos_clock_ahead_s=-60.2,
        pos_clock_skew="the POS clock is 60 s behind the till's",
        last_quarantined=Quarantined(ts="2025-05-01T09:59:00.000Z", topic="pos", reason="not JSON"),
        started="2025-05-01T08:00:00.000Z",
    )


def test_the_wire_keys_are_pinned_and_every_one_is_written():
    doc = json.loads(full_state().encode())
    assert set(doc) == STATE_KEYS
    assert set(doc["last_check"]) == LAST_CHECK_KEYS and set(doc["last_quarantined"]) == QUARANTINED_KEYS
    # An empty state still writes every key (null, zero, false, empty), so "none" reads apart from
    # "an older till that does not say".
    empty = json.loads(TillState().encode())
    assert set(empty) == STATE_KEYS
    assert empty["last_check"] is None and empty["camera"] is None and empty["checks"] == 0
    assert empty["security_warnings"] == [] and empty["scans_missed"] == {} and empty["degraded"] is False


def test_encode_is_compact_sorted_json_and_reads_back_equal():
    st = full_state()
    raw = st.encode()
    assert raw == json.dumps(json.loads(raw), separators=(",", ":"), sort_keys=True).encode()
    doc = json.loads(raw)
    assert doc["security_warnings"] == ["no TLS"] and doc["scans_missed"] == {"stale": 1, "queue_full": 0}
    assert doc["last_check"] == {
        "event_id": st.last_check.event_id,
        "ts": st.last_check.ts,
        "transaction_id": "T-9",
        "decision": "check_id",
        "age": 22.5,
        "age_band": st.last_check.age_band,
    }
    assert st.last_check.age_band
    assert TillState.decode(raw) == st
    assert TillState.from_dict(st.to_dict()) == st


def test_last_check_is_the_check_events_own_fields():
    names = {f.name for f in fields(LastCheck)}
    assert names <= {f.name for f in fields(events.CheckEvent)}
    check = events.from_dict(check_event(txn="T-1", decision="no_face", age=None))
    last = LastCheck.of(check)
    assert all(getattr(last, n) == getattr(check, n) for n in names)
    assert last.decision == "no_face" and last.age is None


def test_a_state_from_an_older_till_reads_with_defaults():
    old = TillState.decode(
        b'{"ts":"2024-01-01T00:00:00Z","status":"online","camera":"up","outbox_depth":4,'
        b'"last_check":{"event_id":"e-1","decision":"approve"}}'
    )
    assert (old.camera, old.outbox_depth, old.status) == ("up", 4, "online")
    assert old.degraded is False and old.mqtt_subscribed is False and old.outbox_error is None
    assert old.security_warnings == () and old.scans_missed == {} and old.last_quarantined is None
    assert old.last_check == LastCheck(event_id="e-1", decision="approve")
    # Keys a newer till added are ignored, not an error.
    assert TillState.decode(b'{"camera":"up","thermal":"ok"}').camera == "up"


def test_values_of_the_wrong_type_read_as_absent():
    st = TillState.from_dict(
        {
            "camera": 1,
            "checks": True,
            "outbox_depth": "3",
            "degraded": 1,
            "security_warnings": ["ok", 3],
            "scans_missed": {"stale": 2, "shutdown": "x"},
            "last_check": "T-1",
            "last_quarantined": {"topic": "pos", "reason": 5},
        }
    )
    assert st.camera is None and st.checks == 0 and st.outbox_depth == 0 and st.degraded is False
    assert st.security_warnings == ("ok",) and st.scans_missed == {"stale": 2}
    assert st.last_check is None and st.last_quarantined == Quarantined(topic="pos")


@pytest.mark.parametrize(
    "payload, words",
    [
        (b"[1, 2]", "JSON object"),
        (b"not json", "JSON"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_a_payload_that_is_no_state_at_all_names_the_problem(payload, words):
    with pytest.raises(payloads.PayloadError, match=words):
        TillState.decode(payload)
