"""Manager feed (`agecheck feed`): subscribes to one store's (or every store's) events and its
tills' retained state and availability, on a subscriber-only `MqttLink` with a persistent session
(QoS 1, so the broker keeps what is published while the feed is away), stores each message once in
the event store (`edge_app.manager.store`) and prints the events live as a table
(`edge_app.manager.live_table`).

A message is acknowledged to the broker (manual PUBACK) only after its row is committed, so a crash
or a full disk between the two means a redelivery (de-duplicated by event_id) rather than a loss.
The table prints a line when a new event shows a hole in its publisher's numbers below it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import signal
import sys
import tempfile
import threading
import time
import zoneinfo
from datetime import tzinfo
from pathlib import Path
from typing import TextIO

from paho.mqtt.subscribeoptions import SubscribeOptions

from edge_app.config import Config
from edge_app.core import events, topics
from edge_app.errors import UsageError
from edge_app.manager import tills
from edge_app.manager.db import StoreError, StoreUnavailable
from edge_app.manager.live_table import TablePrinter, gap_text
from edge_app.manager.store import FeedStore, Stored
from edge_app.stopping import stop_on_signals
from edge_app.transport import locks
from edge_app.transport.mqtt import MqttLink
from edge_app.transport.mqtt_messages import LinkChange, LinkStatus, Message
from edge_app.transport.mqtt_setup import session_client_id, trust_warnings

log = logging.getLogger(__name__)


class FeedInUse(UsageError):
    """Another feed on this machine already uses this broker session (client id)."""


def session_lock_path(cfg: Config, client_id: str) -> Path:
    """The machine-wide lock file of one broker session: two feeds with one client id knock each
    other off the broker (7 times in 10 s) and split the events between their databases, whatever
    database each writes. /run/lock is shared by every user and unit (a unit's /tmp may be private)."""
    key = hashlib.sha256(f"{cfg.mqtt.host}:{cfg.mqtt.port}/{client_id}".encode()).hexdigest()[:16]
    folder = Path("/run/lock")
    if not (folder.is_dir() and os.access(folder, os.W_OK)):
        folder = Path(tempfile.gettempdir())
    return folder / f"agecheck-feed-{key}.lock"


def subscription(cfg: Config, all_stores: bool) -> str:
    return topics.event_subscription("+" if all_stores else cfg.store_id)


class Feed:
    """Connects, stores and prints until stop(). Reconnects by itself (the link's paho thread).

    Messages are stored by one writer thread, in the order they came, and each is acknowledged
    once it is kept (a row or a quarantine row). When the database cannot take anything (server
    down, disk full) the writer keeps the message and tries it again, backing off from
    RETRY_FIRST_S to RETRY_MAX_S, says so once, and says so again when the store is back: the
    broker holds everything after it meanwhile (its in-flight window is full), and nothing is lost
    or needs a restart. The MQTT thread never waits on the database, so the broker link stays up.
    """

    RETRY_FIRST_S = 0.5
    RETRY_MAX_S = 10.0

    def __init__(
        self,
        cfg: Config,
        db_path: str | Path,
        all_stores: bool = False,
        out: TextIO = sys.stdout,
        tz: tzinfo | None = None,
    ) -> None:
        self.cfg = cfg
        self.store = FeedStore(db_path, cfg.feed.max_payload_bytes)
        self.topic = subscription(cfg, all_stores)
        # The events first: the link reports refusals in this order, and only theirs is fatal.
        self.topics = [self.topic, *tills.subscriptions("+" if all_stores else cfg.store_id)]
        self.client_id = cfg.feed.client_id or session_client_id(
            cfg.mqtt, f"agecheck-feed-{'all-stores' if all_stores else cfg.store_id}"
        )
        self.lock_path = session_lock_path(cfg, self.client_id)
        try:
            self._lock_fd: int | None = locks.take(self.lock_path)
        except locks.LockHeld as held:
            self.store.close()
            raise FeedInUse(
                f"another feed on this machine already uses the broker session {self.client_id!r} at "
                f"{cfg.mqtt.host}:{cfg.mqtt.port} ({held.owner}): stop it, or give this one its own "
                "feed.client_id"
            ) from None
        except OSError as exc:
            self.store.close()
            raise FeedInUse(
                f"cannot lock the feed's broker session through {self.lock_path} ({exc.strerror})"
            ) from None
        self.table = TablePrinter(out, tz, show_store=all_stores)
        # Set on the broker's SUBACK for the events: only from then on are events published to the
        # store kept for us (on a new session), so "subscribed" is reported then, not when asked for.
        self.subscribed = threading.Event()
        self._inbox: queue.Queue[Message | None] = queue.Queue()
        self._stop = threading.Event()
        # When the store stopped taking messages (monotonic), None while it takes them.
        self._unavailable_since: float | None = None
        self._writer = threading.Thread(target=self._write_loop, name="feed-store-writer", daemon=True)
        # Subscriber-only (no outbox, no presence of its own); whole topics (prefix ""); a session
        # the broker keeps for feed.session_expiry_seconds; PUBACK only after the row is committed.
        # The MQTT thread only queues a message: waiting there on a database that is away would
        # stop the keepalives and lose the broker link too.
        self.link = MqttLink(
            cfg,
            None,
            self._inbox.put,
            [(t, SubscribeOptions(qos=1)) for t in self.topics],
            client_id=self.client_id,
            session_expiry_s=cfg.feed.session_expiry_seconds,
            name="feed",
            manual_ack=True,
            prefix="",
            on_status=self._on_status,
        )

    def start(self) -> Feed:
        self._writer.start()
        self.link.start()
        return self

    @property
    def store_unavailable(self) -> bool:
        """Whether the writer is holding a message the database could not take yet."""
        return self._unavailable_since is not None

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(None)
        try:
            self.link.stop()
        finally:
            if self._writer.is_alive():
                self._writer.join(timeout=30)
            self.store.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the session to the next feed
                self._lock_fd = None

    def _on_status(self, st: LinkStatus) -> None:
        """The connection's changes, said in the table (the link's paho thread)."""
        where = f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}"
        if st.change is LinkChange.CONNECTED:
            self.table.note(
                f"connected to {where} as {self.client_id} ({'resumed' if st.session_present else 'new'} session)"
            )
        elif st.change is LinkChange.SUBSCRIBED:
            self._on_subscribed(dict(st.refused))
        elif st.change is LinkChange.LOST:
            self.subscribed.clear()
            self.table.note(f"broker connection lost ({st.detail}); reconnecting")
        else:
            self.table.note(f"cannot connect to the broker at {where}: {st.detail}; retrying")

    def _on_subscribed(self, refused: dict[str, str]) -> None:
        if self.topic in refused:
            self.table.note(f"broker refused the subscription to {self.topic}: {refused[self.topic]}")
            return
        if refused:
            # The events still flow; only silent tills and gaps at the end go unseen.
            topic, why = next(iter(refused.items()))
            self.table.note(
                f"subscribed to {self.topic}; the broker refused {topic} ({why}), so "
                "silent tills and events missing at the end of a till's numbers are not shown"
            )
        else:
            self.table.note(f"subscribed to {self.topic} and the tills' state")
        self.subscribed.set()

    def _write_loop(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None or self._stop.is_set():
                return  # not acknowledged: the broker keeps what is left for the next start
            self._write(item)

    def _write(self, msg: Message) -> None:
        delay = self.RETRY_FIRST_S
        while True:
            try:
                res = self._keep(msg)
                break
            except StoreUnavailable as exc:
                self._store_unavailable(exc)
                if self._stop.wait(delay):
                    return  # stopping: not acknowledged, the broker keeps it
                delay = min(delay * 2, self.RETRY_MAX_S)
        if self._unavailable_since is not None:
            away = time.monotonic() - self._unavailable_since
            self._unavailable_since = None
            # The log only (stderr/journal, which a terminal shows too): once, like the outage.
            log.warning("feed: the event store takes messages again after %.0f s; storing what the broker held", away)
        if res is None:
            return
        # Sent only while the broker still holds the message for this session (see InboundAck).
        msg.ack()
        try:
            self._show(msg, res)
        except Exception:  # the row is kept; a line it cannot print must not end the writer
            log.exception("feed: could not show the message on %s (it is stored)", msg.leaf)

    def _keep(self, msg: Message) -> Stored | None:
        """Store or quarantine the message; StoreUnavailable when the database is away. None when
        even its quarantine failed for a reason other than the database being away (a bug): it is
        named in the log and acknowledged, since holding it would stop the feed for good."""
        try:
            return self.store.keep(msg.leaf, msg.payload, retained=msg.retained)
        except StoreUnavailable:
            raise
        except Exception as exc:
            log.exception("feed: handling a message on %s failed", msg.leaf)
            try:
                return self.store.quarantine(msg.leaf, msg.payload, f"could not be handled: {exc!r}"[:500])
            except StoreUnavailable:
                raise
            except Exception:
                digest = hashlib.sha256(msg.payload).hexdigest()[:16]
                log.exception(
                    "feed: DROPPED a message on %s (%d bytes, sha256 %s…): it can be neither stored nor quarantined",
                    msg.leaf,
                    len(msg.payload),
                    digest,
                )
                msg.ack()
                return None

    def _store_unavailable(self, exc: StoreError) -> None:
        """Said once per outage (the retries are silent), with the cause."""
        if self._unavailable_since is not None:
            return
        self._unavailable_since = time.monotonic()
        log.error(
            "feed: the event store cannot take messages (%s); the broker holds them meanwhile; retrying "
            "every %g-%g s until it can",
            exc,
            self.RETRY_FIRST_S,
            self.RETRY_MAX_S,
        )

    def _show(self, msg: Message, res: Stored) -> None:
        if res.status == "new":
            assert res.event is not None, "the store decodes every new event"
            replaces = res.event.replaces_event_id if isinstance(res.event, events.AckEvent) else None
            self.table.event(res.event, self.store.event(replaces) if replaces else None)
            if res.gap is not None:
                log.warning("feed: %s", gap_text(res.gap, self.table.tz, True))
                self.table.note(gap_text(res.gap, self.table.tz, self.table.show_store))
        elif res.status == "till":
            return
        elif res.status == "quarantined":
            self.table.note(f"quarantined a message on {msg.leaf}: {res.reason}")
        else:
            log.debug("feed: duplicate %s ignored", res.event.event_id if res.event else "?")


def main(args, cfg: Config) -> int:
    db_path = args.db or cfg.feed.db_path
    tz = zoneinfo.ZoneInfo(cfg.feed.timezone) if cfg.feed.timezone else None
    feed = Feed(cfg, db_path, all_stores=bool(args.all_stores), tz=tz)
    for warning in trust_warnings(cfg.mqtt):
        # The feed is what the manager trusts: a forged approval stored here looks real. (The link
        # logs each one too when it starts.)
        print(f"agecheck feed: NOT SECURE: {warning}", file=sys.stderr, flush=True)
    c = feed.store.counts()
    print(
        f"agecheck feed: {feed.store.label}: {c['events']} events stored so far, {c['quarantined']} quarantined; "
        f"connecting to {cfg.mqtt.host}:{cfg.mqtt.port} (Ctrl-C to stop)",
        flush=True,
    )
    stop = threading.Event()
    stop_on_signals(stop, (signal.SIGTERM,))
    feed.start()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    try:
        counts = feed.store.counts()
    except StoreError as exc:
        counts = None
        print(f"agecheck feed: stopped; the event store cannot be counted ({exc})", flush=True)
    feed.stop()
    if counts is not None:
        print(
            f"agecheck feed: stopped; {counts['events']} events stored, {counts['duplicates']} duplicates "
            f"ignored, {counts['quarantined']} quarantined",
            flush=True,
        )
    return 0
