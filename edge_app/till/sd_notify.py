"""systemd notification: READY/STATUS/WATCHDOG/STOPPING through `sdnotify` (pure Python, no
libsystemd needed), and the watchdog feeder that pings only while every loop it watches is alive.
Outside systemd ($NOTIFY_SOCKET unset) every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

import sdnotify

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._sd = sdnotify.SystemdNotifier()
        self.watchdog_seconds = self._watchdog_seconds()

    @staticmethod
    def _watchdog_seconds() -> float | None:
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        # WATCHDOG_PID names the process systemd expects pings from; a child must not ping.
        if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
            return None
        try:
            value = int(usec) / 1e6
        except ValueError:
            log.warning("ignoring WATCHDOG_USEC=%r: not a number", usec)
            return None
        return value if value > 0 else None

    def _send(self, text: str) -> None:
        if self.enabled:
            self._sd.notify(text)

    def ready(self, status: str) -> None:
        self._send(f"READY=1\nSTATUS={status}")

    def status(self, status: str) -> None:
        self._send(f"STATUS={status}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1\nSTATUS=stopping")


class WatchdogFeeder:
    """Pings the systemd watchdog every `watchdog_seconds / 4`, but only while every heartbeat it
    watches has moved within `watchdog_seconds / 2`. A hung camera or check loop thus stops the
    pings and systemd restarts the service (WatchdogSec= in the unit)."""

    def __init__(
        self,
        notifier: Notifier,
        heartbeats: dict[str, Callable[[], float]],
        clock: Callable[[], float] = time.monotonic,
    ):
        self.notifier = notifier
        self.heartbeats = heartbeats
        self.clock = clock
        self.period = (notifier.watchdog_seconds or 0) / 4
        self.stale_after = (notifier.watchdog_seconds or 0) / 2
        self._last_ping = -float("inf")
        self._stalled: set[str] = set()

    @property
    def active(self) -> bool:
        return self.period > 0

    def stale(self, now: float | None = None) -> list[str]:
        now = self.clock() if now is None else now
        return [name for name, hb in self.heartbeats.items() if now - hb() > self.stale_after]

    def tick(self) -> bool:
        """Call often (every second or so). Returns True when it pinged."""
        if not self.active:
            return False
        now = self.clock()
        stale = self.stale(now)
        for name in set(stale) - self._stalled:
            log.error(
                "%s loop has not moved for more than %.0f s: no more watchdog pings, systemd will restart the service",
                name,
                self.stale_after,
            )
        for name in self._stalled - set(stale):
            log.warning("%s loop is moving again: watchdog pings resume", name)
        self._stalled = set(stale)
        if stale or now - self._last_ping < self.period:
            return False
        self.notifier.watchdog()
        self._last_ping = now
        return True
