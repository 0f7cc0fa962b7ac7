"""Cashier alert window: a small always-on-top Tk window on the till screen that shows nothing while
idle and, on a check, a large colour-coded banner (green APPROVE / red CHECK ID / amber NO FACE)
with the estimated age range, the policy in force and the item. The cashier answers an alert with
key 1/2/3 or a click; the answer becomes an `ack` event handed to a callback (the service's durable
outbox, or this module's own one in standalone mode).

It owns:

* `banner_for` - what the banner says and its colours, a pure function of the check/alert events;
* `CashierDisplay` - the Tk window. `post()`/`on_event()` may be called from any thread (a queue
  whose writers wake the Tk thread through a pipe it watches); everything Tk happens on the
  display's own thread. Run it with `run()` on the main thread, or `start_in_thread()` inside
  the service;
* `AckLink` + `main` - `agecheck display`: the window as its own process, subscribed to this till's
  events/check and events/alert on the local broker, answers kept in an SQLite outbox until the
  broker acknowledges them, reconnecting by itself across broker restarts.

Privacy: events carry no image and neither does this window; nothing visual is written anywhere.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Literal

from edge_app.core import events, payloads
from edge_app.config import Config, DisplayConfig

log = logging.getLogger(__name__)

Kind = Literal["approve", "check_id", "no_face"]

ANSWER_LABELS: dict[str, str] = {
    "id_checked_over_age": "ID checked – over age",
    "id_checked_under_age_refused": "ID checked – under age / refused",
    "no_id_check": "No ID check",
}
ANSWER_KEYS: dict[str, str] = {"1": "id_checked_over_age", "2": "id_checked_under_age_refused", "3": "no_id_check"}

# High-contrast pairs (WCAG contrast >= 5:1): white on green/red, near-black on amber.
COLOURS: dict[str, tuple[str, str]] = {
    "approve": ("#0b7a2e", "#ffffff"),
    "check_id": ("#c8102e", "#ffffff"),
    "no_face": ("#ffb000", "#111111"),
}
TITLES = {"approve": "APPROVE", "check_id": "CHECK ID", "no_face": "NO FACE"}
# Checks older than this (a display restarting onto a queued session) are not shown.
STALE_SECONDS = 300.0
# An alert whose check never arrives is shown from the alert alone after this long.
ALERT_WITHOUT_CHECK_MS = 1500
# Posted events wake the Tk thread at once through a pipe it watches (a file handler); the
# timer is only a safety net then. Polling alone (no file handlers: not a Unix Tk) uses the
# short interval, which then adds up to that much to the time an alert takes to appear.
POLL_MS = 50
SAFETY_POLL_MS = 500


class DisplayError(RuntimeError):
    """The window cannot be opened (no screen, no Tk); the message says what to do."""


@dataclass(frozen=True)
class Banner:
    kind: Kind
    title: str
    age_text: str
    policy_text: str
    item_text: str
    bg: str
    fg: str

    @property
    def needs_answer(self) -> bool:
        return self.kind != "approve"


def _item_text(item: Any) -> str:
    if not isinstance(item, dict):
        return ""
    name = item.get("name") or item.get("description") or (f"SKU {item['sku']}" if item.get("sku") else "")
    cat = item.get("category")
    min_age = item.get("min_age")
    extra = " ".join(str(x) for x in (cat, f"{min_age}+" if min_age else None) if x)
    text = f"{name} ({extra})" if name and extra else str(name or extra)
    return text if len(text) <= 48 else text[:47] + "…"


def _age_text(ev: dict | None, kind: Kind) -> str:
    if kind == "no_face" or ev is None:
        return "No usable face – ask for ID" if kind == "no_face" else ""
    lo, hi, age = ev.get("age_low"), ev.get("age_high"), ev.get("age")
    ask = " – ask for ID" if kind == "check_id" else ""
    if isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        a, b = max(0, math.floor(lo)), math.ceil(hi)
        return (f"Estimated age {a}–{b}" if b > a else f"Estimated age {a}") + ask
    if isinstance(age, (int, float)):
        return f"Estimated age about {round(age)}{ask}"
    if ev.get("age_band"):
        return f"Estimated age {ev['age_band']}{ask}"
    return "Ask for ID" if ask else ""


def _policy_text(check: dict | None) -> str:
    pol = check.get("policy") if check else None
    if not isinstance(pol, dict):
        return ""
    ch, legal = pol.get("challenge_age"), pol.get("legal_age")
    if ch and legal and ch != legal:
        return f"Challenge {ch} · legal age {legal}"
    return f"Legal age {legal or ch}" if (legal or ch) else ""


def banner_for(check: dict | None, alert: dict | None = None) -> Banner:
    """The banner for a check (and its alert, if any). Either may be missing, not both."""
    src = check or alert
    if src is None:
        raise ValueError("banner_for needs a check or an alert event")
    decision = src.get("decision")
    kind: Kind = decision if decision in COLOURS else "check_id"  # unknown: the safe side
    item = (alert or {}).get("item") or (check or {}).get("trigger")
    bg, fg = COLOURS[kind]
    return Banner(kind, TITLES[kind], _age_text(check or alert, kind), _policy_text(check), _item_text(item), bg, fg)


def _is_stale(ev: dict, now: float) -> bool:
    try:
        t = datetime.fromisoformat(str(ev.get("ts", "")).replace("Z", "+00:00"))
    except ValueError:
        return False
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return now - t.timestamp() > STALE_SECONDS


@dataclass
class _Shown:
    banner: Banner
    check: dict | None
    alert: dict | None
    shown_at: float  # monotonic, for the decision time


AckCallback = Callable[[dict], Any]


class CashierDisplay:
    """The alert window. `on_ack(event)` is called on the display thread with each answer; if it
    raises, the alert stays up with a message so the cashier can answer again (nothing lost)."""

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
        self._shown: _Shown | None = None
        self._pending_alerts: dict[str, dict] = {}
        self._checks: dict[str, dict] = {}
        self._hide_job = None
        # monotonic time the shown banner reached the screen (None until it has); see _mark_drawn.
        self._drawn_at: float | None = None
        self._await_expose = False
        # Read by other threads (tests, the service's state); replaced whole, never mutated.
        self.snapshot: dict[str, Any] = {"visible": False}
        self.window_id: int | None = None

    # -- thread-safe API ------------------------------------------------------------------------
    def post(self, check_event: dict | None, alert_event: dict | None = None) -> None:
        """Show a check (with its alert when it is one). Any thread."""
        if check_event is not None:
            self._put(("event", check_event))
        if alert_event is not None:
            self._put(("event", alert_event))

    def on_event(self, event: dict) -> None:
        """Listener for the service or the broker: takes check and alert events (others are
        ignored) in any order; an alert is paired with its check by check_event_id. Any thread."""
        if isinstance(event, dict) and event.get("kind") in ("check", "alert"):
            self._put(("event", event))

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
        self._title = self._age = self._info = self._text = self._banner = self._answers = self._status = None
        self._buttons = {}
        self._fonts = {}
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
        if self.cfg.always_on_top:
            root.attributes("-topmost", True)
        # Closing the window by its title bar only hides it: alerts must keep coming.
        root.protocol("WM_DELETE_WINDOW", self._hide)

        family = "DejaVu Sans" if "DejaVu Sans" in tkfont.families(root) else "Helvetica"
        # Negative sizes are pixels, so the text keeps its proportion to the window (sized in pixels).
        self._fonts = {
            "title": tkfont.Font(root, family=family, size=-int(h * 0.24), weight="bold"),
            "age": tkfont.Font(root, family=family, size=-int(h * 0.09), weight="bold"),
            "info": tkfont.Font(root, family=family, size=-int(h * 0.068), weight="bold"),
            "button": tkfont.Font(root, family=family, size=-max(12, int(h * 0.056)), weight="bold"),
            "status": tkfont.Font(root, family=family, size=-max(11, int(h * 0.05))),
        }
        self._banner = tk.Frame(root, bg="#000000")
        self._banner.pack(side="top", fill="both", expand=True)
        # The text block sits in the middle of whatever height the banner gets (an approve
        # banner has no answer row under it).
        self._text = tk.Frame(self._banner, bg="#000000")
        self._text.pack(expand=True)
        self._title = tk.Label(self._text, font=self._fonts["title"])
        self._age = tk.Label(self._text, font=self._fonts["age"])
        self._info = tk.Label(self._text, font=self._fonts["info"], wraplength=w - 20)
        for lab in (self._title, self._age, self._info):
            lab.pack(side="top", fill="x", padx=8)

        self._answers = tk.Frame(root, bg="#222222")
        self._buttons: dict[str, tk.Button] = {}
        for col, (key, answer) in enumerate(ANSWER_KEYS.items()):
            b = tk.Button(self._answers, text=f"[{key}]  {ANSWER_LABELS[answer]}", font=self._fonts["button"],
                          wraplength=w // 3 - 24, bg="#f2f2f2", fg="#000000", activebackground="#d9d9d9",
                          relief="raised", bd=3, command=lambda a=answer: self._answer(a, "click"))
            b.grid(row=0, column=col, sticky="nsew", padx=4, pady=4)
            self._answers.columnconfigure(col, weight=1, uniform="answers")
            self._buttons[answer] = b
        self._status = tk.Label(root, font=self._fonts["status"], bg="#222222", fg="#ffffff", anchor="w")

        for key, answer in ANSWER_KEYS.items():
            for seq in (f"<Key-{key}>", f"<KP_{key}>"):
                root.bind(seq, lambda e, a=answer: self._answer(a, "key"))
        # Geometry for the snapshot is only known once the window manager has mapped it.
        root.bind("<Map>", lambda e: e.widget is root and self._publish_snapshot(), add="+")
        root.bind("<Configure>", lambda e: e.widget is root and self._shown and self._publish_snapshot(), add="+")
        # A banner shown on a hidden window is painted once the X server exposes it.
        self._title.bind("<Expose>", self._on_expose, add="+")
        root.withdraw()  # idle: nothing on screen
        root.update_idletasks()
        self.window_id = int(root.wm_frame(), 16)
        self._poll_ms = SAFETY_POLL_MS if self._watch_wake_pipe(root) else POLL_MS
        root.after(self._poll_ms, self._poll)

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
        """Handle everything posted so far (Tk thread)."""
        if self._closing:
            return
        try:
            while True:
                what, ev = self._q.get_nowait()
                if what == "close":
                    self._closing = True
                    self.snapshot = {"visible": False, "closed": True}
                    self._root.quit()  # mainloop returns; _release_tk destroys on this thread
                    return
                try:
                    self._handle(ev)
                except Exception:  # one odd event must not take the window down
                    log.exception("display: could not show event %s", ev.get("event_id") if isinstance(ev, dict) else ev)
        except queue.Empty:
            pass

    def _handle(self, ev: dict) -> None:
        if ev.get("till_id") not in (None, self.till_id) or ev.get("store_id") not in (None, self.store_id):
            return
        if _is_stale(ev, time.time()):
            log.info("display: not showing %s %s: older than %.0f s", ev.get("kind"), ev.get("event_id"), STALE_SECONDS)
            return
        if ev.get("kind") == "check":
            self._on_check(ev)
        elif ev.get("kind") == "alert":
            self._on_alert(ev)

    def _open_alert(self) -> bool:
        return self._shown is not None and self._shown.banner.needs_answer

    def _on_check(self, check: dict) -> None:
        self._remember(self._checks, check["event_id"], check)
        alert = self._pending_alerts.pop(check["event_id"], None)
        if check.get("decision") == "approve" and self._open_alert():
            # An unanswered alert outranks a later approval; the approval is in the feed anyway.
            log.info("display: approve for %s not shown over an unanswered alert", check.get("transaction_id"))
            return
        if self._open_alert() and self._shown.alert is None:
            log.info("display: alert for check %s replaced before its alert event arrived",
                     self._shown.check and self._shown.check.get("event_id"))
        self._show(check, alert)

    def _on_alert(self, alert: dict) -> None:
        cid = alert.get("check_event_id")
        s = self._shown
        if s is not None and s.check is not None and s.check.get("event_id") == cid:
            if s.alert is None:
                self._shown = _Shown(s.banner, s.check, alert, s.shown_at)
                self._set_answerable(True)
            return
        check = self._checks.get(cid)
        if check is not None:  # its check was shown and replaced, or skipped: show the pair now
            self._show(check, alert)
            return
        self._remember(self._pending_alerts, cid, alert)
        self._root.after(ALERT_WITHOUT_CHECK_MS, lambda: self._alert_alone(cid))

    def _alert_alone(self, cid: str) -> None:
        alert = self._pending_alerts.pop(cid, None)
        if alert is not None:
            log.warning("display: alert %s arrived without its check; showing it on its own", alert.get("event_id"))
            self._show(None, alert)

    @staticmethod
    def _remember(d: dict, key: str, value: dict, keep: int = 50) -> None:
        d[key] = value
        while len(d) > keep:
            d.pop(next(iter(d)))

    def _show(self, check: dict | None, alert: dict | None) -> None:
        b = banner_for(check, alert)
        was_hidden = self._root.state() == "withdrawn"
        self._shown = _Shown(b, check, alert, time.monotonic())
        self._drawn_at = None
        self._banner.configure(bg=b.bg)
        self._text.configure(bg=b.bg)
        self._title.configure(text=b.title, bg=b.bg, fg=b.fg)
        self._age.configure(text=b.age_text, bg=b.bg, fg=b.fg)
        info = " · ".join(t for t in (b.policy_text, b.item_text) if t)
        self._info.configure(text=info, bg=b.bg, fg=b.fg)
        if self._hide_job is not None:
            self._root.after_cancel(self._hide_job)
            self._hide_job = None
        if b.needs_answer:
            self._answers.pack(side="bottom", fill="x", before=self._banner)
            self._status.pack_forget()
            self._set_answerable(alert is not None)
        else:
            self._answers.pack_forget()
            self._status.pack_forget()
            self._hide_job = self._root.after(int(self.cfg.approve_seconds * 1000), self._hide)
        self._root.deiconify()
        self._root.lift()
        if b.needs_answer and self.cfg.take_focus:
            self._root.focus_force()
        self._root.update_idletasks()
        if was_hidden:
            self._await_expose = True  # painted when the X server exposes the window
        else:
            self._mark_drawn()
        self._publish_snapshot()
        # Once more when the window manager has placed it (the geometry the snapshot reports).
        self._root.after(100, self._publish_snapshot)

    def _on_expose(self, event) -> None:
        if self._await_expose and self._shown is not None:
            self._await_expose = False
            # After Tk's own redraw of the exposed widgets, which is queued as idle work too.
            self._root.after_idle(self._mark_drawn)

    def _mark_drawn(self) -> None:
        """Record when the banner is on the screen: pending redraws done, then a round trip to
        the X server (winfo_pointerxy waits for its reply, so every drawing request before it
        has been carried out). Reported as snapshot['drawn_at'] (time.monotonic())."""
        if self._shown is None:
            return
        self._root.update_idletasks()
        self._root.winfo_pointerxy()
        self._drawn_at = time.monotonic()
        self._publish_snapshot()

    def _set_answerable(self, on: bool) -> None:
        for b in self._buttons.values():
            b.configure(state="normal" if on else "disabled")
        self._publish_snapshot()

    def _answer(self, answer: str, via: str) -> None:
        s = self._shown
        if s is None or not s.banner.needs_answer:
            return
        if s.alert is None:
            self._set_status("Alert not registered yet – press again in a moment", error=True)
            return
        alert = s.alert
        ack = events.new_event(
            "ack", self.store_id, self.till_id, alert.get("transaction_id"),
            alert_event_id=alert["event_id"], answer=answer,
            decision_time_s=round(time.monotonic() - s.shown_at, 2),
            check_event_id=alert.get("check_event_id"), via=via,
        )
        events.validate(ack)
        try:
            self._on_ack(ack)
        except Exception as exc:
            # Only text in the log record: the exception's traceback holds Tk objects, which must
            # not outlive the display thread (Tcl aborts when another thread frees them).
            log.error("display: could not record the answer to alert %s: %s", alert["event_id"], repr(exc))
            self._set_status(f"Answer NOT saved ({exc}) – press again", error=True)
            return
        log.info("display: %s answered %s (%s, %.1f s)", alert.get("transaction_id"), answer, via,
                 ack["decision_time_s"])
        self.snapshot = {**self.snapshot, "last_ack": ack}
        self._hide()

    def _set_status(self, text: str, error: bool = False) -> None:
        self._status.configure(text=text, fg="#ffd0d0" if error else "#ffffff")
        self._status.pack(side="bottom", fill="x", before=self._answers)
        self._publish_snapshot(status=text)

    def _hide(self) -> None:
        if self._hide_job is not None:
            self._root.after_cancel(self._hide_job)
            self._hide_job = None
        self._shown = None
        self._drawn_at = None
        self._await_expose = False
        self._root.withdraw()
        self._publish_snapshot()

    def _publish_snapshot(self, status: str | None = None) -> None:
        s = self._shown
        snap: dict[str, Any] = {"visible": s is not None, "last_ack": self.snapshot.get("last_ack")}
        if s is not None:
            r = self._root
            snap.update(
                kind=s.banner.kind, title=s.banner.title, age_text=s.banner.age_text,
                info=self._info.cget("text"), answerable=s.alert is not None,
                alert_event_id=(s.alert or {}).get("event_id"), status=status,
                transaction_id=(s.check or s.alert or {}).get("transaction_id"), drawn_at=self._drawn_at,
                geometry=(r.winfo_rootx(), r.winfo_rooty(), r.winfo_width(), r.winfo_height()),
                title_box=self._box(self._title),
                buttons={a: self._box(b) for a, b in self._buttons.items()} if s.banner.needs_answer else {},
            )
        self.snapshot = snap

    @staticmethod
    def _box(widget) -> tuple[int, int, int, int]:
        """Screen rectangle (x, y, w, h) of a widget."""
        return widget.winfo_rootx(), widget.winfo_rooty(), widget.winfo_width(), widget.winfo_height()


def attach(service) -> "CashierDisplay":
    """The service's plug-in (display.enabled: true): the window runs on its own thread, shows
    every check/alert the service publishes, and hands each answer to service.publish_event, i.e.
    the till's durable outbox. Returns the window; the service calls its shutdown()."""
    from edge_app.config import ConfigError

    cfg = service.cfg
    display = CashierDisplay(cfg.display, cfg.store_id, cfg.till_id, on_ack=service.publish_event)
    try:
        display.start_in_thread()
    except DisplayError as exc:
        raise ConfigError(f"display.enabled: {exc}; set display.enabled: false to run without the window") from None
    service.attach(on_event=display.on_event)
    return display


