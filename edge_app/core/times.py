"""Times on the wire: the one reader and writer of the ISO 8601 times that events and POS messages
carry. Below both `events` and `pos` in core, so each can use it without importing the other."""

from __future__ import annotations

from datetime import UTC, datetime, tzinfo
from typing import Any


def iso_utc(dt: datetime) -> str:
    """An aware time as every producer of ours writes it: UTC, milliseconds, `Z`."""
    return dt.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso_utc(datetime.now(UTC))


def epoch_iso(seconds: float) -> str:
    """Epoch seconds as `iso_utc` writes them (to the millisecond)."""
    return iso_utc(datetime.fromtimestamp(seconds, UTC))


def parse_ts(ts: Any, assume_utc: bool = True) -> datetime | None:
    """An event or POS time (ISO 8601, `Z` or an offset) as an aware datetime; a time without an
    offset is UTC, as every producer of events writes it (with `assume_utc=False` it is None: a
    POS's zoneless time may be local, and guessing would call fresh scans stale). None when it is
    not such a time."""
    if not isinstance(ts, str):
        return None
    try:
        dt = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC) if assume_utc else None
    return dt


def local_dt(ts: Any, tz: tzinfo | None) -> datetime | None:
    """An event time in `tz` (None = this machine's), for a reader's table or report."""
    dt = parse_ts(ts)
    return dt.astimezone(tz) if dt else None
