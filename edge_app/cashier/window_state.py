"""The alert window's state machine, without Tk: what the window knows (the unanswered alerts, an
approval on screen, the answer just given while Undo is offered, the ids answered, its counters)
and what it should show at a given moment (a `View`); the cashier's answers and Undo become ack
events here. Time comes in as arguments (`time.monotonic()` seconds, and the wall clock for an
event's age), so every rule runs without a screen. Also the `WindowSnapshot` other threads read.
The Tk window that feeds and draws it is `edge_app.cashier.window`."""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from edge_app.cashier.banner import AlertQueue, Banner, BannerKind, Pending, banner_for, notice_banner, recorded_banner
from edge_app.config import DisplayConfig
from edge_app.core import events
from edge_app.core.state import Recording
from edge_app.core.times import parse_ts
from edge_app.core.words import ACK_ANSWERS, AckVia, Answer, Decision

log = logging.getLogger(__name__)

# Checks older than this (a display restarting onto a queued session) are not shown.
STALE_SECONDS = 300.0
# An alert whose check never arrives is shown from the alert alone after this long.
ALERT_WITHOUT_CHECK_S = 1.5
# A second tap this soon after an answer (or Undo) is taken for a double tap, not a new answer:
# the next alert's buttons come up in the same places, and Undo must not catch a bounce.
DOUBLE_TAP_S = 0.5
# Answered ids (and this window's own acks) remembered, the oldest forgotten first.
REMEMBERED = 500


def is_stale(ev: events.Event, now: float, alert_expire_seconds: float) -> bool:
    """Too old to show: an approval after STALE_SECONDS; an alert (or a check that asks for ID)
    only once it would have expired on the list, so a window that restarts still shows the
    alerts nobody answered. `now` is the wall clock (epoch seconds)."""
    t = parse_ts(ev.ts)
    asks = not (isinstance(ev, events.CheckEvent) and ev.decision == Decision.APPROVE)
    return t is not None and now - t.timestamp() > (alert_expire_seconds if asks else STALE_SECONDS)


@dataclass
class Recent:
    """The last answer, while Undo is offered."""

    pending: Pending
    ack: events.AckEvent
    until: float  # monotonic


@dataclass(frozen=True)
class View:
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


def _remember(d: OrderedDict[str, None], key: str) -> None:
    d[key] = None
    while len(d) > REMEMBERED:
        d.popitem(last=False)


