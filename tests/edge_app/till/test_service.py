"""The till service in-process against a real Mosquitto, with the real model and a real face
photo played as the camera: a POS scan becomes a schema-valid check event, bad POS messages are
dropped without stopping anything, a broker outage loses nothing and keeps the order, the camera
going away and coming back shows in the retained state, and a sale on an unanswered alert
becomes an integrity event."""

from __future__ import annotations

import http.client
import json
import logging
from datetime import UTC

import pytest

from edge_app.config.files import load
from edge_app.core import event_bounds, events
from edge_app.core.pos import Item, Sale, Scan
from edge_app.core.state import LastCheck, TillState
from edge_app.core.times import parse_ts
from edge_app.core.words import Answer
from edge_app.devtools.sim import free_port
from edge_app.till.service import Service
from edge_app.transport.outbox import Outbox
from edge_app.vision.faces import FacePipeline
from edge_app.vision.model import AgeModel
from tests.edge_app.core.test_state import LAST_CHECK_KEYS, STATE_KEYS
from tests.edge_app.service_util import (
    Recorder,
    astronaut_video,
    empty_video,
    publish,
    retained,
    service_config,
    wait_until,
)
from tests.helpers import Calls

ROOT = "agecheck/v1/store-001/till-01"


@pytest.fixture(scope="module")
def parts():
    cfg = load(None)
    with FacePipeline(cfg.faces) as pipe:
        yield pipe, AgeModel(cfg.model.path, cfg.model.threads)


@pytest.fixture
def start_service(parts):
    running: list[Service] = []

    def start(cfg) -> Service:
        svc = Service(cfg, pipeline=parts[0], model=parts[1]).start()
        running.append(svc)
        return svc

    yield start
    for svc in running:
        svc.stop()


def scan(txn: str, sku="5010677850100", category="alcohol") -> bytes:
    return Scan(Item(sku, category), txn).encode()


def test_pos_scan_to_check_event_end_to_end(tmp_path, mqtt_broker, start_service, caplog):
    rec = Recorder(mqtt_broker.host, mqtt_broker.port)
    cfg = service_config(tmp_path, astronaut_video(tmp_path / "cam.avi"), mqtt_broker)
    svc = start_service(cfg)
    seen = []
    svc.listen(Calls(on_event=lambda ev: 1 / 0))  # a broken plug-in must not stop anything
    svc.listen(Calls(on_event=seen.append))
    # The bench's clock for publishing: told before the event is stored, and a broken one too
    # stops nothing.
    order: list[tuple[str, str]] = []
    svc.listen(Calls(on_publishing=lambda ev: 1 / 0))
    svc.listen(
        Calls(
            on_publishing=lambda ev: order.append(("publishing", ev.event_id)),
            on_event=lambda ev: order.append(("stored", ev.event_id)),
        )
    )
    rec.wait_last("availability", lambda p: p == b"online", what="online")
    rec.wait_last("state", lambda p: TillState.decode(p).camera == "up", what="camera up in state")
    wait_until(lambda: svc.link.subscribed.is_set() and len(svc.capture.buffer) >= 10, 10, "subscribed, video")

    publish(
        mqtt_broker.host,
        mqtt_broker.port,
        f"{ROOT}/pos/scan",
        [
            scan("T-bread", sku="123", category="bakery"),  # not restricted: no check
            scan("T-1"),
            scan("T-1", sku="999"),  # second bottle in the same basket: reuses the open check
        ],
    )
    checks = rec.wait_events("check", 1)
    publish(mqtt_broker.host, mqtt_broker.port, f"{ROOT}/pos/scan", [scan("T-2")])
    checks = rec.wait_events("check", 2)

    assert [c["transaction_id"] for c in checks] == ["T-1", "T-2"]
    ev = checks[0]
    events.validate(ev)
    assert ev["store_id"] == "store-001" and ev["till_id"] == "till-01"
    assert ev["trigger"]["source"] == "pos" and ev["trigger"]["sku"] == "5010677850100"
    assert 15 <= ev["age"] <= 70 and ev["decision"] in ("approve", "check_id"), ev
    assert ev["frames_used"] >= 1 and ev["faces_seen"] == 1 and ev["camera"] == "up"
    # Each check that is not an approve is followed by its alert (published just after it).
    expected_alerts = sum(c["decision"] != "approve" for c in checks)
    alerts = rec.wait_events("alert", expected_alerts) if expected_alerts else rec.events("alert")
    for c in checks:
        matching = [a for a in alerts if a["check_event_id"] == c["event_id"]]
        assert len(matching) == (0 if c["decision"] == "approve" else 1)
    for a in alerts:
        events.validate(a)
    # Local listeners too. They are told after the event is in the outbox and the sender woken,
    # so a subscriber can have a check before they do: wait rather than look once.
    wait_until(
        lambda: {e.event_id for e in seen} >= {c["event_id"] for c in checks}, 5, "local listeners told of both checks"
    )
    # The listener that keeps `order` is told after `seen`'s.
    wait_until(
        lambda: {i for w, i in order if w == "stored"} >= {c["event_id"] for c in checks},
        5,
        "the ordering listener told of both checks",
    )
    # Told the typed event as the outbox numbered it.
    assert all(isinstance(e, events.Event) and e.publisher == "till-01" and e.seq >= 1 for e in seen)
    assert "failed on check event" in caplog.text and "ZeroDivisionError" in caplog.text
    for c in checks:
        assert order.index(("publishing", c["event_id"])) < order.index(("stored", c["event_id"]))

    def after_t2(p: bytes) -> bool:
        st = TillState.decode(p)
        return st.last_check is not None and st.last_check.transaction_id == "T-2" and st.checks == 2

    raw = rec.wait_last("state", after_t2, what="the state after T-2's check")
    # Monitoring tools read these keys: the wire keeps exactly them, each written even when null.
    assert set(json.loads(raw)) == STATE_KEYS and set(json.loads(raw)["last_check"]) == LAST_CHECK_KEYS
    state = TillState.decode(raw)
    assert state.model_id == svc.model.model_id and state.version and state.status == "online"
    assert state.last_check == LastCheck(
        event_id=checks[1]["event_id"],
        ts=checks[1]["ts"],
        transaction_id="T-2",
        decision=checks[1]["decision"],
        age=checks[1]["age"],
        age_band=checks[1]["age_band"],
    )
    assert state.mqtt_subscribed and state.camera == "up"
    wait_until(lambda: svc.outbox.depth() == 0, 10, "outbox drained")
    assert svc.counts["scans_reused"] == 1

    svc.stop()
    assert retained(mqtt_broker.host, mqtt_broker.port, f"{ROOT}/availability") == b"offline"
    rec.close()


