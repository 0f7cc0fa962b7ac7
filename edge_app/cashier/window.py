"""Cashier alert window: a small always-on-top Tk window on the till screen that shows nothing
while idle and, on a check, the banner of `edge_app.cashier.banner` (the instruction, its symbol
and colour, the camera's estimate as a range, the item). The cashier answers by tapping or
clicking a button; each answer becomes an `ack` event handed to a callback (the service's durable
outbox, or the standalone window's own, see `edge_app.cashier.standalone`).

The window never holds the keyboard: it is override-redirect (no window manager focuses,
decorates or lists it), asks for the focus nowhere and binds no keys, so what the cashier types
or scans always goes to the POS (docs/cashier.md says why this X11 means). Its parts sit in fixed
places (`banner.layout`): Undo has its own row under the answers, the status line is always
there; a second tap within DOUBLE_TAP_S of an answer is ignored, visibly; buttons have no hover
look. After an answer the window shows what was recorded, with Undo, for `display.undo_seconds`;
Undo publishes a correcting ack (`replaces_event_id`, answer `undone`) and puts the alert back.

It runs in a process of its own (`edge_app.cashier.isolated`), so an X error or a killed window
never takes the till service with it. This module owns the window's thread, its queue and the Tk
root; what the window knows and shows is the state machine of `edge_app.cashier.window_state`,
its widgets and their painting `edge_app.cashier.drawing`.

No alert is lost on screen: unanswered alerts wait in an `AlertQueue` (the newest shown, with a
count of the others), each until it is answered here or on another display, or expires.

`CashierDisplay.post()`/`on_event()` may be called from any thread (a queue whose writers wake
the Tk thread through a pipe it watches, `edge_app.cashier.wake`); everything Tk happens on the display's own thread.
Run it with `run()` on the main thread, or `start_in_thread()` inside the service (`attach`).

Privacy: events carry no image and neither does this window; nothing visual is written anywhere.
"""

from __future__ import annotations

import gc
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from edge_app.cashier.wake import WakePipe
from edge_app.cashier.window_state import View, WindowSnapshot, WindowState
from edge_app.config import DisplayConfig
from edge_app.core import events
from edge_app.core.state import Recording
from edge_app.core.words import AckVia, Answer
from edge_app.errors import UsageError

if TYPE_CHECKING:
    from edge_app.cashier.drawing import Drawing

log = logging.getLogger(__name__)

# Posted events wake the Tk thread at once through a pipe it watches (a file handler); the
# timer is only a safety net then. Polling alone (no file handlers: not a Unix Tk) uses the
# short interval, which then adds up to that much to the time an alert takes to appear.
POLL_MS = 50
SAFETY_POLL_MS = 500


class DisplayError(UsageError, RuntimeError):
    """The window cannot be opened (no screen, no Tk); the message says what to do."""


AckCallback = Callable[[events.AckEvent], Any]
# What the window takes in: the check and alert it shows, and the acks of other displays.
# Integrity events say a sale ended with its alert unanswered: that alert is then "sale done".
_SHOWN = (events.CheckEvent, events.AlertEvent, events.AckEvent, events.IntegrityEvent)


