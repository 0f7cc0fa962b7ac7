"""Integrity: notices a sale completed on an alert that has no ID check recorded, and turns it into
an `events/integrity` event (docs/design.md, "Events over MQTT").

It owns two things (the `pos/sale` message itself is `edge_app.core.pos.Sale`):

* `IntegrityTracker` - pure, thread-safe bookkeeping of open alerts, answers and sales, with no
  threads or I/O of its own (time comes in as arguments, so tests need no sleeping);
* `IntegrityMonitor` - the small runner the service plugs in: it feeds events and sales to a
  tracker and publishes what falls due through the caller's `publish(event)`.

The rule (the manager's question is "did the cashier check ID before selling?"):

* A transaction with an alert (`check_id` or `no_face`) is *covered* once any of its alerts has
  the answer `id_checked_over_age` or `id_checked_under_age_refused`.
* When the POS reports the sale of a transaction that is not covered, the tracker waits
  `grace_seconds` (the answer travels display -> outbox -> broker while the sale travels
  POS -> broker, and a cashier may press the key a moment after closing the sale). If the
  transaction is still not covered then, one integrity event is emitted, naming the first alert
  and how long after it the sale came.
* An answer of `no_id_check` is recorded but does not cover the transaction: the cashier said no
  ID was checked, which is exactly what the manager wants to see (reason `answered_no_id_check`;
  no answer at all gives reason `unanswered`).
* A refusal (`id_checked_under_age_refused`) covers the transaction: the rest of the basket may
  still be sold, and `pos/sale` does not say whether the restricted item stayed in it.
* A correction (an ack with `replaces_event_id`, published when the cashier presses Undo) takes
  the answer it names back, as `edge_app.core.answers.standing` reads it: an undone "ID checked"
  no longer covers the transaction. A sale is therefore judged when its grace period ends, not
  when it arrives, so an Undo pressed just after the sale still counts.
* Answers that arrive after the integrity event was emitted do not withdraw it; the feed has both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edge_app.core import events
from edge_app.core.answers import covered, standing
from edge_app.core.pos import PosMessageError, Sale
from edge_app.core.times import parse_ts
from edge_app.core.words import Answer, Decision, IntegrityReason
from edge_app.till.plugins import Listener

log = logging.getLogger(__name__)


def _epoch(ts: Any) -> float | None:
    dt = parse_ts(ts)
    return dt.timestamp() if dt else None


@dataclass
class _Alert:
    alert_event_id: str
    check_event_id: str | None
    decision: Decision | None
    raised_at: float
    acks: list[events.AckEvent] = field(default_factory=list)  # every answer and correction heard for it

    @property
    def answers(self) -> list[str]:
        return [a.answer for a in standing(self.acks).get(self.alert_event_id, [])]


@dataclass
class _Transaction:
    transaction_id: str
    alerts: list[_Alert] = field(default_factory=list)
    sold_at: float | None = None
    due_at: float | None = None

    @property
    def covered(self) -> bool:
        return any(covered(a.answers) for a in self.alerts)


class IntegrityTracker:
    """Open alerts per transaction for one till. Every method may be called from any thread."""

    # Answers that come before their alert (another path through the broker) wait this long.
    EARLY_ACK_SECONDS = 600.0

    def __init__(
        self, store_id: str, till_id: str, grace_seconds: float, forget_after_seconds: float = 4 * 3600.0
    ) -> None:
        if grace_seconds < 0:
            raise ValueError("grace_seconds must be >= 0")
        self.store_id = store_id
        self.till_id = till_id
        self.grace_seconds = float(grace_seconds)
        self.forget_after_seconds = float(forget_after_seconds)
        self._lock = threading.Lock()
        self._txns: dict[str, _Transaction] = {}
        self._alert_txn: dict[str, str] = {}
        self._early_acks: dict[str, tuple[list[events.AckEvent], float]] = {}

    # -- inputs -----------------------------------------------------------------------------
    def on_alert(self, alert_event: events.AlertEvent, when: float | None = None) -> None:
        txn_id = alert_event.transaction_id
        alert_id = alert_event.event_id
        if not txn_id:
            # A demo trigger without a POS transaction can never be matched to a sale.
            log.debug("integrity: alert %s has no transaction id; not tracked", alert_id)
            return
        raised = when if when is not None else (_epoch(alert_event.ts) or time.time())
        with self._lock:
            if alert_id in self._alert_txn:
                return  # QoS 1 redelivery
            txn = self._txns.setdefault(txn_id, _Transaction(txn_id))
            alert = _Alert(alert_id, alert_event.check_event_id, alert_event.decision, raised)
            early = self._early_acks.pop(alert_id, None)
            if early:
                alert.acks.extend(early[0])
            txn.alerts.append(alert)
            self._alert_txn[alert_id] = txn_id
            self._prune(raised)

    def on_ack(self, ack_event: events.AckEvent, when: float | None = None) -> None:
        # (Its answer is an Answer: an event is validated when it is built.)
        alert_id = ack_event.alert_event_id
        now = when if when is not None else time.time()
        with self._lock:
            txn_id = self._alert_txn.get(alert_id)
            if txn_id is None:
                acks, _ = self._early_acks.get(alert_id, ([], now))
                self._early_acks[alert_id] = ([*acks, ack_event], now)
                return
            # Every answer is kept: which ones stand (a later "no_id_check" does not take back an
            # ID check; an Undo does) is decided by core.answers when the sale is judged.
            for a in self._txns[txn_id].alerts:
                if a.alert_event_id == alert_id:
                    a.acks.append(ack_event)

    def on_sale(self, transaction_id: str, when: float | None = None) -> list[events.IntegrityEvent]:
        """Record a completed sale. Returns the integrity events due now (with a grace period
        of 0 this includes this sale's); later ones come from poll()."""
        now = when if when is not None else time.time()
        with self._lock:
            txn = self._txns.get(transaction_id)
            if txn is not None and txn.sold_at is None:
                # Judged when the grace period ends even when covered now: an Undo of the
                # answer may still come in that time.
                txn.sold_at = now
                txn.due_at = now + self.grace_seconds
        return self.poll(now)

    def on_event(self, event: events.Event) -> None:
        """Listener for the service: takes any typed event and keeps the alerts and acks."""
        if isinstance(event, events.AlertEvent):
            self.on_alert(event)
        elif isinstance(event, events.AckEvent):
            self.on_ack(event)

    def poll(self, now: float | None = None) -> list[events.IntegrityEvent]:
        """Integrity events whose grace period has run out, each returned once."""
        now = now if now is not None else time.time()
        out: list[events.IntegrityEvent] = []
        with self._lock:
            for txn in [t for t in self._txns.values() if t.due_at is not None and t.due_at <= now]:
                if not txn.covered:
                    out.append(self._integrity_event(txn))
                self._forget(txn)
            self._prune(now)
        return out

    # -- state --------------------------------------------------------------------------------
    @property
    def open_alerts(self) -> int:
        with self._lock:
            return sum(len(t.alerts) for t in self._txns.values())

    @property
    def pending_sales(self) -> int:
        with self._lock:
            return sum(1 for t in self._txns.values() if t.due_at is not None)

    # -- internals (lock held) ----------------------------------------------------------------
    def _integrity_event(self, txn: _Transaction) -> events.IntegrityEvent:
        first = min(txn.alerts, key=lambda a: a.raised_at)
        answered_no = any(Answer.NO_ID_CHECK in a.answers for a in txn.alerts)
        assert txn.sold_at is not None
        return events.IntegrityEvent(
            store_id=self.store_id,
            till_id=self.till_id,
            transaction_id=txn.transaction_id,
            alert_event_id=first.alert_event_id,
            check_event_id=first.check_event_id,
            decision=first.decision,
            seconds_after_alert=round(max(0.0, txn.sold_at - first.raised_at), 3),
            reason=IntegrityReason.ANSWERED_NO_ID_CHECK if answered_no else IntegrityReason.UNANSWERED,
            answer=Answer.NO_ID_CHECK if answered_no else None,
            alert_count=len(txn.alerts),
            alert_event_ids=tuple(a.alert_event_id for a in txn.alerts),
            grace_seconds=self.grace_seconds,
        )

    def _forget(self, txn: _Transaction) -> None:
        for a in txn.alerts:
            self._alert_txn.pop(a.alert_event_id, None)
        self._txns.pop(txn.transaction_id, None)

    def _prune(self, now: float) -> None:
        limit = now - self.forget_after_seconds
        for txn in list(self._txns.values()):
            if txn.due_at is None and txn.alerts and max(a.raised_at for a in txn.alerts) < limit:
                log.info(
                    "integrity: forgetting transaction %s: no sale reported within %.0f s",
                    txn.transaction_id,
                    self.forget_after_seconds,
                )
                self._forget(txn)
        early_limit = now - self.EARLY_ACK_SECONDS
        for k in [k for k, (_, t) in self._early_acks.items() if t < early_limit]:
            del self._early_acks[k]


class IntegrityMonitor(Listener):
    """Runs an IntegrityTracker for the service: a daemon thread polls it and hands each due
    integrity event to `publish` (the service's durable outbox). An event whose publish raises
    is kept and retried, so a full or failing outbox does not lose it."""

    def __init__(
        self,
        tracker: IntegrityTracker,
        publish: Callable[[events.IntegrityEvent], object],
        interval_s: float = 0.5,
        max_payload_bytes: int = 4096,
    ) -> None:
        self.tracker = tracker
        self._publish = publish
        self._interval = interval_s
        self._max_bytes = max_payload_bytes
        self._unsent: list[events.IntegrityEvent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_event(self, event: events.Event) -> None:
        self.tracker.on_event(event)

    def on_sale(self, sale: Sale) -> None:
        """Handle one sale the service has read."""
        self._emit(self.tracker.on_sale(sale.transaction_id))

    def on_sale_payload(self, payload: bytes | str) -> Sale | None:
        """Handle one raw pos/sale message; a bad one is logged and dropped, never raised."""
        try:
            sale = Sale.from_payload(payload, self._max_bytes)
        except PosMessageError as exc:
            log.warning("%s; message dropped", exc)
            return None
        self.on_sale(sale)
        return sale

    def tick(self, now: float | None = None) -> None:
        self._emit(self.tracker.poll(now))

    def _emit(self, new: list[events.IntegrityEvent]) -> None:
        with self._lock:
            self._unsent.extend(new)
            todo, self._unsent = self._unsent, []
        failed = []
        for ev in todo:
            try:
                self._publish(ev)
                log.warning(
                    "integrity: transaction %s sold %.1f s after alert %s with no ID check recorded (%s)",
                    ev.transaction_id,
                    ev.seconds_after_alert,
                    ev.alert_event_id,
                    ev.reason,
                )
            except Exception:
                log.exception("integrity: could not publish event %s; will retry", ev.event_id)
                failed.append(ev)
        if failed:
            with self._lock:
                self._unsent[:0] = failed

    def start(self) -> IntegrityMonitor:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="integrity", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.tick()
            except Exception:  # the monitor must outlive one bad tick
                log.exception("integrity: poll failed")
