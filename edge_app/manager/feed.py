"""Manager feed (`agecheck feed`): subscribes to one store's (or every store's) events with a
persistent MQTT session, stores each event once (de-duplicated by event_id) in the event store
(`edge_app.manager.db`: a SQLite file, or PostgreSQL for a head office), and prints them live as a
table.

It owns what goes into the store (read by `edge_app.manager.report` and `.dashboard`): table
`events` (one row per event_id, with the store, till, publisher and sequence number, and
`replaces_event_id` for the cashier's corrections (Undo), read with `edge_app.core.answers` by
`answer_for`), table `quarantine` (malformed JSON, unknown schema versions, events that fail validation or do
not match their topic - kept once per distinct message with the reason and a count, never parsed
again) and table `counters`
(duplicates seen). A message is acknowledged to the broker (manual PUBACK) only after its row is
committed, so a crash or a full disk between the two means a redelivery (de-duplicated) rather
than a loss.

Gaps: events carry their publisher's sequence number (`transport.outbox`). The holes in those
numbers are worked out from what is stored (`gap_rows`), so an event that arrives late closes its
hole; the live table prints a line when a new event shows a hole below it. The tills' retained
`state` and `availability` are kept too (`edge_app.manager.tills`): a till's state numbers the
events it has published, so a hole at the end, after its last stored event, shows before its next
event does (a trailing gap).
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
from dataclasses import dataclass
from datetime import tzinfo
from pathlib import Path
from typing import Any, Literal, TextIO

from edge_app.core import events, payloads
from edge_app.core.answers import current_answer
from edge_app.core.times import local_dt, now_iso
from edge_app.core.words import ANSWER_SHORT, DECISION_SHORT, INTEGRITY_REASON_TEXT, Answer, Decision, IntegrityReason
from edge_app.stopping import stop_on_signals
from edge_app.config import Config
from edge_app.errors import UsageError
from edge_app.manager.db import EVENT_FIELD_COLUMNS, MESSAGE_COLUMNS, Database, RowRejected, StoreError, StoreUnavailable
from edge_app.manager.db import target as db_target
from edge_app.manager import tills
from edge_app.transport import locks
from edge_app.transport.mqtt import (connect_error, connect_properties, make_client, session_client_id,
                                     trust_warnings)

log = logging.getLogger(__name__)

# Quarantined payloads are kept up to this size; the real size is stored next to them.
QUARANTINE_KEEP_BYTES = 1024 * 1024


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


class FeedDBError(UsageError):
    """The feed database cannot be opened or is not one of ours."""


@dataclass(frozen=True)
class Stored:
    status: Literal["new", "duplicate", "quarantined", "till"]  # till: a till's state or availability, kept
    event: events.Event | None = None  # decoded once, by check_message
    reason: str | None = None
    gap: Gap | None = None  # a new event that shows some before it are missing


def check_message(topic: str, payload: bytes, max_bytes: int) -> tuple[events.Event | None, str | None]:
    """(typed event, None) for a good event, (None, reason) for one to quarantine."""
    if len(payload) > max_bytes:
        return None, f"payload is {len(payload)} bytes, more than feed.max_payload_bytes={max_bytes}"
    try:
        ev = events.decode_event(payload, payloads.Limits(max_bytes))
    except payloads.PayloadError as exc:
        return None, f"malformed JSON: {exc}"
    except events.SchemaError as exc:
        return None, f"invalid event: {exc}"
    parts = events.parse_event_topic(topic)
    if parts is None:
        return None, f"topic {topic!r} is not an agecheck events topic"
    store, till, kind = parts
    if (store, till, kind) != (ev.store_id, ev.till_id, ev.KIND):
        return None, (f"event says {ev.store_id}/{ev.till_id}/{ev.KIND} "
                      f"but came on {store}/{till}/{kind}")
    return ev, None


def read_stored(event_id: str, payload: str) -> events.Event | None:
    """The typed event of a stored row (its `payload` column), decoded as the feed decoded it.
    None, with a warning naming the event, when the payload no longer reads as a valid event (a
    store written by another build, or edited by hand): a reader leaves that row out and goes on."""
    try:
        return events.decode_event(payload)
    except ValueError as exc:  # payloads.PayloadError or events.SchemaError: both say what is wrong
        log.warning("event store: event %s left out: its stored payload is not a valid event (%s)", event_id, exc)
        return None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else (None if v is None else str(v))


_COLUMNS = (*EVENT_FIELD_COLUMNS, *MESSAGE_COLUMNS)
_INSERT = (f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})"
           " ON CONFLICT (event_id) DO NOTHING")
_AS_STORED = {"text": _text, "num": _num,
              "int": lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None}


@dataclass(frozen=True)
class Gap:
    """Events of one publisher that never reached the feed: numbers after_seq+1 .. before_seq-1,
    sent between after_ts and before_ts."""

    store_id: str
    publisher: str
    till_id: str
    after_seq: int
    before_seq: int
    after_ts: str
    before_ts: str
    # A hole at the end: numbers the till's latest state says it has published after the last one
    # stored (before_seq is that state's last number + 1, before_ts its time), `waiting` of them
    # still in its outbox then. None: a hole between two stored events.
    waiting: int | None = None

    @property
    def missing(self) -> int:
        return self.before_seq - self.after_seq - 1


def gap_rows(db: Database, store: str | None = None) -> list[Gap]:
    """Every hole in every publisher's sequence numbers (a late event that fills a hole closes
    it: the holes are worked out from what is stored, not remembered)."""
    where = "publisher IS NOT NULL" + (" AND store_id = ?" if store else "")
    rows = db.query(
        "SELECT store_id, publisher, till_id, prev_seq, seq, prev_ts, ts FROM ("
        " SELECT store_id, publisher, till_id, seq, ts,"
        "  LAG(seq) OVER (PARTITION BY store_id, publisher ORDER BY seq) AS prev_seq,"
        "  LAG(ts) OVER (PARTITION BY store_id, publisher ORDER BY seq) AS prev_ts"
        f" FROM events WHERE {where}) AS numbered WHERE seq > prev_seq + 1 ORDER BY store_id, publisher, seq",
        (store,) if store else ())
    holes = [Gap(r[0], r[1], r[2], int(r[3]), int(r[4]), r[5], r[6]) for r in rows]
    ends = [Gap(t.store_id, t.till_id, t.till_id, t.after_seq, t.last_seq + 1, t.after_ts, t.state_ts, t.waiting)
            for t in tills.trailing(db, store)]
    return holes + ends


class FeedStore:
    """The feed's event store (a SQLite file or a PostgreSQL database, see `db`). Safe to share
    between threads. Every insert is idempotent (ON CONFLICT DO NOTHING on event_id), so two feeds
    writing the same events into one PostgreSQL store each keep one row per event."""

    def __init__(self, path: str | Path, max_payload_bytes: int = 65536) -> None:
        self.max_payload_bytes = max_payload_bytes
        try:
            tgt = db_target(path)
            self.label = tgt.label
            self.db = Database(tgt, read_only=False)
            if self.db.dialect == "sqlite" and self.db.has_table("events"):
                missing = {"event_id", "kind", "ts", "till_id", "received_at", "payload"} - self.db.columns("events")
                if missing:
                    # Another program's SQLite file (e.g. a till outbox) that also has `events`.
                    self.db.close()
                    raise FeedDBError(f"{path}: cannot use it as the feed database (its events table has no "
                                      f"{', '.join(sorted(missing))} column; is it another program's file?)")
            self.db.migrate()
        except StoreError as exc:
            msg = str(exc)
            if "cannot use it as the feed database" not in msg:
                msg = f"cannot use it as the feed database: {msg}"
            raise FeedDBError(msg) from None
        self.path = path

    def add(self, topic: str, payload: bytes, received_at: str | None = None, retained: bool = False) -> Stored:
        """Store one message. Raises StoreUnavailable when the database cannot take anything just
        now (the message must then be kept, not acknowledged) and RowRejected when it refuses this
        row for good (`keep` quarantines it instead)."""
        received_at = received_at or now_iso()
        if tills.parse_topic(topic) is not None:
            tills.keep(self.db, topic, payload, received_at, retained)
            return Stored("till")
        ev, reason = check_message(topic, payload, self.max_payload_bytes)
        if ev is None:
            return self.quarantine(topic, payload, reason or "unusable", received_at)
        if self.insert(ev, topic, payload, received_at):
            return Stored("new", ev, gap=self._gap_before(ev))
        self.db.execute("INSERT INTO counters (name, value) VALUES ('duplicates', 1)"
                        " ON CONFLICT (name) DO UPDATE SET value = counters.value + 1")
        return Stored("duplicate", ev)

    def insert(self, ev: events.Event, topic: str, payload: bytes, received_at: str) -> bool:
        """One checked event's row; False when its event_id is already stored (nothing counted:
        `add` counts the broker's duplicates, a copy between stores does not)."""
        # The columns some kinds have and others lack (a check's age, an ack's answer): from the
        # kind's field, else from what a newer producer sent beyond this build's fields, else NULL.
        def opt(name: str) -> Any:
            return getattr(ev, name) if hasattr(ev, name) else ev.extra.get(name)

        fields = [_AS_STORED[how](opt(col)) for col, how in EVENT_FIELD_COLUMNS.items()]
        return self.db.execute(_INSERT, (*fields, ev.KIND, events.SCHEMA_VERSION, topic, received_at,
                                         payload.decode("utf-8"))) == 1

    def _gap_before(self, ev: events.Event) -> Gap | None:
        """The hole just below this event's number, when earlier events of its publisher are
        stored but the ones right before it are not."""
        seq, pub = ev.seq, ev.publisher
        if seq is None or pub is None or seq <= 1:
            return None
        rows = self.db.query("SELECT seq, ts FROM events WHERE store_id = ? AND publisher = ? AND seq < ?"
                             " ORDER BY seq DESC LIMIT 1", (ev.store_id, pub, seq))
        if not rows or rows[0][0] >= seq - 1:
            return None
        return Gap(ev.store_id, pub, ev.till_id, int(rows[0][0]), seq, rows[0][1], ev.ts)

    def keep(self, topic: str, payload: bytes, received_at: str | None = None, retained: bool = False) -> Stored:
        """Store one message, or quarantine it when the database refuses the row for good (a
        value it cannot hold): either way it is kept and may be acknowledged. Only
        StoreUnavailable escapes: the database is away, the message must wait."""
        try:
            return self.add(topic, payload, received_at, retained)
        except RowRejected as exc:
            return self.quarantine(topic, payload, f"the event store refused it: {exc}"[:1000], received_at)

    def quarantine(self, topic: str, payload: bytes, reason: str, received_at: str | None = None) -> Stored:
        """Keep a message aside with the reason it cannot be used (once per distinct message)."""
        received_at = received_at or now_iso()
        digest = hashlib.sha256(topic.encode("utf-8", "replace") + b"\0" + bytes(payload)).hexdigest()
        self.db.execute(
            "INSERT INTO quarantine (digest, received_at, last_received_at, topic, reason, size, payload)"
            " VALUES (?,?,?,?,?,?,?) ON CONFLICT (digest) DO UPDATE SET times = quarantine.times + 1,"
            " last_received_at = excluded.last_received_at",
            (digest, received_at, received_at, topic, reason, len(payload), bytes(payload[:QUARANTINE_KEEP_BYTES])),
        )
        return Stored("quarantined", None, reason)

    def acks_for(self, alert_event_id: str) -> list[events.AckEvent]:
        """Every ack stored for an alert (answers and corrections), oldest first; one whose payload
        no longer reads is left out (with a warning)."""
        rows = self.db.query("SELECT event_id, payload FROM events WHERE kind = ? AND alert_event_id = ? ORDER BY ts",
                             (events.AckEvent.KIND, alert_event_id))
        return [ev for eid, p in rows if isinstance(ev := read_stored(eid, p), events.AckEvent)]

    def answer_for(self, alert_event_id: str) -> Answer | None:
        """The cashier's answer to an alert as it stands after any Undo: None when unanswered."""
        return current_answer(self.acks_for(alert_event_id))

    def event(self, event_id: str) -> events.Event | None:
        """A stored event; None when it is not stored or its payload no longer reads (warned)."""
        rows = self.db.query("SELECT payload FROM events WHERE event_id = ?", (event_id,))
        return read_stored(event_id, rows[0][0]) if rows else None

    def counts(self) -> dict[str, int]:
        n = self.db.query("SELECT COUNT(*) FROM events")[0][0]
        q = self.db.query("SELECT COUNT(*) FROM quarantine")[0][0]
        d = self.db.query("SELECT value FROM counters WHERE name='duplicates'")
        return {"events": int(n), "quarantined": int(q), "duplicates": int(d[0][0]) if d else 0}

    def close(self) -> None:
        self.db.close()


