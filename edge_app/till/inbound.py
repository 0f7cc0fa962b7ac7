"""Messages from the broker into the till service (on the MQTT thread): POS scans and sales read
once into their typed values, a standalone display's answers decoded, and what cannot be used
quarantined: counted, kept as `state`'s last_quarantined, and logged (what a sender can repeat at
will in full only for the first few in a window, then only counted). The service decides what a
scan, a sale or an answer means."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from enum import StrEnum
from typing import TypeVar

from edge_app.core import event_bounds, events, payloads, topics
from edge_app.core.pos import PosMessageError, Sale, Scan
from edge_app.core.state import Quarantined
from edge_app.core.times import now_iso

log = logging.getLogger(__name__)
_Message = TypeVar("_Message", Scan, Sale)


class Count(StrEnum):
    """What the service counts (`Service.counts`), besides the events it publishes and the scans
    missed."""

    SCANS_RESTRICTED = "scans_restricted"
    SCANS_REUSED = "scans_reused"  # a repeat scan answered by its transaction's open check
    POS_REJECTED = "pos_rejected"
    MESSAGES_QUARANTINED = "messages_quarantined"
    ACKS_RECEIVED = "acks_received"  # from a standalone display, over the broker


def preview(payload: bytes, n: int = 60) -> str:
    """The start of a payload, quoted, for a log line."""
    text = payload[:n].decode("utf-8", "replace")
    return repr(text) + ("..." if len(payload) > n else "")


class CountedWarnings:
    """Warnings that a sender can repeat at will (bad POS messages): the first `burst` in a
    `window_s` are logged in full, the rest only counted and summed up in one line when the window
    ends: 50,000 bad messages wrote 8.2 MB of log lines in 41 s, one each."""

    def __init__(self, logger: logging.Logger, window_s: float = 60.0, burst: int = 20) -> None:
        self._log = logger
        self.window_s = window_s
        self.burst = burst
        self._lock = threading.Lock()
        self._started: float | None = None  # when the current window began (monotonic)
        self._logged = 0
        self._counted = 0
        self._last = ""
        self._timer: threading.Timer | None = None

    def warning(self, text: str) -> None:
        with self._lock:
            now = time.monotonic()
            if self._started is None or now - self._started >= self.window_s:
                self._flush_locked()
                self._started, self._logged = now, 0
            if self._logged < self.burst:
                self._logged += 1
                self._log.warning("%s", text)
                return
            self._counted += 1
            self._last = text
            if self._timer is None:
                self._timer = threading.Timer(max(0.0, self._started + self.window_s - now), self.flush)
                self._timer.daemon = True
                self._timer.start()

    def flush(self) -> None:
        """Say how many were only counted (at the window's end, and at stop)."""
        with self._lock:
            self._flush_locked()
            self._started = None

    def _flush_locked(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._counted:
            self._log.warning(
                "%d more message(s) quarantined in the last %.0f s, not logged one by one (after %d "
                "in full); the last: %s",
                self._counted,
                self.window_s,
                self.burst,
                self._last,
            )
            self._counted = 0


class Inbound:
    """The service's MQTT callback (`on_message`). A scan is handed to `submit` with the broker's
    ack, so it is acknowledged when its record is stored; anything else is acknowledged as soon
    as it is handled here (a quarantined message too: it is never delivered again)."""

    def __init__(
        self,
        max_bytes: int,
        counts: Counter[Count],
        warnings: CountedWarnings,
        *,
        submit: Callable[[Scan, str, Callable[[], object]], object],
        on_sale: Callable[[Sale], object],
        on_ack: Callable[[events.AckEvent], object],
    ) -> None:
        self.max_bytes = max_bytes
        self.counts = counts
        self.log = warnings
        self.last_quarantined: Quarantined | None = None
        self._submit = submit
        self._on_sale = on_sale
        self._on_ack = on_ack

    def on_message(self, leaf: str, payload: bytes, ack: Callable[[], object]) -> None:
        if leaf == Scan.TOPIC:
            scan = self._parse_pos(Scan.from_payload, payload)
            if scan is None:
                ack()
                return
            self._submit(scan, "pos", ack)
            return
        try:
            self._other(leaf, payload)
        finally:
            ack()

    def _other(self, leaf: str, payload: bytes) -> None:
        if leaf == Sale.TOPIC:
            sale = self._parse_pos(Sale.from_payload, payload)
            if sale is not None:
                self._on_sale(sale)
        elif leaf == topics.event_leaf(events.AckEvent):
            self._remote_ack(payload)
        else:
            log.warning("message on unexpected topic %s dropped", leaf)

    def _parse_pos(self, parse: Callable[[bytes, int], _Message], payload: bytes) -> _Message | None:
        """A POS message parsed, or None after logging why it was dropped (never raises)."""
        try:
            return parse(payload, self.max_bytes)
        except PosMessageError as exc:
            self.counts[Count.POS_REJECTED] += 1
            self.quarantine("pos", str(exc), payload)
            return None

    def quarantine(self, where: str, reason: str, payload: bytes) -> None:
        """A message that cannot be used: logged with its reason and a preview, counted in
        `state`, and acknowledged (by returning normally) so the broker does not send it again."""
        self.counts[Count.MESSAGES_QUARANTINED] += 1
        self.last_quarantined = Quarantined(ts=now_iso(), topic=where, reason=reason[:300])
        said = reason if reason.startswith(where) else f"{where}: {reason}"
        self.log.warning(f"{said}; message quarantined ({len(payload)} bytes: {preview(payload)})")

    def _remote_ack(self, payload: bytes) -> None:
        """A cashier's answer published by a standalone display: the integrity check needs it."""
        try:
            ev = events.decode_event(payload, payloads.Limits(self.max_bytes))
            if not isinstance(ev, events.AckEvent):
                raise event_bounds.SchemaError(f"a {ev.KIND!r} event on the ack topic")
        except (payloads.PayloadError, event_bounds.SchemaError) as exc:
            self.quarantine(topics.event_leaf(events.AckEvent), str(exc), payload)
            return
        self.counts[Count.ACKS_RECEIVED] += 1
        self._on_ack(ev)
