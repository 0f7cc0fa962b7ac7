"""OutboxWriter on a real small tmpfs that fills up: while the outbox cannot write, events wait in
memory in order (bounded, the oldest dropped and counted), failures are logged once, not per
event and without tracebacks, deliveries already sent are not re-raised as errors, and when the
space comes back every held event is written and numbered in its order."""

from __future__ import annotations

import logging

from edge_app.core import events
from edge_app.transport.outbox import Outbox
from edge_app.transport.outbox_writer import OutboxWriter
from tests.edge_app.disk_util import Filler, bulky_event, small_tmpfs
from tests.helpers import wait_until

TOPIC = "agecheck/v1/store-001/till-01/events/check"


def test_full_disk_holds_events_in_memory_and_writes_them_when_space_returns(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        box = Outbox(disk / "outbox.sqlite3", 1000)
        changes: list[bool] = []
        writer = OutboxWriter(box, max_held=1000, retry_s=0.2)
        writer._on_change = lambda: changes.append(writer.status().degraded)
        writer.start()
        before = [bulky_event(f"T-{i}") for i in range(3)]
        for ev in before:
            assert writer.put_event(TOPIC, ev, "till-01")[2]
        delivered = box.after(0, 10)
        filler = Filler(disk)
        try:
            filler.fill()
            held = [bulky_event(f"H-{i}") for i in range(40)]
            results = [writer.put_event(TOPIC, ev, "till-01") for ev in held]
            # Some may still fit in space SQLite had already taken; from the first refusal on,
            # everything waits in memory, in order.
            first = next(i for i, r in enumerate(results) if not r[2])
            assert all(not r[2] for r in results[first:])
            st = writer.status()
            assert st.degraded and st.held == len(held) - first and st.write_errors == st.held
            assert "full" in (st.last_error or ""), st.last_error
            assert changes == [True]
            # The broker acknowledging what was sent before must not fail on the full disk.
            for row in delivered:
                box.delete(row.seq)
        finally:
            filler.release()
        wait_until(lambda: changes == [True, False], 10, "the retry thread to write them")
        rows = box.after(0, 1000)
        got = [events.decode(r.payload) for r in rows]
        assert [e["transaction_id"] for e in got] == [f"H-{i}" for i in range(40)]
        assert [e["seq"] for e in got] == list(range(4, 44))  # numbered in order, no hole
        assert box.depth() == 40
        writer.close()
        box.close()
    # The outbox, its space guard and its writer (edge_app.transport.outbox*).
    outbox_logs = [r for r in caplog.records if r.name.startswith("edge_app.transport.outbox")]
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    errors = [r for r in outbox_logs if r.levelno >= logging.ERROR]
    assert len(errors) <= 2, [r.getMessage() for r in errors]  # the write failure, maybe the delete one
    assert "held in memory" in errors[0].getMessage() and "full" in errors[0].getMessage()
    assert any("stores events again" in r.getMessage() for r in outbox_logs)


def test_memory_bound_drops_the_oldest_and_counts_it(tmp_path, caplog):
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        box = Outbox(disk / "outbox.sqlite3", 1000)
        writer = OutboxWriter(box, max_held=10, retry_s=3600)  # retried by hand below
        filler = Filler(disk)
        try:
            filler.fill()
            evs = [bulky_event(f"M-{i}") for i in range(60)]
            written = [ev.transaction_id for ev in evs if writer.put_event(TOPIC, ev, "till-01")[2]]
            st = writer.status()
            assert st.held == 10 and st.held_dropped == 60 - len(written) - 10
        finally:
            filler.release()
        assert writer.flush() == 10
        kept = [events.decode(r.payload)["transaction_id"] for r in box.after(0, 1000)]
        assert kept == written + [f"M-{i}" for i in range(50, 60)]
        assert writer.status().held == 0 and writer.close() == 0
        box.close()
