"""The `scenario` marker: the files tests/conftest.py marks exist, and `-m "not scenario"` leaves
their tests out while keeping the others."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import SCENARIO_FILES
from tests.helpers import REPO


def test_every_scenario_file_is_there():
    missing = sorted(f for f in SCENARIO_FILES if not (REPO / f).is_file())
    assert not missing, f"SCENARIO_FILES names files that are gone: {missing}"


def test_not_scenario_leaves_out_the_scenario_files_only():
    def collected(*args: str) -> set[str]:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "--collect-only",
                "-q",
                *args,
                "tests/edge_app/till/test_killed_scans.py",
                "tests/edge_app/till/test_triggers.py",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return {line.split("::")[0] for line in r.stdout.splitlines() if "::" in line}

    assert collected("-m", "scenario") == {"tests/edge_app/till/test_killed_scans.py"}
    assert collected("-m", "not scenario") == {"tests/edge_app/till/test_triggers.py"}
