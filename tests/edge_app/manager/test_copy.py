"""Moving a store from SQLite to PostgreSQL (`agecheck feed --db URL --copy-from FILE`) on a real
PostgreSQL server: the report reads the same from both afterwards, a second run copies nothing
and counts everything as already there, rows lost from the target come back on the next run,
and a source that cannot be used is named."""

from __future__ import annotations

import json
import sqlite3

import pytest

from tests.edge_app.feed_util import Proc, write_config
from tests.edge_app.manager.test_report import DAY, store_day
from tests.edge_app.pg_util import PgServer


@pytest.fixture(scope="module")
def pg():
    with PgServer() as server:
        yield server


def agecheck(*args: str) -> tuple[int, str]:
    p = Proc(list(args))
    code = p.p.wait(timeout=120)
    p.stop()
    return code, p.output


def pg_count(url: str, sql: str) -> int:
    import psycopg

    with psycopg.connect(url) as con:
        return con.execute(sql).fetchone()[0]


def test_a_sqlite_store_moves_to_postgresql_and_the_copy_can_run_again(pg, tmp_path):
    src = tmp_path / "feed.sqlite3"
    store_day(src)
    with sqlite3.connect(src) as con:
        n_events = con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        n_quarantined = con.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
    assert n_events > 30 and n_quarantined == 1
    url = pg.create_db("moved")
    cfg = str(write_config(tmp_path / "config.yaml", 1883, feed={"timezone": "UTC"}))

    code, out = agecheck("feed", "--config", cfg, "--db", url, "--copy-from", str(src))
    assert code == 0, out
    assert (
        f"{n_events} events ({n_events} new, 0 already there), {n_quarantined} quarantined message(s) "
        f"({n_quarantined} new)"
    ) in out
    assert (
        f"checked: all {n_events} events and {n_quarantined} quarantined message(s) of the source are in the target"
        in out
    )
    assert pg_count(url, "SELECT COUNT(*) FROM events") == n_events

    # The history reads the same from the server: every figure of the report.
    def report(db: str) -> dict:
        c, text = agecheck("report", "--config", cfg, "--db", db, "--since", DAY, "--until", DAY, "--json")
        assert c == 0, text
        return json.loads(text)

    assert report(url) == report(str(src))

    # Again: nothing new, nothing counted as the broker's duplicates.
    code, out = agecheck("feed", "--config", cfg, "--db", url, "--copy-from", str(src))
    assert code == 0, out
    assert f"{n_events} events (0 new, {n_events} already there), {n_quarantined} quarantined message(s) (0 new)" in out
    assert pg_count(url, "SELECT COUNT(*) FROM events") == n_events
    assert pg_count(url, "SELECT COUNT(*) FROM counters WHERE name = 'duplicates'") == 0

    # Rows that did not make it (a copy stopped half way) are filled in by the next run.
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute("DELETE FROM events WHERE event_id IN (SELECT event_id FROM events ORDER BY ts LIMIT 5)")
    code, out = agecheck("feed", "--config", cfg, "--db", url, "--copy-from", str(src))
    assert code == 0, out
    assert f"{n_events} events (5 new, {n_events - 5} already there)" in out
    assert report(url) == report(str(src))


def test_a_source_that_cannot_be_copied_is_named(pg, tmp_path):
    cfg = str(write_config(tmp_path / "config.yaml", 1883))
    target = str(tmp_path / "target.sqlite3")
    code, out = agecheck("feed", "--config", cfg, "--db", target, "--copy-from", str(tmp_path / "missing.sqlite3"))
    assert code == 2 and "--copy-from: " in out and "missing.sqlite3" in out, out
    code, out = agecheck("feed", "--config", cfg, "--db", target, "--copy-from", target)
    assert code == 2 and "--copy-from and --db both name" in out, out
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n" * 100)
    code, out = agecheck("feed", "--config", cfg, "--db", target, "--copy-from", str(notes))
    assert code == 2 and "cannot be read as a feed store" in out, out
