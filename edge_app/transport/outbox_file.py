"""The outbox's file itself, before any event is in it: the lock beside it (one program per
outbox), the header stamp and table check that tell an outbox this program made from someone
else's file (never renamed, rewritten or extended), and opening it (WAL, FULL sync, a bounded log,
the schema, a quick check). The errors the outbox raises are declared here, below both."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from edge_app.transport import locks
from edge_app.transport.outbox_space import WAL_MAX_BYTES

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

SQLITE_MAGIC = b"SQLite format 3\x00"
# Stamped in the SQLite header (offset 68) of every outbox this program creates: "AgOb".
APPLICATION_ID = 0x41674F62


class OutboxError(RuntimeError):
    """The outbox file cannot be used; the message names the file and the reason."""


class OutboxInUse(OutboxError):
    """Another process already has this outbox open (its lock file names it)."""


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def take_lock(path: Path) -> tuple[int, bool]:
    """An exclusive lock on `<outbox>.lock` (locks.take). Two services (or windows) on one outbox
    would number events twice and knock each other off the broker under one client id; the
    second is refused, naming the first."""
    lp = lock_path(path)
    created = not lp.exists()
    try:
        return locks.take(lp), created
    except locks.LockHeld as held:
        raise OutboxInUse(
            f"outbox {path} is in use by another process ({held.owner}): only one "
            "program may use an outbox; stop that one, or give this one its own outbox path"
        ) from None
    except OSError as exc:
        raise OutboxError(f"cannot lock outbox {path} through {lp} ({exc.strerror})") from None


def read_header(path: Path) -> bytes:
    """The first 100 bytes of the file at `path` (SQLite's header)."""
    try:
        with open(path, "rb") as f:
            return f.read(100)
    except OSError as exc:
        raise OutboxError(f"cannot read outbox {path} ({exc.strerror})") from None


def header_is_ours(path: Path) -> bool:
    """The file at `path` is an SQLite database stamped with our APPLICATION_ID."""
    head = read_header(path)
    return head.startswith(SQLITE_MAGIC) and len(head) >= 72 and int.from_bytes(head[68:72], "big") == APPLICATION_ID


def check_ours(path: Path) -> None:
    """Refuse (OutboxError) a file that is not an outbox this program made: outbox.path
    pointing at someone's file must never get that file renamed, rewritten or extended."""
    if path.is_dir():
        raise OutboxError(f"outbox {path} is a folder; point the setting at a file")
    head = read_header(path)
    if not head:
        return  # empty: nothing in it to lose (SQLite starts a new database there)
    foreign = (
        f"{path} exists and is not an agecheck outbox; it is left untouched: point the setting "
        "at a new file, or move that file away"
    )
    if not head.startswith(SQLITE_MAGIC):
        raise OutboxError(foreign + " (it is not an SQLite database)")
    if header_is_ours(path):
        return
    # application_id 0: an outbox from before the id was stamped, or another program's
    # SQLite file. Ours has exactly our tables with our columns.
    try:
        # immutable: no locks, no -wal/-shm files created beside someone else's database.
        db = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, timeout=10)
        try:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            cols = [r[1] for r in db.execute("PRAGMA table_info(events)")]
        finally:
            db.close()
    except sqlite3.DatabaseError as exc:
        raise OutboxError(foreign + f" (it cannot be read as one: {exc})") from None
    if not tables:
        return  # no tables at all: there is nothing in it to lose
    if tables - {"events", "meta", "sqlite_sequence"} or cols != ["seq", "event_id", "topic", "payload", "created"]:
        raise OutboxError(foreign + " (it is another program's SQLite database)")


def is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    """SQLite says the file is damaged (rather than locked, missing or unreadable)."""
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text


def open_db(path: Path) -> sqlite3.Connection:
    """A connection to the outbox at `path`: stamped, WAL, FULL sync, a bounded log, our tables,
    and a quick check (sqlite3.DatabaseError when the file is damaged)."""
    try:
        db = sqlite3.connect(str(path), timeout=10, isolation_level=None, check_same_thread=False)
    except sqlite3.OperationalError as exc:
        raise OutboxError(f"cannot open outbox {path} ({exc})") from None
    try:
        if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            # Before WAL mode is switched on, so that on a new file the stamp is written to the
            # database file itself at once (not to the WAL, where a SIGKILL before the first
            # checkpoint would leave the file looking like nobody's).
            db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise OutboxError(f"outbox {path}: the file system does not support SQLite WAL mode")
        # FULL: every commit is fsync'ed to the WAL before put() returns.
        db.execute("PRAGMA synchronous=FULL")
        # A bounded log (see WAL_MAX_BYTES): the default (1000 pages, never truncated) grew
        # into every byte freed on a nearly full disk.
        page = int(db.execute("PRAGMA page_size").fetchone()[0])
        db.execute(f"PRAGMA wal_autocheckpoint = {max(8, WAL_MAX_BYTES // page)}")
        db.execute(f"PRAGMA journal_size_limit = {WAL_MAX_BYTES}")
        db.executescript(_SCHEMA)
        row = db.execute("PRAGMA quick_check").fetchone()
        if row is None or row[0] != "ok":
            raise sqlite3.DatabaseError(f"database disk image is malformed ({row[0] if row else 'no answer'})")
    except BaseException:
        db.close()
        raise
    return db
