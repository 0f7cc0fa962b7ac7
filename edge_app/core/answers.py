"""Answers: which of the cashier's answers (words and labels: core/words.py) stand once the
cashier's corrections (Undo) are taken into account. Pure functions over typed ack events
(`events.AckEvent`), shared by the integrity check (till), the feed and the report (manager) so
all three read a correction alike.

A correction is an ack with `replaces_event_id`: it withdraws the ack it names (answer `undone`,
the alert is unanswered again) or puts another answer in its place. It only counts when the ack it
names belongs to the same alert: one alert's answer cannot withdraw another's.
"""

from __future__ import annotations

from collections.abc import Iterable

from edge_app.core.events import AckEvent
from edge_app.core.words import ACK_ANSWERS, COVERING_ANSWERS, Answer


def standing(acks: Iterable[AckEvent]) -> dict[str, list[AckEvent]]:
    """alert_event_id -> the acks that still stand, oldest first: each ack not replaced by a
    correction of the same alert, corrections that withdraw (answer `undone`) left out.
    Acks may come in any order (a correction before the answer it names still removes it);
    a repeated event_id (QoS 1 redelivery) counts once. Raises TypeError for anything but an
    AckEvent: a stored payload is decoded (and a bad one set aside) before it comes here."""
    by_id: dict[str, AckEvent] = {}
    for a in acks:
        if not isinstance(a, AckEvent):
            raise TypeError(f"standing() takes AckEvents, got {type(a).__name__}")
        by_id.setdefault(a.event_id, a)
    replaced = {(a.alert_event_id, a.replaces_event_id) for a in by_id.values() if a.replaces_event_id is not None}
    out: dict[str, list[AckEvent]] = {}
    for eid, a in by_id.items():
        out.setdefault(a.alert_event_id, [])
        if (a.alert_event_id, eid) in replaced or a.answer not in ACK_ANSWERS:
            continue
        out[a.alert_event_id].append(a)
    for lst in out.values():
        lst.sort(key=lambda a: a.ts)
    return out


def current_answer(acks: Iterable[AckEvent]) -> Answer | None:
    """The answer that stands for one alert's acks: the latest one still standing, or None."""
    lst = [a for group in standing(acks).values() for a in group]
    return Answer(lst[-1].answer) if lst else None


def covered(answers: Iterable[str | None]) -> bool:
    """An alert (or a transaction) is covered when any standing answer says ID was checked."""
    return any(a in COVERING_ANSWERS for a in answers)
