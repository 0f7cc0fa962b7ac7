"""The event store on a real PostgreSQL server (started by the test) and on SQLite: the same
schema by migrations, idempotent inserts, gaps, an old SQLite feed file upgraded in place, and the
real `agecheck feed` writing two stores into PostgreSQL that the report and dashboard then read."""

from __future__ import annotations

import json
import sqlite3

import pytest

from edge_app.config import from_dict
from edge_app.core import events
from edge_app.manager.db import MIGRATIONS, StoreError, open_store, target
from edge_app.manager.report import build
from edge_app.manager.store import FeedDBError, FeedStore, gap_rows
from tests.edge_app.broker_util import Broker
from tests.edge_app.feed_util import (
    Proc,
    Publisher,
    ack_event,
    alert_event,
    check_event,
    event_topic,
    numbered,
    wait_until,
    write_config,
)
from tests.edge_app.pg_util import PgServer


@pytest.fixture(scope="module")
def pg():
    with PgServer() as server:
        yield server


def test_urls_and_paths():
    assert target("feed.sqlite3").dialect == "sqlite"
    t = target("postgresql://agecheck:secret@db.example:5433/events")
    assert t.dialect == "postgresql" and "secret" not in t.label and "db.example:5433/events" in t.label
    with pytest.raises(StoreError, match="mysql:// databases are not supported"):
        target("mysql://x/y")


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_same_schema_idempotent_inserts_and_gaps(kind, pg, tmp_path):
    url = str(tmp_path / "feed.sqlite3") if kind == "sqlite" else pg.create_db("idempotent")
    st = FeedStore(url)
    evs = numbered([check_event(txn=f"T-{i}", operator_id="C-1") for i in range(6)], "till-01", skip={3, 4})
    for ev in evs:
        assert st.add(event_topic(ev), events.encode(ev)).status == "new"
    for ev in evs[:3]:  # the broker sends some again
        assert st.add(event_topic(ev), events.encode(ev)).status == "duplicate"
    res = st.add("agecheck/v1/store-001/till-01/events/check", b"{oops")
    assert res.status == "quarantined"
    st.add("agecheck/v1/store-001/till-01/events/check", b"{oops")  # seen twice, kept once
    assert st.counts() == {"events": 6, "quarantined": 1, "duplicates": 3}
    st.close()
    again = FeedStore(url)  # opening again migrates nothing twice
    assert again.db.query("SELECT COUNT(*) FROM schema_migrations")[0][0] == len(MIGRATIONS)
    assert again.db.query("SELECT times FROM quarantine") == [(2,)]
    again.close()
    ro = open_store(url, read_only=True)
    gaps = gap_rows(ro)
    assert [(g.publisher, g.after_seq, g.before_seq, g.missing) for g in gaps] == [("till-01", 2, 5, 2)]
    assert ro.query("SELECT operator_id FROM events WHERE seq = 1") == [("C-1",)]
    with pytest.raises(StoreError):
        ro.execute("DELETE FROM events")  # the report and dashboard cannot change anything
    ro.close()


def test_an_old_sqlite_feed_file_is_upgraded_in_place(tmp_path):
    db = tmp_path / "old.sqlite3"
    con = sqlite3.connect(db)
    con.executescript(MIGRATIONS[0][0].format(real="REAL", serial="", blob="BLOB") + ";")
    old = check_event(txn="T-old")
    con.execute(
        "INSERT INTO events (event_id, kind, schema, ts, store_id, till_id, topic, received_at, payload)"
        " VALUES (?,?,?,?,?,?,?,?,?)",
        (old["event_id"], "check", 1, old["ts"], "store-001", "till-01", event_topic(old), old["ts"], json.dumps(old)),
    )
    con.commit()
    con.close()
    st = FeedStore(db)
    assert {"publisher", "seq", "operator_id"} <= st.db.columns("events")
    assert st.counts()["events"] == 1
    st.close()


