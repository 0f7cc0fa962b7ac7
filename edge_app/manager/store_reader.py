"""Reading the feed's store for the figures: opening it read-only (with the report's messages when
it is missing or not the feed's), and the events a period needs - each payload decoded once, the
answers that stand after corrections, and the alerts that answers and integrity events point to."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

from edge_app.core import events
from edge_app.core.answers import standing
from edge_app.manager.db import Database, StoreError, open_store
from edge_app.manager.scope import Period, ReportInputError, Scope
from edge_app.manager.store import read_stored


def open_db(path: str | Path) -> Database:
    """The feed's store, read-only (a SQLite file or a postgresql:// URL)."""
    try:
        db = open_store(path, read_only=True)
    except StoreError as exc:
        msg = str(exc)
        if "does not exist" in msg:
            raise ReportInputError(
                f"--db: {str(path)!r} does not exist; run `agecheck feed` first to collect "
                "events (or pass --db to the feed's database)"
            ) from None
        raise ReportInputError(f"--db: {msg}") from None
    try:
        db.query("SELECT event_id, kind, ts, store_id, till_id, payload FROM events LIMIT 1")
    except StoreError as exc:
        db.close()
        raise ReportInputError(
            f"--db: {db.target.label!r} is not a database written by `agecheck feed` ({exc})"
        ) from None
    return db


def fetch_events(db: Database, event_ids: Iterable[str]) -> dict[str, events.Event]:
    """Stored events by id (the alerts an answer or an integrity event points to), read in
    batches; unreadable ones are left out (read_stored logs them)."""
    ids = sorted(set(event_ids))
    out: dict[str, events.Event] = {}
    for i in range(0, len(ids), 500):
        part = ids[i : i + 500]
        rows = db.query(f"SELECT event_id, payload FROM events WHERE event_id IN ({', '.join('?' * len(part))})", part)
        for eid, payload in rows:
            ev = read_stored(eid, payload)
            if ev is not None:
                out[eid] = ev
    return out


def optional_columns(db: Database) -> bool:
    """A feed database from before sequence numbers has no publisher/seq/operator columns."""
    return "operator_id" in db.columns("events")


class Reader:
    """Each stored payload decoded once into its typed event; one that no longer validates is left
    out of every figure (read_stored logs it) and listed under "Data quality"."""

    def __init__(self) -> None:
        self.decoded: dict[str, events.Event | None] = {}
        self.unreadable: list[str] = []

    def __call__(self, event_id: str, payload: str) -> events.Event | None:
        if event_id not in self.decoded:
            self.decoded[event_id] = read_stored(event_id, payload)
            if self.decoded[event_id] is None:
                self.unreadable.append(event_id)
        return self.decoded[event_id]


def period_events(db: Database, period: Period, scope: Scope, read: Reader) -> list[events.Event]:
    # A coarse filter on the UTC date (a local day can start the previous UTC day); the exact
    # local days are picked in Python.
    where = ["ts >= ?", "ts < ?"]
    params = [(period.since - timedelta(days=1)).isoformat(), (period.until + timedelta(days=2)).isoformat()]
    for col, val in (("store_id", scope.store), ("till_id", scope.till)):
        if val:
            where.append(f"{col} = ?")
            params.append(val)
    rows = db.query(f"SELECT event_id, payload FROM events WHERE {' AND '.join(where)} ORDER BY ts", params)
    return [ev for eid, p in rows if (ev := read(eid, p)) is not None]


def standing_answers(db: Database, read: Reader) -> tuple[dict[str, set[str]], set[str]]:
    """Per alert, the answers that stand, and the ids of those answer events. Answers may come
    after midnight or after the period (an alert counts as answered either way), and so may
    corrections (Undo): worked out over every ack stored, by the rule the till's integrity check
    uses (core.answers)."""
    stand = standing(
        ev
        for eid, p in db.query(
            "SELECT event_id, payload FROM events WHERE kind = ? AND alert_event_id IS NOT NULL",
            (events.AckEvent.KIND,),
        )
        if isinstance(ev := read(eid, p), events.AckEvent)
    )
    return (
        {alert: {a.answer for a in acks} for alert, acks in stand.items()},
        {a.event_id for acks in stand.values() for a in acks},
    )


def alerts_of(db: Database, in_rows: list[events.Event]) -> dict[str, events.AlertEvent]:
    """What an integrity line and a cashier need of an alert: those of the rows, and the few
    older ones an answer or integrity event of the period points back to."""
    alerts = {ev.event_id: ev for ev in in_rows if isinstance(ev, events.AlertEvent)}
    wanted = {ev.alert_event_id for ev in in_rows if isinstance(ev, (events.AckEvent, events.IntegrityEvent))}
    alerts.update(
        {k: v for k, v in fetch_events(db, wanted - alerts.keys()).items() if isinstance(v, events.AlertEvent)}
    )
    return alerts