class CashierDisplay:
    """The alert window. `on_ack(event)` is called on the display thread with each answer and
    each Undo (a typed `AckEvent`, already validated); if it raises, the window keeps the alert (or
    the Undo button) with a message so the cashier can press again (nothing lost)."""

    def __init__(self, cfg: DisplayConfig, store_id: str, till_id: str, on_ack: AckCallback) -> None:
        self.cfg = cfg
        self.store_id = store_id
        self.till_id = till_id
        self._on_ack = on_ack
        self._q: queue.Queue = queue.Queue()
        self._wake = WakePipe()
        self._closing = False
        self._poll_ms = POLL_MS
        self._ready = threading.Event()
        self._init_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._root: Any = None
        self._drawing: Drawing | None = None
        # What the window knows and should show (Tk thread only).
        self._state = WindowState(cfg, store_id, till_id)
        self._view: View | None = None  # what is on screen now
        self._render_job = None
        self._status_text: str | None = None
        # monotonic: when the shown view reached the screen (see _mark_drawn).
        self._drawn_at: float | None = None
        self._await_expose = False
        # Read by other threads (tests, the service's state); replaced whole, never mutated.
        self.snapshot = WindowSnapshot()
        self.window_id: int | None = None
        # Told each new snapshot on the Tk thread (the child process of `isolated` sends it on).
        self.on_snapshot: Callable[[WindowSnapshot], Any] | None = None

    # -- thread-safe API ------------------------------------------------------------------------
    def post(self, check_event: events.CheckEvent | None, alert_event: events.AlertEvent | None = None) -> None:
        """Show a check (with its alert when it is one). Any thread. Raises TypeError for anything
        but typed events (a caller's bug, said on the caller's thread rather than the window's)."""
        for ev, cls in ((check_event, events.CheckEvent), (alert_event, events.AlertEvent)):
            if ev is not None and not isinstance(ev, cls):
                raise TypeError(f"post() takes a {cls.__name__} here, not {type(ev).__name__}")
        for ev in (check_event, alert_event):
            if ev is not None:
                self._put(("event", ev))

    def on_event(self, event: events.Event) -> None:
        """Listener for the service or the broker: takes typed check and alert events in any order
        (an alert is paired with its check by check_event_id) and acks (an alert answered on
        another display leaves this one's list); others are ignored. Any thread."""
        if isinstance(event, _SHOWN):
            self._put(("event", event))

    def recall(self, event: events.Event) -> None:
        """Like on_event, for what an earlier window was shown (a new window after a restart):
        an approval only says which sale is the current one; its OK banner is not shown again,
        since by now the shopper it was for has gone and an OK on screen would read as one for
        whoever stands there now. Any thread."""
        if isinstance(event, _SHOWN):
            self._put(("recall", event))

    def set_recording(self, status: Recording) -> None:
        """Listener for the service's recording state: while the till's outbox cannot write, every
        banner carries a small NOT RECORDING mark, so the cashier knows the checks are answered
        but not stored. Any thread. Raises TypeError for anything but a `Recording`."""
        if not isinstance(status, Recording):
            raise TypeError(f"set_recording() takes a Recording, not {type(status).__name__}")
        self._put(("recording", status))

    def on_sale(self, transaction_id: str) -> None:
        """Listener for the till's sales (the service's pos/sale): that sale's alerts are done.
        Any thread."""
        self._put(("sale", transaction_id))

    def set_notice(self, text: str | None) -> None:
        """Show (None: take away) a notice while no banner is up, e.g. that the window hears
        nothing from its till. Any thread."""
        self._put(("notice", text))

    def close(self) -> None:
        self._put(("close", None))

    def _put(self, item: tuple[str, Any]) -> None:
        self._q.put(item)
        self._wake.poke()

    def wait_ready(self, timeout: float = 10.0) -> None:
        if not self._ready.wait(timeout):
            raise DisplayError(f"the alert window did not open within {timeout:.0f} s")
        if self._init_error is not None:
            raise DisplayError(str(self._init_error))

    def start_in_thread(self) -> CashierDisplay:
        """Run the window on its own thread (inside the service). Raises DisplayError when there
        is no screen to open it on."""
        self._thread = threading.Thread(target=self._thread_main, name="cashier-display", daemon=True)
        self._thread.start()
        self.wait_ready()
        return self

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def shutdown(self) -> None:
        """Close the window and wait for its thread (the service calls this at shutdown)."""
        self.close()
        self.join(5)

    def open(self) -> None:
        """Create the (hidden) window; raises DisplayError when there is no screen. Call from
        the thread that will run the window."""
        if self._root is None:
            self._build()
        self._ready.set()

    def run(self) -> None:
        """Open the window if needed and run until close(), on the calling thread."""
        self.open()
        try:
            self._root.mainloop()
        finally:
            self._release_tk()

    def _thread_main(self) -> None:
        try:
            self.open()
        except BaseException as exc:  # reported to start_in_thread's caller
            self._init_error = exc
            self._ready.set()
            self._release_tk()
            return
        try:
            self._root.mainloop()
        finally:
            self._release_tk()

    def _release_tk(self) -> None:
        """Drop every Tk object on the Tk thread: Tcl aborts the process when an interpreter is
        freed by another thread (e.g. when the garbage collector runs there later)."""
        root = self._root
        self._wake.close(root)
        self._root = None
        self._drawing = None
        if root is not None:
            try:
                root.destroy()
            except Exception:
                pass
        del root
        gc.collect()

    # -- Tk (display thread only) ---------------------------------------------------------------
    def _build(self) -> None:
        # Deferred: Tk is loaded only where a window opens (its own child process, on a screen);
        # the service imports this module to run that process, and needs no Tk itself.
        import tkinter as tk

        from edge_app.cashier.drawing import Drawing, screen_position

        if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
            raise DisplayError(
                "no screen: $DISPLAY is not set (the alert window needs the till's X display, e.g. DISPLAY=:0)"
            )
        try:
            root = tk.Tk(className="agecheck")
        except tk.TclError as exc:
            raise DisplayError(
                f"cannot open the alert window on display {os.environ.get('DISPLAY')!r}: {exc}"
            ) from None
        self._root = root
        root.title(f"Age check – {self.till_id}")
        x, y = screen_position(root, self.cfg)
        root.geometry(f"{self.cfg.width}x{self.cfg.height}+{x}+{y}")
        root.resizable(False, False)
        # Override-redirect: the window manager never manages this window, so it never gives
        # it the keyboard focus (not when it is mapped or raised, not by Alt-Tab, a taskbar or a
        # click), never decorates it (no close or minimise button to lose alerts with) and never
        # lists it. Why this and not WM_HINTS input=False or a window type: docs/cashier.md.
        root.overrideredirect(True)
        # Nothing here takes the keyboard: no key bindings, no focus requests, no widget that
        # takes the focus on a click. A close request (if anything sends one) changes nothing.
        root.protocol("WM_DELETE_WINDOW", lambda: log.info("display: close request ignored (alerts must stay)"))
        self._drawing = Drawing(root, self.cfg, lambda a: self._answer(a, AckVia.CLICK), self._undo)
        # Geometry for the snapshot is only known once the window is mapped.
        root.bind("<Map>", lambda e: self._publish_snapshot() if e.widget is root else None, add="+")
        root.bind(
            "<Configure>", lambda e: self._publish_snapshot() if e.widget is root and self._view else None, add="+"
        )
        # Not managed, so no window manager keeps it on top: when another window covers it while
        # it shows something, it raises itself again (it still never takes the focus).
        root.bind("<Visibility>", self._on_visibility, add="+")
        # A banner shown on a hidden window is painted once the X server exposes it.
        self._drawing.w["title"].bind("<Expose>", self._on_expose, add="+")
        root.withdraw()  # idle: nothing on screen
        root.update_idletasks()
        self.window_id = int(root.wm_frame(), 16)
        self._poll_ms = SAFETY_POLL_MS if self._wake.watch(root, self._drain) else POLL_MS
        root.after(self._poll_ms, self._poll)

    @property
    def _widgets(self) -> Drawing:
        assert self._drawing is not None, "the window is not built (or already released)"
        return self._drawing

    def _on_visibility(self, event) -> None:
        if (
            event.widget is self._root
            and self._view is not None
            and self.cfg.always_on_top
            and str(event.state) != "VisibilityUnobscured"
        ):
            self._root.lift()

    def _poll(self) -> None:
        self._drain()
        if not self._closing:
            self._root.after(self._poll_ms, self._poll)

    def _drain(self) -> None:
        """Handle everything posted so far (Tk thread), then draw once."""
        if self._closing:
            return
        changed = False
        try:
            while True:
                what, ev = self._q.get_nowait()
                if what == "close":
                    self._closing = True
                    self.snapshot = WindowSnapshot(closed=True)
                    self._root.quit()  # mainloop returns; _release_tk destroys on this thread
                    return
                if what == "recording":
                    self._show_recording(ev)
                    continue
                if what == "sale":
                    changed = self._state.sale_done(ev) or changed
                    continue
                if what == "notice":
                    changed = self._state.set_notice(ev) or changed
                    continue
                try:
                    changed = (
                        self._state.handle(ev, time.time(), time.monotonic(), recalled=what == "recall") or changed
                    )
                except Exception:  # one odd event must not take the window down
                    log.exception("display: could not show %s", events.describe(ev))
        except queue.Empty:
            pass
        if changed:
            self._render()

    # -- drawing -----------------------------------------------------------------------------------
    def _render(self) -> None:
        """Put on screen what should be there now, and plan the next change that comes by itself
        (an approval or the Undo offer running out, a late alert showing, an alert expiring)."""
        now = time.monotonic()
        self._state.tick(now)
        view = self._state.view(now)
        if self._render_job is not None:
            self._root.after_cancel(self._render_job)
            self._render_job = None
        due = self._state.next_change(now)
        if due is not None:
            self._render_job = self._root.after(max(10, int((due - now) * 1000) + 5), self._render)
        if view is None:
            self._hide()
            return
        was_hidden = self._root.state() == "withdrawn"
        new = self._view is None or self._view.ident != view.ident
        self._view = view
        self._widgets.paint(view, self._state.others_waiting(view, now), self._state.recent)
        if new:
            self._drawn_at = None
            self._set_status(None)
        self._root.deiconify()
        self._root.lift()
        self._root.update_idletasks()
        if new:
            if was_hidden:
                self._await_expose = True  # painted when the X server exposes the window
            else:
                self._mark_drawn()
        self._publish_snapshot()
        # Once more when the window manager has placed it (the geometry the snapshot reports).
        self._root.after(100, self._publish_snapshot)

    def _on_expose(self, event) -> None:
        if self._await_expose and self._view is not None:
            self._await_expose = False
            # After Tk's own redraw of the exposed widgets, which is queued as idle work too.
            self._root.after_idle(self._mark_drawn)

    def _mark_drawn(self) -> None:
        """Record when the banner is on the screen: pending redraws done, then a round trip to
        the X server (winfo_pointerxy waits for its reply, so every drawing request before it
        has been carried out). Reported as snapshot.drawn_at (time.monotonic())."""
        if self._view is None:
            return
        self._root.update_idletasks()
        self._root.winfo_pointerxy()
        self._drawn_at = time.monotonic()
        self._publish_snapshot()

    # -- answers -----------------------------------------------------------------------------------
    def _answer(self, answer: Answer, via: AckVia) -> None:
        v = self._view
        if v is None or v.pending is None:
            return
        if self._double_tap():
            return
        p = v.pending
        if p.alert is None:
            self._set_status("Alert not registered yet – press again in a moment", error=True)
            return
        now = time.monotonic()
        ack = self._state.answer_ack(p, answer, via, now)
        if not self._send(ack, "Answer NOT saved (%s) – press again"):
            return
        self._state.answered(p, ack, now)
        self.snapshot = replace(self.snapshot, last_ack=ack)
        self._render()

    def _undo(self) -> None:
        if self._state.recent is None or self._double_tap():
            return
        now = time.monotonic()
        fix = self._state.undo_ack(now)
        if fix is None or not self._send(fix, "Undo NOT saved (%s) – press Undo again"):
            return
        self._state.undone(now)
        self.snapshot = replace(self.snapshot, last_ack=fix)
        self._render()

    def _double_tap(self) -> bool:
        """A tap within DOUBLE_TAP_S of the last answer or Undo: ignored, and the window says so."""
        if not self._state.double_tap(time.monotonic()):
            return False
        self._set_status("Second tap ignored: an answer was just recorded. Tap again if you meant it.")
        return True

    def _send(self, ack: events.AckEvent, failure: str) -> bool:
        self._state.sending(ack)
        try:
            self._on_ack(ack)
        except Exception as exc:
            # Only text in the log record: the exception's traceback holds Tk objects, which must
            # not outlive the display thread (Tcl aborts when another thread frees them).
            log.error("display: could not record %s for alert %s: %s", ack.answer, ack.alert_event_id, repr(exc))
            self._set_status(failure % exc, error=True)
            return False
        return True

    def _show_recording(self, status: Recording) -> None:
        if not self._state.set_recording(status):
            return
        self._widgets.show_recording(self._state.not_recording is not None)
        self._publish_snapshot()

    def _set_status(self, text: str | None, error: bool = False) -> None:
        """The status line's words (None: empty). The line keeps its place either way."""
        self._status_text = text
        self._widgets.set_status(text, error)
        self._publish_snapshot()

    def _hide(self) -> None:
        self._view = None
        self._drawn_at = None
        self._await_expose = False
        self._status_text = None
        if self._root is not None:
            self._widgets.set_status(None)
            self._root.withdraw()
        self._publish_snapshot()

    def _publish_snapshot(self) -> None:
        v, st = self._view, self._state
        shown: dict[str, Any] = {}
        if v is not None and self._root is not None:
            shown = dict(
                self._widgets.measure(v, undo=st.recent is not None, not_recording=st.not_recording is not None),
                answerable=v.pending is not None and v.pending.alert is not None,
                alert_event_id=v.pending.alert_event_id if v.pending else None,
                status=self._status_text,
                transaction_id=v.banner.transaction_id,
                drawn_at=self._drawn_at,
            )
        self.snapshot = WindowSnapshot(
            visible=v is not None,
            last_ack=self.snapshot.last_ack,
            taps_ignored=st.taps_ignored,
            last_tap=st.last_tap,
            expired=st.expired,
            queued=len(st.alerts),
            not_recording=st.not_recording,
            **shown,
        )
        if self.on_snapshot is not None:
            try:
                self.on_snapshot(self.snapshot)
            except Exception as exc:  # a watcher's trouble is not the window's
                log.warning("display: snapshot listener failed: %r", exc)
