"""What the manager knows of each till besides its events: its latest retained `state` and
`availability` (edge_app.core.state), kept by the feed in table `till_state` (one row per till,
replaced as each arrives), and what they tell: which tills have gone silent, and which events a
till has numbered that have not arrived yet (a gap at the end, before the till's next event shows it).

A till is silent when nothing of it (an event, a state, its availability) was heard for more than
SILENT_AFTER_BEATS of its heartbeat while other tills were heard from in that time (when none was,
it is the feed that hears nothing, and that is said once instead), or when its availability says
it went offline. A till that never sent a state has no heartbeat to be late for: an idle till
publishes no events, so events alone cannot tell silence from a quiet hour.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from edge_app.core import payloads, topics
from edge_app.core.state import AVAILABILITY_LEAF, HEARTBEAT_S, OFFLINE, ONLINE, STATE_LEAF, TillState
from edge_app.core.times import iso_utc, parse_ts
from edge_app.manager.db import Database

log = logging.getLogger(__name__)

# Beats missed before a till is called silent: one late or lost state is not an outage.
SILENT_AFTER_BEATS = 3
LEAVES = (STATE_LEAF, AVAILABILITY_LEAF)


def subscriptions(store_id: str = "+") -> list[str]:
    """The retained topics of every till of a store ("+": of every store) the feed listens to."""
    return [topics.topic(store_id, "+", leaf) for leaf in LEAVES]


def parse_topic(name: str) -> tuple[str, str, str] | None:
    """(store_id, till_id, leaf) of a till's state or availability topic, else None."""
    root = topics.TOPIC_ROOT.split("/")
    parts = name.split("/")
    if len(parts) != len(root) + 3 or parts[: len(root)] != root or parts[-1] not in LEAVES:
        return None
    return parts[len(root)], parts[len(root) + 1], parts[-1]


def _heard_at(received_at: str, said_ts: str | None, retained: bool) -> str | None:
    """When the till was last heard of through this message: when it came, except for a retained
    one the broker hands every new subscriber (the feed restarting hears an old state again), which
    says no more than the till's own time on it (None when it has none)."""
    if not retained:
        return received_at
    said, got = parse_ts(said_ts), parse_ts(received_at)
    if said is None:
        return None
    return iso_utc(min(said, got) if got is not None else said)


def keep(db: Database, topic: str, payload: bytes, received_at: str, retained: bool = False) -> bool:
    """Store a till's state or availability message; False (and a warning) when it is not one
    this build can read. An empty payload (a retained message being cleared) is nothing to keep."""
    parts = parse_topic(topic)
    if parts is None or not payload:
        return False
    store, till, leaf = parts
    if leaf == AVAILABILITY_LEAF:
        word = bytes(payload)
        if word not in (ONLINE, OFFLINE):
            log.warning("feed: %s: availability %r is neither online nor offline; ignored", topic, word[:40])
            return False
        db.execute(
            "INSERT INTO till_state (store_id, till_id, availability, availability_received_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (store_id, till_id) DO UPDATE SET"
            " availability = excluded.availability,"
            " availability_received_at = excluded.availability_received_at",
            (store, till, word.decode(), received_at if not retained else None),
        )
        return True
    try:
        st = TillState.decode(payload)
    except payloads.PayloadError as exc:
        log.warning("feed: %s: not a till state (%s); ignored", topic, exc)
        return False
    heard = _heard_at(received_at, st.ts, retained)
    db.execute(
        "INSERT INTO till_state (store_id, till_id, state_received_at, state_ts, heartbeat_s, last_seq,"
        " outbox_depth, camera, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (store_id, till_id)"
        " DO UPDATE SET state_received_at = excluded.state_received_at, state_ts = excluded.state_ts,"
        " heartbeat_s = excluded.heartbeat_s, last_seq = excluded.last_seq,"
        " outbox_depth = excluded.outbox_depth, camera = excluded.camera, payload = excluded.payload",
        (
            store,
            till,
            heard,
            st.ts,
            st.heartbeat_s,
            st.last_seq or None,
            st.outbox_depth,
            st.camera,
            bytes(payload).decode("utf-8", "replace"),
        ),
    )
    return True


