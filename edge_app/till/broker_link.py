"""The till's link to the broker: what it hears there (SUBSCRIPTIONS: scans and sales from the
POS, answers from a standalone cashier display) and how its session is kept (persistent, scans
acknowledged only once their record is stored, the till's retained availability and state)."""

from __future__ import annotations

from collections.abc import Callable

from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_app.config import Config
from edge_app.core import events, state, topics
from edge_app.core.pos import Sale, Scan
from edge_app.transport.mqtt import MqttLink
from edge_app.transport.mqtt_messages import Message, Presence, Subscription
from edge_app.transport.outbox import Outbox

# No-local on events/ack: answers from a standalone display reach the service, its own (display
# inside the service) do not come back a second time.
SUBSCRIPTIONS: tuple[Subscription, ...] = (
    (Scan.TOPIC, SubscribeOptions(qos=1)),
    (Sale.TOPIC, SubscribeOptions(qos=1)),
    (topics.event_leaf(events.AckEvent), SubscribeOptions(qos=1, noLocal=True)),
)


def till_link(
    cfg: Config, outbox: Outbox, on_message: Callable[[Message], None], state_document: Callable[[], bytes]
) -> MqttLink:
    """The link that delivers `outbox`, hands what it hears to `on_message` and keeps the till's
    retained state (`state_document()`, built each time it is published). Raises ConfigError."""
    # A persistent session (stable client id, clean_start False, an expiry): scans the POS
    # publishes while the service restarts are kept by the broker and arrive afterwards.
    # manual_ack: a scan is acknowledged to the broker when its record is stored (Service.submit).
    return MqttLink(
        cfg,
        outbox,
        on_message,
        SUBSCRIPTIONS,
        presence=Presence(state.AVAILABILITY_LEAF, state.ONLINE, state.OFFLINE, state.STATE_LEAF, state_document),
        session_expiry_s=cfg.mqtt.session_expiry_seconds,
        manual_ack=True,
    )
