"""A real Mosquitto for the display/feed/integrity tests, as a context manager: the demo's own
LocalBroker (free loopback port, temporary config, optional persistence across restarts), skipped
with the install hint when Mosquitto is missing."""

from __future__ import annotations

import pytest

from edge_app.devtools.sim import LocalBroker


class Broker(LocalBroker):
    """`with Broker(persistent=True) as b:` ... b.restart() keeps the port and the sessions."""

    def __init__(self, persistent: bool = False) -> None:
        try:
            super().__init__(persistent=persistent)
        except FileNotFoundError as exc:
            pytest.skip(str(exc))

    def restart(self, down_s: float = 0.5) -> None:
        super().restart(down_s)
