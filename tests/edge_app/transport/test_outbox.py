"""Outbox: durable, ordered, bounded (oldest dropped, never silently), survives SIGKILL, its own
corrupt file is moved aside instead of stopping the till, a file it did not create is never
touched, and a new file is private (0600)."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from edge_app.core import events
from edge_app.transport.outbox import Outbox
from edge_app.transport.outbox_file import OutboxError
from tests.edge_app.service_util import REPO


def _put(box: Outbox, n: int, start: int = 0) -> list[str]:
    ids = [f"ev-{i:04d}" for i in range(start, start + n)]
    for eid in ids:
        box.put("agecheck/v1/s/t/events/check", f'{{"event_id":"{eid}"}}'.encode(), eid)
    return ids


def test_rows_come_back_oldest_first_and_go_when_acknowledged(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", 100)
    ids = _put(box, 5)
    rows = box.after(0, 3)
    assert [r.event_id for r in rows] == ids[:3] and rows[0].payload.startswith(b'{"event_id"')
    assert [r.event_id for r in box.after(rows[-1].seq, 10)] == ids[3:]
    box.delete(rows[0].seq)
    assert box.depth() == 4
    box.put("t", b"{}", ids[1])  # the same event again (a retry) is stored once
    assert box.depth() == 4
    box.close()


def test_wal_and_full_sync_and_survives_reopen(tmp_path):
    path = tmp_path / "o.sqlite3"
    box = Outbox(path, 100)
    ids = _put(box, 3)
    box.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    box = Outbox(path, 100)
    assert [r.event_id for r in box.after(0, 10)] == ids
    box.close()


def test_events_survive_sigkill_right_after_put(tmp_path):
    path = tmp_path / "o.sqlite3"
    code = textwrap.dedent(f"""
        import os, signal
        from edge_app.transport.outbox import Outbox
        box = Outbox({str(path)!r}, 1000)
        for i in range(50):
            box.put("t", b"x" * 100, f"ev-{{i}}")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, timeout=60)
    assert r.returncode == -9, r.stderr.decode()
    box = Outbox(path, 1000)
    assert [x.event_id for x in box.after(0, 100)] == [f"ev-{i}" for i in range(50)]
    box.close()


def test_full_outbox_drops_the_oldest_loudly_and_counts_it(tmp_path, caplog):
    path = tmp_path / "o.sqlite3"
    box = Outbox(path, 10)
    ids = _put(box, 10)
    assert box.full
    with caplog.at_level(logging.ERROR):
        dropped = box.put("t", b"{}", "ev-new")
    assert dropped == [ids[0]]
    assert f"dropped the oldest undelivered event {ids[0]}" in caplog.text and "outbox.max_events" in caplog.text
    assert box.depth() == 10
    assert [r.event_id for r in box.after(0, 20)] == ids[1:] + ["ev-new"]
    box.close()
    box = Outbox(path, 10)
    assert box.dropped_total() == 1  # the count survives a restart, for the retained state
    box.close()


