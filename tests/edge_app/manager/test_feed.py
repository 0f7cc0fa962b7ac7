"""Manager feed: storage rules (unit) and the real `agecheck feed` process against a real
Mosquitto that is restarted under it."""

from __future__ import annotations

import io
import json
import logging

import pytest

from edge_app.config import from_dict
from edge_app.core import events
from edge_app.core.words import Answer
from edge_app.manager.db import MIGRATIONS
from edge_app.manager.feed import subscription
from edge_app.manager.live_table import TablePrinter
from edge_app.manager.store import FeedDBError, FeedStore
from tests.edge_app.broker_util import Broker
from tests.edge_app.feed_util import (
    Proc,
    Publisher,
    ack_event,
    alert_event,
    check_event,
    db_query,
    event_topic,
    wait_until,
    write_config,
)


def test_store_dedupes_and_quarantines(tmp_path):
    st = FeedStore(tmp_path / "feed.sqlite3", max_payload_bytes=4096)
    c = check_event()
    a = alert_event(c)
    stored = st.add(event_topic(c), events.encode(c))
    # Decoded once, into the typed event (what the feed then works on).
    assert stored.status == "new" and stored.event == events.from_dict(c)
    assert isinstance(stored.event, events.CheckEvent)
    assert st.add(event_topic(a), events.encode(a)).status == "new"
    assert st.add(event_topic(c), events.encode(c)).status == "duplicate"

    bad = {
        b"{not json": "malformed JSON",
        b"\xff\xfe\x00": "not UTF-8",
        json.dumps({**check_event(), "schema": 2}).encode(): "unknown schema version 2",
        json.dumps({**check_event(), "image": "AAAA"}).encode(): "events never carry images",
        json.dumps({k: v for k, v in check_event().items() if k != "decision"}).encode(): "missing field 'decision'",
        b"x" * 5000: "more than feed.max_payload_bytes",
    }
    for payload, why in bad.items():
        res = st.add(event_topic(c), payload)
        assert res.status == "quarantined" and why in res.reason, (payload[:40], res.reason)
    other = check_event(till="till-02")
    res = st.add(event_topic(c), events.encode(other))  # a till-02 event on till-01's topic
    assert res.status == "quarantined" and "came on store-001/till-01/check" in res.reason
    assert st.counts() == {"events": 2, "quarantined": len(bad) + 1, "duplicates": 1}
    st.close()
    # Kept aside with the reason and the payload, for a person to look at.
    rows = db_query(tmp_path / "feed.sqlite3", "SELECT reason, size, payload FROM quarantine ORDER BY id")
    assert rows[0][2] == b"{not json" and rows[0][1] == 9


def test_store_rejects_a_file_that_is_not_sqlite(tmp_path):
    p = tmp_path / "feed.sqlite3"
    p.write_text("this is a text file, not a database\n" * 20)
    with pytest.raises(FeedDBError, match="cannot use it as the feed database"):
        FeedStore(p)


def test_store_rejects_a_till_outbox(tmp_path):
    from edge_app.transport.outbox import Outbox

    Outbox(tmp_path / "outbox.sqlite3", 10).close()
    with pytest.raises(FeedDBError, match="another program's file"):
        FeedStore(tmp_path / "outbox.sqlite3")


def test_table_is_readable():
    out = io.StringIO()
    tp = TablePrinter(out, tz=None, show_store=False)
    c = check_event(txn="T-77", age=19.4)
    tp.event(events.from_dict(c))
    tp.event(events.from_dict(ack_event(alert_event(c), "id_checked_over_age", seconds=2.34)))
    lines = out.getvalue().splitlines()
    assert lines[0].split()[:3] == ["time", "till", "kind"]
    assert "CHECK ID" in lines[2] and "18-24 (19)" in lines[2] and "T-77" in lines[2] and "till-01" in lines[2]
    assert "ID ok, over age (2.3s)" in lines[3]


def correction(ack: dict, answer: str = Answer.UNDONE) -> dict:
    return events.AckEvent(
        store_id=ack["store_id"],
        till_id=ack["till_id"],
        transaction_id=ack["transaction_id"],
        alert_event_id=ack["alert_event_id"],
        answer=answer,
        decision_time_s=4.0,
        replaces_event_id=ack["event_id"],
    ).to_dict()


def test_store_reads_a_correction(tmp_path):
    st = FeedStore(tmp_path / "feed.sqlite3")
    c = check_event(txn="T-5")
    a = alert_event(c)
    first = ack_event(a, "id_checked_over_age")
    undo = correction(first)
    for ev in (c, a, first):
        st.add(event_topic(ev), events.encode(ev))
    assert st.answer_for(a["event_id"]) == "id_checked_over_age"
    assert st.add(event_topic(undo), events.encode(undo)).status == "new"
    assert st.answer_for(a["event_id"]) is None  # undone: unanswered again
    again = ack_event(a, "id_checked_under_age_refused", seconds=6.0)
    st.add(event_topic(again), events.encode(again))
    assert st.answer_for(a["event_id"]) == "id_checked_under_age_refused"
    assert st.acks_for(a["event_id"]) == [events.from_dict(x) for x in (first, undo, again)]
    st.close()
    assert db_query(
        tmp_path / "feed.sqlite3", "SELECT replaces_event_id FROM events WHERE event_id = ?", undo["event_id"]
    ) == [(first["event_id"],)]


