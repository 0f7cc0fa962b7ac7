"""The window's own process (edge_app.cashier.isolated) as the till service and `agecheck display`
run it, on a real X server: a new window never shows an old shopper's OK again; a window that
keeps dying is started again ever more slowly, not in a tight loop; and the window process never
outlives the program that runs it (killed outright, or stopped with Ctrl-C)."""

from __future__ import annotations

import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time

from edge_app.cashier import isolated
from edge_app.cashier.banner import BannerKind
from edge_app.cashier.isolated import WindowProcess
from edge_app.config import DisplayConfig
from tests.edge_app.feed_util import typed_alert as alert_event
from tests.edge_app.feed_util import typed_check as check_event
from tests.edge_app.x11_util import wait_for, xvfb  # noqa: F401
from tests.helpers import REPO

CONF = DisplayConfig(enabled=True, width=640, height=300, position="top-left", approve_seconds=1.0)


class Recorded(WindowProcess):
    """Keeps every snapshot its window sent, not only the last."""

    def __init__(self, *a, **kw) -> None:
        self.seen: list = []
        super().__init__(*a, **kw)

    @property
    def snapshot(self):
        return self._snap

    @snapshot.setter
    def snapshot(self, s) -> None:
        self._snap = s
        self.seen.append(s)


def test_a_new_window_does_not_show_an_old_shoppers_ok_again(xvfb):
    """T-1's alert waits unanswered; T-2's shopper was approved (OK shown, gone). The window dies:
    the new one shows T-1's alert (sale done, answerable), never T-2's OK banner, which would
    read as an OK for whoever stands at the till now."""
    d = Recorded(CONF, "store-001", "till-01", queue.Queue().put).start()
    try:
        c1 = check_event(decision="check_id", age=19.0, txn="T-1")
        a1 = alert_event(c1)
        d.post(c1, a1)
        d.post(check_event(decision="approve", age=44.0, txn="T-2"))
        wait_for(lambda: d.snapshot.visible and d.snapshot.kind == BannerKind.OK, timeout=15, what="T-2's OK")
        wait_for(
            lambda: d.snapshot.visible and d.snapshot.alert_event_id == a1.event_id,
            timeout=15,
            what="T-1's alert after the OK",
        )
        os.kill(d.pid, signal.SIGKILL)
        wait_for(lambda: d.restarts >= 1, timeout=20, what="the window to be started again")
        d.seen.clear()
        wait_for(
            lambda: d.snapshot.visible and d.snapshot.alert_event_id == a1.event_id and d.snapshot.answerable,
            timeout=20,
            what="T-1's alert on the new window",
        )
        assert [s.transaction_id for s in d.seen if s.kind == BannerKind.OK] == []
        # A new shopper's OK still shows on the new window.
        d.post(check_event(decision="approve", age=50.0, txn="T-3"))
        wait_for(
            lambda: d.snapshot.visible and d.snapshot.kind == BannerKind.OK and d.snapshot.transaction_id == "T-3",
            timeout=15,
            what="T-3's OK",
        )
    finally:
        d.shutdown()


def test_a_window_that_keeps_dying_is_started_ever_more_slowly(monkeypatch, caplog):
    """Each window dies as soon as it opens: the waits double up to the cap, and the log says so
    once, not once a second for ever."""
    monkeypatch.setattr(isolated, "RESTART_DELAY_S", 0.05)
    monkeypatch.setattr(isolated, "RESTART_MAX_S", 0.2)
    starts: list[float] = []
    enough = threading.Event()

    def run_child(self, first):
        starts.append(time.monotonic())
        first.set()
        if len(starts) >= 7:
            enough.set()
        return 1, True, None

    monkeypatch.setattr(WindowProcess, "_run_child", run_child)
    caplog.set_level(logging.ERROR, logger="edge_app.cashier.isolated")
    d = WindowProcess(CONF, "store-001", "till-01", queue.Queue().put).start()
    try:
        assert enough.wait(30)
    finally:
        d.shutdown()
    gaps = [b - a for a, b in zip(starts, starts[1:])][:6]
    for gap, least in zip(gaps, [0.05, 0.1, 0.2, 0.2, 0.2, 0.2]):
        assert gap >= least * 0.95, gaps
    stopped = [r for r in caplog.records if "cashier window stopped" in r.getMessage()]
    assert len(stopped) == 1, [r.getMessage() for r in stopped]


_PARENT = r"""
import sys
from edge_app.cashier.isolated import WindowProcess
from edge_app.config import DisplayConfig
d = WindowProcess(DisplayConfig(enabled=True, position="top-left"), "store-001", "till-01", print).start()
try:
    print("CHILD", d.pid, flush=True)
    sys.stdin.read()
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
finally:
    d.shutdown()
print("DONE", flush=True)
"""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie waiting for init is gone
    except FileNotFoundError:
        return True


def _start_parent(xvfb_display: str) -> tuple[subprocess.Popen, int]:
    env = {**os.environ, "DISPLAY": xvfb_display, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
        cwd=str(REPO),
    )
    line = parent.stdout.readline()
    assert line.startswith("CHILD "), (line, parent.stderr.read() if parent.poll() is not None else "")
    return parent, int(line.split()[1])


def test_the_window_process_ends_with_the_program_that_runs_it(xvfb):
    """The till service killed outright (SIGKILL, the OOM killer): its window does not stay on
    the till's screen as an orphan; the window ends when its pipe to the parent closes."""
    parent, child = _start_parent(xvfb)
    try:
        assert not _gone(child)
        parent.kill()
        parent.wait(10)
        wait_for(lambda: _gone(child), timeout=15, what="the window process to end with its parent")
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)


def test_ctrl_c_stops_the_window_with_the_program_not_a_crash(xvfb):
    """Ctrl-C in the terminal reaches the program's process group, not its window's: the window
    is in a group of its own, so it neither dies of the Ctrl-C (a traceback, and a restart logged
    as a crash) nor outlives the program, which stops it."""
    parent, child = _start_parent(xvfb)
    try:
        assert os.getpgid(child) != os.getpgid(parent.pid)
        os.killpg(parent.pid, signal.SIGINT)
        # The program ends on the Ctrl-C, or (where the runner's shell left SIGINT ignored for
        # its children) when its input closes; either way it stops its window itself.
        out, err = parent.communicate(timeout=30)
        assert "DONE" in out, (out, err)
        assert "Traceback" not in err and "cashier window stopped" not in err, err
        wait_for(lambda: _gone(child), timeout=15, what="the window process to end")
    finally:
        if parent.poll() is None:
            parent.kill()
        if not _gone(child):
            os.kill(child, signal.SIGKILL)
