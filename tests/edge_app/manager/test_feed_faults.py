"""The feed never wedges (issue 26), with a real Mosquitto, the real `agecheck feed` process and a
real PostgreSQL server or SQLite file:

* forged events (a NUL in the transaction id, a `seq` above 2^63-1, an age of 1e300, `ts:
  "yesterday"`, `decision: "sure"`, a 60,000-character transaction id), more of them than the
  broker's in-flight window, are quarantined and acknowledged, and the good events after them are
  stored; none of them is stored as an event;
* the database going away (PostgreSQL stopped; the SQLite file's disk full) is said once, the
  messages wait, and everything is stored once it is back, without a restart;
* the store tells a row it can never take (RowRejected) from a database that is away
  (StoreUnavailable), on both backends."""

from __future__ import annotations

import pytest

from edge_app.core import events
from edge_app.manager.db import RowRejected, StoreUnavailable, open_store
from tests.edge_app.broker_util import Broker
from tests.edge_app.disk_util import Filler, small_tmpfs
from tests.edge_app.feed_util import Proc, Publisher, check_event, event_topic, wait_until, write_config
from tests.edge_app.pg_util import PgServer


def forged(i: int) -> dict:
    """The forged events the fault battery sent, in turn."""
    ev = check_event(txn=f"T-forged-{i}")
    kind = i % 6
    if kind == 0:
        ev["transaction_id"] = f"T-\x00-{i}"
    elif kind == 1:
        ev.update(seq=2**63 + i, publisher="till-01")
    elif kind == 2:
        ev["age"] = 1e300
    elif kind == 3:
        ev["ts"] = "yesterday"
    elif kind == 4:
        ev["decision"] = "sure"
    else:
        ev["transaction_id"] = f"T-{i}-" + "x" * 60_000
    return ev


class Store:
    """Counts rows in the feed's store (SQLite path or PostgreSQL URL) from outside the feed."""

    def __init__(self, where: str) -> None:
        self.where = where

    def count(self, sql: str) -> int:
        try:
            db = open_store(self.where, read_only=True)
        except Exception:
            return -1  # not created yet, or the server is down
        try:
            return int(db.query(sql)[0][0])
        except Exception:
            return -1
        finally:
            db.close()

    def events(self) -> int:
        return self.count("SELECT COUNT(*) FROM events")

    def quarantined(self) -> int:
        return self.count("SELECT COUNT(*) FROM quarantine")


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "feed.sqlite3")
    else:
        with PgServer() as pg:
            yield pg.create_db("feed")


def test_forged_events_are_quarantined_and_the_good_ones_after_them_stored(tmp_path, store_url):
    store = Store(store_url)
    with Broker(persistent=True) as broker:
        cfg = write_config(tmp_path / "config.yaml", broker.port)
        feed = Proc(["feed", "--config", str(cfg), "--db", store_url])
        pub = Publisher(broker.port)
        try:
            feed.wait_line("subscribed to", timeout=30)
            # 25: more than Mosquitto's in-flight window (20), so one held back stops all after it.
            bad = [forged(i) for i in range(25)]
            for ev in bad:
                pub.event(ev)
            good = [check_event(txn=f"T-good-{i}") for i in range(5)]
            for ev in good:
                pub.event(ev)
            wait_until(
                lambda: store.events() == 5 and store.quarantined() == 25,
                timeout=60,
                what=f"5 good events stored and 25 quarantined (have {store.events()}, {store.quarantined()})",
            )
            assert feed.stop() == 0
            # Acknowledged: a new feed gets none of them again, and goes on storing.
            feed = Proc(["feed", "--config", str(cfg), "--db", store_url])
            feed.wait_line("resumed session", timeout=30)
            pub.event(check_event(txn="T-after-restart"))
            wait_until(lambda: store.events() == 6, timeout=30, what="the event after the restart")
        finally:
            pub.close()
            feed.stop()
    db = open_store(store_url, read_only=True)
    try:
        txns = {r[0] for r in db.query("SELECT transaction_id FROM events")}
        assert txns == {f"T-good-{i}" for i in range(5)} | {"T-after-restart"}
        assert db.query("SELECT MAX(times) FROM quarantine") == [(1,)]  # never redelivered
        reasons = " | ".join(r[0] for r in db.query("SELECT reason FROM quarantine"))
    finally:
        db.close()
    for words in (
        "NUL character",
        "outside a 64-bit integer",
        "outside 0 to 130",
        "not an ISO 8601 time",
        "decision must be one of",
        "more than 128",
    ):
        assert words in reasons, reasons
    assert "Traceback" not in feed.output