def test_malformed_pos_messages_are_dropped_and_the_service_goes_on(tmp_path, mqtt_broker, start_service, caplog):
    cfg = service_config(
        tmp_path, astronaut_video(tmp_path / "cam.avi"), mqtt_broker, triggers={"max_payload_bytes": 8192}
    )
    rec = Recorder(mqtt_broker.host, mqtt_broker.port)
    svc = start_service(cfg)
    wait_until(lambda: svc.link.subscribed.is_set() and svc.capture.status == "up", 10, "service up")
    bad_scans = [
        b"{this is not json",
        b'{"category": "alcohol", "transaction_id": "T-x"}',
        b'{"sku": "1", "category": "alcohol", "transaction_id": ["T"]}',
        b'{"sku": "1", "category": "alcohol", "transaction_id": "T-y", "min_age": "eighteen"}',
        b"\x00\xff" * 10,
        json.dumps({"sku": "1", "category": "alcohol", "transaction_id": "T-z", "x": "a" * 1_000_000}).encode(),
        # Poison: each of these used to raise past the JSON error handling (RecursionError,
        # ValueError from the int digit limit) or sneak a non-JSON NaN through.
        b"[" * 2000 + b"]" * 2000,
        b'{"sku": "1", "category": "alcohol", "transaction_id": ' + b"7" * 5001 + b"}",
        b'{"sku": "1", "category": "alcohol", "transaction_id": "T-n", "min_age": NaN}',
    ]
    with caplog.at_level(logging.WARNING):
        publish(mqtt_broker.host, mqtt_broker.port, f"{ROOT}/pos/scan", bad_scans)
        publish(mqtt_broker.host, mqtt_broker.port, f"{ROOT}/pos/sale", [b"[]", b'{"transaction_id": 3.5}'])
        publish(mqtt_broker.host, mqtt_broker.port, f"{ROOT}/events/ack", [b"{" * 3000, b"-" + b"1" * 5001])
        publish(mqtt_broker.host, mqtt_broker.port, f"{ROOT}/pos/scan", [scan("T-good")])
        checks = rec.wait_events("check", 1)
    assert [c["transaction_id"] for c in checks] == ["T-good"]
    for words in [
        "not valid JSON",
        "missing field 'sku'",
        "'transaction_id' must be text",
        "'min_age' must be a whole number",
        "not UTF-8",
        "more than the 8192 allowed",
        "pos/sale: payload must be a JSON object",
        "pos/sale: field 'transaction_id' must be text",
        "nested more than 32 levels",
        "a number of 5001 characters",
        "NaN is not a JSON number",
        "events/ack: JSON nested more than",
    ]:
        assert words in caplog.text, words
    assert caplog.text.count("message quarantined") >= 13
    assert "a" * 100 not in caplog.text  # a huge payload is previewed, not dumped
    assert svc.counts["pos_rejected"] == 11
    assert svc.counts["messages_quarantined"] == 13
    state = TillState.decode(rec.wait_last("state", lambda p: TillState.decode(p).messages_quarantined == 13))
    assert "events/ack" in state.last_quarantined.topic and state.last_quarantined.reason
    assert parse_ts(state.last_quarantined.ts) is not None
    rec.close()