# -- the live table ------------------------------------------------------------------------------


def outcome_text(ev: events.Event, replaced: events.Event | None = None) -> str:
    """What a row says; for a correction, `replaced` is the ack it names when the feed has it."""
    if isinstance(ev, (events.CheckEvent, events.AlertEvent)):
        if isinstance(ev, events.CheckEvent) and ev.decision == Decision.NO_FACE and ev.camera not in (None, "up"):
            return "CAMERA DOWN"
        return DECISION_SHORT.get(ev.decision, str(ev.decision))
    if isinstance(ev, events.AckEvent):
        was = ANSWER_SHORT.get(replaced.answer, "an answer") if isinstance(replaced, events.AckEvent) else "an answer"
        if ev.answer == Answer.UNDONE:
            return f"UNDONE: {was}"
        text = f"{ANSWER_SHORT.get(ev.answer, str(ev.answer))} ({ev.decision_time_s:.1f}s)"
        return f"{text}, was {was}" if ev.replaces_event_id else text
    if isinstance(ev, events.MissedEvent):
        return f"NOT CHECKED: {ev.reason}"
    if isinstance(ev, events.IntegrityEvent):
        return f"SOLD, NO ID +{ev.seconds_after_alert:.0f}s: {integrity_reason(ev.reason)}"
    return ""


