"""Files only their owner may read: the till's outbox and the manager's event store both name
transactions and estimated ages, which other local users have no business reading."""

from __future__ import annotations

import os
from pathlib import Path


def create_private(path: Path) -> bool:
    """Create `path` empty with mode 0600 if it does not exist (SQLite then opens it as a new
    database and gives its -wal/-shm files the same mode). True when it was created here."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError:
        return False  # the open that follows names the problem
    os.close(fd)
    return True