@dataclass(frozen=True)
class Trailing:
    """Events a till numbered that the store does not hold after its last stored one: numbers
    after_seq+1 .. last_seq, by its state at state_ts; `waiting` of them were still in its outbox."""

    store_id: str
    till_id: str
    after_seq: int
    after_ts: str
    last_seq: int
    state_ts: str
    waiting: int


def trailing(db: Database, store: str | None = None) -> list[Trailing]:
    """Every till whose latest state numbers more events than the store holds of it (the till
    service is the publisher named by its till id)."""
    if not db.has_table("till_state"):
        return []
    where = "s.last_seq IS NOT NULL" + (" AND s.store_id = ?" if store else "")
    rows = db.query(
        "SELECT s.store_id, s.till_id, s.last_seq, s.state_ts, s.outbox_depth, e.seq, e.ts FROM till_state s"
        " JOIN events e ON e.store_id = s.store_id AND e.publisher = s.till_id AND e.seq = ("
        "  SELECT MAX(seq) FROM events m WHERE m.store_id = s.store_id AND m.publisher = s.till_id)"
        f" WHERE {where} AND s.last_seq > e.seq ORDER BY s.store_id, s.till_id",
        (store,) if store else (),
    )
    return [
        Trailing(r[0], r[1], int(r[5]), r[6], int(r[2]), r[3] or r[6], min(int(r[4] or 0), int(r[2]) - int(r[5])))
        for r in rows
    ]


@dataclass(frozen=True)
class Silent:
    """A till heard from last at `last_heard` (UTC ISO), `for_s` seconds before `now` (None: never
    heard since it was known, e.g. only a retained state without a time)."""

    store_id: str
    till_id: str
    last_heard: str | None
    for_s: float | None
    heartbeat_s: float
    offline: bool  # its availability said so (stopped, or its Last Will when the link broke)


@dataclass(frozen=True)
class Hearing:
    """What the feed hears now: the silent tills, and whether it hears any till at all."""

    silent: tuple[Silent, ...]
    tills_heard: int  # tills heard within their heartbeat window
    tills_known: int  # tills that ever sent a state
    last_heard: str | None  # the latest anything was heard of any till


def hearing(db: Database, now: datetime, store: str | None = None, till: str | None = None) -> Hearing:
    """Which tills (of a store, or one till) are silent at `now` (an aware datetime). Whether the
    feed hears others is judged over every till it knows, whatever the page shows: a store with
    one till is still told apart from a feed that hears nothing."""
    if not db.has_table("till_state"):
        return Hearing((), 0, 0, None)
    last_event = {
        (r[0], r[1]): r[2]
        for r in db.query("SELECT store_id, till_id, MAX(received_at) FROM events GROUP BY store_id, till_id")
    }
    heard: list[tuple[str, str, datetime | None, float, bool]] = []
    for st, t, state_at, beat, avail, avail_at in db.query(
        "SELECT store_id, till_id, state_received_at, heartbeat_s, availability, availability_received_at"
        " FROM till_state ORDER BY store_id, till_id"
    ):
        if beat is None and state_at is None:
            continue  # only an availability: no heartbeat to be late for
        times = [d for d in (parse_ts(x) for x in (state_at, avail_at, last_event.get((st, t)))) if d is not None]
        heard.append((st, t, max(times) if times else None, float(beat or HEARTBEAT_S), avail == OFFLINE.decode()))
    window = {(st, t): timedelta(seconds=SILENT_AFTER_BEATS * beat) for st, t, _, beat, _ in heard}
    alive = {(st, t) for st, t, last, _, off in heard if last is not None and not off and now - last <= window[(st, t)]}
    shown = [h for h in heard if (store is None or h[0] == store) and (till is None or h[1] == till)]
    latest = max((last for _, _, last, _, _ in shown if last is not None), default=None)
    silent = []
    for st, t, last, beat, off in shown:
        late = last is None or now - last > window[(st, t)]
        if off or (late and alive - {(st, t)}):
            gone = max(0.0, (now - last).total_seconds()) if last is not None else None
            silent.append(Silent(st, t, iso_utc(last) if last else None, gone, beat, off))
    return Hearing(
        tuple(silent), len(alive & {(h[0], h[1]) for h in shown}), len(shown), iso_utc(latest) if latest else None
    )
