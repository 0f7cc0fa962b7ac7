"""A real X server for the alert-window tests: Xvfb on a free display number (it picks one itself
with -displayfd), plus screenshots and xdotool input against it."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter

import pytest

from edge_app.devtools.sim import Xvfb
from tests.helpers import wait_until


def start_xvfb(width: int = 1280, height: int = 800):
    """(process, ':N'); skips the test when Xvfb or xdotool is missing."""
    for tool, pkg in (("Xvfb", "xvfb"), ("xdotool", "xdotool")):
        if shutil.which(tool) is None:
            pytest.skip(
                f"{tool} is not installed (apt-get install {pkg}); the alert window is tested on a real X server"
            )
    x = Xvfb(width, height).start()
    return x.proc, x.display


@pytest.fixture(scope="module")
def xvfb():
    proc, display = start_xvfb()
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = display
    try:
        yield display
    finally:
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old
        proc.terminate()
        proc.wait(timeout=10)


def xdotool(*args: str) -> str:
    out = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=15)
    if out.returncode not in (0, 1):  # 1: "search" found nothing
        raise RuntimeError(f"xdotool {' '.join(args)} failed: {out.stderr}")
    return out.stdout.strip()


def click(box: tuple[int, int, int, int]) -> None:
    """A real left click in the middle of box=(x, y, w, h)."""
    x, y, w, h = box
    move_pointer(x + w // 2, y + h // 2)
    xdotool("click", "1")


def move_pointer(x: int, y: int) -> None:
    """The pointer moved to (x, y), once it is there."""
    # --sync waits for the pointer to move, forever when it is there already.
    here = dict(kv.split(":") for kv in xdotool("getmouselocation").split()[:2])
    if (int(here["x"]), int(here["y"])) != (x, y):
        xdotool("mousemove", "--sync", str(x), str(y))


def tap(window, box: tuple[int, int, int, int]) -> None:
    """A click on the alert window once it takes taps again: a second tap within DOUBLE_TAP_S of
    an answer is ignored on purpose (the window's double-tap guard). `window` has a `snapshot`."""
    import time

    from edge_app.cashier.window_state import DOUBLE_TAP_S

    wait_until(
        lambda: (t := window.snapshot.last_tap) is None or time.monotonic() - t >= DOUBLE_TAP_S,
        what="the double-tap guard to pass",
    )
    click(box)


def screenshot(box: tuple[int, int, int, int]):
    """What is on the X screen inside box=(x, y, w, h), read back from the X server."""
    from PIL import ImageGrab

    x, y, w, h = box
    return ImageGrab.grab(bbox=(x, y, x + w, y + h), xdisplay=os.environ["DISPLAY"]).convert("RGB")


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def _colours(img) -> Counter:
    return Counter({c: n for n, c in img.getcolors(img.width * img.height)})


def dominant(img) -> tuple[tuple[int, int, int], float]:
    """The most common colour and its share of the pixels."""
    colour, n = _colours(img).most_common(1)[0]
    return colour, n / (img.width * img.height)


def share_of(img, colour: tuple[int, int, int]) -> float:
    return _colours(img)[colour] / (img.width * img.height)


# The window tests' name for the suite's one wait loop (tests/helpers.py).
wait_for = wait_until


_POS_SCRIPT = r"""
import sys, tkinter as tk
root = tk.Tk(className="posmock")
root.title("POS")
root.geometry(sys.argv[1])
entry = tk.Entry(root, font=("DejaVu Sans", 20))
entry.pack(fill="both", expand=True)
entry.focus_set()
last = [None]
def report():
    text = entry.get()
    if text != last[0]:
        last[0] = text
        print("TEXT " + repr(text), flush=True)
    root.after(50, report)
root.after(50, report)
print("READY", flush=True)
root.mainloop()
"""


class PosWindow:
    """A stand-in for the till's POS: a real window in another process with a text field that
    holds the keyboard focus (set explicitly, as a window manager would), and reports what is
    typed into it."""

    def __init__(self, geometry: str = "420x120+700+500") -> None:
        import sys
        import threading

        self.proc = subprocess.Popen(
            [sys.executable, "-c", _POS_SCRIPT, geometry], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.text = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        if not self._ready.wait(15):
            self.close()
            raise RuntimeError("the POS stand-in window did not start")
        self.window = wait_for(lambda: xdotool("search", "--classname", "posmock").split(), what="the POS window")[0]

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("READY"):
                self._ready.set()
            elif line.startswith("TEXT "):
                import ast

                self.text = ast.literal_eval(line[5:].strip())

    def focus(self) -> None:
        xdotool("windowfocus", "--sync", self.window)

    def has_focus(self) -> bool:
        return xdotool("getwindowfocus") == self.window

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
