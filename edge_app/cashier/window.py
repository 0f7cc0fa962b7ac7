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
never takes the till service with it.

No alert is lost on screen: unanswered alerts wait in an `AlertQueue` (the newest shown, with a
count of the others), each until it is answered here or on another display, or expires.

`CashierDisplay.post()`/`on_event()` may be called from any thread (a queue whose writers wake
the Tk thread through a pipe it watches); everything Tk happens on the display's own thread.
Run it with `run()` on the main thread, or `start_in_thread()` inside the service (`attach`).

Privacy: events carry no image and neither does this window; nothing visual is written anywhere.
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping

from edge_app.cashier.banner import (DECISION_KIND, STYLES, AlertQueue, Banner, BannerKind, Pending, banner_for,
                                     button_lines, layout, notice_banner, recorded_banner,
                                     waiting_text)
from edge_app.config import DisplayConfig
from edge_app.errors import UsageError
from edge_app.core import events
from edge_app.core.state import Recording
from edge_app.core.times import parse_ts
from edge_app.core.words import ACK_ANSWERS, ANSWER_LABELS, AckVia, Answer, Decision

log = logging.getLogger(__name__)

# Kept for the tests and the bench: the banner colours by decision word (and for a camera down).
COLOURS: dict[str, tuple[str, str]] = {d: (STYLES[k].bg, STYLES[k].fg) for d, k in
                                       (*DECISION_KIND.items(), (BannerKind.CAMERA_DOWN, BannerKind.CAMERA_DOWN))}
# Checks older than this (a display restarting onto a queued session) are not shown.
STALE_SECONDS = 300.0
# An alert whose check never arrives is shown from the alert alone after this long.
ALERT_WITHOUT_CHECK_S = 1.5
# Posted events wake the Tk thread at once through a pipe it watches (a file handler); the
# timer is only a safety net then. Polling alone (no file handlers: not a Unix Tk) uses the
# short interval, which then adds up to that much to the time an alert takes to appear.
POLL_MS = 50
SAFETY_POLL_MS = 500
UNDO_BG = "#1b1b1b"
ANSWERS_BG = "#222222"
BUTTON_BG = "#f2f2f2"
# A second tap this soon after an answer (or Undo) is taken for a double tap, not a new answer:
# the next alert's buttons come up in the same places, and Undo must not catch a bounce.
DOUBLE_TAP_S = 0.5
# Space around each button inside its place (pixels).
BUTTON_PAD = 4
# The mark on every banner while the till cannot store events: small (the banner's instruction
# stays what the cashier reads first) and black, a colour no banner uses.
NOT_RECORDING = "NOT RECORDING"
NOT_RECORDING_BG = "#000000"


class DisplayError(UsageError, RuntimeError):
    """The window cannot be opened (no screen, no Tk); the message says what to do."""


def _is_stale(ev: events.Event, now: float, alert_expire_seconds: float) -> bool:
    """Too old to show: an approval after STALE_SECONDS; an alert (or a check that asks for ID)
    only once it would have expired on the list, so a window that restarts still shows the
    alerts nobody answered."""
    t = parse_ts(ev.ts)
    asks = not (isinstance(ev, events.CheckEvent) and ev.decision == Decision.APPROVE)
    return t is not None and now - t.timestamp() > (alert_expire_seconds if asks else STALE_SECONDS)


def fitted_font(tkfont, root, family: str, lines: list[str], width: int, line_height: int, start):
    """A bold font of `family` in which every line is at most `width` pixels wide and at most
    `line_height` high: `start`'s size, smaller only as far as needed (the labels fit their
    buttons at every window size the config allows, instead of wrapping inside a word)."""
    px = abs(int(start.cget("size")))
    while True:
        f = tkfont.Font(root, family=family, size=-px, weight="bold")
        if px <= 8 or (max(f.measure(t) for t in lines) <= width and f.metrics("linespace") <= line_height):
            return f
        px -= 1


@dataclass
class _Recent:
    """The last answer, while Undo is offered."""

    pending: Pending
    ack: events.AckEvent
    until: float  # monotonic


