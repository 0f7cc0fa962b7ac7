"""The POS's clock as the till sees it: every POS scan with a `ts` is a reading of it; an offset
beyond triggers.pos_clock_max_skew_seconds, confirmed by pos_clock_confirm_scans scans in a row,
is named (logged once, put in `state`) and scans are then aged on the till's own clock."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


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
        return (
            f"the POS clock is {abs(skew.ahead_s):.0f} s {way} the till's (more than "
            f"triggers.pos_clock_max_skew_seconds={self.bound_s:g}); scans are timed on the till's clock"
        )

    def scan_age(self, sent_at: float, reading: ClockReading | None) -> tuple[float, str]:
        """How old a scan is on the till's clock, and how that was reached (for the `missed`
        detail). The POS's scans are aged by the POS clock's estimated offset; the local
        triggers' `ts` (no reading) come from this machine's own clock and are taken as they are."""
        if reading is None:
            return time.time() - sent_at, ""
        if abs(reading.lag_s - reading.age_s) > self.bound_s:
            return reading.age_s, f" (on the till's clock, {reading.lag_s:.0f} s by the POS's skewed one)"
        return reading.age_s, ""

    def log_change(self, change: ClockSkew, max_scan_age_s: float) -> None:
        """One log line for a change in what the POS clock says (skew named, moved, gone)."""
        if change.named:
            log.warning(
                "%s; a scan is stale when it is more than triggers.max_scan_age_seconds=%g late on that offset",
                self.describe(change),
                max_scan_age_s,
            )
        else:
            log.info("the POS clock is within %g s of the till's again (%+.1f s)", self.bound_s, change.ahead_s)