def test_a_flood_of_bad_pos_messages_is_logged_as_a_count_not_a_line_each(tmp_path, mqtt_broker, start_service, caplog):
    cfg = service_config(tmp_path, astronaut_video(tmp_path / "cam.avi"), mqtt_broker)
    svc = start_service(cfg)
    if hasattr(svc, "quarantine_log"):  # (so that the test reads the same on the code before it)
        svc.quarantine_log.window_s = 3.0  # a minute in production; the test waits for one window
    wait_until(lambda: svc.link.subscribed.is_set(), 10, "service up")
    n = 2000
    with caplog.at_level(logging.WARNING, logger="edge_app.till.service"):
        publish(mqtt_broker.host, mqtt_broker.port, f"{ROOT}/pos/scan", [b"{not json %d" % i for i in range(n)])
        wait_until(lambda: svc.counts["messages_quarantined"] == n, 60, "every bad message quarantined")
        wait_until(
            lambda: "more message(s) quarantined" in caplog.text or len(caplog.records) >= n, 10, "the count line"
        )
    lines = [r.getMessage() for r in caplog.records if "quarantined" in r.getMessage()]
    # Before: 2,000 lines. Now 20 in full, then one count per window.
    assert len(lines) <= 20 + 2, len(lines)
    counted = sum(int(x.split(" ", 1)[0]) for x in lines if "more message(s) quarantined" in x)
    assert counted + sum(1 for x in lines if "more message(s)" not in x) == n
    assert svc.counts["pos_rejected"] == n


def test_broker_outage_during_checks_loses_nothing_and_keeps_order(tmp_path, mqtt_broker, start_service):
    rec = Recorder(mqtt_broker.host, mqtt_broker.port, topic=f"{ROOT}/events/#")  # persistent session
    cfg = service_config(tmp_path, astronaut_video(tmp_path / "cam.avi"), mqtt_broker)
    svc = start_service(cfg)
    wait_until(lambda: svc.link.subscribed.is_set() and len(svc.capture.buffer) >= 10, 10, "service up")
    publish(mqtt_broker.host, mqtt_broker.port, f"{ROOT}/pos/scan", [scan("T-0")])
    t0 = rec.wait_events("check", 1)[0]
    # The recorder can hear T-0's check before the service has the broker's PUBACK for it, and an
    # alert (any decision but approve) is stored after it: all of T-0's events are heard, then acked.
    rec.wait_events("alert", int(t0["decision"] != "approve"))
    wait_until(lambda: svc.outbox.depth() == 0, 10, "T-0's events acknowledged")

    mqtt_broker.stop()
    wait_until(lambda: not svc.link.connected, 10, "service sees the outage")
    # The POS cannot reach us either: scans come from the local trigger meanwhile.
    futures = [svc.submit(Scan(Item("5010677850100", "alcohol"), f"T-{i}"), "stdin").result for i in (1, 2, 3)]
    outcomes = [f.result(timeout=30) for f in futures]
    stored = 3 + sum(o.alert is not None for o in outcomes)
    assert svc.outbox.depth() == stored
    assert svc.state().outbox_depth == stored

    mqtt_broker.start()
    rec.wait_events("check", 4, timeout=30)
    wait_until(lambda: svc.outbox.depth() == 0, 15, "outbox drained")
    checks = rec.events("check")
    firsts = list({c["event_id"]: c for c in checks}.values())  # de-duplicated by event_id
    assert [c["transaction_id"] for c in firsts] == ["T-0", "T-1", "T-2", "T-3"]
    assert {c["event_id"] for c in firsts[1:]} == {o.check.event_id for o in outcomes}
    # The service's outbox empties on the broker's PUBACKs; the recorder may still be reading the
    # last alert off its socket.
    want = {o.alert.event_id for o in outcomes if o.alert}
    rec.wait_for(lambda m: want <= {a["event_id"] for a in rec.events("alert")}, 30, "the alerts")
    # Within the stream, each alert follows its check (stored right after it).
    stream = [json.loads(p)["event_id"] for t, p, _ in rec.messages]
    for o in outcomes:
        if o.alert:
            assert stream.index(o.check.event_id) < stream.index(o.alert.event_id)
    rec.close()


