"""Fixtures shared by every test folder.

`mqtt_broker`: a real Mosquitto on a free 127.0.0.1 port, private to one test, with a temporary
config. It yields a started `tests.edge_app.broker_util.Broker` (the demo's LocalBroker, the one
way a test starts Mosquitto): `.host`, `.port`, and `.stop()` / `.start()` / `.restart(down_s)` that
keep the same port, for broker-outage tests. Like a production broker it
persists retained messages and sessions (in its temporary folder) across such a restart, so a
subscriber with a persistent session misses nothing published while it was reconnecting.
Skipped with the install hint when mosquitto is not installed.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def mqtt_broker():
    from tests.edge_app.broker_util import Broker

    with Broker(persistent=True) as broker:
        yield broker