def _feed_holds_and_recovers(tmp_path, store_url: str, cut, restore, n: int = 30) -> Proc:
    """Run a feed, store one event, `cut()` the database, publish n events, `restore()` it: all are
    stored without a restart. Returns the (stopped) feed for its output."""
    store = Store(store_url)
    with Broker(persistent=True) as broker:
        cfg = write_config(tmp_path / "config.yaml", broker.port)
        feed = Proc(["feed", "--config", str(cfg), "--db", store_url])
        pub = Publisher(broker.port)
        try:
            feed.wait_line("subscribed to", timeout=30)
            pub.event(check_event(txn="T-before"))
            wait_until(lambda: store.events() == 1, timeout=30, what="the first event stored")
            cut()
            for i in range(n):
                pub.event(check_event(txn=f"T-away-{i}"))
            # The fault has been met (worded as today's feed does, or as the feed before issue 26 did).
            wait_until(
                lambda: any(w in feed.output for w in ("cannot take messages", "could not store a message")),
                timeout=60,
                what="the feed meeting the fault",
            )
            restore()
            wait_until(
                lambda: store.events() == n + 1,
                timeout=90,
                what=f"all {n} events stored after the cause went (have {store.events() - 1})",
            )
            feed.wait_line("the event store takes messages again", timeout=10)
            assert feed.p.poll() is None, "the feed stopped"
        finally:
            pub.close()
            feed.stop()
    out = feed.output
    # Said once for the whole outage, not once per retry or per message.
    assert out.count("the event store cannot take messages") == 1, out
    assert "Traceback" not in out, out
    return feed


def test_postgresql_down_is_said_once_and_the_feed_recovers_by_itself(tmp_path):
    with PgServer() as pg:
        _feed_holds_and_recovers(tmp_path, pg.create_db("feed"), pg.stop, pg.start)


def test_a_full_disk_under_the_sqlite_store_is_said_once_and_the_feed_recovers(tmp_path):
    with small_tmpfs(tmp_path / "disk", "4m") as disk:
        filler = Filler(disk)
        try:
            feed = _feed_holds_and_recovers(tmp_path, str(disk / "feed.sqlite3"), filler.fill, filler.release, n=40)
        finally:
            filler.release()
    assert "full" in feed.output


# -- the store's two kinds of error, each backend -------------------------------------------------
def test_sqlite_tells_a_refused_row_from_an_unavailable_store(tmp_path):
    db = open_store(tmp_path / "feed.sqlite3")
    db.migrate()
    db.execute("INSERT INTO counters (name, value) VALUES ('a', 1)")
    with pytest.raises(RowRejected):
        db.execute("INSERT INTO counters (name, value) VALUES ('a', 2)")  # the same key
    with pytest.raises(RowRejected):
        db.execute("INSERT INTO counters (name, value) VALUES ('b', ?)", (2**64,))  # no 64-bit integer
    db.close()
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        db = open_store(disk / "feed.sqlite3")
        db.migrate()
        filler = Filler(disk)
        filler.fill()
        try:
            with pytest.raises(StoreUnavailable, match="full"):
                db.execute("INSERT INTO counters (name, value) VALUES (?, ?)", ("c" * 200_000, 1))
        finally:
            filler.release()
        db.execute("INSERT INTO counters (name, value) VALUES ('c', 1)")  # the same connection, back
        db.close()


def test_postgresql_tells_a_refused_row_from_an_unavailable_store():
    with PgServer() as pg:
        db = open_store(pg.create_db("feed"))
        db.migrate()
        ev = check_event()
        row = ("x-1", "check", 1, ev["ts"], "store-001", "till-01", "t", ev["ts"], "{}")
        insert = (
            "INSERT INTO events (event_id, kind, schema, ts, store_id, till_id, topic, received_at, payload,"
            " transaction_id, seq) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
        )
        db.execute(insert, (*row, "T-1", 2**62))  # seq is 64 bits wide now (it was 32 on PostgreSQL)
        with pytest.raises(RowRejected, match="NUL"):
            db.execute(insert, ("x-2", *row[1:], "T-\x00", 1))
        with pytest.raises(RowRejected):
            db.execute(insert, ("x-3", *row[1:], "T-3", 2**63))
        pg.stop()
        with pytest.raises(StoreUnavailable):
            db.execute(insert, ("x-4", *row[1:], "T-4", 4))
        pg.start()
        db.execute(insert, ("x-4", *row[1:], "T-4", 4))
        assert db.query("SELECT COUNT(*) FROM events") == [(2,)]
        db.close()


def test_a_feed_store_quarantines_what_the_database_refuses(tmp_path):
    """`keep`: a row the database refuses for good becomes a quarantine row with the database's
    reason (here an event_id the events table already holds under another constraint)."""
    from edge_app.manager.store import FeedStore

    st = FeedStore(tmp_path / "feed.sqlite3")
    st.db.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.transaction_id = 'T-refused'"
        " BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
    )
    ev = check_event(txn="T-refused")
    res = st.keep(event_topic(ev), events.encode(ev))
    assert res.status == "quarantined" and "refused by the test trigger" in res.reason
    ok = check_event(txn="T-ok")
    assert st.keep(event_topic(ok), events.encode(ok)).status == "new"
    st.close()