@dataclass(frozen=True)
class _View:
    """What is on screen: `ident` changes when the cashier is shown something else (the key
    delay then starts again)."""

    ident: tuple
    banner: Banner
    pending: Pending | None  # the alert being shown, when it is one


# A rectangle on the screen: x, y, width, height (pixels).
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class WindowSnapshot:
    """What the window shows, for other threads (the tests, the bench, the screenshots tool): the
    banner's words and colours, and where each part of it is on the screen. The banner's part is
    None (no buttons) while nothing is shown."""

    visible: bool = False
    closed: bool = False
    last_ack: events.AckEvent | None = None  # the last answer (or Undo) this window sent
    taps_ignored: int = 0  # second taps within DOUBLE_TAP_S of an answer, ignored
    last_tap: float | None = None  # time.monotonic() of the last answer or Undo taken
    expired: int = 0
    queued: int = 0  # alerts on the list, shown or waiting
    not_recording: str | None = None  # why the till cannot store events, while it cannot
    # -- the banner shown ---
    kind: BannerKind | None = None
    title: str | None = None
    symbol: str | None = None
    detail: str | None = None
    item: str | None = None
    waiting: str | None = None  # "+N more alerts waiting", "" when none
    bg: str | None = None
    fg: str | None = None
    answerable: bool = False  # the alert is registered: an answer can be sent for it
    alert_event_id: str | None = None
    status: str | None = None
    transaction_id: str | None = None
    drawn_at: float | None = None  # time.monotonic() when the banner reached the screen
    geometry: Box | None = None
    title_box: Box | None = None
    symbol_box: Box | None = None
    banner_box: Box | None = None
    waiting_box: Box | None = None
    buttons: Mapping[Answer, Box] = field(default_factory=dict)  # by answer word, while an alert is shown
    undo: Box | None = None
    undo_text: str | None = None
    recording_box: Box | None = None


AckCallback = Callable[[events.AckEvent], Any]
# What the window takes in: the check and alert it shows, and the acks of other displays.
# Integrity events say a sale ended with its alert unanswered: that alert is then "sale done".
_SHOWN = (events.CheckEvent, events.AlertEvent, events.AckEvent, events.IntegrityEvent)


