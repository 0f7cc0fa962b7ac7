"""The bytes every kind of event goes out as, pinned: a typed event built by a producer writes
exactly these (a change here is a change of the wire, which older feeds and tills read)."""

from __future__ import annotations

import dataclasses

import pytest

from edge_app.core import event_parts, events
from edge_app.core.words import AckVia, Answer, Decision, GateReason, IntegrityReason, MissedReason, PolicyRule

CHECK_ID = "6f1c2b9e-3d4a-4e5f-8a7b-1c2d3e4f5a6b"
ALERT_ID = "7a2d3c0f-4e5b-4f60-9b8c-2d3e4f5a6b7c"
ACK_ID = "8b3e4d10-5f6c-4071-8c9d-3e4f5a6b7c8d"
ENVELOPE = dict(
    store_id="store-001", till_id="till-01", transaction_id="T-1", ts="2026-03-01T12:00:01.250Z", operator_id="op-7"
)
LAGER = event_parts.Product(sku="501", category="alcohol", min_age=18, name="Lager 4x440ml")


def check() -> events.CheckEvent:
    return events.CheckEvent(
        **ENVELOPE,
        event_id=CHECK_ID,
        trigger=event_parts.TriggerInfo(
            LAGER, source="pos", received_ts="2026-03-01T12:00:00.000Z", sent_ts="2026-03-01T11:59:59.900Z"
        ),
        frames_seen=6,
        frames_used=3,
        faces_seen=1,
        age=23.4,
        age_low=19.0,
        age_high=28.1,
        age_band="18-24",
        spread=1.2,
        p_over=0.41,
        decision=Decision.CHECK_ID,
        reason="p 0.41 < 0.8; faces rejected as blurred x2",
        policy=event_parts.PolicyInfo(
            legal_age=18, challenge_age=25, rule=PolicyRule.CALIBRATED, margin_years=0.0, min_frames=3
        ),
        model_id="age_resnet10_int8",
        latency_ms=event_parts.Latency(queue=0.4, wait=10.0, faces=35.2, model=40.1, policy=0.2, total=86.3),
        camera="up",
        gate_rejections={GateReason.BLURRED: 2, GateReason.TOO_DARK: 1},
    )


def alert() -> events.AlertEvent:
    return events.AlertEvent(
        **ENVELOPE,
        event_id=ALERT_ID,
        check_event_id=CHECK_ID,
        decision=Decision.CHECK_ID,
        age_band="18-24",
        age=23.4,
        item=LAGER,
        reason="p 0.41 < 0.8",
        camera="up",
    )


def ack() -> events.AckEvent:
    return events.AckEvent(
        **ENVELOPE,
        event_id=ACK_ID,
        alert_event_id=ALERT_ID,
        answer=Answer.ID_CHECKED_OVER_AGE,
        decision_time_s=3.5,
        check_event_id=CHECK_ID,
        via=AckVia.CLICK,
    )


def undo() -> events.AckEvent:
    return events.AckEvent(
        **ENVELOPE,
        event_id="9c4f5e21-6071-4182-9dae-4f5a6b7c8d9e",
        alert_event_id=ALERT_ID,
        answer=Answer.UNDONE,
        decision_time_s=5.0,
        replaces_event_id=ACK_ID,
        via=AckVia.KEY,
    )


def integrity() -> events.IntegrityEvent:
    return events.IntegrityEvent(
        **ENVELOPE,
        event_id="ad506f32-7182-4293-aebf-5a6b7c8d9eaf",
        alert_event_id=ALERT_ID,
        seconds_after_alert=12.5,
        check_event_id=CHECK_ID,
        decision=Decision.CHECK_ID,
        reason=IntegrityReason.UNANSWERED,
        answer=None,
        alert_count=1,
        alert_event_ids=(ALERT_ID,),
        grace_seconds=10.0,
    )


def missed() -> events.MissedEvent:
    return events.MissedEvent(
        **ENVELOPE,
        event_id="be617043-8293-43a4-bfc0-6b7c8d9eafb0",
        trigger=event_parts.TriggerInfo(
            event_parts.Product(sku="501", category="alcohol", min_age=18),
            source="pos",
            received_ts="2026-03-01T12:00:00.000Z",
        ),
        reason=MissedReason.STALE,
        detail="scan 12 s old",
    )