def test_a_stored_payload_that_no_longer_reads_is_left_out_with_a_warning(tmp_path, caplog):
    st = FeedStore(tmp_path / "feed.sqlite3")
    c = check_event(txn="T-6")
    a = alert_event(c)
    first = ack_event(a, "id_checked_over_age")
    later = ack_event(a, "no_id_check", seconds=5.0)
    for ev in (c, a, first, later):
        st.add(event_topic(ev), events.encode(ev))
    assert st.answer_for(a["event_id"]) == "no_id_check"
    # Rows another build (or a hand) left behind: a schema this build does not read, and no JSON at all.
    st.db.execute(
        "UPDATE events SET payload = ? WHERE event_id = ?", (json.dumps({**later, "schema": 2}), later["event_id"])
    )
    st.db.execute("UPDATE events SET payload = ? WHERE event_id = ?", ("{not json", c["event_id"]))
    with caplog.at_level(logging.WARNING, logger="edge_app.manager.store"):
        assert st.acks_for(a["event_id"]) == [events.from_dict(first)]
        assert st.answer_for(a["event_id"]) == "id_checked_over_age"
        assert st.event(c["event_id"]) is None
        assert st.event(a["event_id"]) == events.from_dict(a)
    assert f"event {later['event_id']} left out" in caplog.text and "unknown schema version 2" in caplog.text
    assert f"event {c['event_id']} left out" in caplog.text
    st.close()


def test_a_feed_database_from_before_corrections_is_upgraded(tmp_path):
    import sqlite3

    db = tmp_path / "old.sqlite3"
    st = FeedStore(db)
    c = check_event()
    st.add(event_topic(c), events.encode(c))
    st.close()
    con = sqlite3.connect(db)  # as an older build left it: migrations 1-2 only, no replaces_event_id column
    con.execute("ALTER TABLE events DROP COLUMN replaces_event_id")
    con.execute("DELETE FROM schema_migrations WHERE version > 2")
    con.commit()
    con.close()
    st = FeedStore(db)
    assert "replaces_event_id" in st.db.columns("events")
    assert st.db.query("SELECT MAX(version) FROM schema_migrations") == [(len(MIGRATIONS),)]
    a = alert_event(c)
    first = ack_event(a, "no_id_check")
    for ev in (a, first, correction(first)):
        assert st.add(event_topic(ev), events.encode(ev)).status == "new"
    assert st.answer_for(a["event_id"]) is None and st.counts()["events"] == 4
    st.close()


def test_table_shows_corrections_and_camera_down():
    out = io.StringIO()
    tp = TablePrinter(out, tz=None, show_store=False)
    c = check_event(txn="T-78", decision="no_face", age=None, camera="down")
    first = ack_event(alert_event(c), "id_checked_over_age")
    typed = events.from_dict
    tp.event(typed(c))
    tp.event(typed(correction(first)), typed(first))
    tp.event(typed(correction(first, "no_id_check")), typed(first))
    lines = out.getvalue().splitlines()
    assert "CAMERA DOWN" in lines[2]
    assert "UNDONE: ID ok, over age" in lines[3]
    assert "NO ID CHECK (4.0s), was ID ok, over age" in lines[4]


def test_subscription_topics():
    cfg = from_dict({"store_id": "store-042"})
    assert subscription(cfg, False) == "agecheck/v1/store-042/+/events/+"
    assert subscription(cfg, True) == "agecheck/v1/+/+/events/+"


def _count(db, table="events"):
    return db_query(db, f"SELECT COUNT(*) FROM {table}")[0][0] if db_query(db, "SELECT 1") else 0


def _dups(db):
    rows = db_query(db, "SELECT value FROM counters WHERE name='duplicates'")
    return rows[0][0] if rows else 0