def test_a_server_that_is_not_there_is_named(pg):
    with pytest.raises(FeedDBError, match=r"cannot connect"):
        FeedStore(f"postgresql://agecheck@127.0.0.1:{pg.port + 1 if pg.port < 65535 else 1}/postgres")


def test_the_feed_writes_two_stores_into_postgresql(pg, tmp_path):
    """`agecheck feed --all-stores --db postgresql://...`: a head office's single feed; the same
    events also sent by a second feed are stored once; report and dashboard read the server."""
    url = pg.create_db("chain")
    with Broker(persistent=True) as broker:
        cfg = write_config(tmp_path / "config.yaml", broker.port, feed={"timezone": "UTC"})
        feed = Proc(["feed", "--config", str(cfg), "--db", url, "--all-stores"])
        pub = None
        try:
            feed.wait_line("subscribed to", timeout=30)
            assert "secret" not in feed.output and "postgresql://agecheck@127.0.0.1" in feed.output
            pub = Publisher(broker.port)
            evs = []
            for store in ("store-042", "store-043"):
                c = check_event(store=store, till="till-01", txn=f"{store}-T1", ts="2025-03-14T10:00:00.000Z")
                a = alert_event(c, ts="2025-03-14T10:00:00.000Z")
                evs += numbered([c, a, ack_event(a, "no_id_check", ts="2025-03-14T10:00:05.000Z")], "till-01")
            for ev in evs + evs[:2]:
                pub.event(ev)
            import psycopg

            def count():
                with psycopg.connect(url) as con:
                    return con.execute("SELECT COUNT(*) FROM events").fetchone()[0]

            wait_until(lambda: count() == 6, timeout=30, what="six events in PostgreSQL")
            # The broker restarts under the feed; it resumes and goes on writing.
            mark = len(feed.lines)
            broker.restart(down_s=0.5)  # away long enough for the feed to see the outage
            pub.close()
            feed.wait_line("resumed session", timeout=30, after=mark)
            pub = Publisher(broker.port)
            late = check_event(
                store="store-043",
                till="till-02",
                txn="late",
                decision="approve",
                age=50.0,
                ts="2025-03-14T12:00:00.000Z",
            )
            pub.event(late)
            wait_until(lambda: count() == 7, timeout=30, what="the event after the broker restart")
        finally:
            if pub:
                pub.close()
            assert feed.stop() == 0, feed.output
    # A second feed with the same events (a store's own feed writing to head office too).
    st = FeedStore(url)
    assert all(st.add(event_topic(ev), events.encode(ev)).status == "duplicate" for ev in evs)
    st.close()
    with psycopg.connect(url) as con:
        assert con.execute("SELECT COUNT(*), COUNT(DISTINCT event_id) FROM events").fetchone() == (7, 7)
        assert dict(con.execute("SELECT store_id, COUNT(*) FROM events GROUP BY store_id").fetchall()) == {
            "store-042": 3,
            "store-043": 4,
        }

    cfgd = from_dict({"feed": {"timezone": "UTC"}})
    report, s = build(url, tmp_path / "out", "2025-03-14", "2025-03-14", cfgd)
    md = report.read_text()
    assert s.tills == [("store-042", "till-01"), ("store-043", "till-01"), ("store-043", "till-02")]
    assert "## Per till: store-042" in md and "## Per till: store-043" in md
    assert "secret" not in md and "postgresql://agecheck@127.0.0.1" in md
    _, only = build(url, tmp_path / "one", "2025-03-14", "2025-03-14", cfgd, store="store-042")
    assert only.tills == [("store-042", "till-01")] and only.totals().alerts == 1

    from edge_app.manager.dashboard import create_app

    client = create_app(url, cfgd).test_client()
    data = json.loads(client.get("/summary.json?since=2025-03-14&until=2025-03-14").data)
    assert len(data["per_till"]) == 3 and data["totals"]["answers_no_id_check"] == 2