WIRE = {
    check: b'{"age":23.4,"age_band":"18-24","age_high":28.1,"age_low":19.0,"camera":"up","decision":"check_id","event_id":"6f1c2b9e-3d4a-4e5f-8a7b-1c2d3e4f5a6b","faces_seen":1,"frames_seen":6,"frames_used":3,"gate_rejections":{"blurred":2,"too dark":1},"kind":"check","latency_ms":{"faces":35.2,"model":40.1,"policy":0.2,"queue":0.4,"total":86.3,"wait":10.0},"model_id":"age_resnet10_int8","operator_id":"op-7","p_over":0.41,"policy":{"challenge_age":25,"legal_age":18,"margin_years":0.0,"min_frames":3,"rule":"calibrated"},"reason":"p 0.41 < 0.8; faces rejected as blurred x2","schema":1,"spread":1.2,"store_id":"store-001","till_id":"till-01","transaction_id":"T-1","trigger":{"category":"alcohol","min_age":18,"name":"Lager 4x440ml","received_ts":"2026-03-01T12:00:00.000Z","sent_ts":"2026-03-01T11:59:59.900Z","sku":"501","source":"pos"},"ts":"2026-03-01T12:00:01.250Z"}',  # noqa: E501
    alert: b'{"age":23.4,"age_band":"18-24","camera":"up","check_event_id":"6f1c2b9e-3d4a-4e5f-8a7b-1c2d3e4f5a6b","decision":"check_id","event_id":"7a2d3c0f-4e5b-4f60-9b8c-2d3e4f5a6b7c","item":{"category":"alcohol","min_age":18,"name":"Lager 4x440ml","sku":"501"},"kind":"alert","operator_id":"op-7","reason":"p 0.41 < 0.8","schema":1,"store_id":"store-001","till_id":"till-01","transaction_id":"T-1","ts":"2026-03-01T12:00:01.250Z"}',  # noqa: E501
    ack: b'{"alert_event_id":"7a2d3c0f-4e5b-4f60-9b8c-2d3e4f5a6b7c","answer":"id_checked_over_age","check_event_id":"6f1c2b9e-3d4a-4e5f-8a7b-1c2d3e4f5a6b","decision_time_s":3.5,"event_id":"8b3e4d10-5f6c-4071-8c9d-3e4f5a6b7c8d","kind":"ack","operator_id":"op-7","schema":1,"store_id":"store-001","till_id":"till-01","transaction_id":"T-1","ts":"2026-03-01T12:00:01.250Z","via":"click"}',  # noqa: E501
    undo: b'{"alert_event_id":"7a2d3c0f-4e5b-4f60-9b8c-2d3e4f5a6b7c","answer":"undone","check_event_id":null,"decision_time_s":5.0,"event_id":"9c4f5e21-6071-4182-9dae-4f5a6b7c8d9e","kind":"ack","operator_id":"op-7","replaces_event_id":"8b3e4d10-5f6c-4071-8c9d-3e4f5a6b7c8d","schema":1,"store_id":"store-001","till_id":"till-01","transaction_id":"T-1","ts":"2026-03-01T12:00:01.250Z","via":"key"}',  # noqa: E501
    integrity: b'{"alert_count":1,"alert_event_id":"7a2d3c0f-4e5b-4f60-9b8c-2d3e4f5a6b7c","alert_event_ids":["7a2d3c0f-4e5b-4f60-9b8c-2d3e4f5a6b7c"],"answer":null,"check_event_id":"6f1c2b9e-3d4a-4e5f-8a7b-1c2d3e4f5a6b","decision":"check_id","event_id":"ad506f32-7182-4293-aebf-5a6b7c8d9eaf","grace_seconds":10.0,"kind":"integrity","operator_id":"op-7","reason":"unanswered","schema":1,"seconds_after_alert":12.5,"store_id":"store-001","till_id":"till-01","transaction_id":"T-1","ts":"2026-03-01T12:00:01.250Z"}',  # noqa: E501
    missed: b'{"detail":"scan 12 s old","event_id":"be617043-8293-43a4-bfc0-6b7c8d9eafb0","kind":"missed","operator_id":"op-7","reason":"stale","schema":1,"store_id":"store-001","till_id":"till-01","transaction_id":"T-1","trigger":{"category":"alcohol","min_age":18,"received_ts":"2026-03-01T12:00:00.000Z","sku":"501","source":"pos"},"ts":"2026-03-01T12:00:01.250Z"}',  # noqa: E501
}


@pytest.mark.parametrize("make", list(WIRE), ids=lambda m: m.__name__)
def test_each_kind_goes_out_as_the_pinned_bytes(make):
    assert make().encode() == WIRE[make]


@pytest.mark.parametrize("make", list(WIRE), ids=lambda m: m.__name__)
def test_each_kind_reads_back_as_the_event_that_wrote_it(make):
    got = events.decode_event(WIRE[make])
    # (`absent` records that the wire had no seq or publisher; a producer's event leaves it empty.)
    assert dataclasses.replace(got, absent=frozenset()) == make() and got.encode() == WIRE[make]


def test_numbering_adds_only_seq_and_publisher():
    numbered = missed().numbered(4, "till-01").encode()
    assert numbered == WIRE[missed].replace(
        b'"operator_id":"op-7",', b'"operator_id":"op-7","publisher":"till-01",'
    ).replace(b'"schema":1,', b'"schema":1,"seq":4,')
