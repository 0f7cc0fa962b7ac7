"""Outbox: the on-disk queue between "an event happened" and "the broker has it". Owns the SQLite
file: an event is committed (WAL, synchronous=FULL, so it survives a power cut) before anyone
tries to publish it, read back oldest first, and deleted only when the broker acknowledged it.

Bounded by `outbox.max_events`. When full, the OLDEST undelivered event is dropped to make room:
the newest checks are the ones the store manager and the integrity report still need, and a
till that has been offline for so long has an operational problem anyway. Every drop is logged
with the event id and counted in a persistent `dropped_total` that the service puts in its
retained `state`, so it is never silent.

It also numbers what it stores (`put_event`): each event gets the next publisher sequence number
(`seq`, kept in the same file and committed in the same transaction as the event, so it survives
restarts and power cuts and never repeats or skips). A consumer that sees a hole in a publisher's
numbers knows events were lost on the way (a dropped oldest event here, a broker queue limit).
A corrupt file moved aside starts a new count at 1.

On a nearly full disk the outbox keeps its own write-ahead log bounded and refuses new events
until space is free again, rather than letting the log grow into every byte freed: its guard,
with the space reserve beside the file, is `edge_app.transport.outbox_space`. The file itself
(its lock, telling ours from someone else's, opening it) and the errors are
`edge_app.transport.outbox_file`. In the till service `edge_app.transport.outbox_writer` sits in
front of it, holding events in memory while it cannot write.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from edge_app.core import events
from edge_app.transport.files import create_private
from edge_app.transport.outbox_file import (
    OutboxError,
    check_ours,
    header_is_ours,
    is_corrupt,
    lock_path,
    open_db,
    take_lock,
)
from edge_app.transport.outbox_space import RESUME_FREE_BYTES, SpaceGuard, is_full

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# A write failure (disk full) is logged at most this often, not once per event.
LOG_EVERY_S = 60.0


class _Full(OutboxError):
    """A write failed for lack of space (inside the outbox: it makes space and tries again)."""


@dataclass(frozen=True)
class OutboxRow:
    seq: int  # delivery order
    event_id: str
    topic: str
    payload: bytes
    created: float  # epoch seconds when stored


class Outbox:
    """One SQLite connection shared by the threads that store and acknowledge events."""

    def __init__(self, path: str | Path, max_events: int):
        self.path = Path(path)
        self.max_events = max_events
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(f"cannot create the folder for outbox {self.path} ({exc.strerror})") from None
        # Before anything reads or moves the file: a second instance must not touch the first's.
        self._lock_fd: int | None
        self._lock_fd, lock_created = take_lock(self.path)
        try:
            self._init_file()
        except BaseException:
            # A refused path (someone else's file) gets nothing left beside it.
            if lock_created:
                lock_path(self.path).unlink(missing_ok=True)
            os.close(self._lock_fd)
            raise
        self._depth = self._count()
        self._space = SpaceGuard(self.path, self._checkpoint)
        self._undeleted: list[int] = []  # delivered rows whose DELETE could not be written yet
        self._delete_logged = -LOG_EVERY_S

    def _init_file(self) -> None:
        created = create_private(self.path)
        if not created:
            check_ours(self.path)
        try:
            self._db = open_db(self.path)
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc) or not header_is_ours(self.path):
                raise OutboxError(f"cannot open outbox {self.path} ({exc})") from None
            # Our own file, damaged: keep it for inspection rather than deleting what might
            # still be read, and start a new one so the till keeps recording.
            aside = self.path.with_name(f"{self.path.name}.corrupt-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
            self.path.rename(aside)
            for suffix in ("-wal", "-shm"):
                side = self.path.with_name(self.path.name + suffix)
                if side.exists():
                    side.rename(aside.with_name(aside.name + suffix))
            log.error(
                "outbox %s is not a readable SQLite database (%s); moved it to %s and started an empty one",
                self.path,
                exc,
                aside,
            )
            create_private(self.path)
            try:
                self._db = open_db(self.path)
            except sqlite3.DatabaseError as exc2:
                raise OutboxError(f"cannot open outbox {self.path} ({exc2})") from None
        self._ident = self._file_ident()

    def _file_ident(self) -> tuple[int, int] | None:
        """(device, inode) of the file at the outbox's path; None when there is none."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _check_file(self) -> None:
        """(lock held) Before a write: the file at the path is still the one open. A deleted outbox
        is rebuilt at its path from the open connection (which still reads the deleted file), so
        that nothing is written into a file no one will ever read again and nothing stored is
        lost; a path that now holds another file is refused (OutboxError): it is not ours to write."""
        now = self._file_ident()
        if now == self._ident:
            return
        if now is not None:
            raise OutboxError(
                f"outbox {self.path} was replaced by another file while in use; events are not "
                "written into the old one or the new one (held in memory): move the new file "
                "away, or restart to use it"
            )
        self._rebuild_deleted()

    def _rebuild_deleted(self) -> None:
        new = self.path.with_name(self.path.name + ".rebuild")
        for leftover in (new, new.with_name(new.name + "-journal")):
            leftover.unlink(missing_ok=True)
        try:
            create_private(new)
            dest = sqlite3.connect(str(new))
            try:
                self._db.backup(dest)  # everything the open connection sees, its WAL included
            finally:
                dest.close()
        except sqlite3.Error as exc:
            new.unlink(missing_ok=True)
            raise OutboxError(
                f"outbox {self.path} was deleted while in use, and a new one cannot be written "
                f"({exc}); events are held in memory until it can"
            ) from None
        # Closing the last connection to the deleted file removes its -wal and -shm by name, so the
        # rebuilt file opens with none of the old one's.
        self._db.close()
        os.rename(new, self.path)
        self._db = open_db(self.path)
        self._ident = self._file_ident()
        log.error(
            "outbox %s was deleted while in use: rebuilt at the same path with the %d undelivered "
            "event(s) and the numbering it had; nothing was lost",
            self.path,
            self._count(),
        )

    def _count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def _checkpoint(self) -> bool:
        """Copy the log into the database file and truncate the log to nothing. True if done."""
        try:
            busy, _, _ = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error:
            return False
        return int(busy) == 0

    # -- API -----------------------------------------------------------------------------------
    def put(self, topic: str, payload: bytes, event_id: str) -> list[str]:
        """Store one already encoded message durably, without numbering it. Returns the event ids
        dropped to make room (normally none). Storing the same event_id twice is a no-op."""
        with self._lock:
            return self._with_space(lambda: self._put(topic, payload, event_id))

    def _with_space(self, write: Callable[[], _T]) -> _T:
        """(lock held) One write; on a full disk, make space (`_relieve`) and try it once more."""
        self._check_file()
        refusal = self._space.refusal()
        if refusal is not None:
            raise OutboxError(refusal)
        try:
            return write()
        except _Full as full:
            failed = full
        self._space.relieve()
        if not self._space.low_space:
            try:
                return write()
            except _Full as full:
                failed = full
                self._space.relieve()
        raise OutboxError(f"{failed}; the outbox writes again once {RESUME_FREE_BYTES // 1024} KB are free") from None

    def _put(self, topic: str, payload: bytes, event_id: str) -> list[str]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                dropped = self._make_room()
                cur = self._db.execute(
                    "INSERT OR IGNORE INTO events(event_id, topic, payload, created) VALUES (?, ?, ?, ?)",
                    (event_id, topic, sqlite3.Binary(payload), time.time()),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error as exc:
            err = _Full if is_full(exc) else OutboxError
            raise err(f"cannot store event {event_id} in outbox {self.path} ({exc})") from None
        self._depth += cur.rowcount - len(dropped)
        self._log_dropped(dropped, event_id)
        return dropped

    def put_event(self, topic: str, event: events.Event, publisher: str) -> tuple[events.Event, list[str]]:
        """Number the event (`seq`, `publisher`), encode it and store it durably, all
        in one transaction. Returns the event as stored and the event ids dropped to make room.
        Storing an event_id that is already here stores nothing and uses no number."""
        with self._lock:
            return self._with_space(lambda: self._put_event(topic, event, publisher))

    def _put_event(self, topic: str, event: events.Event, publisher: str) -> tuple[events.Event, list[str]]:
        dropped: list[str] = []
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT payload FROM events WHERE event_id = ?", (event.event_id,)).fetchone()
                if row is not None:
                    self._db.execute("COMMIT")
                    return events.decode_event(bytes(row[0])), []
                got = self._db.execute("SELECT value FROM meta WHERE key = 'publisher_seq'").fetchone()
                seq = (int(got[0]) if got else 0) + 1
                stored = event.numbered(seq, publisher)
                payload = stored.encode()
                self._db.execute(
                    "INSERT INTO meta(key, value) VALUES('publisher_seq', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (seq,),
                )
                undeleted = self._delete_undeleted()
                self._depth -= undeleted
                try:
                    dropped = self._make_room()
                    self._db.execute(
                        "INSERT INTO events(event_id, topic, payload, created) VALUES (?, ?, ?, ?)",
                        (event.event_id, topic, sqlite3.Binary(payload), time.time()),
                    )
                    self._db.execute("COMMIT")
                except BaseException:
                    self._depth += undeleted
                    raise
                self._undeleted.clear()
            except BaseException:
                self._rollback()
                raise
        except sqlite3.Error as exc:
            err = _Full if is_full(exc) else OutboxError
            raise err(f"cannot store event {event.event_id} in outbox {self.path} ({exc})") from None
        self._depth += 1 - len(dropped)
        self._log_dropped(dropped, event.event_id)
        return stored, dropped

    def _rollback(self) -> None:
        # After SQLITE_FULL or an I/O error SQLite may have rolled the transaction back itself;
        # a second ROLLBACK would then raise and hide the error that names the cause.
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def _make_room(self) -> list[str]:
        """Inside a write transaction: delete the oldest rows so one more fits; count them."""
        excess = self._depth + 1 - self.max_events
        if excess <= 0:
            return []
        rows = self._db.execute("SELECT seq, event_id FROM events ORDER BY seq LIMIT ?", (excess,)).fetchall()
        self._db.executemany("DELETE FROM events WHERE seq = ?", [(r[0],) for r in rows])
        self._db.execute(
            "INSERT INTO meta(key, value) VALUES('dropped_total', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            (len(rows),),
        )
        return [r[1] for r in rows]

    def _log_dropped(self, dropped: list[str], event_id: str) -> None:
        for eid in dropped:
            log.error(
                "outbox full (%d events, outbox.max_events): dropped the oldest undelivered event %s to store %s",
                self.max_events,
                eid,
                event_id,
            )

    def last_seq(self) -> int:
        """The publisher sequence number of the newest event stored (0 before the first)."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'publisher_seq'").fetchone()
        return int(row[0]) if row else 0

    def after(self, seq: int, limit: int) -> list[OutboxRow]:
        """Up to `limit` stored events with a sequence number above `seq`, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, topic, payload, created FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [OutboxRow(int(r[0]), r[1], r[2], bytes(r[3]), float(r[4])) for r in rows]

    def delete(self, seq: int) -> None:
        """The broker has the event: forget it. A delete that cannot be written (disk full) is
        remembered and tried again with the next one, never raised: the row is delivered, and at
        worst a restart sends it again (consumers de-duplicate by event_id)."""
        with self._lock:
            self._undeleted.append(seq)
            try:
                n = self._delete_now()
            except sqlite3.Error as exc:
                if is_full(exc):
                    self._space.relieve()  # the reserve is there for exactly this
                    try:
                        n = self._delete_now()
                    except sqlite3.Error as exc2:
                        exc = exc2
                    else:
                        self._undeleted.clear()
                        self._depth -= n
                        return
                now = time.monotonic()
                if now - self._delete_logged >= LOG_EVERY_S:
                    self._delete_logged = now
                    log.error(
                        "outbox %s: cannot remove %d delivered event(s) (%s); retrying with the next one",
                        self.path,
                        len(self._undeleted),
                        exc,
                    )
                return
            self._undeleted.clear()
            self._depth -= n

    def _delete_now(self) -> int:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            n = self._delete_undeleted()
            self._db.execute("COMMIT")
        except sqlite3.Error:
            self._rollback()
            raise
        return n

    def _delete_undeleted(self) -> int:
        """Inside a write transaction: delete the delivered rows a full disk kept here."""
        return sum(self._db.execute("DELETE FROM events WHERE seq = ?", (s,)).rowcount for s in self._undeleted)

    def depth(self) -> int:
        with self._lock:
            return self._depth

    @property
    def full(self) -> bool:
        return self.depth() >= self.max_events

    def dropped_total(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'dropped_total'").fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._lock_fd is not None:
                os.close(self._lock_fd)  # releases the lock (the file stays: unlinking it would race)
                self._lock_fd = None
