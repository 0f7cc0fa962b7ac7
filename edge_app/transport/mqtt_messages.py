"""What passes between an MQTT link (edge_app.transport.mqtt) and its caller: the subscriptions
it asks for, the retained presence it keeps for a program, each inbound `Message` with the
`InboundAck` that hands it back to the broker, and the `LinkStatus` of its connection."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from paho.mqtt.subscribeoptions import SubscribeOptions

# A subscription: a leaf below the till's topic (or a topic pattern) and its MQTT options.
Subscription = tuple[str, SubscribeOptions]


@dataclass(frozen=True)
class Presence:
    """What a link that speaks for a program keeps retained on the broker: its availability
    (`online` while connected; `offline` as its Last Will and when it stops) and its state
    document, built by `state()` each time the link publishes it."""

    availability_leaf: str
    online: bytes
    offline: bytes
    state_leaf: str
    state: Callable[[], bytes]


@dataclass(frozen=True)
class Message:
    """One inbound message as the link hands it to its caller: `leaf` is the topic below the
    link's prefix (the whole topic when it is not below it); `retained` says the broker handed a
    stored retained message to a new subscription (not one just published); `ack()` tells the
    broker we are done with it (does nothing without manual_ack)."""

    leaf: str
    payload: bytes
    ack: Callable[[], object]
    retained: bool = False


class LinkChange(Enum):
    CONNECTED = "connected"  # session_present: whether the broker kept our session
    SUBSCRIBED = "subscribed"  # refused: the subscriptions the broker refused (the rest are granted)
    LOST = "lost"  # detail: the broker's or paho's reason
    FAILED = "failed"  # detail: why, in words; told once per cause, not once per attempt


@dataclass(frozen=True)
class LinkStatus:
    """What happened to the connection, for a caller that tells its own user (the feed's table)."""

    change: LinkChange
    detail: str = ""
    session_present: bool = False
    refused: tuple[tuple[str, str], ...] = ()  # (topic, reason) per refused subscription


def no_ack() -> None:
    """The `ack` a link without manual_ack hands its callback: paho acknowledged the message."""


class InboundAck:
    """Acknowledges one inbound message to the broker, once, whichever thread calls it first.
    Not sent when the broker has since forgotten our session (it will not redeliver the message
    then, and its packet id may belong to another message now)."""

    __slots__ = ("_send", "mid", "qos", "generation", "_done", "_lock")

    def __init__(self, send: Callable[[InboundAck], None], mid: int, qos: int, generation: int):
        self._send = send
        self.mid = mid
        self.qos = qos
        self.generation = generation  # the link's connection count when the message came
        self._done = False
        self._lock = threading.Lock()

    def __call__(self, *_ignored: object) -> None:  # *_ignored: usable as a Future done-callback
        with self._lock:
            if self._done:
                return
            self._done = True
        self._send(self)

    @property
    def done(self) -> bool:
        return self._done
