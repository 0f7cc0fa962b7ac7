"""Triggers: what starts an age check. Owns the decision whether a scanned item is age restricted,
the per-transaction memory that lets repeat scans reuse the open result, and the two local demo
triggers' common part and the stdin one (a line on stdin); the HTTP endpoint bound to 127.0.0.1
is edge_app.till.http_trigger. Both are off by default.

The `pos/scan` and `pos/sale` messages themselves (fields, parser, writer) are declared in
`edge_app.core.pos`; what a completed sale means is `edge_app.till.integrity`'s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal, Protocol, TextIO

from edge_app.config import TriggersConfig
from edge_app.core import event_parts, events
from edge_app.core.pos import Item, PosMessageError, Scan
from edge_app.core.times import now_iso

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Trigger:
    """A restricted scan accepted for a check."""

    scan: Scan
    source: Literal["pos", "http", "stdin"]
    min_age: int  # legal age that applies to this item
    received: float  # time.monotonic() on arrival: the check looks back from here
    received_ts: str  # the same moment as UTC ISO 8601, for the event

    @property
    def product(self) -> event_parts.Product:
        """The item as the events describe it: its `min_age` is the age this check applies."""
        return applied_product(self.scan.item, self.min_age)


class Outcome(Protocol):
    """What a check's future resolves to, as far as a trigger reads it (`check.CheckOutcome`,
    which imports this module, so it is described here rather than named)."""

    @property
    def check(self) -> events.CheckEvent: ...

    @property
    def alert(self) -> events.AlertEvent | None: ...


class SubmissionStatus(StrEnum):
    """What became of a scan handed to the service (the HTTP trigger answers with the word)."""

    STARTED = "started"  # a check runs for it
    REUSED = "reused"  # its transaction's open check answers it
    NOT_RESTRICTED = "not_restricted"
    BUSY = "busy"  # too many checks waiting: recorded as missed, ask for ID
    MISSED = "missed"  # no check (stale scan, the service stopping): recorded as missed


@dataclass(frozen=True)
class Submission:
    """What happened to a scan handed to the service."""

    status: SubmissionStatus
    detail: str
    # Resolves to the CheckOutcome of the (new or reused) check; None when no check applies.
    result: Future[Outcome] | None = None


def parse_scan(payload: bytes | str, max_bytes: int, defaults: Item | None = None) -> Scan:
    """A `pos/scan` payload -> Scan (`edge_app.core.pos.Scan.from_payload`; PosMessageError names
    the problem). With `defaults` (local demo triggers) missing fields are filled in and a
    transaction id is made up; from the POS every field is required. Unknown fields are ignored."""
    return Scan.from_payload(payload, max_bytes, defaults)


def applied_product(item: Item, min_age: int) -> event_parts.Product:
    """What a check or missed event says about a scanned item: the POS's description with the
    legal age the till applied (which may be higher than the POS's own `min_age`)."""
    return event_parts.Product(sku=item.sku, category=item.category, min_age=min_age, name=item.name or None)


def restriction(item: Item, cfg: TriggersConfig, default_age: int) -> int | None:
    """The legal age that applies when the item is age restricted, else None. Restricted when its
    category or SKU is listed in the config, or when the POS sends a min_age; the highest age
    named by any of them wins."""
    ages: list[int] = []
    if item.min_age:
        ages.append(item.min_age)
    cat = item.category.casefold()
    ages += [rc.min_age for rc in cfg.restricted_categories if rc.category.casefold() == cat]
    if item.sku in cfg.restricted_skus:
        ages.append(default_age)
    return max(ages) if ages else None


def default_item(cfg: TriggersConfig) -> Item:
    """What a bare local trigger (empty line, empty POST) scans: the first restricted category."""
    if cfg.restricted_categories:
        rc = cfg.restricted_categories[0]
        return Item("local-test", rc.category, rc.min_age)
    return Item("local-test", "alcohol", 18)


class TransactionMemory:
    """Open checks per transaction: a repeat scan within `reuse_seconds` of a check (even one
    still running) gets that check's result instead of a new one. Thread-safe."""

    def __init__(self, reuse_seconds: float, max_open: int = 1000):
        self.reuse_seconds = reuse_seconds
        self.max_open = max_open
        self._open: dict[str, tuple[float, Future[Outcome]]] = {}
        self._lock = threading.Lock()

    def open_or_reuse(self, transaction_id: str, now: float) -> tuple[Future[Outcome], bool]:
        """(future, reused). A new future must be resolved by the caller."""
        with self._lock:
            self._prune(now)
            hit = self._open.get(transaction_id)
            if hit is not None:
                return hit[1], True
            fut: Future[Outcome] = Future()
            self._open[transaction_id] = (now, fut)
            if len(self._open) > self.max_open:
                # A POS that never closes transactions must not grow this without bound.
                oldest = min(self._open, key=lambda k: self._open[k][0])
                del self._open[oldest]
            return fut, False

    def close(self, transaction_id: str) -> None:
        """The sale is done: a later scan with the same id starts a fresh check."""
        with self._lock:
            self._open.pop(transaction_id, None)

    def _prune(self, now: float) -> None:
        for k in [k for k, (t, f) in self._open.items() if f.done() and now - t > self.reuse_seconds]:
            del self._open[k]

    def __len__(self) -> int:
        with self._lock:
            return len(self._open)


SubmitFn = Callable[[Scan, str], Submission]


class StdinTrigger:
    """Local demo trigger: each line on the stream starts a check. An empty line scans the
    default restricted item; a line of JSON is read like a pos/scan payload."""

    def __init__(self, stream: TextIO, submit: SubmitFn, cfg: TriggersConfig):
        self._stream = stream
        self._submit = submit
        self._defaults = default_item(cfg)
        self._max_bytes = cfg.max_payload_bytes
        self._thread: threading.Thread | None = None

    def start(self) -> StdinTrigger:
        self._thread = threading.Thread(target=self._run, name="stdin-trigger", daemon=True)
        self._thread.start()
        log.info("stdin trigger: press Enter (or type a JSON scan) to start a check")
        return self

    def _lines(self) -> Iterator[bytes]:
        """Each line as bytes, cut at max_payload_bytes + 1 so one endless line cannot fill the
        memory; bytes (the binary buffer under a text stream) so a line that is not UTF-8 is one
        bad line instead of an exception inside the stream's iterator."""
        binary = getattr(self._stream, "buffer", None)
        if binary is not None:
            read = binary.readline
        else:

            def read(n: int) -> bytes:
                return self._stream.readline(n).encode("utf-8", "surrogatepass")

        limit = self._max_bytes + 1
        while True:
            line = read(limit)
            if not line:
                return
            if len(line) >= limit and not line.endswith(b"\n"):
                rest = line
                while rest and not rest.endswith(b"\n"):  # drop the rest of this line unread
                    rest = read(limit)
            yield line

    def _run(self) -> None:
        # A daemon thread: a blocked readline() must not hold up shutdown, so there is no stop().
        for line in self._lines():
            try:
                scan = parse_scan(line.strip(), self._max_bytes, self._defaults)
            except PosMessageError as exc:
                log.warning("%s; stdin line ignored", exc)
                continue
            try:
                sub = self._submit(scan, "stdin")
            except Exception:  # one failed submit must not end the trigger
                log.exception("stdin scan %s could not be submitted", scan.transaction_id)
                continue
            log.info("stdin scan %s: %s", scan.transaction_id, sub.detail)
        log.info("stdin closed: the stdin trigger stops (the service goes on)")


def now_pair() -> tuple[float, str]:
    """(monotonic, UTC ISO) for the same moment."""
    return time.monotonic(), now_iso()
