"""MQTT link: owns the paho client (v2 callback API, MQTT 5, QoS 1) and the in-order delivery of
an outbox to the broker. What it subscribes to (below a topic prefix, by default one till's),
whether it keeps a retained availability (with a Last Will) and state for its caller (`Presence`),
whether it delivers an outbox at all, and who is told of its connection (`LinkStatus`) are the
caller's: the till service, the standalone cashier display and the manager's feed (subscriber-only:
no outbox, no presence) each say their own (edge_app.transport.mqtt_messages). It knows no
message's meaning. The client it drives (login, TLS, the words for a failed connect) is built by
`edge_app.transport.mqtt_setup`.

Delivery rule: an outbox row is handed to paho only while connected, at most WINDOW at a time,
oldest first, and deleted from the outbox only when its PUBACK arrives. After a reconnect paho
itself re-sends the rows that were in flight; new rows wait until those are acknowledged, so
the broker sees the events in the order they were stored. Consumers de-duplicate by event_id
(a QoS 1 message may arrive twice when a connection drops between PUBLISH and PUBACK).

Inbound rule (`manual_ack=True`, the till service and the feed): a message is acknowledged to the
broker only when its handler says it is done with it (an InboundAck), so a message whose record is
not yet stored is still the broker's to deliver again after a crash. The broker then holds at most
RECEIVE_MAX unacknowledged messages out to us (MQTT 5 Receive Maximum).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_app.config import Config
from edge_app.core import topics
from edge_app.transport.mqtt_messages import InboundAck, LinkChange, LinkStatus, Message, Presence, Subscription, no_ack
from edge_app.transport.mqtt_setup import (
    connect_error,
    connect_properties,
    lasting_failure,
    login_refused,
    make_client,
    reconnect_max,
    session_client_id,
    trust_warnings,
)
from edge_app.transport.outbox import Outbox

log = logging.getLogger(__name__)

WINDOW = 10  # events in flight at once; enough for a LAN broker, small enough to re-send cheaply
REFUSED_RETRY_S = 10.0  # pause after the broker refuses an event (ACL) before sending it again
# Inbound messages the broker may have out to us unacknowledged (MQTT 5 Receive Maximum, sent in
# CONNECT with manual_ack). The till holds a scan unacknowledged until its record is stored: at
# most the check queue (16) plus the one being checked plus repeats of an open check; the rest of
# the window keeps sales and cashier answers flowing meanwhile. When it is full the broker only
# waits (checks finish and acknowledge on their own), it does not drop anything.
RECEIVE_MAX = 100


class MqttLink:
    """Connects in the background and keeps reconnecting; never raises on a broker outage.

    `on_message(Message)` gets every message on `subscriptions` (leaves below `prefix`, by default
    this till's topic, e.g. "pos/scan"; with prefix "" whole topics), on paho's network thread:
    keep it quick. With `manual_ack` the message is acknowledged to the broker when its `ack()` is
    called (an InboundAck); without, `ack` does nothing.

    Without an `outbox` the link is subscriber-only (the manager's feed): nothing to deliver, no
    sender thread. With `on_status` the caller is told of each connection change and says it to
    its user itself; the link then logs those changes at DEBUG only.

    With `presence` the link speaks for a program: it owns that program's retained availability
    and state topics. A client that must not (the standalone cashier display, the feed) passes
    none, its own `client_id`, and `session_expiry_s` so that messages published while it restarts
    still reach it.
    """

    def __init__(
        self,
        cfg: Config,
        outbox: Outbox | None,
        on_message: Callable[[Message], None],
        subscriptions: Sequence[Subscription] = (),
        *,
        presence: Presence | None = None,
        client_id: str | None = None,
        session_expiry_s: int | None = None,
        name: str = "MQTT",
        manual_ack: bool = False,
        prefix: str | None = None,
        on_status: Callable[[LinkStatus], None] | None = None,
    ):
        self.cfg = cfg
        self._manual_ack = manual_ack
        self.outbox = outbox
        self._on_message_cb = on_message
        self._on_status = on_status
        self._presence = presence
        self._subscriptions = tuple(subscriptions)
        self._session_expiry_s = session_expiry_s
        self._name = name  # how the log lines name this link
        self._prefix = topics.topic(cfg.store_id, cfg.till_id, "") if prefix is None else prefix
        self.client_id = (
            client_id or cfg.mqtt.client_id or session_client_id(cfg.mqtt, f"agecheck-{cfg.store_id}-{cfg.till_id}")
        )
        self.client = make_client(cfg.mqtt, self.client_id)
        if manual_ack:
            self.client.manual_ack_set(True)
        if presence is not None:
            self.client.will_set(self._topic(presence.availability_leaf), presence.offline, qos=1, retain=True)
        # Room for our window plus the retained availability/state messages.
        if outbox is not None:
            self.client.max_inflight_messages_set(WINDOW + 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self._cond = threading.Condition()
        self._connected = False
        # Set once the broker has granted every subscription.
        self.subscribed = threading.Event()
        self._generation = 0  # bumped on every connect
        # First connection of the broker session we are in: an ack for a message received on an
        # earlier connection is sent only when the broker kept the session since then.
        self._session_generation = 0
        self.acks_sent = 0
        self.acks_dropped = 0  # acks not sent: no connection, or the broker had forgotten the session
        self._inflight: dict[int, tuple[int, int]] = {}  # mid -> (outbox seq, generation)
        # PUBACKs not yet settled: mid -> accepted (False: the broker refused it, e.g. ACL).
        self._acked: dict[int, bool] = {}
        self._hold_until = 0.0  # after a refusal, pause before trying that row again
        self._other_mids: set[int] = set()  # availability/state publishes (not outbox rows)
        self._last_sent = 0  # highest outbox seq handed to paho
        self._stop = threading.Event()
        self._sender: threading.Thread | None = None
        self._ever_connected = False
        self.delivered = 0
        self.heartbeat = time.monotonic()
        self.trust_warnings = trust_warnings(cfg.mqtt)
        # Why the broker cannot be used now, in words (None while connected); the till's `state`.
        self.error: str | None = None
        self.connect_failures = 0  # attempts that failed (TCP, TLS or a refused login) since start
        self._logged_error: str | None = None
        self._backed_off = False  # paho's reconnect delay is pinned at its maximum

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> MqttLink:
        m = self.cfg.mqtt
        log.info(
            "connecting to MQTT broker %s:%d as %s%s", m.host, m.port, self.client_id, " (TLS)" if m.tls.enabled else ""
        )
        for warning in self.trust_warnings:
            log.warning("%s: NOT SECURE: %s", self._name, warning)
        # connect_async + loop_start: an unreachable broker at start-up is retried like any
        # other outage instead of stopping the service.
        if self._session_expiry_s is None and not self._manual_ack:
            self.client.connect_async(m.host, m.port, keepalive=m.keepalive)
        else:
            props = connect_properties(RECEIVE_MAX if self._manual_ack else None, self._session_expiry_s)
            if self._session_expiry_s is None:
                self.client.connect_async(m.host, m.port, keepalive=m.keepalive, properties=props)
            else:
                self.client.connect_async(m.host, m.port, keepalive=m.keepalive, clean_start=False, properties=props)
        self.client.loop_start()
        if self.outbox is not None:
            self._sender = threading.Thread(target=self._send_loop, name="mqtt-sender", daemon=True)
            self._sender.start()
        return self

    def _topic(self, leaf: str) -> str:
        return self._prefix + leaf

    def _waiting(self) -> str:
        """What a log line about the connection adds for a link that delivers an outbox."""
        return "" if self.outbox is None else f"; events wait in the outbox ({self.outbox.depth()} now)"

    def _tell(self, status: LinkStatus, level: int, msg: str, *args: object) -> None:
        """Log a connection change, or hand it to the caller that says it to its user itself."""
        if self._on_status is None:
            log.log(level, msg, *args)
            return
        log.debug(msg, *args)
        try:
            self._on_status(status)
        except Exception:  # the caller's words must never take paho's thread down
            log.exception("%s: telling the caller of a connection change failed", self._name)

    def stop(self, flush_timeout: float = 3.0) -> None:
        """Deliver what can be delivered within `flush_timeout`, publish `offline` (retained)
        and disconnect. Undelivered events stay in the outbox for the next start."""
        deadline = time.monotonic() + flush_timeout
        with self._cond:
            while (
                self.outbox is not None
                and self._connected
                and (self._inflight or self.outbox.after(self._last_sent, 1))
            ):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.1))
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._sender is not None:
            self._sender.join(5)
        if self._connected and self._presence is not None:
            info = self.client.publish(
                self._topic(self._presence.availability_leaf), self._presence.offline, qos=1, retain=True
            )
            try:
                info.wait_for_publish(timeout=max(0.5, deadline - time.monotonic()))
            except (RuntimeError, ValueError):
                pass  # connection went away meanwhile: the Last Will says offline instead
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def connected(self) -> bool:
        return self._connected

    def wake(self) -> None:
        """A new row is in the outbox."""
        with self._cond:
            self._cond.notify_all()

    def publish_state(self) -> None:
        if not self._connected or self._presence is None:
            return
        try:
            payload = self._presence.state()
        except Exception:
            log.exception("could not build the state document")
            return
        self._publish_other(self._topic(self._presence.state_leaf), payload, retain=True)

    # -- paho callbacks (network thread) --------------------------------------------------------------
    def _publish_other(self, topic: str, payload: bytes, retain: bool) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        with self._cond:
            if self._acked.pop(info.mid, None) is None:
                self._other_mids.add(info.mid)

    def _failed(self, error: str, lasting: bool, hint: str) -> None:
        """One failed attempt. A lasting cause (a refused login, a certificate) pins paho's back-off
        at mqtt.reconnect_max_seconds at once; a cause is logged when it first appears or changes,
        not on every attempt, so a wrong password is one line, not one a second."""
        self.connect_failures += 1
        self.error = error
        if lasting and not self._backed_off:
            top = reconnect_max(self.cfg.mqtt)
            self.client.reconnect_delay_set(min_delay=top, max_delay=top)
            self._backed_off = True
        if error != self._logged_error:
            self._logged_error = error
            self._tell(
                LinkStatus(LinkChange.FAILED, error + hint),
                logging.ERROR if lasting else logging.WARNING,
                "%s: broker %s:%d: %s%s%s; retrying every %d s at most",
                self._name,
                self.cfg.mqtt.host,
                self.cfg.mqtt.port,
                error,
                hint,
                self._waiting(),
                reconnect_max(self.cfg.mqtt),
            )

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            user = self.cfg.mqtt.username
            self._failed(
                login_refused(reason_code),
                True,
                f" (as user {user!r}: check mqtt.username and the password)"
                if user
                else " (no mqtt.username is set: this broker wants a login)",
            )
            return
        if self._backed_off:
            self.client.reconnect_delay_set(min_delay=1, max_delay=reconnect_max(self.cfg.mqtt))
            self._backed_off = False
        self.error = None
        self._logged_error = None
        with self._cond:
            self._connected = True
            self._generation += 1
            if not flags.session_present:
                self._session_generation = self._generation
            self._cond.notify_all()
        again = " again" if self._ever_connected else ""
        self._ever_connected = True
        self._tell(
            LinkStatus(LinkChange.CONNECTED, session_present=bool(flags.session_present)),
            logging.INFO,
            "%s: connected to broker %s:%d%s as %s (%s session)%s",
            self._name,
            self.cfg.mqtt.host,
            self.cfg.mqtt.port,
            again,
            self.client_id,
            "resumed" if flags.session_present else "new",
            "" if self.outbox is None else f"; outbox holds {self.outbox.depth()} event(s) to deliver",
        )
        if self._presence is not None:
            self._publish_other(self._topic(self._presence.availability_leaf), self._presence.online, retain=True)
            self.publish_state()
        if self._subscriptions:
            client.subscribe([(self._topic(leaf), opts) for leaf, opts in self._subscriptions])
        else:
            self.subscribed.set()  # a link that only delivers its outbox

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        # One code per subscription, in their order.
        refused = tuple(
            (self._topic(leaf), str(rc)) for (leaf, _), rc in zip(self._subscriptions, reason_codes) if rc.is_failure
        )
        status = LinkStatus(LinkChange.SUBSCRIBED, refused=refused)
        if refused:
            self._tell(
                status,
                logging.ERROR,
                "%s: broker refused a subscription to %s; check the broker's ACL",
                self._name,
                ", ".join(f"{topic} ({why})" for topic, why in refused),
            )
            return
        # Said once granted, not at connect: until then a message on these topics is dropped.
        self._tell(
            status, logging.INFO, "%s: subscribed to %s", self._name, ", ".join(leaf for leaf, _ in self._subscriptions)
        )
        self.subscribed.set()
        self.publish_state()  # the state says whether scans can reach us

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this from inside its `except OSError:` around the connect, so the cause
        # (refused, unresolvable, a TLS verify error) is the exception being handled.
        exc = sys.exc_info()[1]
        self._failed(connect_error(exc, self.cfg.mqtt), lasting_failure(exc), "")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.subscribed.clear()
        with self._cond:
            was = self._connected
            self._connected = False
            self._cond.notify_all()
        if was and not self._stop.is_set():
            self._tell(
                LinkStatus(LinkChange.LOST, str(reason_code)),
                logging.WARNING,
                "%s: lost the broker (%s)%s; reconnecting",
                self._name,
                reason_code,
                self._waiting(),
            )

    def _on_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode, properties: Properties
    ) -> None:
        with self._cond:
            if mid in self._other_mids:
                self._other_mids.discard(mid)
                if reason_code.is_failure:
                    log.error("MQTT broker refused our availability/state message: %s", reason_code)
            else:
                self._acked[mid] = not reason_code.is_failure
            self._cond.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        prefix = self._prefix
        leaf = msg.topic[len(prefix) :] if msg.topic.startswith(prefix) else msg.topic
        ack: Callable[[], object] = no_ack
        if self._manual_ack:
            with self._cond:
                gen = self._generation
            ack = InboundAck(self._ack, msg.mid, msg.qos, gen)
        try:
            self._on_message_cb(Message(leaf, bytes(msg.payload), ack, bool(msg.retain)))
        except Exception:  # a bad message must never take paho's thread down with it
            log.exception("handling a message on %s failed; message dropped", msg.topic)
            ack()

    def _ack(self, ack: InboundAck) -> None:
        """Send the PUBACK for a message its handler is done with (InboundAck calls this)."""
        if ack.qos == 0:
            return
        with self._cond:
            ok = self._connected and ack.generation >= self._session_generation
        if not ok:
            # Disconnected: the broker redelivers it on the next connection (a duplicate the
            # handler recognises). Session forgotten: there is nothing left to acknowledge.
            self.acks_dropped += 1
            return
        rc = self.client.ack(ack.mid, ack.qos)
        if rc == mqtt.MQTT_ERR_SUCCESS:
            self.acks_sent += 1
        else:
            self.acks_dropped += 1

    # -- delivery (sender thread) ----------------------------------------------------------------
    def _settle_acks(self) -> list[int]:
        """Outbox seqs acknowledged since the last call (lock held). A refused row stays in the
        outbox and is sent again (from it on, to keep the order) after REFUSED_RETRY_S."""
        done = []
        for mid in [m for m in self._acked if m in self._inflight]:
            seq = self._inflight.pop(mid)[0]
            if self._acked.pop(mid):
                done.append(seq)
            else:
                self._refused(seq)
        return done

    def _refused(self, seq: int) -> None:
        log.error(
            "MQTT broker refused outbox event #%d (check the broker's ACL for this till's events topics); "
            "it stays in the outbox and is retried in %.0f s",
            seq,
            REFUSED_RETRY_S,
        )
        self._last_sent = min(self._last_sent, seq - 1)
        self._hold_until = time.monotonic() + REFUSED_RETRY_S

    def _can_send(self) -> bool:
        if not self._connected or len(self._inflight) >= WINDOW or time.monotonic() < self._hold_until:
            return False
        # Rows from before the last reconnect are being re-sent by paho: let them land first.
        return all(gen == self._generation for _, gen in self._inflight.values())

    def _send_loop(self) -> None:
        outbox = self.outbox
        assert outbox is not None, "the sender runs only for a link with an outbox"
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            with self._cond:
                done = self._settle_acks()
                sendable = self._can_send()
                if not done and not sendable:
                    self._cond.wait(0.5)
                    done = self._settle_acks()
                    sendable = self._can_send()
                room = WINDOW - len(self._inflight)
                gen = self._generation
            try:
                for seq in done:
                    outbox.delete(seq)
                    self.delivered += 1
                if not sendable or room <= 0:
                    continue
                rows = outbox.after(self._last_sent, room)
                if not rows:
                    with self._cond:
                        if not self._acked:
                            self._cond.wait(0.5)
                    continue
                for row in rows:
                    info = self.client.publish(row.topic, row.payload, qos=1)
                    with self._cond:
                        self._last_sent = row.seq
                        accepted = self._acked.pop(info.mid, None)
                        if accepted is None:
                            self._inflight[info.mid] = (row.seq, gen)
                        elif not accepted:
                            self._refused(row.seq)
                    if accepted:
                        outbox.delete(row.seq)
                        self.delivered += 1
                    if accepted is False:
                        break
            except Exception:  # keep delivering: a transient disk or socket error is retried
                log.exception("outbox delivery failed; retrying in 1 s")
                self._stop.wait(1.0)

    def pending(self) -> int:
        with self._cond:
            return len(self._inflight)
