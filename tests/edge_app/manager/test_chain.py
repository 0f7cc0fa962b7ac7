"""A chain's head office, with real parts end to end: two store Mosquittos, each running the shipped
store-broker and bridge configs (deploy/mosquitto; only ports, folders and the TLS/password lines
are the test's own), bridged to a head-office Mosquitto; one `agecheck feed --all-stores` writing
into a real PostgreSQL server; tills numbering their events in their outboxes. A week of both
stores' events crosses a head-office outage and a store broker restart, and PostgreSQL holds every
event exactly once, with no missing numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_app.manager.db import open_store
from edge_app.manager.store import gap_rows
from tests.edge_app.feed_util import REPO, Proc, Till, wait_until, week_of, write_config
from tests.edge_app.pg_util import PgServer

DEPLOY = REPO / "deploy" / "mosquitto"
STORES = ("store-042", "store-043")
TILLS = ("till-01", "till-02")
SALES = 100  # a week per till: 100 sales x (check, alert, answer) = 300 events; 1,200 in all
# The shipped bridge's TLS and login lines: the test brokers listen in plain MQTT on 127.0.0.1
# without passwords (the secure config is tested in tests/edge_app/till/test_broker_acl.py).
NOT_IN_TEST = {"bridge_cafile", "bridge_tls_version", "bridge_insecure", "remote_username", "remote_password"}


def _options(path: Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            out.append((key, value.strip()))
    return out


def store_config() -> tuple[str, ...]:
    return tuple(f"{k} {v}" for k, v in _options(DEPLOY / "agecheck-store.conf"))


def bridge_config(store: str, headoffice_port: int) -> tuple[str, ...]:
    """The shipped bridge file for `store`, pointed at the test's head-office broker. The
    reconnect delay is shortened so the test does not wait out the production back-off."""
    lines = []
    for key, value in _options(DEPLOY / "agecheck-bridge.conf"):
        if key in NOT_IN_TEST:
            continue
        if key == "address":
            value = f"127.0.0.1:{headoffice_port}"
        elif key == "restart_timeout":
            value = "1 2"
        lines.append(f"{key} {value.replace('store-042', store)}")
    return tuple(lines)


def test_the_bridge_file_keeps_the_store_brokers_queue_limits():
    """Both files set the queue; Mosquitto keeps the one read last, so they must agree."""
    store = dict(_options(DEPLOY / "agecheck-store.conf"))
    bridge = dict(_options(DEPLOY / "agecheck-bridge.conf"))
    for key in ("persistence", "autosave_on_changes", "autosave_interval", "max_queued_messages", "max_queued_bytes"):
        assert bridge[key] == store[key], key
    assert bridge["cleansession"] == bridge["local_cleansession"] == "false"
    assert bridge["topic"] == "agecheck/v1/store-042/+/events/# out 1"


class _Log:
    """A broker's log file read from a mark on, to wait for what the broker says next."""

    def __init__(self, path: Path) -> None:
        self.path, self.mark = path, 0

    def text(self) -> str:
        return self.path.read_text(errors="replace") if self.path.exists() else ""

    def set_mark(self) -> None:
        self.mark = len(self.text())

    def wait_for(self, needles: list[str], timeout: float = 30.0) -> None:
        wait_until(lambda: all(n in self.text()[self.mark :] for n in needles), timeout, f"{needles} in {self.path}")


def test_a_week_of_two_stores_reaches_postgresql_through_bridges_exactly_once(tmp_path):
    from tests.edge_app.broker_util import Broker

    try:
        headoffice = Broker(persistent=True, extra_config=store_config())
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    stores = {
        s: Broker(persistent=True, extra_config=store_config() + bridge_config(s, headoffice.port)) for s in STORES
    }
    week = {(s, t): week_of(t, SALES, store=s) for s in STORES for t in TILLS}
    sent = {ev["event_id"] for evs in week.values() for ev in evs}
    thirds = [(0, 100), (100, 200), (200, 300)]  # each till's 300 events in three parts
    tills: list[Till] = []
    feed = None
    ho_log = _Log(headoffice.log_path)
    bridges = [f"as agecheck-bridge-{s}" for s in STORES]
    with PgServer() as pg:
        url = pg.create_db("chain")
        import psycopg

        def count() -> int:
            try:
                with psycopg.connect(url) as con:
                    return con.execute("SELECT COUNT(*) FROM events").fetchone()[0]
            except psycopg.errors.UndefinedTable:
                return 0

        def deliver(part: int) -> None:
            lo, hi = thirds[part]
            for till in tills:
                till.store(week[(till.cfg.store_id, till.cfg.till_id)][lo:hi])
                till.deliver()

        try:
            headoffice.start()
            for broker in stores.values():
                broker.start()
            ho_log.wait_for(bridges)  # both stores' bridges are connected to head office
            cfg = write_config(tmp_path / "config.yaml", headoffice.port, feed={"timezone": "UTC"})
            feed = Proc(["feed", "--config", str(cfg), "--db", url, "--all-stores"])
            feed.wait_line("subscribed to", timeout=30)
            tills = [Till(tmp_path, stores[s].port, t, store=s) for s in STORES for t in TILLS]

            # Days 1-2: everything flows straight through.
            deliver(0)
            wait_until(lambda: count() == 400, timeout=60, what="the first 400 events in PostgreSQL")

            # Days 3-4: head office is down; the stores' brokers queue the events for their bridges,
            # and store-042's broker is restarted in the middle of it (its queue is on disk).
            mark = len(feed.lines)
            headoffice.stop()
            deliver(1)
            stores["store-042"].restart()
            ho_log.set_mark()
            headoffice.start()
            ho_log.wait_for(bridges)

            # Days 5-7: head office is back; the queued days and the rest of the week arrive.
            deliver(2)
            wait_until(lambda: count() >= 1200, timeout=90, what="the week's 1,200 events in PostgreSQL")
            feed.wait_line("resumed session", timeout=5, after=mark)  # the feed's queue at head office
        finally:
            for till in tills:
                till.close()
            if feed:
                assert feed.stop() == 0, feed.output
            logs = {
                name: b.log_path.read_text(errors="replace") if b.log_path.exists() else ""
                for name, b in [("head office", headoffice), *stores.items()]
            }
            for broker in [headoffice, *stores.values()]:
                broker.close()

        with psycopg.connect(url) as con:
            rows = con.execute("SELECT event_id FROM events").fetchall()
            per_till = con.execute(
                "SELECT store_id, publisher, COUNT(DISTINCT seq), MIN(seq), MAX(seq), COUNT(*)"
                " FROM events GROUP BY store_id, publisher ORDER BY 1, 2"
            ).fetchall()
        ro = open_store(url, read_only=True)
        gaps = gap_rows(ro)
        ro.close()

    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids)) == 1200  # every event once
    assert set(ids) == sent  # and none that was not sent
    assert per_till == [(s, t, 300, 1, 300, 300) for s in STORES for t in TILLS]
    assert gaps == []
    for name, text in logs.items():
        assert "dropped" not in text.lower(), f"{name}'s broker dropped messages:\n{text[-2000:]}"
