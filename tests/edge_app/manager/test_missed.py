"""`missed` events (a restricted scan the till could not check) on the manager side: numbered by a
real till outbox like every other event, so they close the publisher's sequence instead of looking
like a gap; stored by the feed; counted per till in the report; listed and filterable in the
dashboard's event list."""

from __future__ import annotations

import csv
import io
import json

from edge_app.config import from_dict
from edge_app.core import event_parts, events
from edge_app.manager.dashboard import create_app
from edge_app.manager.db import open_store
from edge_app.manager.live_table import outcome_text
from edge_app.manager.report import build
from edge_app.manager.store import FeedStore, gap_rows
from edge_app.transport.outbox import Outbox
from tests.edge_app.feed_util import check_event, event_topic

DAY = "2025-03-14"


def missed_event(txn: str, reason: str, ts: str) -> dict:
    return events.MissedEvent(
        store_id="store-001",
        till_id="till-01",
        transaction_id=txn,
        ts=ts,
        trigger=event_parts.TriggerInfo(
            event_parts.Product(sku="5000112637922", category="alcohol", min_age=18), source="pos", received_ts=ts
        ),
        reason=reason,
        detail=f"test: {reason}",
        operator_id="C-3",
    ).to_dict()


def test_missed_events_are_numbered_stored_counted_and_listed(tmp_path):
    outbox = Outbox(tmp_path / "outbox.sqlite3", 1000)
    stored = []
    for ev in [
        check_event(txn="T-1", ts=f"{DAY}T10:00:00.000Z"),
        missed_event("T-2", "stale", f"{DAY}T10:01:00.000Z"),
        check_event(txn="T-3", ts=f"{DAY}T10:02:00.000Z"),
        missed_event("T-4", "queue_full", f"{DAY}T10:03:00.000Z"),
    ]:
        numbered, _ = outbox.put_event(event_topic(ev), events.from_dict(ev), "till-01")
        stored.append(numbered)
    outbox.close()
    assert [e.seq for e in stored] == [1, 2, 3, 4]

    db = tmp_path / "feed.sqlite3"
    st = FeedStore(db)
    for ev in stored:
        assert st.add(event_topic(ev.to_dict()), ev.encode()).status == "new"
    st.close()
    store = open_store(db, read_only=True)
    try:
        assert gap_rows(store) == []  # a missed scan is a record, not a hole in the numbers
    finally:
        store.close()

    cfg = from_dict({"feed": {"timezone": "UTC"}})
    path, summary = build(str(db), tmp_path / "out", DAY, DAY, cfg)
    t = summary.totals()
    assert (t.checks, t.missed) == (2, 2)
    md = path.read_text()
    assert "**2** restricted scans not checked" in md
    per_till = list(csv.DictReader(io.StringIO((tmp_path / "out" / "per_till.csv").read_text())))
    assert [(r["till_id"], r["missed"]) for r in per_till] == [("till-01", "2")]

    client = create_app(str(db), cfg).test_client()
    r = client.get(f"/events.json?since={DAY}&until={DAY}&kind=missed")
    assert r.status_code == 200, r.data
    rows = json.loads(r.data)["events"]
    assert sorted((e["transaction_id"], e["reason"], e["outcome"], e["operator_id"]) for e in rows) == [
        ("T-2", "scan too old when it reached the till", "NOT CHECKED: stale", "C-3"),
        ("T-4", "till busy: too many checks waiting", "NOT CHECKED: queue_full", "C-3"),
    ]  # the reason in words
    assert outcome_text(stored[1]) == "NOT CHECKED: stale"
    page = client.get(f"/?since={DAY}&until={DAY}")
    assert page.status_code == 200
    assert "Restricted scans not checked (missed: stale, till busy or stopping, check failed): 2." in page.get_data(
        as_text=True
    )
