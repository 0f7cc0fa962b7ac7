"""What the store broker acknowledged survives the broker (issue 26): a real Mosquitto on the shipped
deploy/mosquitto/agecheck-store.conf (only its port, folder and log are the test's), the feed away
with its persistent session, a till (its real outbox and MQTT link, which delete each event on the
broker's PUBACK) delivering 99 events, then the broker SIGKILLed and started again: the feed gets
all 99. With the old `autosave_interval 30` the broker lost what it had not yet saved."""

from __future__ import annotations

from pathlib import Path

from tests.edge_app.broker_util import Broker
from tests.edge_app.feed_util import Proc, Till, check_event, db_query, wait_until
from tests.edge_app.manager.test_feed_gaps import _first_session, shipped_config


def _count(db: Path) -> int:
    rows = db_query(db, "SELECT COUNT(*) FROM events")
    return rows[0][0] if rows else 0


def test_a_broker_sigkill_loses_nothing_it_acknowledged(tmp_path):
    db = tmp_path / "feed.sqlite3"
    broker = Broker(persistent=True, extra_config=shipped_config())
    till = None
    try:
        broker.start()
        cfg = _first_session(tmp_path, broker.port, db)
        till = Till(tmp_path, broker.port, "till-01")
        till.store([check_event(txn=f"T-{i}") for i in range(99)])
        till.deliver()  # returns once the outbox is empty: every event acknowledged, and deleted
        assert till.outbox.depth() == 0
        assert broker.proc is not None
        broker.proc.kill()  # SIGKILL: no save on the way out
        broker.proc.wait()
        broker.proc = None
        broker.start()
        feed = Proc(["feed", "--config", str(cfg), "--db", str(db)])
        try:
            feed.wait_line("connected to", timeout=30)
            wait_until(
                lambda: _count(db) == 99,
                timeout=60,
                what=f"the 99 acknowledged events after the broker's SIGKILL (have {_count(db)})",
            )
            assert "resumed session" in feed.output
        finally:
            assert feed.stop() == 0, feed.output
    finally:
        if till is not None:
            till.close()
        broker.close()
    assert {r[0] for r in db_query(db, "SELECT transaction_id FROM events")} == {f"T-{i}" for i in range(99)}