class CashierDisplay:
    """The alert window. `on_ack(event)` is called on the display thread with each answer and
    each Undo (a typed `AckEvent`, already validated); if it raises, the window keeps the alert (or the Undo button) with a message so
    the cashier can press again (nothing lost)."""

    def __init__(self, cfg: DisplayConfig, store_id: str, till_id: str, on_ack: AckCallback) -> None:
        self.cfg = cfg
        self.store_id = store_id
        self.till_id = till_id
        self._on_ack = on_ack
        self._q: queue.Queue = queue.Queue()
        # (read, write) ends of the wake-up pipe while the Tk thread watches it; the lock keeps
        # a writer from using a closed (possibly reused) descriptor.
        self._wake_fds: tuple[int, int] | None = None
        self._wake_lock = threading.Lock()
        self._closing = False
        self._poll_ms = POLL_MS
        self._ready = threading.Event()
        self._init_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._root = None
        self._tk_root = None
        # What the window knows (Tk thread only).
        self._alerts = AlertQueue(cfg.alert_expire_seconds, ALERT_WITHOUT_CHECK_S)
        self._approve: tuple[events.CheckEvent, float] | None = None  # an approval on screen, until
        self._recent: _Recent | None = None
        self._done: OrderedDict[str, None] = OrderedDict()  # check/alert ids answered: not shown again
        self._own_acks: OrderedDict[str, None] = OrderedDict()
        self._view: _View | None = None
        self._render_job = None
        self._status_text: str | None = None
        # monotonic: when the shown view reached the screen (see _mark_drawn).
        self._drawn_at: float | None = None
        self._await_expose = False
        self._taps_ignored = 0
        self._last_tap: float | None = None  # monotonic: the last answer or Undo taken
        self._expired = 0
        # Why the till is not recording (its outbox cannot write), None while it is: a small mark.
        self._not_recording: str | None = None
        # A notice shown while nothing else is ("NOT CONNECTED TO TILL ..."), None when none.
        self._notice: str | None = None
        self._title_fonts: dict[tuple, Any] = {}
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

    def set_notice(self, text: str | None) -> None:
        """Show (None: take away) a notice while no banner is up, e.g. that the window hears
        nothing from its till. Any thread."""
        self._put(("notice", text))

    def close(self) -> None:
        self._put(("close", None))

    def _put(self, item: tuple[str, Any]) -> None:
        self._q.put(item)
        with self._wake_lock:
            if self._wake_fds is not None:
                try:
                    os.write(self._wake_fds[1], b"\0")
                except BlockingIOError:
                    pass  # the pipe is full of wake-ups already: the Tk thread is on its way

    def wait_ready(self, timeout: float = 10.0) -> None:
        if not self._ready.wait(timeout):
            raise DisplayError("the alert window did not open within %.0f s" % timeout)
        if self._init_error is not None:
            raise DisplayError(str(self._init_error))

    def start_in_thread(self) -> "CashierDisplay":
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
        import gc

        root = self._tk_root
        with self._wake_lock:
            fds, self._wake_fds = self._wake_fds, None
        if fds is not None:
            if root is not None:
                try:
                    root.tk.deletefilehandler(fds[0])
                except Exception:
                    pass
            for fd in fds:
                os.close(fd)
        self._root = self._tk_root = None
        self._w = {}
        self._buttons = {}
        self._fonts = {}
        self._title_fonts = {}
        if root is not None:
            try:
                root.destroy()
            except Exception:
                pass
        del root
        gc.collect()

    # -- Tk (display thread only) ---------------------------------------------------------------
    def _build(self) -> None:
        import tkinter as tk
        import tkinter.font as tkfont

        if not os.environ.get("DISPLAY") and sys.platform.startswith("linux"):
            raise DisplayError("no screen: $DISPLAY is not set (the alert window needs the till's X display, "
                               "e.g. DISPLAY=:0)")
        try:
            root = tk.Tk(className="agecheck")
        except tk.TclError as exc:
            raise DisplayError(f"cannot open the alert window on display {os.environ.get('DISPLAY')!r}: {exc}") from None
        self._root = self._tk_root = root
        root.title(f"Age check – {self.till_id}")
        w, h = self.cfg.width, self.cfg.height
        root.geometry(f"{w}x{h}+{self._x(root, w)}+{self._y(root, h)}")
        root.resizable(False, False)
        # Override-redirect: the window manager never manages this window, so it never gives
        # it the keyboard focus (not when it is mapped or raised, not by Alt-Tab, a taskbar or a
        # click), never decorates it (no close or minimise button to lose alerts with) and never
        # lists it. Why this and not WM_HINTS input=False or a window type: docs/cashier.md.
        root.overrideredirect(True)
        # Nothing here takes the keyboard: no key bindings, no focus requests, no widget that
        # takes the focus on a click. A close request (if anything sends one) changes nothing.
        root.protocol("WM_DELETE_WINDOW", lambda: log.info("display: close request ignored (alerts must stay)"))

        family = "DejaVu Sans" if "DejaVu Sans" in tkfont.families(root) else "Helvetica"
        self._family = family

        def font(share: float, least: int, bold: bool = True):
            # Negative sizes are pixels, so the text keeps its proportion to the window (sized in pixels).
            return tkfont.Font(root, family=family, size=-max(least, int(h * share)),
                               weight="bold" if bold else "normal")

        box = layout(w, h)
        self._layout = box
        self._fonts = {"symbol": font(0.2, 24), "title": font(0.1, 14), "detail": font(0.058, 11),
                       "item": font(0.052, 10, bold=False), "waiting": font(0.05, 10),
                       "button": font(0.06, 10), "status": font(0.045, 10, bold=False)}
        W: dict[str, Any] = {}
        # Every part has a fixed place (place(), in pixels): nothing moves when a part shows,
        # hides or changes its text, so a finger never lands on something that slid under it.
        W["banner"] = tk.Frame(root, bg="#000000")
        W["banner"].place(x=0, y=0, width=w, height=box.banner_h)
        W["banner"].pack_propagate(False)
        # Top line: which transaction, and how many more alerts wait behind this one.
        W["top"] = tk.Frame(W["banner"], bg="#000000")
        W["top"].pack(side="top", fill="x")
        W["txn"] = tk.Label(W["top"], font=self._fonts["item"], anchor="w")
        W["txn"].pack(side="left", padx=8, pady=(4, 0))
        W["waiting"] = tk.Label(W["top"], font=self._fonts["waiting"], bg="#ffffff", fg="#000000", padx=8)
        W["recording"] = tk.Label(W["top"], text=NOT_RECORDING, font=self._fonts["status"], bg=NOT_RECORDING_BG,
                                  fg="#ffffff", padx=6)
        # The instruction: symbol and words side by side, in the middle of the banner.
        W["main"] = tk.Frame(W["banner"], bg="#000000")
        W["main"].pack(side="top", expand=True)
        W["symbol"] = tk.Label(W["main"], font=self._fonts["symbol"], width=2)
        W["symbol"].pack(side="left", padx=(6, 4))
        # No wraplength: the title's lines are the ones _paint gives, in a font sized to fit them.
        W["title"] = tk.Label(W["main"], font=self._fonts["title"], justify="left", anchor="w")
        W["title"].pack(side="left", padx=(0, 8))
        self._title_width = int(w * 0.78)
        W["detail"] = tk.Label(W["banner"], font=self._fonts["detail"], wraplength=w - 20)
        W["detail"].pack(side="top", fill="x", padx=8)
        W["item"] = tk.Label(W["banner"], font=self._fonts["item"], wraplength=w - 20)
        W["item"].pack(side="top", fill="x", padx=8, pady=(0, 4))

        W["answers"] = tk.Frame(root, bg=ANSWERS_BG)
        W["answers"].place(x=0, y=box.answers_y, width=w, height=box.answers_h)
        self._buttons = {}
        lines = {a: button_lines(a) for a in ACK_ANSWERS}
        self._fonts["button"] = fitted_font(tkfont, root, family, [ln for ls in lines.values() for ln in ls],
                                            box.button_w - 2 * BUTTON_PAD - 12,
                                            (box.answers_h - 2 * BUTTON_PAD - 10) // 2, self._fonts["button"])
        for col, answer in enumerate(ACK_ANSWERS):
            b = self._flat_button(W["answers"], "\n".join(lines[answer]), self._fonts["button"],
                                  lambda a=answer: self._answer(a, AckVia.CLICK))
            b.place(x=col * box.button_w + BUTTON_PAD, y=BUTTON_PAD, width=box.button_w - 2 * BUTTON_PAD,
                    height=box.answers_h - 2 * BUTTON_PAD)
            self._buttons[answer] = b
        # The Undo row: below the answers, never where an answer button is, and always there (empty
        # while there is nothing to undo) so the answers above it never move.
        W["undo"] = tk.Frame(root, bg=UNDO_BG)
        W["undo"].place(x=0, y=box.undo_y, width=w, height=box.undo_h)
        W["undo_text"] = tk.Label(W["undo"], font=self._fonts["status"], bg=UNDO_BG, fg="#ffffff", anchor="w",
                                  justify="left", wraplength=int(w * 0.7))
        W["undo_text"].place(x=8, y=0, width=box.undo_x - 12, height=box.undo_h)
        W["undo_button"] = self._flat_button(W["undo"], "Undo", self._fonts["button"], self._undo, bg="#ffffff")
        self._undo_place = dict(x=box.undo_x, y=BUTTON_PAD, width=w - box.undo_x - BUTTON_PAD,
                                height=box.undo_h - 2 * BUTTON_PAD)
        # The status line: always in its place, empty when there is nothing to say.
        W["status"] = tk.Label(root, font=self._fonts["status"], bg=ANSWERS_BG, fg="#ffffff", anchor="w", padx=8)
        W["status"].place(x=0, y=box.status_y, width=w, height=box.status_h)
        self._w = W

        # Geometry for the snapshot is only known once the window is mapped.
        root.bind("<Map>", lambda e: e.widget is root and self._publish_snapshot(), add="+")
        root.bind("<Configure>", lambda e: e.widget is root and self._view and self._publish_snapshot(), add="+")
        # Not managed, so no window manager keeps it on top: when another window covers it while
        # it shows something, it raises itself again (it still never takes the focus).
        root.bind("<Visibility>", self._on_visibility, add="+")
        # A banner shown on a hidden window is painted once the X server exposes it.
        W["title"].bind("<Expose>", self._on_expose, add="+")
        root.withdraw()  # idle: nothing on screen
        root.update_idletasks()
        self.window_id = int(root.wm_frame(), 16)
        self._poll_ms = SAFETY_POLL_MS if self._watch_wake_pipe(root) else POLL_MS
        root.after(self._poll_ms, self._poll)

    def _flat_button(self, parent, text: str, font, command, bg: str = BUTTON_BG):
        """A button that looks the same under a resting pointer as anywhere else (no "active"
        colour that reads as pre-selected), never takes the focus, and shows a press by its
        sunken edge only."""
        import tkinter as tk

        return tk.Button(parent, text=text, font=font, bg=bg, fg="#000000", activebackground=bg,
                         activeforeground="#000000", disabledforeground="#8a8a8a", relief="raised", overrelief="",
                         bd=3, highlightthickness=0, takefocus=0, justify="center", command=command)

    def _on_visibility(self, event) -> None:
        if (event.widget is self._root and self._view is not None and self.cfg.always_on_top
                and str(event.state) != "VisibilityUnobscured"):
            self._root.lift()

    def _watch_wake_pipe(self, root) -> bool:
        """Let posted events wake the Tk thread at once instead of waiting for the next poll."""
        import tkinter as tk

        r, w = os.pipe()
        try:
            os.set_blocking(r, False)
            os.set_blocking(w, False)
            root.tk.createfilehandler(r, tk.READABLE, self._on_wake)
        except (AttributeError, tk.TclError, OSError):  # Tk without file handlers: poll only
            os.close(r)
            os.close(w)
            return False
        with self._wake_lock:
            self._wake_fds = (r, w)
        self._on_wake(r, 0)  # anything posted while the window was being built
        return True

    def _on_wake(self, fd: int, mask: int) -> None:
        try:
            while os.read(fd, 4096):
                pass
        except BlockingIOError:
            pass
        self._drain()

    def _x(self, root, w: int) -> int:
        sw = root.winfo_screenwidth()
        pos = self.cfg.position
        return max(0, sw - w) if pos.endswith("right") else (max(0, (sw - w) // 2) if pos == "center" else 0)

    def _y(self, root, h: int) -> int:
        sh = root.winfo_screenheight()
        pos = self.cfg.position
        return max(0, sh - h) if pos.startswith("bottom") else (max(0, (sh - h) // 2) if pos == "center" else 0)

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
                    changed = bool(self._alerts.sale_done(ev)) or changed
                    continue
                if what == "notice":
                    changed = self._notice != ev or changed
                    self._notice = ev
                    continue
                try:
                    changed = self._handle(ev, recalled=what == "recall") or changed
                except Exception:  # one odd event must not take the window down
                    log.exception("display: could not show %s", events.describe(ev))
        except queue.Empty:
            pass
        if changed:
            self._render()

    # -- what the window knows -------------------------------------------------------------------
    @staticmethod
    def _remember(d: OrderedDict, key: str, keep: int = 500) -> None:
        d[key] = None
        while len(d) > keep:
            d.popitem(last=False)

    def _handle(self, ev: events.Event, recalled: bool = False) -> bool:
        """Take one event in; True when the screen may need to change. A recalled approval (see
        recall) is never shown."""
        if ev.till_id != self.till_id or ev.store_id != self.store_id:
            return False
        if isinstance(ev, events.AckEvent):
            return self._on_remote_ack(ev)
        if isinstance(ev, events.IntegrityEvent):
            # The till reports a sale over with this alert unanswered.
            return bool(self._alerts.sale_done(alert_event_id=ev.alert_event_id)
                        or self._alerts.sale_done(ev.transaction_id))
        if _is_stale(ev, time.time(), self.cfg.alert_expire_seconds):
            log.info("display: not showing %s %s: too old", ev.KIND, ev.event_id)
            return False
        now = time.monotonic()
        if isinstance(ev, events.CheckEvent):
            if ev.event_id in self._done:
                return False
            # A check for another sale means the shopper at the till is someone else now: the
            # earlier sales' alerts are done (answered for the record, after this shopper's).
            for p in self._alerts.sale_done(other_than=ev.transaction_id):
                log.info("display: alert for %s now shown as sale done", p.transaction_id)
            if ev.decision == Decision.APPROVE:
                if recalled:
                    return True
                if self._alerts.live_for(ev.transaction_id, now):
                    # This shopper's own unanswered alert outranks their later approval.
                    log.info("display: approve for %s not shown over its own unanswered alert", ev.transaction_id)
                    return True
                self._approve = (ev, now + self.cfg.approve_seconds)
                return True
            self._approve = None
            self._alerts.add_check(ev, now)
            return True
        if isinstance(ev, events.AlertEvent):
            if ev.check_event_id in self._done or ev.event_id in self._done:
                return False  # answered already (a redelivery, or its check came late)
            self._approve = None
            self._alerts.add_alert(ev, now)
            return True
        return False

    def on_sale(self, transaction_id: str) -> None:
        """Listener for the till's sales (the service's pos/sale): that sale's alerts are done.
        Any thread."""
        self._put(("sale", transaction_id))

    def _on_remote_ack(self, ack: events.AckEvent) -> bool:
        """An answer given on another display for this till: that alert leaves this list too."""
        if ack.event_id in self._own_acks or ack.answer not in ACK_ANSWERS:
            return False
        p = self._alerts.remove_alert(ack.alert_event_id)
        if p is None:
            return False
        self._remember(self._done, p.key)
        log.info("display: alert %s was answered elsewhere (%s)", ack.alert_event_id, ack.answer)
        return True

    # -- drawing -----------------------------------------------------------------------------------
    def _current_view(self, now: float) -> _View | None:
        """The shopper in front first: their alert, else their OK; then the alerts of sales that
        are done; then what was just recorded; then a notice (NOT CONNECTED)."""
        cur = self._alerts.current(now)
        if cur is not None and not cur.sale_done:
            b = cur.banner
            return _View(("alert", cur.key, b.title), b, cur)
        if self._approve is not None:
            check = self._approve[0]
            return _View((Decision.APPROVE, check.event_id), banner_for(check), None)
        if cur is not None:
            b = cur.banner
            return _View(("alert", cur.key, b.title), b, cur)
        if self._recent is not None:
            r = self._recent
            return _View((BannerKind.RECORDED, r.ack.event_id), recorded_banner(r.ack.answer, r.ack.transaction_id),
                         None)
        if self._notice is not None:
            return _View(("notice", self._notice), notice_banner(self._notice), None)
        return None

    def _render(self) -> None:
        """Put on screen what should be there now, and plan the next change that comes by itself
        (an approval or the Undo offer running out, a late alert showing, an alert expiring)."""
        now = time.monotonic()
        for p in self._alerts.expire(now):
            self._expired += 1
            self._remember(self._done, p.key)
            log.warning("display: alert %s (transaction %s) expired unanswered after %.0f s",
                        p.alert_event_id or p.key, (p.check or p.alert).transaction_id,
                        self.cfg.alert_expire_seconds)
        if self._approve is not None and now >= self._approve[1]:
            self._approve = None
        if self._recent is not None and now >= self._recent.until:
            self._recent = None
        view = self._current_view(now)
        if self._render_job is not None:
            self._root.after_cancel(self._render_job)
            self._render_job = None
        due = [t for t in (self._approve[1] if self._approve else None,
                           self._recent.until if self._recent else None,
                           self._alerts.next_change(now)) if t is not None]
        if due:
            self._render_job = self._root.after(max(10, int((min(due) - now) * 1000) + 5), self._render)
        if view is None:
            self._hide()
            return
        was_hidden = self._root.state() == "withdrawn"
        new = self._view is None or self._view.ident != view.ident
        self._view = view
        self._paint(view, now)
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

    def _paint(self, view: _View, now: float) -> None:
        b, W = view.banner, self._w
        for name in ("banner", "top", "main"):
            W[name].configure(bg=b.bg)
        W["symbol"].configure(text=b.symbol, bg=b.bg, fg=b.fg)
        # Its lines as the banner gives them, in the largest font (up to the usual) they fit in.
        lines = b.title_lines
        key = tuple(lines)
        if key not in self._title_fonts:
            import tkinter.font as tkfont

            self._title_fonts[key] = fitted_font(tkfont, self._root, self._family, lines, self._title_width,
                                                 (self._layout.banner_h // 2) // len(lines), self._fonts["title"])
        W["title"].configure(text="\n".join(lines), bg=b.bg, fg=b.fg, font=self._title_fonts[key])
        W["detail"].configure(text=b.detail, bg=b.bg, fg=b.fg)
        W["item"].configure(text=b.item_text, bg=b.bg, fg=b.fg)
        W["txn"].configure(text=f"Sale {b.transaction_id}" if b.transaction_id else "", bg=b.bg, fg=b.fg)
        # The count shows over an OK banner too: alerts of earlier sales wait behind it.
        others = len(self._alerts.visible(now)) - (1 if view.pending is not None else 0)
        waiting = waiting_text(others) if view.banner.kind != BannerKind.RECORDED else ""
        W["waiting"].configure(text=waiting)
        if waiting:
            W["waiting"].pack(side="right", padx=6, pady=(6, 0))
        else:
            W["waiting"].pack_forget()
        # The buttons show or go in their fixed places; the row itself never moves.
        for col, btn in enumerate(self._buttons.values()):
            if view.pending is not None:
                btn.configure(state="normal" if view.pending.alert is not None else "disabled")
                if not btn.winfo_ismapped():
                    box = self._layout
                    btn.place(x=col * box.button_w + BUTTON_PAD, y=BUTTON_PAD, width=box.button_w - 2 * BUTTON_PAD,
                              height=box.answers_h - 2 * BUTTON_PAD)
            else:
                btn.place_forget()
        r = self._recent
        if r is not None:
            W["undo_text"].configure(text=f"Recorded for sale {r.ack.transaction_id or '–'}: "
                                          f"{ANSWER_LABELS.get(r.ack.answer, r.ack.answer)}")
            W["undo_button"].place(**self._undo_place)
        else:
            W["undo_text"].configure(text="")
            W["undo_button"].place_forget()

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
    def _answer(self, answer: str, via: AckVia) -> None:
        v = self._view
        if v is None or v.pending is None:
            return
        if self._double_tap():
            return
        p = v.pending
        if p.alert is None:
            self._set_status("Alert not registered yet – press again in a moment", error=True)
            return
        alert = p.alert
        now = time.monotonic()
        ack = events.AckEvent(
            store_id=self.store_id, till_id=self.till_id, transaction_id=alert.transaction_id,
            alert_event_id=alert.event_id, answer=answer, decision_time_s=round(now - p.added, 2),
            check_event_id=alert.check_event_id, via=via,
        )
        if not self._send(ack, "Answer NOT saved (%s) – press again"):
            return
        self._last_tap = now
        log.info("display: %s answered %s (%s, %.1f s)", alert.transaction_id, answer, via, ack.decision_time_s)
        self._alerts.remove_alert(alert.event_id)
        self._remember(self._done, p.key)
        self._recent = _Recent(p, ack, now + self.cfg.undo_seconds)
        self.snapshot = replace(self.snapshot, last_ack=ack)
        self._render()

    def _undo(self) -> None:
        r = self._recent
        if r is None or self._double_tap():
            return
        now = time.monotonic()
        a = r.ack
        fix = events.AckEvent(
            store_id=self.store_id, till_id=self.till_id, transaction_id=a.transaction_id,
            alert_event_id=a.alert_event_id, answer=Answer.UNDONE,
            decision_time_s=round(now - r.pending.added, 2), check_event_id=a.check_event_id,
            via=AckVia.CLICK, replaces_event_id=a.event_id,
        )
        if not self._send(fix, "Undo NOT saved (%s) – press Undo again"):
            return
        self._last_tap = now
        log.info("display: %s: answer %s undone", a.transaction_id, a.answer)
        self._recent = None
        self._done.pop(r.pending.key, None)
        self._alerts.restore(r.pending, now)
        self.snapshot = replace(self.snapshot, last_ack=fix)
        self._render()

    def _double_tap(self) -> bool:
        """A tap within DOUBLE_TAP_S of the last answer or Undo: ignored, and the window says so."""
        now = time.monotonic()
        if self._last_tap is None or now - self._last_tap >= DOUBLE_TAP_S:
            return False
        self._taps_ignored += 1
        log.info("display: a second tap %.2f s after an answer ignored", now - self._last_tap)
        self._set_status("Second tap ignored: an answer was just recorded. Tap again if you meant it.")
        return True

    def _send(self, ack: events.AckEvent, failure: str) -> bool:
        self._remember(self._own_acks, ack.event_id)
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
        reason = (status.outbox_error or "the outbox cannot write") if status.degraded else None
        if reason == self._not_recording:
            return
        if (reason is None) != (self._not_recording is None):
            log.warning("display: %s", f"showing NOT RECORDING ({reason})" if reason else "recording again")
        self._not_recording = reason
        if reason is None:
            self._w["recording"].pack_forget()
        else:
            # Right-most in the top line, before the "N waiting" count.
            self._w["recording"].pack(side="right", padx=(4, 8), pady=(4, 0))
        self._publish_snapshot()

    def _set_status(self, text: str | None, error: bool = False) -> None:
        """The status line's words (None: empty). The line keeps its place either way."""
        self._status_text = text
        self._w["status"].configure(text=text or "", fg="#ffd0d0" if error else "#ffffff")
        self._publish_snapshot()

    def _hide(self) -> None:
        self._view = None
        self._drawn_at = None
        self._await_expose = False
        self._status_text = None
        if self._root is not None:
            self._w["status"].configure(text="")
            self._root.withdraw()
        self._publish_snapshot()

    def _publish_snapshot(self) -> None:
        v = self._view
        shown: dict[str, Any] = {}
        if v is not None and self._root is not None:
            r, b, W = self._root, v.banner, self._w
            undo = self._recent is not None
            shown = dict(
                kind=b.kind, title=b.title, symbol=b.symbol, detail=b.detail, item=b.item_text,
                waiting=W["waiting"].cget("text"), bg=b.bg, fg=b.fg,
                answerable=v.pending is not None and v.pending.alert is not None,
                alert_event_id=v.pending.alert_event_id if v.pending else None, status=self._status_text,
                transaction_id=b.transaction_id, drawn_at=self._drawn_at,
                geometry=(r.winfo_rootx(), r.winfo_rooty(), r.winfo_width(), r.winfo_height()),
                title_box=self._box(W["title"]), symbol_box=self._box(W["symbol"]),
                banner_box=self._box(W["banner"]),
                waiting_box=self._box(W["waiting"]) if W["waiting"].cget("text") else None,
                buttons={a: self._box(btn) for a, btn in self._buttons.items()} if v.pending else {},
                undo=self._box(W["undo_button"]) if undo else None,
                undo_text=W["undo_text"].cget("text") if undo else None,
                recording_box=self._box(W["recording"]) if self._not_recording else None,
            )
        self.snapshot = WindowSnapshot(visible=v is not None, last_ack=self.snapshot.last_ack,
                                       taps_ignored=self._taps_ignored, last_tap=self._last_tap, expired=self._expired,
                                       queued=len(self._alerts), not_recording=self._not_recording, **shown)
        if self.on_snapshot is not None:
            try:
                self.on_snapshot(self.snapshot)
            except Exception as exc:  # a watcher's trouble is not the window's
                log.warning("display: snapshot listener failed: %r", exc)

    @staticmethod
    def _box(widget) -> Box:
        """Screen rectangle (x, y, w, h) of a widget."""
        return widget.winfo_rootx(), widget.winfo_rooty(), widget.winfo_width(), widget.winfo_height()
