"""Nothing lost, gaps visible: tills (a real outbox numbering its events, the real MQTT link) publish
through a real Mosquitto running the shipped store-broker config (deploy/mosquitto) while the
`agecheck feed` process is stopped. A week of 5 tills reaches the feed in full, across a broker
restart; with more queued than the broker's limit, the feed and the report name the gap."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path

import pytest

from edge_app.config import from_dict
from edge_app.manager.db import open_store
from edge_app.manager.live_table import gap_text
from edge_app.manager.store import gap_rows
from tests.edge_app.feed_util import REPO, Proc, Till, check_event, db_query, wait_until, week_of, write_config

SHIPPED = REPO / "deploy" / "mosquitto" / "agecheck-store.conf"


def shipped_config(**override: str) -> tuple[str, ...]:
    """The shipped file's lines, with options replaced where a test must scale one down."""
    lines = []
    for line in SHIPPED.read_text().splitlines():
        key = line.split()[0] if line.strip() and not line.startswith("#") else None
        lines.append(f"{key} {override[key]}" if key in override else line)
    return tuple(lines)


def _count(db: Path) -> int:
    rows = db_query(db, "SELECT COUNT(*) FROM events")
    return rows[0][0] if rows else 0


def _first_session(tmp: Path, port: int, db: Path) -> Path:
    """Run the feed once so the broker holds its session, then stop it."""
    cfg = write_config(tmp / "config.yaml", port, feed={"timezone": "UTC"})
    feed = Proc(["feed", "--config", str(cfg), "--db", str(db)])
    try:
        feed.wait_line("subscribed to")
    finally:
        assert feed.stop() == 0, feed.output
    return cfg


def test_shipped_config_keeps_a_week_of_five_tills_for_a_stopped_feed(tmp_path):
    db = tmp_path / "feed.sqlite3"
    # A broker on the shipped settings (only the port, folder and log are the test's own).
    from tests.edge_app.broker_util import Broker

    try:
        broker = Broker(persistent=True, extra_config=shipped_config())
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    tills = []
    try:
        broker.start()
        cfg = _first_session(tmp_path, broker.port, db)
        tills = [Till(tmp_path, broker.port, f"till-0{i}") for i in range(1, 6)]
        for i, till in enumerate(tills):
            till.store(week_of(till.cfg.till_id, 220))  # 660 events a till, 3,300 in all
            till.deliver()
            if i == 2:
                broker.restart()  # mid-week: the queue survives on disk
        feed = Proc(["feed", "--config", str(cfg), "--db", str(db)])
        try:
            feed.wait_line("resumed session", timeout=20)
            wait_until(lambda: _count(db) >= 3300, timeout=90, what="the week's 3,300 events")
        finally:
            assert feed.stop() == 0, feed.output
        log = broker.log_path.read_text(errors="replace")
    finally:
        for till in tills:
            till.close()
        broker.close()
    assert _count(db) == 3300
    per_till = dict(db_query(db, "SELECT publisher, COUNT(DISTINCT seq) FROM events GROUP BY publisher"))
    assert per_till == {f"till-0{i}": 660 for i in range(1, 6)}
    assert db_query(db, "SELECT MIN(seq), MAX(seq) FROM events WHERE publisher = 'till-03'") == [(1, 660)]
    st = open_store(db, read_only=True)
    assert gap_rows(st) == []
    st.close()
    assert "dropped" not in log.lower()


def test_a_feed_away_past_the_queue_limit_reports_the_gap(tmp_path):
    from tests.edge_app.broker_util import Broker

    db = tmp_path / "feed.sqlite3"
    # The shipped file with the queue scaled down 250 times, so that overflowing it stays quick.
    try:
        broker = Broker(persistent=True, extra_config=shipped_config(max_queued_messages="200"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    till = None
    try:
        broker.start()
        cfg = _first_session(tmp_path, broker.port, db)
        till = Till(tmp_path, broker.port, "till-03")
        till.store(week_of("till-03", 100))  # 300 events while the feed is away: 100 too many
        till.deliver()
        feed = Proc(["feed", "--config", str(cfg), "--db", str(db)])
        try:
            feed.wait_line("resumed session", timeout=20)
            wait_until(lambda: _count(db) >= 200, timeout=30, what="the queued events")
            # The till carries on: its next event shows the feed what it missed.
            later = check_event(till="till-03", txn="after", ts="2025-03-17T15:00:00.000Z")
            till.store([later])
            till.deliver()
            line = feed.wait_line("events missing", timeout=20)
        finally:
            assert feed.stop() == 0, feed.output
        log = broker.log_path.read_text(errors="replace")
    finally:
        if till:
            till.close()
        broker.close()
    assert "dropped" in log.lower()  # Mosquitto says so too
    got = _count(db)
    assert 200 <= got < 301
    st = open_store(db, read_only=True)
    gaps = gap_rows(st)
    st.close()
    assert len(gaps) == 1 and gaps[0].publisher == "till-03"
    assert gaps[0].missing == 301 - got and gaps[0].before_seq == 301
    text = gap_text(gaps[0], UTC)
    assert text.startswith(f"till-03: {301 - got} events missing between 2025-")
    assert f"till-03: {301 - got} events missing" in feed.lines[line]

    # The report says so too.
    from edge_app.manager.report import build

    report, _ = build(str(db), tmp_path / "out", "2025-03-10", "2025-03-17", from_dict({"feed": {"timezone": "UTC"}}))
    assert f"till-03: {301 - got} events missing" in report.read_text()
