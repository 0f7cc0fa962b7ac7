"""Copying one feed store into another (`agecheck feed --db TARGET --copy-from SOURCE`): a store
that outgrew its SQLite file moves to PostgreSQL with its history. Every event is read from the
source's stored payload and written by the same code the live feed uses (checked again, the
columns of this build filled in), keyed by event_id, so a copy can be run again, stopped half
way and resumed, or run while a feed writes the target: an event already there is left alone.
The quarantine goes across too (keyed by its digest). At the end every source event and
quarantined message is looked up in the target and the counts are checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_app.errors import AgecheckError, UsageError
from edge_app.manager.db import Database, StoreError, Target, open_store, target
from edge_app.manager.store import FeedStore, check_message

BATCH = 500


class CopyError(UsageError):
    """The source cannot be read as a feed store, or names the target itself."""


class CopyIncomplete(AgecheckError):
    """After the copy, some of the source's rows are not in the target."""

    exit_code = 1


@dataclass(frozen=True)
class CopyCounts:
    source_events: int
    new_events: int
    already_there: int
    unreadable: int  # source events whose payload this build no longer reads: kept in the target's quarantine
    source_quarantined: int
    new_quarantined: int
    found_in_target: int  # source events and quarantined messages looked up in the target afterwards

    @property
    def complete(self) -> bool:
        return self.found_in_target == self.source_events + self.source_quarantined


def _same(a: Target, b: Target) -> bool:
    if a.dialect == b.dialect == "sqlite":
        return Path(a.where).resolve() == Path(b.where).resolve()
    return a.label == b.label


def _open_source(source: str | Path, dest: Target) -> Database:
    try:
        src_target = target(source)
    except StoreError as exc:
        raise CopyError(f"--copy-from: {str(exc).removeprefix('--db: ')}") from None
    if _same(src_target, dest):
        raise CopyError(f"--copy-from and --db both name {dest.label}; copy from another store")
    try:
        db = open_store(source, read_only=True)
        db.query("SELECT event_id, topic, received_at, payload FROM events LIMIT 1")
    except StoreError as exc:
        raise CopyError(f"--copy-from: {src_target.label!r} cannot be read as a feed store ({exc})") from None
    return db


def _batches(db: Database, sql: str, key_col: str):
    """Rows of `sql` (which selects key_col first) in key order, BATCH at a time."""
    last = ""
    while rows := db.query(f"{sql} WHERE {key_col} > ? ORDER BY {key_col} LIMIT {BATCH}", (last,)):
        yield rows
        last = rows[-1][0]


def _present(db: Database, table: str, col: str, keys: list[str]) -> int:
    if not keys:
        return 0
    return int(db.query(f"SELECT COUNT(*) FROM {table} WHERE {col} IN ({', '.join('?' * len(keys))})", keys)[0][0])


def copy_store(source: str | Path, dest: FeedStore) -> CopyCounts:
    """Copy every event and quarantined message of `source` into `dest`; counts checked after."""
    src = _open_source(source, dest.db.target)
    try:
        n = new = dup = unreadable = found = 0
        for rows in _batches(src, "SELECT event_id, topic, received_at, payload FROM events", "event_id"):
            with dest.db.transaction():
                for event_id, topic, received_at, payload in rows:
                    raw = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
                    ev, reason = check_message(topic, raw, dest.max_payload_bytes)
                    n += 1
                    if ev is None:
                        unreadable += 1
                        dest.quarantine(
                            topic, raw, f"copied from {src.target.label}, event {event_id}: {reason}", received_at
                        )
                    elif dest.insert(ev, topic, raw, received_at):
                        new += 1
                    else:
                        dup += 1
            found += _present(dest.db, "events", "event_id", [r[0] for r in rows])
        found += unreadable  # kept in the quarantine, counted there by what it is
        q = q_new = 0
        if src.has_table("quarantine"):
            cols = "digest, received_at, last_received_at, times, topic, reason, size, payload"
            for rows in _batches(src, f"SELECT {cols} FROM quarantine", "digest"):
                with dest.db.transaction():
                    for row in rows:
                        q += 1
                        q_new += (
                            dest.db.execute(
                                f"INSERT INTO quarantine ({cols}) VALUES ({', '.join('?' * 8)})"
                                " ON CONFLICT (digest) DO NOTHING",
                                (*row[:7], bytes(row[7])),
                            )
                            == 1
                        )
                found += _present(dest.db, "quarantine", "digest", [r[0] for r in rows])
        return CopyCounts(n, new, dup, unreadable, q, q_new, found)
    finally:
        src.close()


def run(source: str, dest_path: str, max_payload_bytes: int) -> int:
    """The command: copy, print the counts, fail (exit 1) when the check finds rows missing."""
    dest = FeedStore(dest_path, max_payload_bytes)
    try:
        c = copy_store(source, dest)
    finally:
        dest.close()
    print(
        f"agecheck feed: copied {target(source).label} into {dest.label}: {c.source_events} events "
        f"({c.new_events} new, {c.already_there} already there"
        f"{f', {c.unreadable} no longer readable, kept in the quarantine' if c.unreadable else ''}), "
        f"{c.source_quarantined} quarantined message(s) ({c.new_quarantined} new)",
        flush=True,
    )
    if not c.complete:
        raise CopyIncomplete(
            f"checked: only {c.found_in_target} of the source's "
            f"{c.source_events + c.source_quarantined} rows are in {dest.label}; run it again"
        )
    print(
        f"agecheck feed: checked: all {c.source_events} events and {c.source_quarantined} quarantined "
        f"message(s) of the source are in the target",
        flush=True,
    )
    return 0