def integrity_reason(reason: str | None) -> str:
    """Why an integrity event was raised, in the manager's words."""
    if reason in INTEGRITY_REASON_TEXT:
        return INTEGRITY_REASON_TEXT[IntegrityReason(reason)]
    return reason or "no ID check recorded"


def gap_text(g: Gap, tz: tzinfo | None, with_store: bool = False) -> str:
    """'till-03: 12 events missing between 14:02 and 14:09' (dates added when they differ)."""
    a, b = local_dt(g.after_ts, tz), local_dt(g.before_ts, tz)
    if a and b and a.date() == b.date():
        span = f"on {a:%Y-%m-%d} between {a:%H:%M} and {b:%H:%M}"
    elif a and b:
        span = f"between {a:%Y-%m-%d %H:%M} and {b:%Y-%m-%d %H:%M}"
    else:
        span = f"between {g.after_ts} and {g.before_ts}"
    who = f"{g.store_id}/{g.publisher}" if with_store else g.publisher
    n = g.missing
    how_many = f"{n} event{'s' if n != 1 else ''}"
    if g.waiting is not None:
        after = f"{a:%Y-%m-%d %H:%M}" if a else g.after_ts
        said = f"the till's state at {b:%H:%M}" if b else "the till's state"
        held = f"; {g.waiting} of them were still in its outbox" if g.waiting else ""
        return f"{who}: {how_many} not arrived after {after} ({said} says it numbered up to {g.before_seq - 1}{held})"
    return (f"{who}: {how_many} missing {span} "
            f"(numbers {g.after_seq + 1}-{g.before_seq - 1} never arrived)")




