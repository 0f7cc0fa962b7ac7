"""Manager feed (`agecheck feed`): subscribes to one store's (or every store's) events with a
persistent MQTT session, stores each event once in SQLite (de-duplicated by event_id), and
prints them live as a table.

It owns the feed database (read by `edge_app.manager.report`): table `events` (one row per event_id),
table `quarantine` (malformed JSON, unknown schema versions, events that fail validation or do
not match their topic - kept once per distinct message with the reason and a count, never parsed
again) and table `counters`
(duplicates seen). A message is acknowledged to the broker (manual PUBACK) only after its row is
committed, so a crash or a full disk between the two means a redelivery (de-duplicated) rather
than a loss.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import sqlite3
import sys
import threading
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Any, Literal, TextIO

from edge_app.core import events, payloads
from edge_app.config import Config
from edge_app.transport.mqtt import make_client
from edge_app.transport.outbox import create_private

log = logging.getLogger(__name__)

# Quarantined payloads are kept up to this size; the real size is stored next to them.
QUARANTINE_KEEP_BYTES = 1024 * 1024

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    schema INTEGER NOT NULL,
    ts TEXT NOT NULL,
    store_id TEXT NOT NULL,
    till_id TEXT NOT NULL,
    transaction_id TEXT,
    decision TEXT,
    answer TEXT,
    age REAL,
    age_low REAL,
    age_high REAL,
    age_band TEXT,
    alert_event_id TEXT,
    decision_time_s REAL,
    topic TEXT NOT NULL,
    received_at TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_ts ON events (ts);
CREATE INDEX IF NOT EXISTS events_alert ON events (alert_event_id);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- sha256 of topic + payload: a redelivered bad message is one row seen twice
    digest TEXT NOT NULL UNIQUE,
    received_at TEXT NOT NULL,
    last_received_at TEXT NOT NULL,
    times INTEGER NOT NULL DEFAULT 1,
    topic TEXT NOT NULL,
    reason TEXT NOT NULL,
    size INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""


class FeedDBError(Exception):
    """The feed database cannot be opened or is not one of ours."""


@dataclass(frozen=True)
class Stored:
    status: Literal["new", "duplicate", "quarantined"]
    event: dict | None = None
    reason: str | None = None


def _topic_parts(topic: str) -> tuple[str, str, str] | None:
    parts = topic.split("/")
    root = events.TOPIC_ROOT.split("/")
    if len(parts) != len(root) + 4 or parts[: len(root)] != root or parts[len(root) + 2] != "events":
        return None
    return parts[len(root)], parts[len(root) + 1], parts[len(root) + 3]


def check_message(topic: str, payload: bytes, max_bytes: int) -> tuple[dict | None, str | None]:
    """(event, None) for a good event, (None, reason) for one to quarantine."""
    if len(payload) > max_bytes:
        return None, f"payload is {len(payload)} bytes, more than feed.max_payload_bytes={max_bytes}"
    try:
        data = payloads.parse(payload, payloads.Limits(max_bytes))
    except payloads.PayloadError as exc:
        return None, f"malformed JSON: {exc}"
    try:
        ev = events.validate(data)
    except events.SchemaError as exc:
        return None, f"invalid event: {exc}"
    parts = _topic_parts(topic)
    if parts is None:
        return None, f"topic {topic!r} is not an agecheck events topic"
    store, till, kind = parts
    if (store, till, kind) != (ev["store_id"], ev["till_id"], ev["kind"]):
        return None, (f"event says {ev['store_id']}/{ev['till_id']}/{ev['kind']} "
                      f"but came on {store}/{till}/{kind}")
    return ev, None


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else (None if v is None else str(v))


class FeedStore:
    """The feed's SQLite file. Safe to share between threads (one connection, one lock)."""

    def __init__(self, path: str | Path, max_payload_bytes: int = 65536) -> None:
        self.path = Path(path)
        self.max_payload_bytes = max_payload_bytes
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        create_private(self.path)  # 0600: the feed names transactions and estimated ages
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: the row must be on disk before paho sends PUBACK (power cut on the shop PC).
            self._db.execute("PRAGMA synchronous=FULL")
            cols = {r[1] for r in self._db.execute("PRAGMA table_info(events)")}
            missing = {"event_id", "kind", "ts", "till_id", "received_at", "payload"} - cols
            if cols and missing:
                # Another program's SQLite file (e.g. a till outbox) that also has `events`.
                self._db.close()
                raise FeedDBError(f"{self.path}: cannot use it as the feed database (its events table has no "
                                  f"{', '.join(sorted(missing))} column; is it another program's file?)")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise FeedDBError(f"{self.path}: cannot use it as the feed database ({exc})") from None

    def add(self, topic: str, payload: bytes, received_at: str | None = None) -> Stored:
        received_at = received_at or events.now_iso()
        ev, reason = check_message(topic, payload, self.max_payload_bytes)
        if ev is None:
            return self.quarantine(topic, payload, reason or "unusable", received_at)
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO events (event_id, kind, schema, ts, store_id, till_id, transaction_id,"
                " decision, answer, age, age_low, age_high, age_band, alert_event_id, decision_time_s, topic,"
                " received_at, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    ev["event_id"], ev["kind"], ev["schema"], ev["ts"], ev["store_id"], ev["till_id"],
                    _text(ev.get("transaction_id")), _text(ev.get("decision")), _text(ev.get("answer")),
                    _num(ev.get("age")), _num(ev.get("age_low")), _num(ev.get("age_high")),
                    _text(ev.get("age_band")), _text(ev.get("alert_event_id")), _num(ev.get("decision_time_s")),
                    topic, received_at, payload.decode("utf-8"),
                ),
            )
            if cur.rowcount == 1:
                return Stored("new", ev)
            self._db.execute(
                "INSERT INTO counters (name, value) VALUES ('duplicates', 1)"
                " ON CONFLICT(name) DO UPDATE SET value = value + 1"
            )
            return Stored("duplicate", ev)

    def quarantine(self, topic: str, payload: bytes, reason: str, received_at: str | None = None) -> Stored:
        """Keep a message aside with the reason it cannot be used (once per distinct message)."""
        received_at = received_at or events.now_iso()
        digest = hashlib.sha256(topic.encode("utf-8", "replace") + b"\0" + bytes(payload)).hexdigest()
        with self._lock:
            self._db.execute(
                "INSERT INTO quarantine (digest, received_at, last_received_at, topic, reason, size, payload)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT(digest) DO UPDATE SET times = times + 1,"
                " last_received_at = excluded.last_received_at",
                (digest, received_at, received_at, topic, reason, len(payload),
                 bytes(payload[:QUARANTINE_KEEP_BYTES])),
            )
        return Stored("quarantined", None, reason)

    def counts(self) -> dict[str, int]:
        with self._lock:
            n = self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            q = self._db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
            d = self._db.execute("SELECT value FROM counters WHERE name='duplicates'").fetchone()
        return {"events": n, "quarantined": q, "duplicates": d[0] if d else 0}

    def close(self) -> None:
        with self._lock:
            self._db.close()


