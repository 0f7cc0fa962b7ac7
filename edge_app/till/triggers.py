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
from concurrent.futures import Future
from dataclasses import dataclass
from enum import StrEnum
from typing import Callable, Literal, TextIO

from edge_app.config import TriggersConfig
from edge_app.core import events
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
    def product(self) -> events.Product:
        """The item as the events describe it: its `min_age` is the age this check applies."""
        return applied_product(self.scan.item, self.min_age)


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
    result: Future | None = None


def parse_scan(payload: bytes | str, max_bytes: int, defaults: Item | None = None) -> Scan:
    """A `pos/scan` payload -> Scan (`edge_app.core.pos.Scan.from_payload`; PosMessageError names
    the problem). With `defaults` (local demo triggers) missing fields are filled in and a
    transaction id is made up; from the POS every field is required. Unknown fields are ignored."""
    return Scan.from_payload(payload, max_bytes, defaults)


def applied_product(item: Item, min_age: int) -> events.Product:
    """What a check or missed event says about a scanned item: the POS's description with the
    legal age the till applied (which may be higher than the POS's own `min_age`)."""
    return events.Product(sku=item.sku, category=item.category, min_age=min_age, name=item.name or None)


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
        self._open: dict[str, tuple[float, Future]] = {}
        self._lock = threading.Lock()

    def open_or_reuse(self, transaction_id: str, now: float) -> tuple[Future, bool]:
        """(future, reused). A new future must be resolved by the caller."""
        with self._lock:
            self._prune(now)
            hit = self._open.get(transaction_id)
            if hit is not None:
                return hit[1], True
            fut: Future = Future()
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

    def start(self) -> "StdinTrigger":
        self._thread = threading.Thread(target=self._run, name="stdin-trigger", daemon=True)
        self._thread.start()
        log.info("stdin trigger: press Enter (or type a JSON scan) to start a check")
        return self

    def _lines(self):
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


@dataclass(frozen=True)
class ClockReading:
    """What one POS scan's `ts` says, read against the till's clock by `PosClock.observe`."""

    age_s: float  # how long the scan took to reach the till, on the till's clock (offset taken off)
    lag_s: float  # receive time minus the POS's `ts`, as the two clocks have it
    confirming: bool  # late by more than the bound, not (yet) taken for skew: maybe held back


@dataclass(frozen=True)
class ClockSkew:
    """A change in what the till says about the POS clock, for the log (once per change)."""

    ahead_s: float  # POS clock minus the till's, seconds (negative: behind)
    named: bool  # beyond the bound now


@dataclass
class _Run:
    """Late scans in a row that agree: when the first arrived, their least and greatest lag."""

    first: float
    lo: float
    hi: float
    count: int = 0


class PosClock:
    """The POS's clock as the till sees it, from the `ts` of the POS's scans (every scan, restricted
    or not), so that a skewed POS clock neither switches the stale rule off nor makes every scan
    stale. `offset_s` is the usual receive-minus-`ts` lag: the POS clock's offset plus the shortest
    delivery delay seen. A scan's age is its lag minus that offset.

    The offset moves down at once: a scan cannot arrive before it was sent, so a lag below the
    offset (a POS clock ahead, or less behind than thought) is clock, not delay, and timing it that
    way only makes later scans older (never hides a late one). It moves up (a POS clock behind, or
    less ahead) only when `confirm_scans` scans in a row are late by more than `bound_s` and agree
    with each other within `bound_s`, received over more than `bound_s` of the till's time: one
    late scan, or a burst the broker held back and hands over at once, is delay, which the stale
    rule must catch. Until then such scans are aged on the old offset (0 at start).

    One-way times cannot tell a constant delivery delay from a clock offset: a link that delays
    every scan by the same 60 s for minutes is taken for a POS clock 60 s behind. Thread-safe."""

    def __init__(self, bound_s: float, confirm_scans: int) -> None:
        self.bound_s = bound_s
        self.confirm_scans = confirm_scans
        self._lock = threading.Lock()
        self._offset = 0.0
        self._seen = False
        self._named = False
        self._named_offset = 0.0
        # The run of late scans, in a row, that may confirm a POS clock behind.
        self._run: _Run | None = None

    @property
    def ahead_s(self) -> float | None:
        """The POS clock minus the till's, as estimated (negative: behind); None before any scan."""
        with self._lock:
            return -self._offset if self._seen else None

    @property
    def skewed(self) -> bool:
        with self._lock:
            return self._named

    def observe(self, sent_at: float, received_at: float) -> tuple[ClockReading, ClockSkew | None]:
        """Read one scan's POS time (`sent_at`) against the till's (`received_at`, epoch seconds):
        its age on the till's clock, and a ClockSkew when what is said about the POS clock changes
        (named, named with another offset, or within the bound again), else None."""
        lag = received_at - sent_at
        with self._lock:
            self._seen = True
            confirming = False
            if lag < self._offset:
                self._offset = lag
                self._run = None
            elif lag - self._offset > self.bound_s:
                run = self._run
                if run is None or max(run.hi, lag) - min(run.lo, lag) > self.bound_s:
                    run = _Run(first=received_at, lo=lag, hi=lag)  # one that disagrees starts afresh
                run.lo, run.hi, run.count = min(run.lo, lag), max(run.hi, lag), run.count + 1
                if run.count >= self.confirm_scans and received_at - run.first > self.bound_s:
                    self._offset = run.lo
                    self._run = None
                else:
                    confirming = True
                    self._run = run
            else:
                self._run = None  # on time under the current offset: the run is not "in a row"
            reading = ClockReading(age_s=lag - self._offset, lag_s=lag, confirming=confirming)
            return reading, self._change()

    def _change(self) -> ClockSkew | None:
        named = abs(self._offset) > self.bound_s
        moved = named and abs(self._offset - self._named_offset) > self.bound_s
        if named == self._named and not moved:
            return None
        self._named, self._named_offset = named, (self._offset if named else 0.0)
        return ClockSkew(ahead_s=-self._offset, named=named)

    def describe(self, skew: ClockSkew | None = None) -> str | None:
        """The skew in words (state's `pos_clock_skew` and the log line), None within the bound."""
        if skew is None:
            with self._lock:
                if not self._named:
                    return None
                skew = ClockSkew(ahead_s=-self._offset, named=True)
        if not skew.named:
            return None
        way = "ahead of" if skew.ahead_s > 0 else "behind"
        return (f"the POS clock is {abs(skew.ahead_s):.0f} s {way} the till's (more than "
                f"triggers.pos_clock_max_skew_seconds={self.bound_s:g}); scans are timed on the till's clock")


def now_pair() -> tuple[float, str]:
    """(monotonic, UTC ISO) for the same moment."""
    return time.monotonic(), now_iso()
