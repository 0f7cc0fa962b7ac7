"""The feed's live table (`TablePrinter`: fixed-width rows for a terminal) and the words its rows
use for an event's outcome, an integrity reason and a gap, which the dashboard and the report
use too."""

from __future__ import annotations

import threading
from datetime import tzinfo
from typing import TextIO

from edge_app.core import events
from edge_app.core.times import local_dt
from edge_app.core.words import ANSWER_SHORT, DECISION_SHORT, INTEGRITY_REASON_TEXT, Answer, Decision, IntegrityReason
from edge_app.manager.store import Gap


def outcome_text(ev: events.Event, replaced: events.Event | None = None) -> str:
    """What a row says; for a correction, `replaced` is the ack it names when the feed has it."""
    if isinstance(ev, (events.CheckEvent, events.AlertEvent)):
        if isinstance(ev, events.CheckEvent) and ev.decision == Decision.NO_FACE and ev.camera not in (None, "up"):
            return "CAMERA DOWN"
        return DECISION_SHORT.get(ev.decision, str(ev.decision))
    if isinstance(ev, events.AckEvent):
        was = ANSWER_SHORT.get(replaced.answer, "an answer") if isinstance(replaced, events.AckEvent) else "an answer"
        if ev.answer == Answer.UNDONE:
            return f"UNDONE: {was}"
        text = f"{ANSWER_SHORT.get(ev.answer, str(ev.answer))} ({ev.decision_time_s:.1f}s)"
        return f"{text}, was {was}" if ev.replaces_event_id else text
    if isinstance(ev, events.MissedEvent):
        return f"NOT CHECKED: {ev.reason}"
    if isinstance(ev, events.IntegrityEvent):
        return f"SOLD, NO ID +{ev.seconds_after_alert:.0f}s: {integrity_reason(ev.reason)}"
    return ""


def integrity_reason(reason: str | None) -> str:
    """Why an integrity event was raised, in the manager's words."""
    if reason in INTEGRITY_REASON_TEXT:
        return INTEGRITY_REASON_TEXT[IntegrityReason(reason)]
    return reason or "no ID check recorded"


def gap_text(g: Gap, tz: tzinfo | None, with_store: bool = False) -> str:
    """'till-03: 12 events missing between 14:02 and 14:09' (dates added when they differ)."""
    a, b = local_dt(g.after_ts, tz), local_dt(g.before_ts, tz)
    if a and b and a.date() == b.date():
        span = f"on {a:%Y-%m-%d} between {a:%H:%M} and {b:%H:%M}"
    elif a and b:
        span = f"between {a:%Y-%m-%d %H:%M} and {b:%Y-%m-%d %H:%M}"
    else:
        span = f"between {g.after_ts} and {g.before_ts}"
    who = f"{g.store_id}/{g.publisher}" if with_store else g.publisher
    n = g.missing
    how_many = f"{n} event{'s' if n != 1 else ''}"
    if g.waiting is not None:
        after = f"{a:%Y-%m-%d %H:%M}" if a else g.after_ts
        said = f"the till's state at {b:%H:%M}" if b else "the till's state"
        held = f"; {g.waiting} of them were still in its outbox" if g.waiting else ""
        return f"{who}: {how_many} not arrived after {after} ({said} says it numbered up to {g.before_seq - 1}{held})"
    return f"{who}: {how_many} missing {span} (numbers {g.after_seq + 1}-{g.before_seq - 1} never arrived)"


def local_time(ts: str, tz: tzinfo | None) -> str:
    """Date and time: a feed left running for days must say which day a line is from."""
    dt = local_dt(ts, tz)
    return ts[:19] if dt is None else dt.strftime("%Y-%m-%d %H:%M:%S")


class TablePrinter:
    """Fixed-width rows for a terminal; the header is repeated so it stays on screen. One line per
    check, answer and integrity event; an alert is not printed on a line of its own, because it
    is the check's decision (CHECK ID / NO FACE, already on the check's line) shown to the cashier."""

    HEADER_EVERY = 40

    def __init__(self, out: TextIO, tz: tzinfo | None, show_store: bool) -> None:
        # Rows come from the store writer, notes from the MQTT thread too: one line at a time.
        self._lock = threading.RLock()
        self.out = out
        self.tz = tz
        self.show_store = show_store
        self.rows = 0
        cols = [
            ("time", 19),
            ("till", 10),
            ("kind", 9),
            ("decision / answer / why", 44),
            ("age", 13),
            ("transaction", 18),
        ]
        if show_store:
            cols.insert(1, ("store", 12))
        self.cols = cols

    def _line(self, values: list[str]) -> str:
        return "  ".join(str(v)[:w].ljust(w) for v, (_, w) in zip(values, self.cols)).rstrip()

    def header(self) -> None:
        self.out.write(self._line([c for c, _ in self.cols]) + "\n")
        self.out.write(self._line(["-" * w for _, w in self.cols]) + "\n")

    def event(self, ev: events.Event, replaced: events.Event | None = None) -> None:
        with self._lock:
            self._event(ev, replaced)

    def _event(self, ev: events.Event, replaced: events.Event | None) -> None:
        if isinstance(ev, events.AlertEvent):
            return
        if self.rows % self.HEADER_EVERY == 0:
            self.header()
        self.rows += 1
        age = ""
        if isinstance(ev, events.CheckEvent) and ev.age_band:
            age = ev.age_band + (f" ({ev.age:.0f})" if ev.age is not None else "")
        values = [
            local_time(ev.ts, self.tz),
            ev.till_id,
            ev.KIND,
            outcome_text(ev, replaced),
            age,
            ev.transaction_id or "-",
        ]
        if self.show_store:
            values.insert(1, ev.store_id)
        self.out.write(self._line(values) + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        with self._lock:
            self.out.write(f"! {text}\n")
            self.out.flush()
