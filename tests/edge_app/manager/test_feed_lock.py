"""Two `agecheck feed` processes with one client id on one machine: the second is refused at
start, naming the first (before: they knocked each other off a real broker and split the events
between their two databases); a SIGKILLed first one leaves no lock behind."""

from __future__ import annotations

import signal

from tests.edge_app.broker_util import Broker
from tests.edge_app.feed_util import Proc, write_config


def test_a_second_feed_on_the_same_client_id_is_refused_naming_the_first(tmp_path):
    with Broker() as broker:
        cfg = write_config(tmp_path / "config.yaml", broker.port)
        first = Proc(["feed", "--config", str(cfg), "--db", str(tmp_path / "a.sqlite3")])
        try:
            first.wait_line("subscribed to")
            # Another database, the same session: the events would be split between the two.
            second = Proc(["feed", "--config", str(cfg), "--db", str(tmp_path / "b.sqlite3")])
            assert second.p.wait(30) == 2, second.output
            out = second.output
            assert "already uses the broker session 'agecheck-feed-store-001'" in out, out
            assert f"pid {first.p.pid}" in out and "feed" in out, out
            assert "Traceback" not in out
            assert "lost" not in first.output.lower() and "connection lost" not in first.output
        finally:
            first.p.send_signal(signal.SIGKILL)
            first.p.wait(10)
            first.stop()
        # The kernel dropped the lock with the killed process: a new feed starts.
        third = Proc(["feed", "--config", str(cfg), "--db", str(tmp_path / "a.sqlite3")])
        try:
            third.wait_line("subscribed to")
        finally:
            third.stop()
