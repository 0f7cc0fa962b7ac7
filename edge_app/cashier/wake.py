"""How other threads wake the window's Tk thread at once: a pipe whose read end the Tk root
watches (a file handler), written one byte per posted item. A Tk without file handlers gets no
pipe, and the window falls back on polling its queue."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any


class WakePipe:
    """The wake-up pipe of one window. `poke()` from any thread; `watch()` and `close()` on the
    Tk thread."""

    def __init__(self) -> None:
        # (read, write) ends while the Tk thread watches them; the lock keeps a writer from using
        # a closed (possibly reused) descriptor.
        self._fds: tuple[int, int] | None = None
        self._lock = threading.Lock()

    def poke(self) -> None:
        with self._lock:
            if self._fds is not None:
                try:
                    os.write(self._fds[1], b"\0")
                except BlockingIOError:
                    pass  # the pipe is full of wake-ups already: the Tk thread is on its way

    def watch(self, root: Any, on_wake: Callable[[], None]) -> bool:
        """Have `root` call `on_wake` (on its thread) as soon as something is poked, and once now
        for anything posted while the window was being built. False: this Tk cannot watch a file,
        so nothing is watched (poll only)."""
        import tkinter as tk  # deferred: only the window's own thread loads Tk

        def readable(fd: int, mask: int) -> None:
            try:
                while os.read(fd, 4096):
                    pass
            except BlockingIOError:
                pass
            on_wake()

        r, w = os.pipe()
        try:
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            root.tk.createfilehandler(r, tk.READABLE, readable)
        except (AttributeError, tk.TclError, OSError):  # Tk without file handlers: poll only
            os.close(r)
            os.close(w)
            return False
        with self._lock:
            self._fds = (r, w)
        readable(r, 0)
        return True

    def close(self, root: Any) -> None:
        """Stop watching (`root`: the Tk root that watches, None when it is gone) and close both ends."""
        with self._lock:
            fds, self._fds = self._fds, None
        if fds is None:
            return
        if root is not None:
            try:
                root.tk.deletefilehandler(fds[0])
            except Exception:
                pass
        for fd in fds:
            os.close(fd)