def test_our_corrupt_outbox_is_moved_aside_and_a_new_outbox_started(tmp_path, caplog):
    path = tmp_path / "o.sqlite3"
    box = Outbox(path, 10)
    _put(box, 3)
    box.close()
    data = bytearray(path.read_bytes())
    assert len(data) > 4096
    data[4096:] = b"\xa5" * (len(data) - 4096)  # every page after the first is garbage
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.ERROR):
        box = Outbox(path, 10)
    aside = list(tmp_path.glob("o.sqlite3.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes()[4096:] == bytes(data[4096:])
    assert "not a readable SQLite database" in caplog.text
    _put(box, 1)
    assert box.depth() == 1
    box.close()


def _another_programs_sqlite(path):
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customers (name TEXT)")
    db.execute("INSERT INTO customers VALUES ('kept')")
    db.commit()
    db.close()


def _feed_database(path):
    from edge_app.manager.store import FeedStore

    FeedStore(path).close()


@pytest.mark.parametrize(
    "make, why",
    [
        (lambda p: p.write_bytes(b"this is not a database" * 100), "not an SQLite database"),
        (lambda p: p.write_text("notes I did not want moved\n"), "not an SQLite database"),
        (_another_programs_sqlite, "another program's SQLite database"),
        (_feed_database, "another program's SQLite database"),
    ],
)
def test_a_file_it_did_not_create_is_never_touched(tmp_path, make, why):
    path = tmp_path / "o.sqlite3"
    make(path)
    before = path.read_bytes()
    with pytest.raises(OutboxError) as ei:
        Outbox(path, 10)
    msg = str(ei.value)
    assert str(path) in msg and "is not an agecheck outbox" in msg and why in msg and "left untouched" in msg
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.sqlite3"]  # nothing renamed, nothing beside it


def test_an_outbox_from_before_the_application_id_is_still_ours(tmp_path):
    path = tmp_path / "o.sqlite3"
    box = Outbox(path, 10)
    ids = _put(box, 2)
    box.close()
    db = sqlite3.connect(path)
    db.execute("PRAGMA application_id = 0")  # as written by earlier versions
    db.commit()
    db.close()
    box = Outbox(path, 10)
    assert [r.event_id for r in box.after(0, 10)] == ids
    box.close()


def test_new_outbox_is_private(tmp_path):
    import os
    import stat

    path = tmp_path / "o.sqlite3"
    old = os.umask(0o022)
    try:
        box = Outbox(path, 10)
        _put(box, 1)
    finally:
        os.umask(old)
    for p in [path, *tmp_path.glob("o.sqlite3-*")]:
        assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    box.close()


def test_unusable_location_names_the_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutboxError) as ei:
        Outbox(blocker / "sub" / "o.sqlite3", 10)
    assert str(blocker / "sub" / "o.sqlite3") in str(ei.value)


def test_events_are_numbered_per_publisher_across_restarts(tmp_path):
    from tests.edge_app.feed_util import check_event

    path = tmp_path / "o.sqlite3"
    box = Outbox(path, 100)
    first = [box.put_event("t", events.from_dict(check_event(txn=f"T-{i}")), "till-01")[0] for i in range(3)]
    assert [(e.publisher, e.seq) for e in first] == [("till-01", 1), ("till-01", 2), ("till-01", 3)]
    # What is stored (and sent) is the numbered event.
    assert [b'"seq":2' in r.payload for r in box.after(0, 10)] == [False, True, False]
    # The same event again (a retry) keeps its number and uses none.
    again, dropped = box.put_event("t", dataclasses.replace(first[1], seq=99), "till-01")
    assert again.seq == 2 and dropped == []
    for r in box.after(0, 10):
        box.delete(r.seq)  # delivered: the count goes on all the same
    box.close()
    box = Outbox(path, 100)
    assert box.put_event("t", events.from_dict(check_event(txn="T-after-restart")), "till-01")[0].seq == 4
    assert box.last_seq() == 4
    box.close()


# -- its file deleted or replaced under it; one program per outbox (issue 26) ---------------------
def _numbered(box: Outbox, txns: list[str]) -> list[events.Event]:
    from tests.edge_app.feed_util import typed_check

    return [box.put_event("agecheck/v1/store-001/till-01/events/check", typed_check(txn=t), "till-01")[0] for t in txns]


def test_a_deleted_outbox_is_rebuilt_with_what_it_held_and_nothing_is_written_into_the_deleted_file(tmp_path, caplog):
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path, 100)
    first = _numbered(box, ["T-1", "T-2", "T-3"])
    box.delete(box.after(0, 1)[0].seq)  # T-1 delivered
    path.unlink()  # as `rm outbox.sqlite3` under the running service
    with caplog.at_level(logging.ERROR, logger="edge_app.transport.outbox"):
        later = _numbered(box, ["T-4", "T-5"])
    box.close()
    # What a restart finds: every undelivered event, the ones stored after the deletion included.
    box = Outbox(path, 100)
    got = [events.decode_event(r.payload).transaction_id for r in box.after(0, 100)]
    assert got == ["T-2", "T-3", "T-4", "T-5"] and box.last_seq() == 5
    assert [e.transaction_id for e in first] == ["T-1", "T-2", "T-3"]
    assert [e.seq for e in later] == [4, 5]  # the numbering goes on
    box.close()
    assert f"outbox {path} was deleted while in use: rebuilt" in caplog.text


def test_a_replaced_outbox_file_is_refused_and_left_alone(tmp_path):
    path = tmp_path / "outbox.sqlite3"
    box = Outbox(path, 100)
    _numbered(box, ["T-1"])
    path.unlink()
    path.write_text("someone else's file\n")
    with pytest.raises(OutboxError, match="was replaced by another file while in use"):
        _numbered(box, ["T-2"])
    assert path.read_text() == "someone else's file\n"
    box.close()


def test_a_second_program_on_one_outbox_is_refused_naming_the_first(tmp_path):
    from edge_app.transport.outbox_file import OutboxInUse

    path = tmp_path / "outbox.sqlite3"
    code = textwrap.dedent(f"""
        import sys
        from edge_app.transport.outbox import Outbox
        box = Outbox({str(path)!r}, 10)
        print("open", flush=True)
        sys.stdin.readline()
    """)
    other = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert other.stdout.readline().strip() == "open"
        with pytest.raises(OutboxInUse, match=rf"outbox {path} is in use by another process \(pid {other.pid}, "):
            Outbox(path, 10)
        other.kill()  # SIGKILL: the kernel releases its lock
        other.wait(10)
        box = Outbox(path, 10)  # no stale lock to clear by hand
        box.close()
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