def test_camera_vanishes_and_returns_state_goes_down_then_up(tmp_path, mqtt_broker, start_service):
    video = astronaut_video(tmp_path / "cam.avi", seconds=0.6)
    port = free_port()
    cfg = service_config(tmp_path, video, mqtt_broker, triggers={"http_port": port}, check={"time_budget_ms": 600})
    rec = Recorder(mqtt_broker.host, mqtt_broker.port)
    svc = start_service(cfg)
    rec.wait_last("state", lambda p: TillState.decode(p).camera == "up", what="camera up")

    def http_scan(txn: str) -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request(
            "POST", "/scan", body=json.dumps({"transaction_id": txn}), headers={"Content-Type": "application/json"}
        )
        r = conn.getresponse()
        assert r.status == 200
        return json.loads(r.read())

    hidden = video.rename(tmp_path / "unplugged.avi")
    state = TillState.decode(rec.wait_last("state", lambda p: TillState.decode(p).camera == "down", what="camera down"))
    assert "not found" in state.camera_detail
    down = http_scan("T-down")
    assert down["check"]["decision"] == "no_face" and down["check"]["camera"] == "down"
    assert down["alert"]["decision"] == "no_face"

    hidden.rename(video)
    rec.wait_last("state", lambda p: TillState.decode(p).camera == "up", what="camera up again")
    wait_until(lambda: len(svc.capture.buffer) >= 8, 10, "frames again")
    up = http_scan("T-up")
    assert up["status"] == "started" and 15 <= up["check"]["age"] <= 70
    cams = [TillState.decode(p).camera for t, p, _ in rec.messages if t.endswith("/state")]
    assert "down" in cams and cams[-1] == "up"
    rec.close()


def test_sale_on_an_unanswered_alert_becomes_an_integrity_event(tmp_path, mqtt_broker, start_service, caplog):
    cfg = service_config(tmp_path, empty_video(tmp_path / "empty.avi"), mqtt_broker, check={"time_budget_ms": 400})
    rec = Recorder(mqtt_broker.host, mqtt_broker.port)
    svc = start_service(cfg)
    heard = []
    svc.listen(Calls(on_event=heard.append))
    wait_until(lambda: svc.link.subscribed.is_set() and svc.capture.status == "up", 10, "service up")
    publish(mqtt_broker.host, mqtt_broker.port, f"{ROOT}/pos/scan", [scan("T-8"), scan("T-9")])
    alerts = {a["transaction_id"]: a for a in rec.wait_events("alert", 2)}
    assert alerts["T-9"]["decision"] == "no_face"

    # T-8: a standalone cashier display answers on the broker; the service hears it.
    ack = events.AckEvent(
        store_id="store-001",
        till_id="till-01",
        transaction_id="T-8",
        alert_event_id=alerts["T-8"]["event_id"],
        answer=Answer.ID_CHECKED_OVER_AGE,
        decision_time_s=2.5,
    ).to_dict()
    publish(mqtt_broker.host, mqtt_broker.port, f"{ROOT}/events/ack", [events.encode(ack), b"{nope"])
    wait_until(
        lambda: any(isinstance(e, events.AckEvent) and e.event_id == ack["event_id"] for e in heard),
        10,
        "the remote ack",
    )
    publish(mqtt_broker.host, mqtt_broker.port, f"{ROOT}/pos/sale", [Sale("T-8").encode(), Sale("T-9").encode()])
    integ = rec.wait_events("integrity", 1)[0]
    events.validate(integ)
    assert integ["alert_event_id"] == alerts["T-9"]["event_id"] and integ["transaction_id"] == "T-9"
    wait_until(lambda: svc.outbox.depth() == 0, 10, "outbox drained")
    assert [e["transaction_id"] for e in rec.events("integrity")] == ["T-9"]  # T-8 had its ID check
    assert "events/ack: not valid JSON" in caplog.text and "message quarantined" in caplog.text
    # An answer given on the service's own display goes out once and does not echo back in.
    own = events.AckEvent(
        store_id="store-001",
        till_id="till-01",
        transaction_id="T-9",
        alert_event_id=alerts["T-9"]["event_id"],
        answer=Answer.NO_ID_CHECK,
        decision_time_s=9.0,
    )
    svc.publish_event(own)
    rec.wait_for(lambda m: any(own.event_id.encode() in p for _, p, _ in m), 10, "our own ack on the broker")
    # A malformed ack sent after it: once the service has quarantined that, the broker has given it
    # everything before it on the topic, so an echo of our own ack would have been counted.
    quarantined = svc.counts["messages_quarantined"]
    publish(mqtt_broker.host, mqtt_broker.port, f"{ROOT}/events/ack", [b"{"])
    wait_until(lambda: svc.counts["messages_quarantined"] > quarantined, 10, "the marker ack quarantined")
    assert svc.counts["acks_received"] == 1 and sum(e.event_id == own.event_id for e in heard) == 1
    rec.close()


