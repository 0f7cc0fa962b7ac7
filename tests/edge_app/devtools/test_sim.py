"""The simulation kit's X server: a real Xvfb that a real X client reads the screen from, of the
size asked for, gone after stop(); and a clear error where Xvfb is not installed."""

from __future__ import annotations

import shutil

import pytest
from PIL import ImageGrab

from edge_app.devtools.sim import Xvfb


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (apt-get install xvfb)")
def test_xvfb_serves_a_screen_of_the_size_asked_until_stopped():
    # PIL's grab is a short-lived X client of its own (Tk would keep its connection for the
    # life of the process and abort it once the server is gone).
    with Xvfb(800, 600) as x:
        assert x.display and x.display.startswith(":")
        proc = x.proc
        assert ImageGrab.grab(xdisplay=x.display).size == (800, 600)
    assert x.proc is None and proc.poll() is not None
    with pytest.raises(OSError):
        ImageGrab.grab(xdisplay=x.display)

def test_a_missing_xvfb_is_named(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no Xvfb on this PATH
    with pytest.raises(FileNotFoundError, match="apt-get install xvfb"):
        Xvfb().start()