# -- standalone: `agecheck display` -----------------------------------------------------------------
def display_publisher(till_id: str) -> str:
    """The `publisher` of the answers a standalone window sends for a till (':' cannot occur in
    a till id, so it never names a till service)."""
    return f"{till_id}:display"


class AckLink:
    """The standalone window's broker connection: an `mqtt.MqttLink` that subscribes to this
    till's events/check and events/alert (a persistent session, so alerts published while the
    window restarts still reach it) and delivers answers from the display's own SQLite outbox,
    oldest first, deleting each only on its PUBACK. It never speaks for the till (no
    availability or state)."""

    SESSION_EXPIRY_S = 300

    def __init__(self, cfg: Config, on_event: Callable[[dict], None]) -> None:
        from paho.mqtt.subscribeoptions import SubscribeOptions

        from edge_app.transport.mqtt import MqttLink
        from edge_app.transport.outbox import Outbox

        self.outbox = Outbox(cfg.display.outbox_path, cfg.outbox.max_events)
        self._on_event = on_event
        self._max_bytes = cfg.feed.max_payload_bytes
        self.link = MqttLink(cfg, self.outbox, self._on_message, None,
                             client_id=f"agecheck-display-{cfg.store_id}-{cfg.till_id}",
                             subscriptions=[(f"events/{k}", SubscribeOptions(qos=1)) for k in ("check", "alert")],
                             session_expiry_s=self.SESSION_EXPIRY_S, name="display")

    def start(self) -> "AckLink":
        self.link.start()
        return self

    def publish(self, ack: dict) -> None:
        """Store the answer durably (raises if it cannot be stored) and wake the sender."""
        topic = events.topic(ack["store_id"], ack["till_id"], "events/ack")
        # Its own numbering, apart from the till's: the window has its own outbox.
        self.outbox.put_event(topic, ack, display_publisher(ack["till_id"]))
        self.link.wake()

    def stop(self, flush_timeout: float = 3.0) -> None:
        self.link.stop(flush_timeout)
        self.outbox.close()

    @property
    def connected(self) -> bool:
        return self.link.connected

    def _on_message(self, leaf: str, payload: bytes) -> None:
        try:
            ev = events.validate(payloads.parse(payload, payloads.Limits(self._max_bytes)))
        except (payloads.PayloadError, events.SchemaError) as exc:
            # Acknowledged all the same (returning normally): a redelivery would fail again.
            log.warning("display: quarantined a message on %s: %s (%d bytes)", leaf, exc, len(payload))
            return
        self._on_event(ev)


def main(args, cfg: Config) -> int:
    """`agecheck display`: the alert window as its own process next to the service."""
    from edge_app.transport.outbox import OutboxError

    display = CashierDisplay(cfg.display, cfg.store_id, cfg.till_id, on_ack=lambda ev: link.publish(ev))
    try:
        display.open()
    except DisplayError as exc:
        print(f"agecheck display: {exc}", file=sys.stderr)
        return 2
    try:
        link = AckLink(cfg, display.on_event)
    except OutboxError as exc:
        print(f"agecheck display: {exc}", file=sys.stderr)
        display.close()
        display.run()  # processes the close on this thread and frees Tk here
        return 2
    signal.signal(signal.SIGTERM, lambda *_: display.close())
    link.start()
    print(f"agecheck display: window ready for {cfg.store_id}/{cfg.till_id}; answers are kept in "
          f"{cfg.display.outbox_path} until the broker at {cfg.mqtt.host}:{cfg.mqtt.port} has them", flush=True)
    try:
        display.run()
    except KeyboardInterrupt:
        pass
    link.stop()
    return 0
