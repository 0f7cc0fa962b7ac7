"""The bench's subscriber: `wait_check` finds one transaction's check among everything on the
till's event topics (through a real broker) and hands it back decoded, so the figures read the
typed event instead of decoding the payload a second time."""

from __future__ import annotations

import time

from edge_app.core import events, topics
from edge_app.devtools.bench.harness import Listener
from tests.edge_app.feed_util import alert_event, check_event
from tests.edge_app.service_util import publish


def test_wait_check_returns_the_decoded_check_of_its_transaction(mqtt_broker):
    listener = Listener(mqtt_broker.host, mqtt_broker.port, [topics.event_topic("store-001", "till-01")], "test")
    try:
        other, ours = check_event(txn="T-other"), check_event(txn="T-ours")
        before = time.monotonic()
        publish(
            mqtt_broker.host,
            mqtt_broker.port,
            topics.event_topic("store-001", "till-01", events.AlertEvent),
            [events.encode(alert_event(ours))],
        )
        publish(
            mqtt_broker.host,
            mqtt_broker.port,
            topics.event_topic("store-001", "till-01", events.CheckEvent),
            [events.encode(other), events.encode(ours)],
        )
        got = listener.wait_check("T-ours", 10)
        assert got is not None and isinstance(got.event, events.CheckEvent)
        assert got.event.event_id == ours["event_id"] and got.event.to_dict() == ours
        assert before <= got.at <= time.monotonic()
        assert listener.wait_check("T-never", 0.3) is None
    finally:
        listener.close()