def test_feed_dedupes_across_broker_restart(tmp_path):
    db = tmp_path / "feed.sqlite3"
    with Broker(persistent=True) as broker:
        cfg = write_config(tmp_path / "config.yaml", broker.port)
        feed = Proc(["feed", "--config", str(cfg), "--db", str(db)])
        pub = None
        try:
            feed.wait_line("new session")
            # A new session holds nothing for us until the broker has the subscription.
            feed.wait_line("subscribed to")
            pub = Publisher(broker.port)
            first = [check_event(txn=f"T-{i}", till=f"till-0{i % 2 + 1}") for i in range(3)]
            for ev in first:
                pub.event(ev)
            pub.raw("agecheck/v1/store-001/till-01/events/check", b'{"event_id": ')  # malformed
            pub.raw(
                "agecheck/v1/store-001/till-01/events/check", json.dumps({**check_event(), "schema": 99}).encode()
            )  # a future schema
            pub.event(check_event(store="store-002"))  # another store: not subscribed
            wait_until(lambda: _count(db) == 3 and _count(db, "quarantine") == 2, what="first events stored")

            mark = len(feed.lines)
            broker.restart(down_s=0.5)  # away long enough for the feed to see the outage
            pub.close()
            feed.wait_line("resumed session", timeout=20, after=mark)
            pub = Publisher(broker.port)
            new = [check_event(txn="T-3"), alert_event(first[0])]
            for ev in first + new:  # duplicates of all three, and two new ones
                pub.event(ev)
            wait_until(lambda: _count(db) == 5, what="new events after the restart")
            # At least the three republished; a QoS 1 redelivery of a message whose PUBACK was cut
            # off by the restart adds one more, and is ignored the same way.
            wait_until(lambda: _dups(db) >= 3, what="three duplicates counted")

            # The feed is away; the broker keeps its session (and restarts meanwhile).
            assert feed.stop() == 0
            late = check_event(txn="T-late", decision="approve", age=41.0)
            pub.event(late)
            pub.close()
            pub = None
            broker.restart(down_s=0.5)  # away long enough for the feed to see the outage
            feed = Proc(["feed", "--config", str(cfg), "--db", str(db)])
            feed.wait_line("resumed session", timeout=20)
            wait_until(lambda: _count(db) == 6, what="the event published while the feed was away")
            assert feed.stop() == 0
        finally:
            if pub:
                pub.close()
            feed.stop()

    ids = {r[0] for r in db_query(db, "SELECT event_id FROM events")}
    assert ids == {e["event_id"] for e in first + new + [late]}
    assert db_query(db, "SELECT COUNT(*) FROM events WHERE store_id != 'store-001'") == [(0,)]
    reasons = [r[0] for r in db_query(db, "SELECT reason FROM quarantine ORDER BY id")]
    assert "malformed JSON" in reasons[0] and "unknown schema version 99" in reasons[1]
    out = feed.output
    assert "APPROVE" in out and "41" in out and "T-late" in out
    assert "6 events stored" in out and "2 quarantined" in out


def test_feed_reports_a_bad_database(tmp_path):
    bad = tmp_path / "feed.sqlite3"
    bad.write_text("not a database\n" * 50)
    p = Proc(["feed", "--db", str(bad)])
    assert p.p.wait(timeout=30) == 2
    p.stop()
    assert "cannot use it as the feed database" in p.output


POISON = {
    "4 KB of nesting": b"[" * 2048 + b"]" * 2048,
    "deep object": b'{"a":' * 1000 + b"1" + b"}" * 1000,
    "5,001-digit number": b'{"event_id": ' + b"9" * 5001 + b"}",
    "NaN": json.dumps({**check_event(), "age": float("nan")}).encode(),  # Python writes a bare NaN
    "1e999": b'{"age": 1e999}',
}


def test_poison_messages_are_quarantined_and_the_feed_goes_on(tmp_path):
    """Each of these used to end the feed's MQTT thread (the process stayed up, stored nothing
    more, and got the same message again on every restart). Now each is a quarantine row, and
    the events published after them are stored."""
    db = tmp_path / "feed.sqlite3"
    with Broker(persistent=True) as broker:
        cfg = write_config(tmp_path / "config.yaml", broker.port)
        feed = Proc(["feed", "--config", str(cfg), "--db", str(db)])
        pub = Publisher(broker.port)
        try:
            feed.wait_line("subscribed to")
            for payload in POISON.values():
                pub.raw("agecheck/v1/store-001/till-01/events/check", payload)
            after = [check_event(txn=f"T-after-{i}") for i in range(3)]
            for ev in after:
                pub.event(ev)
            wait_until(
                lambda: _count(db) == 3 and _count(db, "quarantine") == len(POISON),
                what="the events after the poison stored",
            )
            # Acknowledged: a restart of the feed does not get them again.
            assert feed.stop() == 0
            feed = Proc(["feed", "--config", str(cfg), "--db", str(db)])
            feed.wait_line("resumed session")
            pub.event(check_event(txn="T-later"))
            wait_until(lambda: _count(db) == 4, what="an event after the restart")
        finally:
            pub.close()
            feed.stop()
    assert {r[0] for r in db_query(db, "SELECT transaction_id FROM events")} == {
        "T-after-0",
        "T-after-1",
        "T-after-2",
        "T-later",
    }
    rows = db_query(db, "SELECT reason, times FROM quarantine ORDER BY id")
    assert [t for _, t in rows] == [1] * len(POISON)  # never redelivered
    reasons = " | ".join(r for r, _ in rows)
    for words in (
        "nested more than 32 levels",
        "a number of 5001 characters",
        "NaN is not a JSON number",
        "out of range",
    ):
        assert words in reasons, reasons
    assert "Traceback" not in feed.output


def test_new_feed_database_is_private(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        st = FeedStore(tmp_path / "feed.sqlite3")
        st.add(event_topic(check_event()), events.encode(check_event()))
    finally:
        os.umask(old)
    for p in tmp_path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    st.close()
