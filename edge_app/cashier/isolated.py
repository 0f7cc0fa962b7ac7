"""The alert window in a process of its own, watched over by the program that shows it (the till
service, or `agecheck display`).

Why a process: Tk ends the whole process on a lost X connection (xkill, a window manager that
kills the client, the X server going away) and on an X error it does not handle. In a thread,
that took the till service down with it. In a child process it takes only the window, and
`WindowProcess` starts a new one at once and shows it every alert still unanswered (from its own
record of what it was shown and what was answered), so closing the window cannot lose an alert.

The child (`python -m edge_app.cashier.isolated`) runs a `CashierDisplay` and talks JSON lines:

* parent -> child: {"event": wire dict}, {"recall": wire dict} (what an earlier window was
  shown, replayed to a new one: an approval there only says which sale is current, its OK is not
  shown again), {"recording": {...}}, {"sale": transaction_id},
  {"notice": text or null}, {"reply": ack event_id, "error": text or null}, {"close": true};
* child -> parent: {"ready": true} or {"error": why it cannot open}, {"snapshot": {...}} on each
  change, {"ack": wire dict, "id": its event_id} for each answer (the child waits for the reply: a failed save keeps
  the alert on screen, as in the window itself).

`WindowProcess` has the window's thread-safe API (post, on_event, set_recording, on_sale,
set_notice, snapshot, shutdown), so the service and `agecheck display` use it as they used the
window.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from edge_app.cashier.banner import BannerKind
from edge_app.cashier.window import CashierDisplay, DisplayError
from edge_app.cashier.window_state import WindowSnapshot
from edge_app.config import ConfigError, DisplayConfig
from edge_app.core import answers, event_bounds, events
from edge_app.core.pos import Sale
from edge_app.core.state import Recording

log = logging.getLogger(__name__)

# How long a window that died waits before the next one starts: short enough that the cashier
# barely notices. A window that dies again within LIVED_S of starting waits twice as long each
# time, up to RESTART_MAX_S: no tight loop of processes (and log lines) when the screen is gone
# for good or every new window meets the same X error.
RESTART_DELAY_S = 1.0
RESTART_MAX_S = 60.0
LIVED_S = 30.0
# What the parent remembers to show a new window: a till raises far fewer alerts than this in
# the alert_expire_seconds an alert can wait.
HISTORY = 1000
# The child's wait for the parent to store an answer.
ACK_REPLY_S = 10.0


def _snapshot_to_json(s: WindowSnapshot) -> dict:
    d = dataclasses.asdict(dataclasses.replace(s, last_ack=None))
    d["last_ack"] = s.last_ack.to_dict() if s.last_ack is not None else None
    d["buttons"] = {str(a): list(b) for a, b in s.buttons.items()}
    return d


def _snapshot_from_json(d: dict) -> WindowSnapshot:
    d = dict(d)
    d["last_ack"] = events.from_dict(d["last_ack"]) if d.get("last_ack") else None
    d["kind"] = BannerKind(d["kind"]) if d.get("kind") else None
    d["buttons"] = {a: tuple(b) for a, b in (d.get("buttons") or {}).items()}
    for k, v in d.items():
        if k.endswith("_box") or k in ("geometry", "undo"):
            d[k] = tuple(v) if v is not None else None
    return WindowSnapshot(**d)


class WindowProcess:
    """The window as a supervised child process. `on_ack(event)` stores each answer (it runs on
    this process's reader thread; if it raises, the window keeps the alert and says so)."""

    def __init__(
        self,
        cfg: DisplayConfig,
        store_id: str,
        till_id: str,
        on_ack: Callable[[events.AckEvent], Any],
        history_path: str | None = None,
        give_up_after: int | None = None,
    ) -> None:
        self.cfg, self.store_id, self.till_id = cfg, store_id, till_id
        # After this many new windows in a row could not even open (the X display is gone: the
        # cashier logged out), stop trying and set `gone`; None: try for ever (the till service,
        # whose window must come back when the screen does).
        self._give_up_after = give_up_after
        self.gone = threading.Event()
        self._on_ack = on_ack
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None  # the window that is open (sent to)
        self._child: subprocess.Popen | None = None  # the last process started, open or not yet
        self._stopping = threading.Event()
        self._history: OrderedDict[str, events.Event] = OrderedDict()
        self._recording: Recording | None = None
        self._notice: str | None = None
        self._sales: list[str] = []
        self.snapshot = WindowSnapshot()
        self.restarts = 0
        self._supervisor: threading.Thread | None = None
        # `agecheck display` keeps what its window was shown on disk too (JSON lines of events),
        # so a restart of the whole program still brings back the unanswered alerts: the broker
        # does not send again what it already delivered.
        self._history_path = history_path
        self._history_lines = 0
        if history_path:
            self._load_history(history_path)

    # -- the window's API ---------------------------------------------------------------------------
    def post(self, check_event: events.CheckEvent | None, alert_event: events.AlertEvent | None = None) -> None:
        for ev, cls in ((check_event, events.CheckEvent), (alert_event, events.AlertEvent)):
            if ev is not None and not isinstance(ev, cls):
                raise TypeError(f"post() takes a {cls.__name__} here, not {type(ev).__name__}")
        for ev in (check_event, alert_event):
            if ev is not None:
                self.on_event(ev)

    def on_event(self, event: events.Event) -> None:
        if not isinstance(event, (events.CheckEvent, events.AlertEvent, events.AckEvent, events.IntegrityEvent)):
            return
        with self._lock:  # remembered and sent in one step: a new window's replay never overtakes it
            self._remember(event)
            self._send({"event": event.to_dict()})

    def set_recording(self, status: Recording) -> None:
        if not isinstance(status, Recording):
            raise TypeError(f"set_recording() takes a Recording, not {type(status).__name__}")
        with self._lock:
            self._recording = status
            self._send({"recording": dataclasses.asdict(status)})

    def on_sale(self, transaction_id: str) -> None:
        with self._lock:
            self._sales = (self._sales + [transaction_id])[-HISTORY:]
            self._send({"sale": transaction_id})

    def set_notice(self, text: str | None) -> None:
        with self._lock:
            self._notice = text
            self._send({"notice": text})

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> WindowProcess:
        """Start the first window and wait for it to open; raises DisplayError when it cannot
        (no screen). After that, a window that dies is started again by itself."""
        first = threading.Event()
        errors: list[str] = []
        self._supervisor = threading.Thread(
            target=self._supervise, args=(first, errors), name="cashier-window", daemon=True
        )
        self._supervisor.start()
        if not first.wait(timeout):
            self.shutdown()
            raise DisplayError(f"the alert window did not open within {timeout:.0f} s")
        if errors:
            self.shutdown()
            raise DisplayError(errors[0])
        return self

    def shutdown(self) -> None:
        self._stopping.set()
        with self._lock:
            proc = self._child
        self._send({"close": True}, proc)
        if proc is not None:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        if self._supervisor is not None and self._supervisor is not threading.current_thread():
            self._supervisor.join(10)

    close = shutdown

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None else None

    # -- the child ------------------------------------------------------------------------------------
    def _supervise(self, first: threading.Event, errors: list[str]) -> None:
        quick_failures = failed_opens = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            code, opened, error = self._run_child(first)
            if not first.is_set():
                errors.append(error or f"the alert window exited (code {code}) before it opened")
                first.set()
                return
            if self._stopping.is_set():
                return
            failed_opens = 0 if opened else failed_opens + 1
            if self._give_up_after is not None and failed_opens >= self._give_up_after:
                log.error(
                    "display: no cashier window could open %d times in a row (%s); giving up",
                    failed_opens,
                    error or f"exit code {code}",
                )
                self.gone.set()
                return
            self.restarts += 1
            self.snapshot = WindowSnapshot(last_ack=self.snapshot.last_ack)
            # A window that keeps dying at once (the screen gone, an X error on every start) is
            # started again ever more slowly, up to RESTART_MAX_S, never in a tight loop; one that
            # ran a while is started again at once.
            lived = time.monotonic() - started
            quick_failures = 0 if (opened and lived >= LIVED_S) else quick_failures + 1
            delay = min(RESTART_MAX_S, RESTART_DELAY_S * 2 ** max(0, quick_failures - 1))
            if quick_failures <= 1 or quick_failures % 10 == 0:
                log.error(
                    "display: the cashier window stopped (exit code %s%s); starting it again in %.0f s, with "
                    "every unanswered alert%s",
                    code,
                    f": {error}" if error else "",
                    delay,
                    f" ({quick_failures} quick failures in a row)" if quick_failures > 1 else "",
                )
            self._stopping.wait(delay)

    def _run_child(self, first: threading.Event) -> tuple[int | None, bool, str | None]:
        conf = json.dumps(dataclasses.asdict(self.cfg))
        env = dict(os.environ)
        with self._lock:
            if self._stopping.is_set():  # shutdown() came while the last window was being replaced
                return None, False, None
            proc = subprocess.Popen(
                [sys.executable, "-m", "edge_app.cashier.isolated", conf, self.store_id, self.till_id],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
                env=env,
                # Its own process group: a Ctrl-C in the terminal reaches only
                # the program, which stops its window itself. Ignoring SIGINT
                # in the child alone left a window killed by a Ctrl-C that
                # came while it was still starting up.
                process_group=0,
            )
            self._child = proc
        opened, error = False, None
        assert proc.stdout is not None  # stdout=PIPE
        for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if "ready" in msg:
                opened = True
                # What the window must show, then everything new, in order: events that came
                # while it was starting are in the history, so in the replay.
                with self._lock:
                    self._proc = proc
                    for item in self._replay():
                        self._send(item)
                first.set()
            elif "error" in msg:
                error = msg["error"]
            elif "snapshot" in msg:
                try:
                    self.snapshot = _snapshot_from_json(msg["snapshot"])
                except Exception:  # a snapshot is for watchers only: never worth a restart
                    log.exception("display: unreadable window snapshot")
            elif "ack" in msg:
                self._take_ack(msg["ack"], msg.get("id"))
        code = proc.wait()
        with self._lock:
            self._proc = self._child = None
        return code, opened, error

    def _take_ack(self, wire: dict, reply_to: str | None) -> None:
        error = None
        try:
            ack = events.from_dict(wire)
            if not isinstance(ack, events.AckEvent):
                raise event_bounds.SchemaError(f"a {ack.KIND} from the window, not an ack")
            self._on_ack(ack)
            with self._lock:
                self._remember(ack)
        except Exception as exc:
            error = str(exc) or type(exc).__name__
            log.error("display: could not record an answer from the window: %s", error)
        # The child names its answer apart from the event, so a reply reaches it even when the
        # event it sent could not be read.
        self._send({"reply": reply_to, "error": error})

    def _send(self, msg: dict, proc: subprocess.Popen | None = None) -> None:
        proc = proc or self._proc
        if proc is None or proc.stdin is None:
            return  # no window now: what it must show is replayed when the next one starts
        try:
            proc.stdin.write(json.dumps(msg) + "\n")
            proc.stdin.flush()
        except (OSError, ValueError):
            pass  # the window just died: the supervisor starts another and replays

    def _remember(self, ev: events.Event) -> None:
        self._history[ev.event_id] = ev
        while len(self._history) > HISTORY:
            self._history.popitem(last=False)
        if self._history_path:
            try:
                if self._history_lines >= 2 * HISTORY:
                    self._write_history(self._history_path)
                else:
                    with open(self._history_path, "a", encoding="utf-8") as f:
                        f.write(json.dumps(ev.to_dict()) + "\n")
                    self._history_lines += 1
            except OSError as exc:  # the window still shows it; only a restart would not
                log.warning("display: cannot keep what the window was shown in %s: %s", self._history_path, exc)

    def _write_history(self, path: str) -> None:
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            for e in self._history.values():
                f.write(json.dumps(e.to_dict()) + "\n")
        os.replace(tmp, path)
        self._history_lines = len(self._history)

    def _load_history(self, path: str) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.readlines()
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("display: cannot read what the window was shown before (%s): %s", path, exc)
            return
        for line in lines[-2 * HISTORY :]:
            try:
                ev = events.decode_event(line)
            except Exception:
                continue  # a line cut short by a crash
            self._history[ev.event_id] = ev
        while len(self._history) > HISTORY:
            self._history.popitem(last=False)
        self._history_lines = len(lines)

    def _replay(self) -> list[dict]:
        """What a new window is told: the checks and alerts nobody has answered (an answer that
        was undone does not count), the sales that are over, the integrity events, the notice
        and the recording state."""
        hist = list(self._history.values())
        standing = answers.standing([e for e in hist if isinstance(e, events.AckEvent)])
        answered = {alert_id for alert_id, acks in standing.items() if acks}
        answered_checks = {
            e.check_event_id for e in hist if isinstance(e, events.AlertEvent) and e.event_id in answered
        }
        out: list[dict] = []
        for e in hist:
            if isinstance(e, events.AlertEvent) and e.event_id not in answered:
                out.append({"recall": e.to_dict()})
            elif isinstance(e, events.CheckEvent) and e.event_id not in answered_checks:
                out.append({"recall": e.to_dict()})
            elif isinstance(e, events.IntegrityEvent):
                out.append({"recall": e.to_dict()})
        out += [{"sale": t} for t in self._sales]
        if self._recording is not None:
            out.append({"recording": dataclasses.asdict(self._recording)})
        if self._notice is not None:
            out.append({"notice": self._notice})
        return out


def attach(service):
    """The service's plug-in (display.enabled: true): the window runs in a child process of its
    own (edge_app.cashier.isolated: an X error or a killed window never stops the till, and a new
    window comes back with every unanswered alert), shows every check/alert the service publishes
    and hears of its sales, and hands each answer to service.publish_event, i.e. the till's
    durable outbox. Returns the `WindowProcess`; the service calls its shutdown(). `service` is
    an edge_app.till.plugins.PluginHost (not imported: the till and the cashier never import one
    another)."""
    cfg = service.cfg
    display = WindowProcess(cfg.display, cfg.store_id, cfg.till_id, on_ack=service.publish_event)
    try:
        display.start()
    except DisplayError as exc:
        raise ConfigError(f"display.enabled: {exc}; set display.enabled: false to run without the window") from None
    service.listen(_WindowListener(display))
    return display


class _WindowListener:
    """The window as the service's listener (edge_app.till.plugins.ServiceListener)."""

    def __init__(self, display: WindowProcess) -> None:
        self._display = display

    def on_event(self, event: events.Event) -> None:
        self._display.on_event(event)

    def on_publishing(self, event: events.Event) -> None:
        pass  # the window shows what is stored (on_event), not what is about to be

    def on_sale(self, sale: Sale) -> None:
        self._display.on_sale(sale.transaction_id)

    def on_recording(self, recording: Recording) -> None:
        self._display.set_recording(recording)


# -- the child process ----------------------------------------------------------------------------------
def _child(conf_json: str, store_id: str, till_id: str) -> int:
    # Ctrl-C in the terminal of `agecheck run` reaches the whole process group: the parent stops
    # the window itself (a close message, or its end of the pipe closing), so a Ctrl-C here would
    # only be a traceback and a window the supervisor takes for crashed.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    cfg = DisplayConfig(**json.loads(conf_json))
    out_lock = threading.Lock()
    replies: dict[str, tuple[threading.Event, list[str | None]]] = {}

    def emit(msg: dict) -> None:
        with out_lock:
            sys.stdout.write(json.dumps(msg) + "\n")
            sys.stdout.flush()

    def on_ack(ack: events.AckEvent) -> None:
        done = threading.Event()
        slot: list = []
        replies[ack.event_id] = (done, slot)
        emit({"ack": ack.to_dict(), "id": ack.event_id})
        try:
            if not done.wait(ACK_REPLY_S):
                raise OSError("the till did not confirm the answer")
        finally:
            replies.pop(ack.event_id, None)
        if slot and slot[0]:
            raise OSError(slot[0])

    display = CashierDisplay(cfg, store_id, till_id, on_ack)
    display.on_snapshot = lambda s: emit({"snapshot": _snapshot_to_json(s)})
    try:
        display.open()
    except DisplayError as exc:
        emit({"error": str(exc)})
        return 2

    def read() -> None:
        for line in sys.stdin:
            try:
                msg = json.loads(line)
                if "event" in msg:
                    display.on_event(events.from_dict(msg["event"]))
                elif "recall" in msg:
                    display.recall(events.from_dict(msg["recall"]))
                elif "recording" in msg:
                    display.set_recording(Recording(**msg["recording"]))
                elif "sale" in msg:
                    display.on_sale(msg["sale"])
                elif "notice" in msg:
                    display.set_notice(msg["notice"])
                elif "reply" in msg:
                    waiting = replies.get(msg["reply"])
                    if waiting is not None:
                        waiting[1].append(msg.get("error"))
                        waiting[0].set()
                elif "close" in msg:
                    break
            except Exception:  # one bad line must not take the window down
                logging.getLogger(__name__).exception("display: bad message from the till")
        display.close()  # the parent closed our stdin or asked: the window goes

    threading.Thread(target=read, name="from-till", daemon=True).start()
    emit({"ready": True})
    display.run()
    return 0


if __name__ == "__main__":
    sys.exit(_child(*sys.argv[1:4]))
