"""The manager's event store: one small connection class over SQLite (the embedded default, a
file beside the feed) or PostgreSQL (a head office's server, `postgresql://...` URLs, psycopg 3),
and the schema both share, built by numbered migrations.

Why not an ORM: the feed writes one idempotent INSERT per event and the report and dashboard run
a handful of SELECTs that both databases understand; a placeholder swap (`?` -> `%s`) and three
column types are all that differ. The schema version is kept in `schema_migrations`, so a feed
database written by an older build gains the new columns when it is next opened for writing.

Read-only opening (report, dashboard) never creates or migrates anything: SQLite is opened with
`mode=ro`, PostgreSQL sessions are read-only transactions.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edge_app.core.times import now_iso
from edge_app.transport.files import create_private

Dialect = Literal["sqlite", "postgresql"]

# Column types that differ; everything else is written once for both.
_TYPES = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT", "blob": "BLOB", "real": "REAL"},
    "postgresql": {"serial": "BIGSERIAL PRIMARY KEY", "blob": "BYTEA", "real": "DOUBLE PRECISION"},
}
# A statement only one dialect needs starts with this marker and the dialect's name.
_ONLY = "-- only "

# Each migration is a list of statements; never edit one that has shipped, add the next.
MIGRATIONS: list[list[str]] = [
    # 1: the schema of the first feed (SQLite files from then already have it: IF NOT EXISTS).
    [
        """CREATE TABLE IF NOT EXISTS events (
            event_id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            schema INTEGER NOT NULL,
            ts TEXT NOT NULL,
            store_id TEXT NOT NULL,
            till_id TEXT NOT NULL,
            transaction_id TEXT,
            decision TEXT,
            answer TEXT,
            age {real},
            age_low {real},
            age_high {real},
            age_band TEXT,
            alert_event_id TEXT,
            decision_time_s {real},
            topic TEXT NOT NULL,
            received_at TEXT NOT NULL,
            payload TEXT NOT NULL
        )""",
        "CREATE INDEX IF NOT EXISTS events_ts ON events (ts)",
        "CREATE INDEX IF NOT EXISTS events_alert ON events (alert_event_id)",
        """CREATE TABLE IF NOT EXISTS quarantine (
            id {serial},
            digest TEXT NOT NULL UNIQUE,
            received_at TEXT NOT NULL,
            last_received_at TEXT NOT NULL,
            times INTEGER NOT NULL DEFAULT 1,
            topic TEXT NOT NULL,
            reason TEXT NOT NULL,
            size INTEGER NOT NULL,
            payload {blob} NOT NULL
        )""",
        "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    ],
    # 2: per-publisher sequence numbers (gaps), the cashier, and the store as a dimension.
    [
        "ALTER TABLE events ADD COLUMN publisher TEXT",
        "ALTER TABLE events ADD COLUMN seq INTEGER",
        "ALTER TABLE events ADD COLUMN operator_id TEXT",
        "CREATE INDEX IF NOT EXISTS events_publisher_seq ON events (store_id, publisher, seq)",
        "CREATE INDEX IF NOT EXISTS events_store_ts ON events (store_id, ts)",
    ],
    # 3: the cashier's corrections (Undo): an ack names the ack it replaces. Which answers stand is
    # decided by edge_app.core.answers from the stored payloads, so rows from before need no back-fill.
    [
        "ALTER TABLE events ADD COLUMN replaces_event_id TEXT",
    ],
    # 4: `seq` takes every number an event may carry (63 bits, events.MAX_INT). SQLite's INTEGER
    # already does; PostgreSQL's is 32 bits, so a number above 2^31-1 failed the INSERT.
    [
        _ONLY + "postgresql\nALTER TABLE events ALTER COLUMN seq TYPE BIGINT",
    ],
    # 5: till health. A check's camera status and the quality gate's figures (events.CheckEvent's
    # sharpness, brightness, eyes_px) as columns, filled in for the rows stored before from their
    # payloads (the feed stores only payloads it validated as JSON, so each reads); and each till's
    # latest retained `state` and `availability` (edge_app.manager.tills), which tell a silent
    # till from a quiet one and show events numbered by a till that have not arrived.
    [
        "ALTER TABLE events ADD COLUMN camera TEXT",
        "ALTER TABLE events ADD COLUMN sharpness {real}",
        "ALTER TABLE events ADD COLUMN brightness {real}",
        "ALTER TABLE events ADD COLUMN eyes_px {real}",
        _ONLY + "sqlite\nUPDATE events SET camera = json_extract(payload, '$.camera'),"
        " sharpness = json_extract(payload, '$.sharpness'), brightness = json_extract(payload, '$.brightness'),"
        " eyes_px = json_extract(payload, '$.eyes_px') WHERE kind IN ('check', 'alert') AND json_valid(payload)",
        _ONLY + "postgresql\nUPDATE events SET camera = payload::jsonb->>'camera',"
        " sharpness = (payload::jsonb->>'sharpness')::double precision,"
        " brightness = (payload::jsonb->>'brightness')::double precision,"
        " eyes_px = (payload::jsonb->>'eyes_px')::double precision WHERE kind IN ('check', 'alert')",
        "CREATE INDEX IF NOT EXISTS events_kind_ts ON events (kind, ts)",
        """CREATE TABLE IF NOT EXISTS till_state (
            store_id TEXT NOT NULL,
            till_id TEXT NOT NULL,
            state_received_at TEXT,
            state_ts TEXT,
            heartbeat_s {real},
            last_seq BIGINT,
            outbox_depth BIGINT,
            camera TEXT,
            availability TEXT,
            availability_received_at TEXT,
            payload TEXT,
            PRIMARY KEY (store_id, till_id)
        )""",
    ],
]


# The events table's columns that copy an event's field of the same name (NULL for a kind without
# it), with how each is stored: "text", "num" or "int". The other columns are the message's own
# (kind, schema, topic, received_at, payload).
EVENT_FIELD_COLUMNS: dict[str, str] = {
    "event_id": "text",
    "ts": "text",
    "store_id": "text",
    "till_id": "text",
    "transaction_id": "text",
    "decision": "text",
    "answer": "text",
    "age": "num",
    "age_low": "num",
    "age_high": "num",
    "age_band": "text",
    "alert_event_id": "text",
    "decision_time_s": "num",
    "publisher": "text",
    "seq": "int",
    "operator_id": "text",
    "replaces_event_id": "text",
    "camera": "text",
    "sharpness": "num",
    "brightness": "num",
    "eyes_px": "num",
}
MESSAGE_COLUMNS = ("kind", "schema", "topic", "received_at", "payload")


class StoreError(Exception):
    """The database cannot be reached or used; the message names it and the reason."""


class RowRejected(StoreError):
    """Permanent: the database refuses this row and always will (a value it cannot hold, a
    constraint). Retrying it cannot help; the feed quarantines the message and goes on."""


class StoreUnavailable(StoreError):
    """Transient: the database cannot take anything just now (server down or restarting, disk full,
    locked, out of connections). The row is fine; it is kept and tried again."""


# SQLite result codes (sqlite3.Error.sqlite_errorcode & 0xff) that are about the row, not the
# database: string or blob too big, constraint, datatype mismatch.
_SQLITE_ROW_CODES = frozenset({18, 19, 20})
# PostgreSQL SQLSTATE classes that are about the row: 22 data exception (NUL in text, a number out
# of range), 23 integrity constraint. Anything else (08 connection, 53 disk full or out of memory,
# 57 shutting down, 25006 a read-only standby...) is taken as transient: keeping a message that can
# never be stored costs a retry loop that says so; dropping one that could have been stored loses it.
_PG_ROW_CLASSES = ("22", "23")


def _permanent(exc: BaseException) -> bool:
    """Whether a driver error is about the row (RowRejected) rather than the database."""
    if isinstance(exc, (OverflowError, UnicodeEncodeError)):  # a value the driver cannot send at all
        return True
    if isinstance(exc, sqlite3.Error):
        if isinstance(
            exc, (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError, sqlite3.InterfaceError)
        ):
            return True
        code = getattr(exc, "sqlite_errorcode", None)
        return code is not None and code & 0xFF in _SQLITE_ROW_CODES
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        return sqlstate[:2] in _PG_ROW_CLASSES
    # psycopg's own refusals before anything is sent (e.g. "text fields cannot contain NUL") are
    # DataError with no SQLSTATE.
    return type(exc).__name__ == "DataError"


@dataclass(frozen=True)
class Target:
    dialect: Dialect
    where: str  # a file path, or the URL (as given; the password is never printed, see `label`)

    @property
    def label(self) -> str:
        if self.dialect == "sqlite":
            return self.where
        try:
            from psycopg.conninfo import conninfo_to_dict

            d = conninfo_to_dict(self.where)
        except Exception:  # no psycopg (said when connecting), or a malformed URL (ditto)
            return "postgresql://…"
        return (
            f"postgresql://{d.get('user', '')}@{d.get('host', 'localhost')}:{d.get('port', 5432)}/{d.get('dbname', '')}"
        )


def target(db: str | Path) -> Target:
    text = str(db)
    if text.startswith(("postgresql://", "postgres://")):
        return Target("postgresql", text)
    if "://" in text:
        raise StoreError(
            f"--db: {text.split('://')[0]}:// databases are not supported; give a SQLite file "
            "path or a postgresql:// URL"
        )
    return Target("sqlite", text)


class Database:
    """One connection, shared by threads behind a lock. `?` placeholders in SQL work for both
    databases. Driver errors come out as StoreError; a lost PostgreSQL connection is opened
    again on the next call (the feed then gets its redelivery)."""

    def __init__(self, tgt: Target, read_only: bool) -> None:
        self.target = tgt
        self.dialect: Dialect = tgt.dialect
        self.read_only = read_only
        self._lock = threading.RLock()
        self._con: Any = None
        self._connect()

    # -- connection ----------------------------------------------------------------------------
    def _connect(self) -> None:
        if self.dialect == "sqlite":
            self._con = self._connect_sqlite()
        else:
            self._con = self._connect_pg()

    def _connect_sqlite(self) -> sqlite3.Connection:
        p = Path(self.target.where)
        try:
            if self.read_only:
                if not p.is_file():
                    raise StoreError(
                        f"{p}: does not exist; run `agecheck feed` first to collect events "
                        "(or pass --db to the feed's database)"
                    )
                con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, check_same_thread=False)
            else:
                if p.parent and not p.parent.exists():
                    p.parent.mkdir(parents=True, exist_ok=True)
                create_private(p)  # 0600: the feed names transactions and estimated ages
                con = sqlite3.connect(str(p), check_same_thread=False, isolation_level=None, timeout=10)
                con.execute("PRAGMA journal_mode=WAL")
                # FULL: a row must be on disk before the feed sends PUBACK (power cut on the shop PC).
                con.execute("PRAGMA synchronous=FULL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{p}: cannot use it as the feed database ({exc})") from None
        return con

    def _connect_pg(self):
        try:
            import psycopg
        except ImportError:
            # The [manager] extra (setup.py); a till's install leaves it out.
            raise StoreError(
                "a postgresql:// store needs psycopg 3, which a till's install leaves out; on the "
                "manager's computer install agecheck with its manager extra: "
                "pip install 'agecheck[manager]'"
            ) from None
        try:
            con = psycopg.connect(self.target.where, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"{self.target.label}: cannot connect ({str(exc).strip()})") from None
        if self.read_only:
            # autocommit statements run outside psycopg's own transactions, so the session
            # itself is made read-only (psycopg's read_only attribute would not apply).
            con.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        return con

    def _errors(self) -> tuple[type[Exception], ...]:
        if self.dialect == "sqlite":
            return (sqlite3.Error,)
        import psycopg

        return (psycopg.Error,)

    def _sql(self, sql: str) -> str:
        return sql.replace("?", "%s") if self.dialect == "postgresql" else sql

    # -- statements ----------------------------------------------------------------------------
    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        with self._lock:
            return self._run(lambda: self._con.execute(self._sql(sql), tuple(params)).rowcount, sql)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._run(
                lambda: [tuple(r) for r in self._con.execute(self._sql(sql), tuple(params)).fetchall()], sql
            )

    def _run(self, fn, sql: str):
        if self._con is None or (self.dialect == "postgresql" and self._con.closed):
            self._connect()
        errors: tuple[type[Exception], ...] = (*self._errors(), OverflowError, UnicodeEncodeError)
        try:
            return fn()
        except errors as exc:
            if self.dialect == "postgresql" and self._con.closed:
                self._con = None  # reconnect next time
            kind = RowRejected if _permanent(exc) else StoreUnavailable
            raise kind(f"{self.target.label}: {str(exc).strip()} (in: {' '.join(sql.split())[:80]})") from None

    def has_table(self, name: str) -> bool:
        if self.dialect == "sqlite":
            rows = self.query("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,))
        else:
            rows = self.query(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?",
                (name,),
            )
        return bool(rows)

    def columns(self, table: str) -> set[str]:
        if self.dialect == "sqlite":
            return {r[1] for r in self.query(f"PRAGMA table_info({table})")}
        return {
            r[0]
            for r in self.query(
                "SELECT column_name FROM information_schema.columns WHERE "
                "table_schema = current_schema() AND table_name = ?",
                (table,),
            )
        }

    # -- schema --------------------------------------------------------------------------------
    def migrate(self) -> int:
        """Bring the schema to the newest version; returns it. Each step commits with its
        version number, so an interrupted upgrade resumes where it stopped."""
        with self._lock:
            self.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT)")
            done = {r[0] for r in self.query("SELECT version FROM schema_migrations")}
            for version, steps in enumerate(MIGRATIONS, start=1):
                if version in done:
                    continue
                self._apply(version, steps)
            return len(MIGRATIONS)

    def _apply(self, version: int, steps: Iterable[str]) -> None:
        types = _TYPES[self.dialect]
        if self.dialect == "sqlite":
            self.execute("BEGIN IMMEDIATE")
        else:
            self._con.autocommit = False
        try:
            for stmt in steps:
                if stmt.startswith(_ONLY):
                    only, stmt = stmt.split("\n", 1)
                    if only[len(_ONLY) :] != self.dialect:
                        continue
                if stmt.startswith("ALTER TABLE events ADD COLUMN"):
                    col = stmt.split()[5]
                    if col in self.columns("events"):
                        continue  # added by hand or by a half-finished older upgrade
                self.execute(stmt.format(**types))
            self.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", (version, now_iso()))
            if self.dialect == "sqlite":
                self.execute("COMMIT")
            else:
                self._con.commit()
        except BaseException:
            if self.dialect == "sqlite":
                self._con.execute("ROLLBACK")
            elif self._con is not None and not self._con.closed:
                self._con.rollback()
            raise
        finally:
            if self.dialect == "postgresql" and self._con is not None and not self._con.closed:
                self._con.autocommit = True

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The statements inside commit together or not at all: a bulk copy commits once per
        batch instead of once per row (each commit waits for the disk). Other threads wait."""
        with self._lock:
            if self.dialect == "sqlite":
                self.execute("BEGIN IMMEDIATE")
            else:
                self._run(lambda: None, "BEGIN")  # (re)connects when needed
                self._con.autocommit = False
            try:
                yield
                if self.dialect == "sqlite":
                    self.execute("COMMIT")
                else:
                    self._run(self._con.commit, "COMMIT")
            except BaseException:
                if self._con is not None and not getattr(self._con, "closed", False):
                    if self.dialect == "sqlite":
                        self._con.execute("ROLLBACK")
                    else:
                        self._con.rollback()
                raise
            finally:
                if self.dialect == "postgresql" and self._con is not None and not self._con.closed:
                    self._con.autocommit = True

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None


def open_store(db: str | Path, read_only: bool = False) -> Database:
    """Open (and, for writing, create and migrate) the event store named by a path or URL."""
    return Database(target(db), read_only)
