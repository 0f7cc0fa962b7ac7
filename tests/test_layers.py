"""The architecture as a contract: `lint-imports` (import-linter) checks the layers declared in
pyproject.toml. A second run on a copy with one import turned upside down proves the contract
can fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

LINT = Path(sys.executable).with_name("lint-imports")


def lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"},
    )


def test_layers_hold():
    r = lint(REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "BROKEN" not in r.stdout and r.stdout.count("KEPT") == 4


def test_a_lower_layer_reaching_up_breaks_the_contract(tmp_path):
    for name in ("edge_app", "training", "pyproject.toml"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    policy = tmp_path / "edge_app" / "core" / "policy.py"
    policy.write_text(policy.read_text() + "\nfrom edge_app.till import check  # noqa: E402,F401\n")
    window = tmp_path / "edge_app" / "cashier" / "window.py"
    window.write_text(window.read_text() + "\nfrom edge_app.manager import feed  # noqa: E402,F401\n")
    # Inside one package: the check reaching back to the service that runs it (a circle).
    check = tmp_path / "edge_app" / "till" / "check.py"
    check.write_text(check.read_text() + "\nfrom edge_app.till import service  # noqa: E402,F401\n")
    r = lint(tmp_path)
    assert r.returncode != 0
    assert "edge_app.core.policy -> edge_app.till.check" in r.stdout
    assert "edge_app.cashier.window -> edge_app.manager.feed" in r.stdout
    assert "no import cycle between the modules of any package BROKEN" in r.stdout
    assert "No cycles are allowed in edge_app.till." in r.stdout and ".service -> .check" in r.stdout