class WindowState:
    """What one till's window knows and shows. Not thread-safe: the window calls it on its own
    thread only."""

    def __init__(self, cfg: DisplayConfig, store_id: str, till_id: str) -> None:
        self.cfg = cfg
        self.store_id = store_id
        self.till_id = till_id
        self.alerts = AlertQueue(cfg.alert_expire_seconds, ALERT_WITHOUT_CHECK_S)
        self.approve: tuple[events.CheckEvent, float] | None = None  # an approval on screen, until
        self.recent: Recent | None = None
        self._done: OrderedDict[str, None] = OrderedDict()  # check/alert ids answered: not shown again
        self._own_acks: OrderedDict[str, None] = OrderedDict()
        self.taps_ignored = 0
        self.last_tap: float | None = None  # monotonic: the last answer or Undo taken
        self.expired = 0
        # Why the till is not recording (its outbox cannot write), None while it is: a small mark.
        self.not_recording: str | None = None
        # A notice shown while nothing else is ("NOT CONNECTED TO TILL ..."), None when none.
        self.notice: str | None = None

    # -- what comes in ---------------------------------------------------------------------------
    def handle(self, ev: events.Event, wall_now: float, now: float, recalled: bool = False) -> bool:
        """Take one event in; True when the screen may need to change. A recalled approval (see
        CashierDisplay.recall) is never shown."""
        if ev.till_id != self.till_id or ev.store_id != self.store_id:
            return False
        if isinstance(ev, events.AckEvent):
            return self._on_remote_ack(ev)
        if isinstance(ev, events.IntegrityEvent):
            # The till reports a sale over with this alert unanswered.
            return bool(
                self.alerts.sale_done(alert_event_id=ev.alert_event_id) or self.alerts.sale_done(ev.transaction_id)
            )
        if is_stale(ev, wall_now, self.cfg.alert_expire_seconds):
            log.info("display: not showing %s %s: too old", ev.KIND, ev.event_id)
            return False
        if isinstance(ev, events.CheckEvent):
            return self._on_check(ev, now, recalled)
        if isinstance(ev, events.AlertEvent):
            if ev.check_event_id in self._done or ev.event_id in self._done:
                return False  # answered already (a redelivery, or its check came late)
            self.approve = None
            self.alerts.add_alert(ev, now)
            return True
        return False

    def _on_check(self, ev: events.CheckEvent, now: float, recalled: bool) -> bool:
        if ev.event_id in self._done:
            return False
        # A check for another sale means the shopper at the till is someone else now: the
        # earlier sales' alerts are done (answered for the record, after this shopper's).
        for p in self.alerts.sale_done(other_than=ev.transaction_id):
            log.info("display: alert for %s now shown as sale done", p.transaction_id)
        if ev.decision == Decision.APPROVE:
            if recalled:
                return True
            if self.alerts.live_for(ev.transaction_id, now):
                # This shopper's own unanswered alert outranks their later approval.
                log.info("display: approve for %s not shown over its own unanswered alert", ev.transaction_id)
                return True
            self.approve = (ev, now + self.cfg.approve_seconds)
            return True
        self.approve = None
        self.alerts.add_check(ev, now)
        return True

    def _on_remote_ack(self, ack: events.AckEvent) -> bool:
        """An answer given on another display for this till: that alert leaves this list too."""
        if ack.event_id in self._own_acks or ack.answer not in ACK_ANSWERS:
            return False
        p = self.alerts.remove_alert(ack.alert_event_id)
        if p is None:
            return False
        _remember(self._done, p.key)
        log.info("display: alert %s was answered elsewhere (%s)", ack.alert_event_id, ack.answer)
        return True

    def sale_done(self, transaction_id: str) -> bool:
        """The till reports the sale over: its alerts are answered for the record only."""
        return bool(self.alerts.sale_done(transaction_id))

    def set_notice(self, text: str | None) -> bool:
        changed = self.notice != text
        self.notice = text
        return changed

    def set_recording(self, status: Recording) -> bool:
        """True when the NOT RECORDING mark comes or goes."""
        reason = (status.outbox_error or "the outbox cannot write") if status.degraded else None
        if reason == self.not_recording:
            return False
        if (reason is None) != (self.not_recording is None):
            log.warning("display: %s", f"showing NOT RECORDING ({reason})" if reason else "recording again")
        self.not_recording = reason
        return True

    # -- what is shown -----------------------------------------------------------------------------
    def tick(self, now: float) -> None:
        """Let time pass: alerts expire, an approval or the Undo offer runs out."""
        for p in self.alerts.expire(now):
            self.expired += 1
            _remember(self._done, p.key)
            log.warning(
                "display: alert %s (transaction %s) expired unanswered after %.0f s",
                p.alert_event_id or p.key,
                p.transaction_id,
                self.cfg.alert_expire_seconds,
            )
        if self.approve is not None and now >= self.approve[1]:
            self.approve = None
        if self.recent is not None and now >= self.recent.until:
            self.recent = None

    def view(self, now: float) -> View | None:
        """The shopper in front first: their alert, else their OK; then the alerts of sales that
        are done; then what was just recorded; then a notice (NOT CONNECTED)."""
        cur = self.alerts.current(now)
        shown = None
        if cur is not None:
            b = cur.banner
            shown = View(("alert", cur.key, b.title), b, cur)
            if not cur.sale_done:
                return shown
        if self.approve is not None:
            check = self.approve[0]
            return View((Decision.APPROVE, check.event_id), banner_for(check), None)
        if shown is not None:
            return shown
        if self.recent is not None:
            r = self.recent
            return View(
                (BannerKind.RECORDED, r.ack.event_id), recorded_banner(r.ack.answer, r.ack.transaction_id), None
            )
        if self.notice is not None:
            return View(("notice", self.notice), notice_banner(self.notice), None)
        return None

    def next_change(self, now: float) -> float | None:
        """When what is shown changes by itself (monotonic): an approval or the Undo offer running
        out, a late alert showing, an alert expiring."""
        due = [
            t
            for t in (
                self.approve[1] if self.approve else None,
                self.recent.until if self.recent else None,
                self.alerts.next_change(now),
            )
            if t is not None
        ]
        return min(due) if due else None

    def others_waiting(self, view: View, now: float) -> int:
        """Alerts on the list besides the one shown (over an OK banner too: earlier sales' alerts
        wait behind it)."""
        return len(self.alerts.visible(now)) - (1 if view.pending is not None else 0)

    # -- the cashier's taps ------------------------------------------------------------------------
    def double_tap(self, now: float) -> bool:
        """A tap within DOUBLE_TAP_S of the last answer or Undo: ignored (and counted)."""
        if self.last_tap is None or now - self.last_tap >= DOUBLE_TAP_S:
            return False
        self.taps_ignored += 1
        log.info("display: a second tap %.2f s after an answer ignored", now - self.last_tap)
        return True

    def answer_ack(self, p: Pending, answer: Answer, via: AckVia, now: float) -> events.AckEvent:
        """The ack for an answer to the registered alert `p`."""
        alert = p.alert
        if alert is None:
            raise ValueError("an answer needs the alert registered")
        return events.AckEvent(
            store_id=self.store_id,
            till_id=self.till_id,
            transaction_id=alert.transaction_id,
            alert_event_id=alert.event_id,
            answer=answer,
            decision_time_s=round(now - p.added, 2),
            check_event_id=alert.check_event_id,
            via=via,
        )

    def undo_ack(self, now: float) -> events.AckEvent | None:
        """The correcting ack that withdraws the last answer, while Undo is offered."""
        r = self.recent
        if r is None:
            return None
        a = r.ack
        return events.AckEvent(
            store_id=self.store_id,
            till_id=self.till_id,
            transaction_id=a.transaction_id,
            alert_event_id=a.alert_event_id,
            answer=Answer.UNDONE,
            decision_time_s=round(now - r.pending.added, 2),
            check_event_id=a.check_event_id,
            via=AckVia.CLICK,
            replaces_event_id=a.event_id,
        )

    def sending(self, ack: events.AckEvent) -> None:
        """This window sends `ack`: when the broker brings it back it is not another display's."""
        _remember(self._own_acks, ack.event_id)

    def answered(self, p: Pending, ack: events.AckEvent, now: float) -> None:
        """The answer was recorded: the alert leaves the list, and Undo is offered for a while."""
        self.last_tap = now
        log.info("display: %s answered %s (%s, %.1f s)", ack.transaction_id, ack.answer, ack.via, ack.decision_time_s)
        self.alerts.remove_alert(ack.alert_event_id)
        _remember(self._done, p.key)
        self.recent = Recent(p, ack, now + self.cfg.undo_seconds)

    def undone(self, now: float) -> None:
        """The Undo was recorded: the alert is back, on top."""
        r = self.recent
        if r is None:
            return
        self.last_tap = now
        log.info("display: %s: answer %s undone", r.ack.transaction_id, r.ack.answer)
        self.recent = None
        self._done.pop(r.pending.key, None)
        self.alerts.restore(r.pending, now)
