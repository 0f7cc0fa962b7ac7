"""A real small file system that fills up: a tmpfs of a few megabytes mounted for one test (the
tests run as root; where mounting is not allowed the test is skipped with the reason), and a
filler file that takes every free byte until it is removed, and events big enough to fill it."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_app.core import event_parts, events


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "4m") -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], capture_output=True, text=True
    )
    if r.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs for the full-disk test ({r.stderr.strip() or r.returncode}); "
            "it needs root with CAP_SYS_ADMIN"
        )
    try:
        yield where
    finally:
        # Lazy: a file a failed test left open must not leave the mount behind.
        subprocess.run(["umount", "-l", str(where)], check=False)


class Filler:
    """Takes all free space on the file system holding `folder`; `release()` gives it back."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "filler.bin"

    def fill(self) -> int:
        written = 0
        with open(self.path, "ab", buffering=0) as f:
            for chunk in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
                block = b"\0" * chunk
                while True:
                    try:
                        n = f.write(block)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        break
                    written += n
        st = os.statvfs(self.path.parent)
        assert st.f_bavail == 0, f"{self.path.parent} still has {st.f_bavail} free blocks"
        return written

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


def leave_free(filler: Filler, free: int) -> None:
    """Fill the file system, then give back `free` bytes of it: a disk nearly full."""
    filler.fill()
    size = filler.path.stat().st_size
    os.truncate(filler.path, max(0, size - free))


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def bulky_event(txn: str) -> events.MissedEvent:
    """A missed-scan event of about 1 KB (its detail padded), so that a few hundred fill a small disk."""
    return events.MissedEvent(
        store_id="store-001",
        till_id="till-01",
        transaction_id=txn,
        trigger=event_parts.TriggerInfo(source="pos"),
        reason="stale",
        detail="x" * 600,
    )
