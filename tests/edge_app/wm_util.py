"""A till's desktop for the cashier-window tests: Xvfb with a real window manager from Debian
(openbox on its default settings, fluxbox) and a POS stand-in that holds the keyboard focus the
way a POS does on a till, recording every key it receives.

The window manager matters: without one nothing hands the focus to a newly mapped window, so a
window that would steal the POS's keyboard on a till looks harmless under a bare Xvfb."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass

import pytest

from edge_app.devtools.sim import Xvfb
from tests.edge_app.x11_util import move_pointer, wait_for, xdotool

# The window managers the tests run under, with the Debian package that brings each.
WINDOW_MANAGERS = {"openbox": "openbox", "fluxbox": "fluxbox"}


def _wm_running(display: str) -> bool:
    """An EWMH window manager names its check window on the root once it manages the screen."""
    out = subprocess.run(
        ["xprop", "-display", display, "-root", "_NET_SUPPORTING_WM_CHECK"], capture_output=True, text=True, timeout=15
    )
    return "window id" in out.stdout


@dataclass
class Desktop:
    display: str
    wm: str


def start_desktop(wm: str, width: int = 1280, height: int = 800):
    """(Xvfb, window manager process, Desktop); skips when a tool is missing."""
    for tool, pkg in (("Xvfb", "xvfb"), ("xdotool", "xdotool"), ("xprop", "x11-utils"), (wm, WINDOW_MANAGERS[wm])):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install {pkg}); the alert window is tested under it")
    x = Xvfb(width, height).start()
    # A fresh home: the window manager's default settings, as on a till nobody has configured.
    home = tempfile.mkdtemp(prefix=f"agecheck-{wm}-home-")
    env = {**os.environ, "DISPLAY": x.display, "HOME": home}
    env.pop("XDG_CONFIG_HOME", None)
    proc = subprocess.Popen(
        [wm],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: proc.poll() is not None or _wm_running(x.display), timeout=30, what=f"{wm} to start")
        if proc.poll() is not None:
            raise RuntimeError(f"{wm} exited with code {proc.returncode}")
    except BaseException:
        proc.kill()
        x.stop()
        raise
    return x, proc, Desktop(x.display, wm), home


def stop_desktop(x: Xvfb, wm: subprocess.Popen) -> None:
    wm.terminate()
    try:
        wm.wait(timeout=5)
    except subprocess.TimeoutExpired:  # fluxbox may linger on SIGTERM
        wm.kill()
        wm.wait(timeout=10)
    x.stop()


_POS_SCRIPT = r"""
import sys, tkinter as tk
root = tk.Tk(className="posmock")
root.title("POS")
root.geometry(sys.argv[1])
entry = tk.Entry(root, font=("DejaVu Sans", 20))
entry.pack(fill="x")
entry.focus_set()
# Every key press the POS gets, by its keysym (Return included): what the till's own screen saw.
root.bind_all("<KeyPress>", lambda e: print("KEY " + e.keysym, flush=True), add="+")
root.bind("<FocusIn>", lambda e: print("FOCUS in", flush=True), add="+")
root.bind("<FocusOut>", lambda e: print("FOCUS out", flush=True), add="+")
print("READY", flush=True)
root.mainloop()
"""


class KeyedPos:
    """The POS stand-in: a window over most of the screen in its own process, given the focus
    through the window manager (_NET_ACTIVE_WINDOW, as a click or the WM's focus-on-map would),
    that reports each key it receives.

    It opens with the pointer parked outside it (below it, clear of a title bar). The stand-in is a
    Tk program, and Tk claims the focus by itself whenever the pointer enters its window while the
    focus is on the root window (where fluxbox leaves it when no window has it), as when the window
    opens under the pointer; when the pointer later leaves that window, or a window appears over it
    under the pointer, Tk hands the focus to PointerRoot (tkFocus.c, its Enter/LeaveNotify cases).
    Under fluxbox that made the POS lose its keyboard now and then as the pointer moved onto the
    alert window, or the alert window opened under a pointer left there by an earlier test: a
    quirk of the stand-in's toolkit, which a focus log showed (PointerRoot set while `xdotool
    mousemove` ran, before any click), not of the alert window. Parked outside, the POS gets the
    focus only from the window manager, and Tk never claims it."""

    def __init__(self, geometry: str = "1280x760+0+0", park: tuple[int, int] = (640, 797)) -> None:
        move_pointer(*park)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _POS_SCRIPT, geometry], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.keys: list[str] = []
        self.focused = False
        self._lock = threading.Lock()
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._ready.wait(30):
            self.close()
            raise RuntimeError("the POS stand-in window did not start")
        self.window = wait_for(
            lambda: xdotool("search", "--onlyvisible", "--classname", "posmock").split(), what="the POS window"
        )[0]

    def _read(self) -> None:
        for line in self.proc.stdout:
            line = line.strip()
            if line == "READY":
                self._ready.set()
            elif line.startswith("KEY "):
                with self._lock:
                    self.keys.append(line[4:])
            elif line == "FOCUS in":
                self.focused = True
            elif line == "FOCUS out":
                self.focused = False

    def activate(self) -> None:
        """Give the POS the focus the way a till does: through the window manager."""
        xdotool("windowactivate", "--sync", self.window)
        wait_for(lambda: self.focused, what="the POS to have the focus")

    def take_keys(self) -> list[str]:
        with self._lock:
            keys, self.keys = self.keys, []
        return keys

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# What the cashier types and scans into the POS: digits, Enter, and a barcode at scanner speed
# (a USB scanner is a keyboard that types a whole code in a few tens of milliseconds).
BARCODE = "5000128654321"


def type_into_pos(pos: KeyedPos) -> list[str]:
    """Types digits, Enter and a barcode; returns the keysyms the POS must receive."""
    xdotool("type", "--delay", "60", "12")
    xdotool("key", "Return")
    xdotool("type", "--delay", "4", BARCODE)
    xdotool("key", "Return")  # a scanner ends its code with Enter
    return ["1", "2", "Return", *BARCODE, "Return"]


MODIFIERS = ("Alt_L", "Alt_R", "Control_L", "Control_R", "Shift_L", "Shift_R", "Super_L", "Super_R")


def all_keys_arrive(pos: KeyedPos, sent: list[str], what: str) -> None:
    """Every key typed reached the POS, in order, and nothing else did (a lone modifier, the Alt
    of an Alt-Tab the window manager took, aside)."""

    def got_keys():
        return [k for k in pos.keys if k not in MODIFIERS]

    try:
        wait_for(lambda: len(got_keys()) >= len(sent), timeout=10, what=f"the keys typed {what} to reach the POS")
    except AssertionError:
        pass  # said below, with the keys that did arrive
    got = [k for k in pos.take_keys() if k not in MODIFIERS]
    assert got == sent, f"keys typed {what}: the POS got {got}, not {sent}; {desktop_state(pos)}"


def keyboard_grabbed(display: str) -> bool:
    """Whether another client holds an active keyboard grab (a window manager mid Alt-Tab):
    XGrabKeyboard answers AlreadyGrabbed then."""
    import ctypes

    x11 = ctypes.CDLL("libX11.so.6")
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
    x11.XDefaultRootWindow.restype = ctypes.c_ulong
    x11.XGrabKeyboard.argtypes = [
        ctypes.c_void_p,
        ctypes.c_ulong,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_ulong,
    ]
    x11.XUngrabKeyboard.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
    x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    dpy = x11.XOpenDisplay(display.encode())
    if not dpy:
        raise RuntimeError(f"cannot open display {display}")
    try:
        status = x11.XGrabKeyboard(dpy, x11.XDefaultRootWindow(dpy), 0, 1, 1, 0)  # GrabModeAsync, CurrentTime
        if status == 0:  # GrabSuccess
            x11.XUngrabKeyboard(dpy, 0)
        return status in (1, 4)  # AlreadyGrabbed, GrabFrozen
    finally:
        x11.XCloseDisplay(dpy)


def desktop_state(pos: KeyedPos) -> str:
    """Where the keyboard is, for a failure message: the focused window, the POS's own view of its
    focus, and whether a client holds a keyboard grab. Never raises: it must not hide the failure
    it describes."""
    try:
        focus = xdotool("getwindowfocus", "-f")
        name = xdotool("getwindowname", focus) if focus else ""
        grabbed = str(keyboard_grabbed(os.environ.get("DISPLAY", "")))
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"(the desktop's state could not be read: {exc})"
    return (
        f"X focus on window {focus or 'none'} ({name!r}), POS window {pos.window}, POS says focused={pos.focused}, "
        f"keyboard grabbed by a client: {grabbed}"
    )
