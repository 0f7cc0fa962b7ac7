"""Fixtures shared by every test folder.

`mqtt_broker`: a real Mosquitto on a free 127.0.0.1 port, private to one test, with a temporary
config. It yields a started `tests.edge_app.broker_util.Broker` (the demo's LocalBroker, the one
way a test starts Mosquitto): `.host`, `.port`, and `.stop()` / `.start()` / `.restart(down_s)` that
keep the same port, for broker-outage tests. Like a production broker it
persists retained messages and sessions (in its temporary folder) across such a restart, so a
subscriber with a persistent session misses nothing published while it was reconnecting.
Skipped with the install hint when mosquitto is not installed.

The `scenario` marker (registered in pyproject.toml) is put here on the test files that run
whole scenarios: programs as real processes killed and restarted, chains of brokers, the shipped
broker ACLs, the window under real window managers, the built wheel and .deb. They are listed
here rather than marked in each file so the list is one place to read; `scripts/test -m "not
scenario"` runs the rest, the quick unit layer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SCENARIO_FILES = frozenset(
    {
        "tests/test_deb.py",
        "tests/test_wheel.py",
        "tests/edge_app/cashier/test_isolated.py",
        "tests/edge_app/cashier/test_standalone.py",
        "tests/edge_app/cashier/test_window_manager.py",
        "tests/edge_app/devtools/test_demo.py",
        "tests/edge_app/manager/test_broker_persistence.py",
        "tests/edge_app/manager/test_chain.py",
        "tests/edge_app/manager/test_feed_faults.py",
        "tests/edge_app/manager/test_feed_lock.py",
        "tests/edge_app/till/test_broker_acl.py",
        "tests/edge_app/till/test_broker_sessions.py",
        "tests/edge_app/till/test_integrity_service.py",
        "tests/edge_app/till/test_killed_scans.py",
        "tests/edge_app/till/test_missed_scans.py",
        "tests/edge_app/till/test_service_disk_full.py",
        "tests/edge_app/till/test_service_process.py",
    }
)
_ROOT = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.path).resolve().relative_to(_ROOT).as_posix() in SCENARIO_FILES:
            item.add_marker(pytest.mark.scenario)


@pytest.fixture
def mqtt_broker():
    from tests.edge_app.broker_util import Broker

    with Broker(persistent=True) as broker:
        yield broker
