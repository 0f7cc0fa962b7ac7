"""The till's writer in front of its outbox: events are stored in order, and held in memory, bounded,
while the outbox cannot write (a full disk), then written (and numbered) in their order when it
can again; `WriterStatus` is what the service's `state` says meanwhile (`degraded`,
`outbox_write_errors`, `outbox_held`). The outbox itself is `edge_app.transport.outbox`."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from edge_app.core import events
from edge_app.transport.outbox import LOG_EVERY_S, Outbox
from edge_app.transport.outbox_file import OutboxError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WriterStatus:
    """What the till's retained `state` says about recording."""

    held: int  # events in memory, waiting for the outbox to take them
    held_max: int
    write_errors: int  # events that could not be written when they happened (since start)
    held_dropped: int  # events lost because memory was full too (oldest first)
    last_error: str | None  # why the outbox refuses writes now; None when it takes them

    @property
    def degraded(self) -> bool:
        return self.held > 0


class OutboxWriter:
    """Stores events in the outbox, and holds them in memory (in order, at most `max_held`) while
    the outbox cannot write, e.g. on a full disk: the check was answered on the cashier's screen,
    so its record must not be thrown away because the disk is full for a while. A background
    thread retries every `retry_s`; held events are written (and numbered) in their order as
    soon as the outbox takes writes again. Failures are logged when they start, at most once per
    `log_every_s` while they last, and when they end; never one traceback per event.

    When memory is full too, the OLDEST held event is dropped (the outbox's own rule) and
    counted in `held_dropped`."""

    def __init__(
        self,
        outbox: Outbox,
        max_held: int,
        on_change: Callable[[], object] | None = None,
        retry_s: float = 2.0,
        log_every_s: float = LOG_EVERY_S,
    ) -> None:
        self.outbox = outbox
        self.max_held = max_held
        self._on_change = on_change
        self._retry_s = retry_s
        self._log_every_s = log_every_s
        self._held: deque[tuple[str, events.Event, str]] = deque()
        # Serialises writes, so events reach the outbox (and get their numbers) in order.
        self._lock = threading.Lock()
        self._write_errors = 0
        self._held_dropped = 0
        self._dropped_since_log = 0
        self._last_error: str | None = None
        self._failing_since: float | None = None
        self._last_log = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> OutboxWriter:
        self._thread = threading.Thread(target=self._retry_loop, name="outbox-retry", daemon=True)
        self._thread.start()
        return self

    def status(self) -> WriterStatus:
        with self._lock:
            return WriterStatus(
                len(self._held), self.max_held, self._write_errors, self._held_dropped, self._last_error
            )

    def put_event(self, topic: str, event: events.Event, publisher: str) -> tuple[events.Event, list[str], bool]:
        """Store the event, or hold it. Returns the event (numbered when stored), the event ids
        the outbox dropped to make room, and whether it is stored. Never raises OutboxError."""
        with self._lock:
            was_degraded = bool(self._held)
            self._held.append((topic, event, publisher))
            stored, dropped = self._flush()
            written = event.event_id in stored
            if not written:
                self._write_errors += 1
                self._trim()
                self._log_failure()
            now_degraded = bool(self._held)
        self._changed(was_degraded, now_degraded)
        return stored.get(event.event_id, event), dropped, written

    def flush(self) -> int:
        """Try to write what is held; returns how many events were written."""
        with self._lock:
            if not self._held:
                return 0
            stored, _ = self._flush()
            if self._held:
                self._log_failure()
        self._changed(True, bool(self._held))
        return len(stored)

    def _flush(self) -> tuple[dict[str, events.Event], list[str]]:
        """(lock held) Write held events oldest first until one fails."""
        stored: dict[str, events.Event] = {}
        dropped: list[str] = []
        while self._held:
            topic, event, publisher = self._held[0]
            try:
                ev, d = self.outbox.put_event(topic, event, publisher)
            except OutboxError as exc:
                self._last_error = str(exc)
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                break
            self._held.popleft()
            stored[ev.event_id] = ev
            dropped += d
        if not self._held and self._failing_since is not None:
            log.warning(
                "outbox %s stores events again: %d event(s) held in memory for %.0f s are written%s",
                self.outbox.path,
                len(stored),
                time.monotonic() - self._failing_since,
                f"; {self._held_dropped} were lost when memory was full too" if self._held_dropped else "",
            )
            self._failing_since = None
            self._last_error = None
            self._last_log = 0.0
        return stored, dropped

    def _trim(self) -> None:
        while len(self._held) > self.max_held:
            self._held.popleft()
            self._held_dropped += 1
            self._dropped_since_log += 1

    def _log_failure(self) -> None:
        now = time.monotonic()
        if self._last_log and now - self._last_log < self._log_every_s:
            return
        first = not self._last_log
        self._last_log = now
        lost = (
            f"; {self._dropped_since_log} oldest event(s) lost since the last message (memory full, "
            f"outbox.memory_max_events={self.max_held})"
            if self._dropped_since_log
            else ""
        )
        self._dropped_since_log = 0
        log.error(
            "%s: %d event(s) held in memory (at most %d) and retried every %g s until it can write again%s",
            self._last_error if first else f"outbox {self.outbox.path} still cannot store events",
            len(self._held),
            self.max_held,
            self._retry_s,
            lost,
        )

    def _changed(self, was: bool, now: bool) -> None:
        if was != now and self._on_change is not None:
            try:
                self._on_change()
            except Exception:
                log.exception("outbox status listener failed")

    def _retry_loop(self) -> None:
        while not self._stop.wait(self._retry_s):
            try:
                self.flush()
            except Exception:  # the retry loop must outlive anything one attempt does
                log.exception("retrying the held events failed")

    def close(self) -> int:
        """Stop retrying, try a last time; returns how many events could not be written (lost)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.flush()
        with self._lock:
            left = [ev.event_id for _, ev, _ in self._held]
        if left:
            log.error(
                "outbox %s cannot store events (%s): %d event(s) held in memory are lost at shutdown: %s",
                self.outbox.path,
                self._last_error,
                len(left),
                ", ".join(left[:20]) + (" ..." if len(left) > 20 else ""),
            )
        return len(left)