# -- the live table ------------------------------------------------------------------------------
_ANSWER_TEXT = {
    "id_checked_over_age": "ID ok, over age",
    "id_checked_under_age_refused": "ID: under/refused",
    "no_id_check": "NO ID CHECK",
}
_DECISION_TEXT = {"approve": "APPROVE", "check_id": "CHECK ID", "no_face": "NO FACE"}


def outcome_text(ev: dict) -> str:
    kind = ev.get("kind")
    if kind in ("check", "alert"):
        return _DECISION_TEXT.get(ev.get("decision"), str(ev.get("decision")))
    if kind == "ack":
        t = ev.get("decision_time_s")
        after = f" ({t:.1f}s)" if isinstance(t, (int, float)) else ""
        return _ANSWER_TEXT.get(ev.get("answer"), str(ev.get("answer"))) + after
    if kind == "missed":
        return f"NOT CHECKED: {ev.get('reason')}"
    if kind == "integrity":
        return f"SOLD, NO ID +{ev.get('seconds_after_alert', 0):.0f}s"
    return ""


def local_time(ts: str, tz: tzinfo | None) -> str:
    try:
        dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return ts[:8]
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(tz).strftime("%H:%M:%S")


class TablePrinter:
    """Fixed-width rows for a terminal; the header is repeated so it stays on screen."""

    HEADER_EVERY = 40

    def __init__(self, out: TextIO, tz: tzinfo | None, show_store: bool) -> None:
        self.out = out
        self.tz = tz
        self.show_store = show_store
        self.rows = 0
        cols = [("time", 8), ("till", 10), ("kind", 9), ("decision / answer", 26), ("age", 13), ("transaction", 18)]
        if show_store:
            cols.insert(1, ("store", 12))
        self.cols = cols

    def _line(self, values: list[str]) -> str:
        return "  ".join(str(v)[:w].ljust(w) for v, (_, w) in zip(values, self.cols)).rstrip()

    def header(self) -> None:
        self.out.write(self._line([c for c, _ in self.cols]) + "\n")
        self.out.write(self._line(["-" * w for _, w in self.cols]) + "\n")

    def event(self, ev: dict) -> None:
        if self.rows % self.HEADER_EVERY == 0:
            self.header()
        self.rows += 1
        age = ""
        if ev.get("age_band"):
            age = str(ev["age_band"])
            if isinstance(ev.get("age"), (int, float)):
                age += f" ({ev['age']:.0f})"
        values = [local_time(ev["ts"], self.tz), ev["till_id"], ev["kind"], outcome_text(ev), age,
                  ev.get("transaction_id") or "-"]
        if self.show_store:
            values.insert(1, ev["store_id"])
        self.out.write(self._line(values) + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        self.out.write(f"! {text}\n")
        self.out.flush()


# -- MQTT ----------------------------------------------------------------------------------------
def session_properties(expiry_s: int):
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = expiry_s
    return props


def subscription(cfg: Config, all_stores: bool) -> str:
    return f"{events.TOPIC_ROOT}/{'+' if all_stores else cfg.store_id}/+/events/+"


class Feed:
    """Connects, stores and prints until stop(). Reconnects by itself (paho's loop thread)."""

    def __init__(self, cfg: Config, db_path: str | Path, all_stores: bool = False,
                 out: TextIO = sys.stdout, tz: tzinfo | None = None) -> None:
        self.cfg = cfg
        self.store = FeedStore(db_path, cfg.feed.max_payload_bytes)
        self.topic = subscription(cfg, all_stores)
        self.client_id = cfg.feed.client_id or f"agecheck-feed-{'all-stores' if all_stores else cfg.store_id}"
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
        # PUBACK only after the row is committed (see _on_message).
        self._client.manual_ack_set(True)

    def start(self) -> "Feed":
        # clean_start=False + a session expiry: the broker queues QoS 1 events while we are away.
        self._client.connect_async(self.cfg.mqtt.host, self.cfg.mqtt.port, self.cfg.mqtt.keepalive,
                                   clean_start=False,
                                   properties=session_properties(self.cfg.feed.session_expiry_seconds))
        self._client.loop_start()
        return self

    def stop(self) -> None:
        self._stopping = True
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
            self.store.close()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.table.note(f"broker refused the connection: {reason_code}")
            return
        client.subscribe(self.topic, qos=1)
        resumed = "resumed" if flags.session_present else "new"
        self.table.note(f"connected to {self.cfg.mqtt.host}:{self.cfg.mqtt.port} as {self.client_id} "
                        f"({resumed} session)")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        refused = [rc for rc in reason_codes if rc.is_failure]
        if refused:
            self.table.note(f"broker refused the subscription to {self.topic}: {refused[0]}")
            return
        self.table.note(f"subscribed to {self.topic}")
        self.subscribed.set()

    def _on_connect_fail(self, client, userdata) -> None:
        self.table.note(f"cannot reach the broker at {self.cfg.mqtt.host}:{self.cfg.mqtt.port}; retrying")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.subscribed.clear()
        if self._stopping:
            return
        self.table.note(f"broker connection lost ({reason_code}); reconnecting")

    def _on_message(self, client, userdata, msg) -> None:
        # Nothing may escape this callback: an exception here would end paho's network thread
        # while the process stays up, and the unacknowledged message would stop the feed again
        # on every restart (a poison message).
        try:
            self._store_message(client, msg)
        except Exception as exc:
            log.exception("feed: handling a message on %s failed", msg.topic)
            try:
                self.store.quarantine(msg.topic, bytes(msg.payload), f"could not be handled: {exc!r}"[:500])
                client.ack(msg.mid, msg.qos)
                self.table.note(f"quarantined a message on {msg.topic}: it could not be handled ({exc!r})")
            except Exception:
                log.exception("feed: could not quarantine the message on %s; it stays with the broker", msg.topic)

    def _store_message(self, client, msg) -> None:
        try:
            res = self.store.add(msg.topic, msg.payload)
        except sqlite3.Error as exc:
            # Not acknowledged: the broker sends it again on the next connection.
            log.error("feed: could not store a message from %s: %s", msg.topic, exc)
            self.table.note(f"could not store a message from {msg.topic} ({exc}); it stays with the broker")
            return
        client.ack(msg.mid, msg.qos)
        if res.status == "new":
            self.table.event(res.event)
        elif res.status == "quarantined":
            self.table.note(f"quarantined a message on {msg.topic}: {res.reason}")
        else:
            log.debug("feed: duplicate %s ignored", res.event["event_id"] if res.event else "?")


def main(args, cfg: Config) -> int:
    db_path = args.db or cfg.feed.db_path
    tz = None
    if cfg.feed.timezone:
        import zoneinfo

        tz = zoneinfo.ZoneInfo(cfg.feed.timezone)
    try:
        feed = Feed(cfg, db_path, all_stores=bool(args.all_stores), tz=tz)
    except FeedDBError as exc:
        print(f"agecheck feed: {exc}", file=sys.stderr)
        return 2
    c = feed.store.counts()
    print(f"agecheck feed: {db_path}: {c['events']} events stored so far, {c['quarantined']} quarantined; "
          f"connecting to {cfg.mqtt.host}:{cfg.mqtt.port} (Ctrl-C to stop)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    feed.start()
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    counts = feed.store.counts()
    feed.stop()
    print(f"agecheck feed: stopped; {counts['events']} events stored, {counts['duplicates']} duplicates "
          f"ignored, {counts['quarantined']} quarantined", flush=True)
    return 0
