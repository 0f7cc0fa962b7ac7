"""The feed's event store (`FeedStore`, over `edge_app.manager.db`: a SQLite file, or PostgreSQL
for a head office): what goes into it and how a message is judged on the way in.

It owns table `events` (one row per event_id, with the store, till, publisher and sequence number,
and `replaces_event_id` for the cashier's corrections (Undo), read with `edge_app.core.answers` by
`answer_for`), table `quarantine` (malformed JSON, unknown schema versions, events that fail
validation or do not match their topic - kept once per distinct message with the reason and a
count, never parsed again) and table `counters` (duplicates seen); the tills' retained `state` and
`availability` go to `edge_app.manager.tills`. Read by the report and the dashboard.

Gaps: events carry their publisher's sequence number (`transport.outbox`). The holes in those
numbers are worked out from what is stored (`gap_rows`), so an event that arrives late closes its
hole. A till's state numbers the events it has published, so a hole at the end, after its last
stored event, shows before its next event does (a trailing gap).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edge_app.core import event_bounds, events, payloads, topics
from edge_app.core.answers import current_answer
from edge_app.core.times import now_iso
from edge_app.core.words import Answer
from edge_app.errors import UsageError
from edge_app.manager import tills
from edge_app.manager.db import EVENT_FIELD_COLUMNS, MESSAGE_COLUMNS, Database, RowRejected, StoreError
from edge_app.manager.db import target as db_target

log = logging.getLogger(__name__)

# Quarantined payloads are kept up to this size; the real size is stored next to them.
QUARANTINE_KEEP_BYTES = 1024 * 1024


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
    except event_bounds.SchemaError as exc:
        return None, f"invalid event: {exc}"
    parts = topics.parse_event_topic(topic)
    if parts is None:
        return None, f"topic {topic!r} is not an agecheck events topic"
    store, till, kind = parts
    if (store, till, kind) != (ev.store_id, ev.till_id, ev.KIND):
        return None, (f"event says {ev.store_id}/{ev.till_id}/{ev.KIND} but came on {store}/{till}/{kind}")
    return ev, None


def read_stored(event_id: str, payload: str) -> events.Event | None:
    """The typed event of a stored row (its `payload` column), decoded as the feed decoded it.
    None, with a warning naming the event, when the payload no longer reads as a valid event (a
    store written by another build, or edited by hand): a reader leaves that row out and goes on."""
    try:
        return events.decode_event(payload)
    except ValueError as exc:  # payloads.PayloadError or event_bounds.SchemaError: both say what is wrong
        log.warning("event store: event %s left out: its stored payload is not a valid event (%s)", event_id, exc)
        return None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else (None if v is None else str(v))


_COLUMNS = (*EVENT_FIELD_COLUMNS, *MESSAGE_COLUMNS)
_INSERT = (
    f"INSERT INTO events ({', '.join(_COLUMNS)}) VALUES ({','.join('?' * len(_COLUMNS))})"
    " ON CONFLICT (event_id) DO NOTHING"
)
_AS_STORED = {
    "text": _text,
    "num": _num,
    "int": lambda v: v if isinstance(v, int) and not isinstance(v, bool) else None,
}


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
        (store,) if store else (),
    )
    holes = [Gap(r[0], r[1], r[2], int(r[3]), int(r[4]), r[5], r[6]) for r in rows]
    ends = [
        Gap(t.store_id, t.till_id, t.till_id, t.after_seq, t.last_seq + 1, t.after_ts, t.state_ts, t.waiting)
        for t in tills.trailing(db, store)
    ]
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
                    raise FeedDBError(
                        f"{path}: cannot use it as the feed database (its events table has no "
                        f"{', '.join(sorted(missing))} column; is it another program's file?)"
                    )
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
        self.db.execute(
            "INSERT INTO counters (name, value) VALUES ('duplicates', 1)"
            " ON CONFLICT (name) DO UPDATE SET value = counters.value + 1"
        )
        return Stored("duplicate", ev)

    def insert(self, ev: events.Event, topic: str, payload: bytes, received_at: str) -> bool:
        """One checked event's row; False when its event_id is already stored (nothing counted:
        `add` counts the broker's duplicates, a copy between stores does not)."""

        # The columns some kinds have and others lack (a check's age, an ack's answer): from the
        # kind's field, else from what a newer producer sent beyond this build's fields, else NULL.
        def opt(name: str) -> Any:
            return getattr(ev, name) if hasattr(ev, name) else ev.extra.get(name)

        fields = [_AS_STORED[how](opt(col)) for col, how in EVENT_FIELD_COLUMNS.items()]
        return (
            self.db.execute(
                _INSERT, (*fields, ev.KIND, events.SCHEMA_VERSION, topic, received_at, payload.decode("utf-8"))
            )
            == 1
        )

    def _gap_before(self, ev: events.Event) -> Gap | None:
        """The hole just below this event's number, when earlier events of its publisher are
        stored but the ones right before it are not."""
        seq, pub = ev.seq, ev.publisher
        if seq is None or pub is None or seq <= 1:
            return None
        rows = self.db.query(
            "SELECT seq, ts FROM events WHERE store_id = ? AND publisher = ? AND seq < ? ORDER BY seq DESC LIMIT 1",
            (ev.store_id, pub, seq),
        )
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
        rows = self.db.query(
            "SELECT event_id, payload FROM events WHERE kind = ? AND alert_event_id = ? ORDER BY ts",
            (events.AckEvent.KIND, alert_event_id),
        )
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
