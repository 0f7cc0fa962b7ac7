"""The outbox on a real small tmpfs that is nearly full (the issue's 1 MB free): its write-ahead
log stays bounded, so it does not eat the space freed for events and leave a checkpoint that can
never complete; and when the disk was full and 1 MB comes back, every held event is written."""

from __future__ import annotations

import logging

from edge_app.core import events
from edge_app.transport.outbox import Outbox
from edge_app.transport.outbox_space import WAL_MAX_BYTES
from edge_app.transport.outbox_writer import OutboxWriter
from tests.edge_app.disk_util import Filler, bulky_event, free_bytes, leave_free, small_tmpfs
from tests.helpers import wait_until

TOPIC = "agecheck/v1/store-001/till-01/events/missed"
MB = 1 << 20


def _txns(box: Outbox) -> list[str]:
    return [events.decode(r.payload)["transaction_id"] for r in box.after(0, 100_000)]


def test_with_1_mb_free_240_events_are_all_stored_and_the_wal_stays_bounded(tmp_path):
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        box = Outbox(disk / "outbox.sqlite3", 100_000)
        writer = OutboxWriter(box, max_held=5000, retry_s=0.2).start()
        filler = Filler(disk)
        try:
            leave_free(filler, MB)
            written = [writer.put_event(TOPIC, bulky_event(f"T-{i}"), "till-01")[2] for i in range(240)]
            wait_until(lambda: writer.status().held == 0, 10, "every event stored")
            assert _txns(box) == [f"T-{i}" for i in range(240)], f"{written.count(False)} of 240 held"
            wal = disk / "outbox.sqlite3-wal"
            assert wal.stat().st_size <= WAL_MAX_BYTES + 64 * 1024, wal.stat().st_size
        finally:
            filler.release()
        writer.close()
        box.close()


def test_a_full_disk_recovers_when_1_mb_comes_back(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        box = Outbox(disk / "outbox.sqlite3", 100_000)
        writer = OutboxWriter(box, max_held=5000, retry_s=0.2).start()
        filler = Filler(disk)
        try:
            filler.fill()
            results = [writer.put_event(TOPIC, bulky_event(f"H-{i}"), "till-01")[2] for i in range(240)]
            assert not all(results)
            assert writer.status().degraded
            # 1 MB comes back (the rest stays taken).
            size = filler.path.stat().st_size
            import os

            os.truncate(filler.path, size - MB)
            assert free_bytes(disk) >= MB
            wait_until(lambda: writer.status().held == 0, 15, "the held events to be written")
            assert _txns(box) == [f"H-{i}" for i in range(240)]
            assert [events.decode(r.payload)["seq"] for r in box.after(0, 1000)] == list(range(1, 241))
        finally:
            filler.release()
        writer.close()
        box.close()
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert any("stores events again" in r.getMessage() for r in caplog.records)
