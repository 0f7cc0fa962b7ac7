"""systemd notification over a real unix datagram socket, and the watchdog feeder that stops
pinging when a loop it watches stops moving."""

from __future__ import annotations

import logging
import socket
import tempfile
from pathlib import Path

import pytest

from edge_app.till.sd_notify import Notifier, WatchdogFeeder


@pytest.fixture
def notify_socket(monkeypatch):
    d = tempfile.mkdtemp(prefix="sd-")  # short path: unix socket names are limited to 108 bytes
    path = str(Path(d) / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def test_ready_status_watchdog_stopping_reach_the_socket(notify_socket, monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    n = Notifier()
    assert n.enabled and n.watchdog_seconds == 4.0
    n.ready("running")
    n.watchdog()
    n.stopping()
    got = [notify_socket.recv(4096).decode() for _ in range(3)]
    assert got == ["READY=1\nSTATUS=running", "WATCHDOG=1", "STOPPING=1\nSTATUS=stopping"]


def test_no_systemd_means_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    n = Notifier()
    n.ready("x")
    n.watchdog()
    assert not n.enabled and n.watchdog_seconds is None
    assert not WatchdogFeeder(n, {}).tick()


def test_watchdog_for_another_pid_is_ignored(monkeypatch):
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert Notifier().watchdog_seconds is None


def test_feeder_stops_pinging_while_a_loop_is_stuck(notify_socket, monkeypatch, caplog):
    monkeypatch.setenv("WATCHDOG_USEC", "8000000")  # ping every 2 s, stale after 4 s
    now = [100.0]
    beats = {"capture": 100.0, "check": 100.0}
    feeder = WatchdogFeeder(Notifier(), {k: (lambda k=k: beats[k]) for k in beats}, clock=lambda: now[0])
    assert feeder.tick()
    assert notify_socket.recv(64) == b"WATCHDOG=1"
    now[0] = 101.0
    assert not feeder.tick()  # too soon
    now[0] = 102.5
    beats["capture"] = 102.4
    assert not feeder.stale() and feeder.tick()
    assert notify_socket.recv(64) == b"WATCHDOG=1"
    # The check loop hangs: its heartbeat stays at 100.
    now[0] = 105.0
    beats["capture"] = 104.9
    with caplog.at_level(logging.ERROR):
        assert not feeder.tick()
    assert feeder.stale() == ["check"] and "check loop has not moved" in caplog.text
    now[0] = 110.0
    beats["capture"] = 109.9
    assert not feeder.tick()
    # It recovers: pings resume.
    beats["check"] = 109.9
    assert feeder.tick()
    notify_socket.recv(64)
    notify_socket.settimeout(0.2)
    with pytest.raises(socket.timeout):  # no ping was sent while it was stuck
        notify_socket.recv(64)
