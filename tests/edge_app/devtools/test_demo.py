"""`agecheck run --demo` with a screen: the cashier window opens on it, the simulated cashier
answers some alerts over MQTT, a real click in the window answers another, and every answer is
printed. Without a screen the demo says how to see the window."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from tests.edge_app.feed_util import wait_until
from tests.edge_app.x11_util import click, screenshot, wait_for, xdotool, xvfb  # noqa: F401
from tests.helpers import REPO


def window_box():
    ids = xdotool("search", "--onlyvisible", "--classname", "agecheck").split()
    if not ids:
        return None
    geo = dict(line.split("=", 1) for line in xdotool("getwindowgeometry", "--shell", ids[-1]).splitlines())
    return int(geo["X"]), int(geo["Y"]), int(geo["WIDTH"]), int(geo["HEIGHT"])


def alert_on_screen():
    """The window's box while it shows an alert: its answer buttons (light grey) in their row."""
    from edge_app.cashier.banner import layout

    box = window_box()
    if box is None:
        return None
    x, y, w, h = box
    row = layout(w, h)
    spot = (x + w // 6, y + row.answers_y + row.answers_h - 12, 1, 1)
    return box if screenshot(spot).getpixel((0, 0)) == (242, 242, 242) else None


class Demo:
    def __init__(self, tmp, env) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_app.cli", "run", "--demo"],
            cwd=tmp,
            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=(tmp / "demo.log").open("wb"),
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def has(self, text: str) -> bool:
        return any(text in ln for ln in self.lines)

    def stop(self) -> int:
        os.killpg(self.proc.pid, signal.SIGINT)
        return self.proc.wait(30)


def test_demo_shows_the_window_and_the_whole_loop(xvfb, tmp_path):
    demo = Demo(tmp_path, {"DISPLAY": xvfb})
    try:
        wait_until(
            lambda: demo.has("the cashier window is on display") or demo.proc.poll() is not None,
            120,
            "the demo to start",
        )
        assert demo.proc.poll() is None, (tmp_path / "demo.log").read_text()[-3000:]
        # The empty-till part of the demo video raises alerts; one of every two is answered by the
        # simulated cashier, the window shows the others with their answer buttons.
        wait_until(lambda: demo.has("(simulated cashier)"), 120, "an alert answered by the simulated cashier")
        x, y, w, h = wait_for(alert_on_screen, timeout=90, what="an alert with its buttons in the window")
        from edge_app.cashier.banner import layout

        row = layout(w, h)
        click((x, y + row.answers_y + row.answers_h // 4, row.button_w, row.answers_h // 2))  # button 1
        wait_until(lambda: demo.has("(window, click)"), 30, "the answer given in the window")
    finally:
        rc = demo.stop()
    assert rc == 0, (tmp_path / "demo.log").read_text()[-3000:]


def test_demo_without_a_screen_says_how_to_see_the_window(tmp_path):
    demo = Demo(tmp_path, {"DISPLAY": ""})
    try:
        wait_until(lambda: demo.has("Ctrl-C to stop") or demo.proc.poll() is not None, 120, "the demo to start")
    finally:
        rc = demo.stop()
    assert rc == 0, (tmp_path / "demo.log").read_text()[-3000:]
    assert demo.has("no screen here: run it with DISPLAY set"), demo.lines