def test_full_outbox_shows_in_the_state(tmp_path, mqtt_broker, start_service, caplog):
    mqtt_broker.stop()
    cfg = service_config(tmp_path, empty_video(tmp_path / "e.avi"), mqtt_broker, outbox={"max_events": 10})
    svc = start_service(cfg)
    ids = []
    for i in range(12):
        ev = events.IntegrityEvent(
            store_id="store-001", till_id="till-01", transaction_id=f"T{i}", alert_event_id="a", seconds_after_alert=1
        )
        svc.publish_event(ev)
        ids.append(ev.event_id)
    st = svc.state()
    assert st.outbox_full and st.outbox_depth == 10 and st.outbox_dropped == 2
    assert [r.event_id for r in svc.outbox.after(0, 20)] == ids[2:]
    assert f"dropped the oldest undelivered event {ids[0]}" in caplog.text
    with pytest.raises(event_bounds.SchemaError):
        svc.publish_event({"kind": "check"})  # a plug-in bug is refused, not stored
    with pytest.raises(event_bounds.SchemaError, match="seconds_after_alert"):  # a typed one that breaks the schema too
        svc.publish_event(
            events.IntegrityEvent(
                store_id="store-001",
                till_id="till-01",
                transaction_id="T-x",
                alert_event_id="a",
                seconds_after_alert="soon",
            )
        )
    assert [r.event_id for r in svc.outbox.after(0, 20)] == ids[2:]


def test_scans_that_get_no_check_leave_a_missed_event(tmp_path, parts):
    """No worker running (as while the service is busy or stopping): the 17th and 18th scans find
    the queue full, and the 16 waiting ones are recorded at shutdown; a stale scan is recorded
    and never queued. Every one of them is a schema-valid `missed` event in the outbox."""
    from datetime import datetime, timedelta

    from edge_app.till.intake import QUEUE_MAX

    cfg = service_config(tmp_path, empty_video(tmp_path / "e.avi"), None, triggers={"max_scan_age_seconds": 20})
    svc = Service(cfg, pipeline=parts[0], model=parts[1])
    subs = [svc.submit(Scan(Item("5010677850100", "alcohol"), f"Q-{i}"), "pos") for i in range(QUEUE_MAX + 2)]
    assert [s.status for s in subs] == ["started"] * QUEUE_MAX + ["busy"] * 2
    old = (datetime.now(UTC) - timedelta(seconds=90)).timestamp()
    stale = svc.submit(Scan(Item("5010677850100", "alcohol"), "Q-stale", sent_at=old), "pos")
    assert stale.status == "missed" and "90 s after the POS sent it" in stale.detail
    assert svc.state().scans_missed == {"stale": 1, "queue_full": 2, "shutdown": 0, "check_failed": 0}
    svc.stop()
    box = Outbox(cfg.outbox.path, 100)
    rows = [json.loads(r.payload) for r in box.after(0, 100)]
    box.close()
    for ev in rows:
        events.validate(ev)
    got = {(ev["transaction_id"], ev["reason"]) for ev in rows}
    assert got == (
        {(f"Q-{i}", "shutdown") for i in range(QUEUE_MAX)}
        | {(f"Q-{QUEUE_MAX}", "queue_full"), (f"Q-{QUEUE_MAX + 1}", "queue_full"), ("Q-stale", "stale")}
    )
    assert {ev["kind"] for ev in rows} == {"missed"} and rows[0]["trigger"]["sku"] == "5010677850100"
