"""One process per resource on a machine: an exclusive flock on a lock file that holds the owner's
pid. The kernel releases it when the process dies, even by SIGKILL, so a crash never leaves a
stale lock behind; a second process is refused with the first one's pid and command line."""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path


class LockHeld(Exception):
    """Another live process holds the lock; `owner` is its pid and command line, in words."""

    def __init__(self, owner: str) -> None:
        super().__init__(owner)
        self.owner = owner


def take(lp: Path) -> int:
    """Lock `lp` (created 0600 if missing) and write our pid in it; returns the open descriptor
    (closing it releases the lock). Raises LockHeld, or OSError when the file cannot be used."""
    fd = os.open(lp, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        try:
            owner = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
        finally:
            os.close(fd)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EACCES):
            raise
        raise LockHeld(f"pid {owner}{_command(owner)}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _command(pid: str) -> str:
    try:
        with open(f"/proc/{int(pid)}/cmdline", "rb") as f:
            return ", " + f.read(200).replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except (OSError, ValueError):
        return ""