def local_time(ts: str, tz: tzinfo | None) -> str:
    """Date and time: a feed left running for days must say which day a line is from."""
    dt = local_dt(ts, tz)
    return ts[:19] if dt is None else dt.strftime("%Y-%m-%d %H:%M:%S")


class TablePrinter:
    """Fixed-width rows for a terminal; the header is repeated so it stays on screen. One line per
    check, answer and integrity event; an alert is not printed on a line of its own, because it
    is the check's decision (CHECK ID / NO FACE, already on the check's line) shown to the cashier."""

    HEADER_EVERY = 40

    def __init__(self, out: TextIO, tz: tzinfo | None, show_store: bool) -> None:
        # Rows come from the store writer, notes from the MQTT thread too: one line at a time.
        self._lock = threading.RLock()
        self.out = out
        self.tz = tz
        self.show_store = show_store
        self.rows = 0
        cols = [("time", 19), ("till", 10), ("kind", 9), ("decision / answer / why", 44), ("age", 13),
                ("transaction", 18)]
        if show_store:
            cols.insert(1, ("store", 12))
        self.cols = cols

    def _line(self, values: list[str]) -> str:
        return "  ".join(str(v)[:w].ljust(w) for v, (_, w) in zip(values, self.cols)).rstrip()

    def header(self) -> None:
        self.out.write(self._line([c for c, _ in self.cols]) + "\n")
        self.out.write(self._line(["-" * w for _, w in self.cols]) + "\n")

    def event(self, ev: events.Event, replaced: events.Event | None = None) -> None:
        with self._lock:
            self._event(ev, replaced)

    def _event(self, ev: events.Event, replaced: events.Event | None) -> None:
        if isinstance(ev, events.AlertEvent):
            return
        if self.rows % self.HEADER_EVERY == 0:
            self.header()
        self.rows += 1
        age = ""
        if isinstance(ev, events.CheckEvent) and ev.age_band:
            age = ev.age_band + (f" ({ev.age:.0f})" if ev.age is not None else "")
        values = [local_time(ev.ts, self.tz), ev.till_id, ev.KIND, outcome_text(ev, replaced), age,
                  ev.transaction_id or "-"]
        if self.show_store:
            values.insert(1, ev.store_id)
        self.out.write(self._line(values) + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        with self._lock:
            self.out.write(f"! {text}\n")
            self.out.flush()


# -- MQTT ----------------------------------------------------------------------------------------
def subscription(cfg: Config, all_stores: bool) -> str:
    return events.event_subscription("+" if all_stores else cfg.store_id)


@dataclass(frozen=True)
class _Received:
    """A message as the MQTT thread hands it to the store writer: `session` is the connection it
    came on (its packet id means nothing on a later one)."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    session: int
    retained: bool = False  # a retained message the broker hands a new subscription


class Feed:
    """Connects, stores and prints until stop(). Reconnects by itself (paho's loop thread).

    Messages are stored by one writer thread, in the order they came, and each is acknowledged
    once it is kept (a row or a quarantine row). When the database cannot take anything (server
    down, disk full) the writer keeps the message and tries it again, backing off from
    RETRY_FIRST_S to RETRY_MAX_S, says so once, and says so again when the store is back: the
    broker holds everything after it meanwhile (its in-flight window is full), and nothing is lost
    or needs a restart. The MQTT thread never waits on the database, so the broker link stays up.
    """

    RETRY_FIRST_S = 0.5
    RETRY_MAX_S = 10.0

    def __init__(self, cfg: Config, db_path: str | Path, all_stores: bool = False,
                 out: TextIO = sys.stdout, tz: tzinfo | None = None) -> None:
        self.cfg = cfg
        self.store = FeedStore(db_path, cfg.feed.max_payload_bytes)
        self.topic = subscription(cfg, all_stores)
        self.topics = [self.topic, *tills.subscriptions("+" if all_stores else cfg.store_id)]
        self.client_id = cfg.feed.client_id or session_client_id(
            cfg.mqtt, f"agecheck-feed-{'all-stores' if all_stores else cfg.store_id}")
        self.lock_path = session_lock_path(cfg, self.client_id)
        try:
            self._lock_fd: int | None = locks.take(self.lock_path)
        except locks.LockHeld as held:
            self.store.close()
            raise FeedInUse(f"another feed on this machine already uses the broker session {self.client_id!r} at "
                            f"{cfg.mqtt.host}:{cfg.mqtt.port} ({held.owner}): stop it, or give this one its own "
                            "feed.client_id") from None
        except OSError as exc:
            self.store.close()
            raise FeedInUse(f"cannot lock the feed's broker session through {self.lock_path} ({exc.strerror})") from None
        self.table = TablePrinter(out, tz, show_store=all_stores)
        # Set on the broker's SUBACK: only from then on are events published to the store kept
        # for us (on a new session), so "subscribed" is reported then, not when asked for.
        self.subscribed = threading.Event()
        self._stopping = False
        self._client = make_client(cfg.mqtt, self.client_id)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._client.on_connect_fail = self._on_connect_fail
        # PUBACK only after the row is committed (see _write).
        self._client.manual_ack_set(True)
        self._inbox: queue.Queue[_Received | None] = queue.Queue()
        self._session = 0
        self._connect_error: str | None = None  # the last cause noted, so each is said once
        self._stop = threading.Event()
        # When the store stopped taking messages (monotonic), None while it takes them.
        self._unavailable_since: float | None = None
        self._writer = threading.Thread(target=self._write_loop, name="feed-store-writer", daemon=True)

    def start(self) -> Feed:
        # clean_start=False + a session expiry: the broker queues QoS 1 events while we are away.
        self._client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, self.cfg.mqtt.keepalive,
                                   clean_start=False,
                                   properties=connect_properties(session_expiry_s=self.cfg.feed.session_expiry_seconds))
        self._writer.start()
        self._client.loop_start()
        return self

    @property
    def store_unavailable(self) -> bool:
        """Whether the writer is holding a message the database could not take yet."""
        return self._unavailable_since is not None

    def stop(self) -> None:
        self._stopping = True
        self._stop.set()
        self._inbox.put(None)
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            if self._writer.is_alive():
                self._writer.join(timeout=30)
            self.store.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the session to the next feed
                self._lock_fd = None

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.table.note(f"broker refused the connection: {reason_code}")
            return
        # Messages of the earlier connection still waiting for the writer are stored but not
        # acknowledged: the broker sends them again on this one, under packet ids of its own.
        self._session += 1
        self._connect_error = None
        client.subscribe([(t, 1) for t in self.topics])
        resumed = "resumed" if flags.session_present else "new"
        self.table.note(f"connected to {self.cfg.mqtt.host}:{self.cfg.mqtt.port} as {self.client_id} "
                        f"({resumed} session)")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        # One code per topic, in self.topics' order: the events first, then the tills' state.
        if reason_codes and reason_codes[0].is_failure:
            self.table.note(f"broker refused the subscription to {self.topic}: {reason_codes[0]}")
            return
        refused = [(t, rc) for t, rc in zip(self.topics[1:], reason_codes[1:]) if rc.is_failure]
        if refused:
            # The events still flow; only silent tills and gaps at the end go unseen.
            self.table.note(f"subscribed to {self.topic}; the broker refused {refused[0][0]} ({refused[0][1]}), so "
                            "silent tills and events missing at the end of a till's numbers are not shown")
        else:
            self.table.note(f"subscribed to {self.topic} and the tills' state")
        self.subscribed.set()

    def _on_connect_fail(self, client, userdata) -> None:
        # paho calls this from inside its `except OSError:` around the connect, so the cause (a
        # TLS verify error, a plain port, refused) is the exception being handled: named like the
        # till service names it, once per cause rather than once per attempt.
        why = connect_error(sys.exc_info()[1], self.cfg.mqtt)
        if why != self._connect_error:
            self._connect_error = why
            self.table.note(f"cannot connect to the broker at {self.cfg.mqtt.host}:{self.cfg.mqtt.port}: {why}; "
                            "retrying")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.subscribed.clear()
        if self._stopping:
            return
        self.table.note(f"broker connection lost ({reason_code}); reconnecting")

    def _on_message(self, client, userdata, msg) -> None:
        # The MQTT thread only hands the message on: waiting here on a database that is away
        # would stop the keepalives and lose the broker link too.
        self._inbox.put(_Received(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._session, bool(msg.retain)))

    def _write_loop(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None or self._stop.is_set():
                return  # not acknowledged: the broker keeps what is left for the next start
            self._write(item)

    def _write(self, msg: _Received) -> None:
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
        if msg.session == self._session:
            self._client.ack(msg.mid, msg.qos)
        try:
            self._show(msg, res)
        except Exception:  # the row is kept; a line it cannot print must not end the writer
            log.exception("feed: could not show the message on %s (it is stored)", msg.topic)

    def _keep(self, msg: _Received) -> Stored | None:
        """Store or quarantine the message; StoreUnavailable when the database is away. None when
        even its quarantine failed for a reason other than the database being away (a bug): it is
        named in the log and acknowledged, since holding it would stop the feed for good."""
        try:
            return self.store.keep(msg.topic, msg.payload, retained=msg.retained)
        except StoreUnavailable:
            raise
        except Exception as exc:
            log.exception("feed: handling a message on %s failed", msg.topic)
            try:
                return self.store.quarantine(msg.topic, msg.payload, f"could not be handled: {exc!r}"[:500])
            except StoreUnavailable:
                raise
            except Exception:
                digest = hashlib.sha256(msg.payload).hexdigest()[:16]
                log.exception("feed: DROPPED a message on %s (%d bytes, sha256 %s…): it can be neither stored "
                              "nor quarantined", msg.topic, len(msg.payload), digest)
                self._client.ack(msg.mid, msg.qos)
                return None

    def _store_unavailable(self, exc: StoreError) -> None:
        """Said once per outage (the retries are silent), with the cause."""
        if self._unavailable_since is not None:
            return
        self._unavailable_since = time.monotonic()
        log.error("feed: the event store cannot take messages (%s); the broker holds them meanwhile; retrying "
                  "every %g-%g s until it can", exc, self.RETRY_FIRST_S, self.RETRY_MAX_S)

    def _show(self, msg: _Received, res: Stored) -> None:
        if res.status == "new":
            replaces = res.event.replaces_event_id if isinstance(res.event, events.AckEvent) else None
            self.table.event(res.event, self.store.event(replaces) if replaces else None)
            if res.gap is not None:
                log.warning("feed: %s", gap_text(res.gap, self.table.tz, True))
                self.table.note(gap_text(res.gap, self.table.tz, self.table.show_store))
        elif res.status == "till":
            return
        elif res.status == "quarantined":
            self.table.note(f"quarantined a message on {msg.topic}: {res.reason}")
        else:
            log.debug("feed: duplicate %s ignored", res.event.event_id if res.event else "?")


def main(args, cfg: Config) -> int:
    db_path = args.db or cfg.feed.db_path
    tz = None
    if cfg.feed.timezone:
        import zoneinfo

        tz = zoneinfo.ZoneInfo(cfg.feed.timezone)
    feed = Feed(cfg, db_path, all_stores=bool(args.all_stores), tz=tz)
    for warning in trust_warnings(cfg.mqtt):
        # The feed is what the manager trusts: a forged approval stored here looks real.
        log.warning("feed: NOT SECURE: %s", warning)
        print(f"agecheck feed: NOT SECURE: {warning}", file=sys.stderr, flush=True)
    c = feed.store.counts()
    print(f"agecheck feed: {feed.store.label}: {c['events']} events stored so far, {c['quarantined']} quarantined; "
          f"connecting to {cfg.mqtt.host}:{cfg.mqtt.port} (Ctrl-C to stop)", flush=True)
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
        print(f"agecheck feed: stopped; {counts['events']} events stored, {counts['duplicates']} duplicates "
              f"ignored, {counts['quarantined']} quarantined", flush=True)
    return 0
