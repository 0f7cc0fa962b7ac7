"""The outbox's guard against a full disk: a bounded write-ahead log (WAL_MAX_BYTES) and
RESERVE_BYTES preallocated beside the outbox (`PATH.reserve`), given up when a write fails for
lack of space so that a checkpoint can always complete and delivered events can still be removed,
and taken back once RESUME_FREE_BYTES are free. The SQLite queue it guards is
`edge_app.transport.outbox`."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

# The write-ahead log is checkpointed when it reaches this size and truncated back to it: a commit
# of one event writes 3-4 pages (16 KB), so this is a checkpoint every ~15 events (one more fsync
# of the database file), and a checkpoint never needs more than this much new space.
WAL_MAX_BYTES = 256 * 1024
# Kept on the outbox's file system (a preallocated file beside it) for the outbox's own
# housekeeping on a full disk: twice what a checkpoint can need, so one always completes.
RESERVE_BYTES = 2 * WAL_MAX_BYTES
# After giving the reserve up, events are written again once this much is free: the reserve taken
# back plus room for a full log (so 1 MB given back is always enough).
RESUME_FREE_BYTES = RESERVE_BYTES + WAL_MAX_BYTES


def is_full(exc: sqlite3.Error) -> bool:
    """SQLite's "database or disk is full" (SQLITE_FULL, also what ENOSPC on the WAL gives)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return (code is not None and code & 0xFF == sqlite3.SQLITE_FULL) or "disk is full" in str(exc)


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


class SpaceGuard:
    """The reserve beside one outbox file, and whether new events are refused for lack of space.
    `checkpoint()` is the outbox's: it writes the log back and truncates it, True when done. The
    outbox calls it under its own lock."""

    def __init__(self, path: Path, checkpoint: Callable[[], bool]) -> None:
        self.path = path
        self._checkpoint = checkpoint
        # True from giving the reserve up on a full disk until it is taken back (new events refused).
        self.low_space = not self.take_reserve()

    @property
    def reserve_path(self) -> Path:
        return self.path.with_name(self.path.name + ".reserve")

    def take_reserve(self) -> bool:
        """Preallocate RESERVE_BYTES in `PATH.reserve` (blocks really taken, not a sparse file, so
        another program filling the disk cannot take them). False when there is not room."""
        rp = self.reserve_path
        try:
            fd = os.open(rp, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as exc:
            log.warning("outbox %s: cannot create its space reserve %s (%s)", self.path, rp, exc.strerror)
            return False
        try:
            if os.fstat(fd).st_blocks * 512 >= RESERVE_BYTES:
                return True
            os.posix_fallocate(fd, 0, RESERVE_BYTES)
            return True
        except OSError:
            os.ftruncate(fd, 0)  # a partial reserve would only take space from the events
            return False
        finally:
            os.close(fd)

    def _give_up_reserve(self) -> None:
        try:
            os.truncate(self.reserve_path, 0)
        except OSError:
            pass

    def relieve(self) -> None:
        """A write failed for lack of space: checkpoint and truncate the log; when even that cannot
        be written, give the reserve up so that it can, and stop taking events until
        RESUME_FREE_BYTES are free (the reserve stays for removing delivered ones)."""
        if self._checkpoint() and free_bytes(self.path.parent) >= WAL_MAX_BYTES:
            return
        self._give_up_reserve()
        done = self._checkpoint()
        if not self.low_space:
            self.low_space = True
            log.warning(
                "outbox %s: the disk is full; gave up the outbox's %d KB reserve%s; new events are held "
                "in memory until %d KB are free",
                self.path,
                RESERVE_BYTES // 1024,
                " to shrink its log" if done else " (its log still cannot be written back)",
                RESUME_FREE_BYTES // 1024,
            )

    def refusal(self) -> str | None:
        """Before storing an event after the reserve was given up: why it is refused, or None. The
        outbox resumes only once RESUME_FREE_BYTES are free and the reserve is taken back."""
        if not self.low_space:
            return None
        free = free_bytes(self.path.parent)
        if free < RESUME_FREE_BYTES or not self.take_reserve():
            return (
                f"outbox {self.path}: the disk is full ({free // 1024} KB free; the outbox writes again once "
                f"{RESUME_FREE_BYTES // 1024} KB are free)"
            )
        self.low_space = False
        log.warning("outbox %s: %d KB free again; reserve taken back, storing events", self.path, free // 1024)
        return None
