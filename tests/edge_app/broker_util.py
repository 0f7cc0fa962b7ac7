"""The one way a test starts Mosquitto: `Broker`, the demo's own LocalBroker (free loopback port,
temporary config, optional persistence across restarts, extra config lines for ACL/TLS/password
tests), skipped with the install hint when Mosquitto is missing. The `mqtt_broker` fixture in
tests/conftest.py is a started `Broker(persistent=True)`."""

from __future__ import annotations

import pytest

from edge_app.devtools.sim import LocalBroker


class Broker(LocalBroker):
    """`with Broker(persistent=True) as b:` ... b.restart() keeps the port and the sessions."""

    def __init__(self, port: int | None = None, persistent: bool = False, extra_config: tuple[str, ...] = ()) -> None:
        try:
            super().__init__(port=port, persistent=persistent, extra_config=extra_config)
        except FileNotFoundError as exc:
            pytest.skip(str(exc))
