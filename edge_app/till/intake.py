"""Intake: from a scan to a check waiting for the worker, or to a `missed` event saying why no
check runs (stale, queue full, the service stopping). Owns the queue of scans waiting for the
check worker (at most QUEUE_MAX), the open check of each transaction (a repeat scan reuses it),
what the POS clock is known to say, and the count of missed scans by reason."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future

from edge_app.config import Config
from edge_app.core import event_parts, events
from edge_app.core.pos import Scan
from edge_app.core.words import MissedReason
from edge_app.till.inbound import Count
from edge_app.till.pos_clock import ClockReading, PosClock
from edge_app.till.triggers import (
    Outcome,
    Submission,
    SubmissionStatus,
    TransactionMemory,
    Trigger,
    applied_product,
    now_pair,
    restriction,
)

log = logging.getLogger(__name__)

QUEUE_MAX = 16  # scans waiting for the check worker; a POS cannot scan faster than checks run for long

# A scan waiting for its check, with the future its submitters wait on.
Waiting = tuple[Trigger, "Future[Outcome]"]


class Intake:
    """Takes scans on any thread (the MQTT, HTTP and stdin triggers'); the check worker takes
    them with `next()`. `publish_event` stores an event (the service's), `publish_state` refreshes
    the retained state."""

    def __init__(
        self,
        cfg: Config,
        counts: Counter[Count],
        publish_event: Callable[[events.Event], None],
        publish_state: Callable[[], None],
    ) -> None:
        self.cfg = cfg
        self.counts = counts
        self._publish_event = publish_event
        self._publish_state = publish_state
        self.txns = TransactionMemory(cfg.triggers.reuse_seconds)
        self.pos_clock = PosClock(cfg.triggers.pos_clock_max_skew_seconds, cfg.triggers.pos_clock_confirm_scans)
        self.missed: Counter[MissedReason] = Counter()
        self._queue: queue.Queue[Waiting] = queue.Queue(maxsize=QUEUE_MAX)
        # Cleared at shutdown (under the lock) so that no scan is queued after the queue is drained.
        self._accepting = True
        self._accepting_lock = threading.Lock()

    def submit(self, scan: Scan, source: str, ack: Callable[[], object] | None = None) -> Submission:
        """Start a check for `scan`, or record why none runs. `ack` is called once the scan
        needs nothing more from whoever sent it: its record is stored (or it needs none)."""
        sub = self._submit(scan, source)
        if ack is not None:
            if sub.status in (SubmissionStatus.STARTED, SubmissionStatus.REUSED) and sub.result is not None:
                # The future resolves only after the check or `missed` event is stored (_work,
                # stop); a repeat scan of an open check waits for that same record.
                sub.result.add_done_callback(lambda _f: ack())
            else:
                ack()  # not restricted, or its `missed` event is already stored
        return sub

    def _read_pos_clock(self, scan: Scan, source: str) -> ClockReading | None:
        """Every POS scan with a `ts` tells the till about the POS clock, restricted or not; a
        change in what it says (skew named, moved, gone) is logged once and put in `state`."""
        if source != "pos" or scan.sent_at is None:
            return None
        reading, change = self.pos_clock.observe(scan.sent_at, time.time())
        if change is not None:
            self.pos_clock.log_change(change, self.cfg.triggers.max_scan_age_seconds)
            self._publish_state()
        return reading

    def _submit(self, scan: Scan, source: str) -> Submission:
        item = scan.item
        reading = self._read_pos_clock(scan, source)
        min_age = restriction(item, self.cfg.triggers, self.cfg.policy.legal_age)
        if min_age is None:
            log.debug("scan of %s (%s) in %s: not age restricted", item.sku, item.category, scan.transaction_id)
            return Submission(SubmissionStatus.NOT_RESTRICTED, f"{item.sku} ({item.category}) is not age restricted")
        now, iso = now_pair()
        if scan.sent_at is not None:
            age_s, why = self.pos_clock.scan_age(scan.sent_at, reading)
            if age_s > self.cfg.triggers.max_scan_age_seconds:
                detail = (
                    f"scan reached the till {age_s:.0f} s after the POS sent it{why} (more than "
                    f"triggers.max_scan_age_seconds={self.cfg.triggers.max_scan_age_seconds:g}); the shopper "
                    "is no longer in front of the camera"
                )
                if reading is not None and reading.confirming:
                    detail += (
                        f"; if the POS clock is behind instead, {self.cfg.triggers.pos_clock_confirm_scans} "
                        "scans in a row late by the same amount establish that "
                        "(triggers.pos_clock_confirm_scans)"
                    )
                log.warning("scan of %s in transaction %s not checked: %s", item.sku, scan.transaction_id, detail)
                self.record_missed(scan, source, min_age, iso, MissedReason.STALE, detail)
                return Submission(SubmissionStatus.MISSED, detail)
        with self._accepting_lock:
            if not self._accepting:
                detail = "the service is stopping"
                self.record_missed(scan, source, min_age, iso, MissedReason.SHUTDOWN, detail)
                return Submission(SubmissionStatus.MISSED, detail)
            return self._enqueue(scan, source, min_age, now, iso)

    def _enqueue(self, scan: Scan, source: str, min_age: int, now: float, iso: str) -> Submission:
        item = scan.item
        fut, reused = self.txns.open_or_reuse(scan.transaction_id, now)
        if reused:
            self.counts[Count.SCANS_REUSED] += 1
            log.info(
                "repeat restricted scan (%s) in transaction %s: reusing its open check", item.sku, scan.transaction_id
            )
            return Submission(
                SubmissionStatus.REUSED, f"transaction {scan.transaction_id} already has an open check", fut
            )
        try:
            self._queue.put_nowait((Trigger(scan, source, min_age, now, iso), fut))  # type: ignore[arg-type]
        except queue.Full:
            self.txns.close(scan.transaction_id)
            log.error(
                "%d scans already wait for a check: scan of %s in transaction %s not checked (ask for ID)",
                QUEUE_MAX,
                item.sku,
                scan.transaction_id,
            )
            self.record_missed(
                scan,
                source,
                min_age,
                iso,
                MissedReason.QUEUE_FULL,
                f"{QUEUE_MAX} scans were already waiting for a check",
            )
            fut.cancel()  # after the record: a repeat scan that reused this future waits for it
            return Submission(SubmissionStatus.BUSY, "too many checks waiting; ask for ID")
        self.counts[Count.SCANS_RESTRICTED] += 1
        return Submission(SubmissionStatus.STARTED, f"check started for {item.sku} (min age {min_age})", fut)

    def record_missed(
        self, scan: Scan, source: str, min_age: int, received_ts: str, reason: MissedReason, detail: str
    ) -> None:
        """Every restricted scan leaves a record: one that gets no check becomes a `missed` event
        saying why (never raises: it runs on the MQTT thread and in shutdown)."""
        self.missed[reason] += 1
        trigger = event_parts.TriggerInfo(
            applied_product(scan.item, min_age), source=source, received_ts=received_ts, sent_ts=scan.sent_ts
        )
        try:
            # Built (and so validated) inside the try: one the schema refuses is logged, not raised.
            self._publish_event(
                events.MissedEvent(
                    store_id=self.cfg.store_id,
                    till_id=self.cfg.till_id,
                    transaction_id=scan.transaction_id,
                    trigger=trigger,
                    reason=reason,
                    detail=detail,
                    operator_id=scan.operator_id or None,
                )
            )
        except Exception:
            log.exception(
                "could not record the missed scan of %s in transaction %s", scan.item.sku, scan.transaction_id
            )

    # -- the check worker's side -------------------------------------------------------------------
    def next(self, timeout: float) -> Waiting | None:
        """The oldest scan waiting for a check; None when none came within `timeout` seconds."""
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> int:
        """Take no more scans, and record each one still waiting as missed (the service stopped
        before its check could run), its future cancelled. Returns how many there were."""
        with self._accepting_lock:
            self._accepting = False
        waiting = 0
        while True:
            try:
                trig, fut = self._queue.get_nowait()
            except queue.Empty:
                break
            waiting += 1
            self.record_missed(
                trig.scan,
                trig.source,
                trig.min_age,
                trig.received_ts,
                MissedReason.SHUTDOWN,
                "the service stopped before this scan's check could run",
            )
            fut.cancel()
        return waiting
