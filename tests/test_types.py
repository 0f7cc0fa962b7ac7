"""The type check as a test: mypy with pyproject.toml's [tool.mypy] (strict on core, transport
and till; mypy's defaults elsewhere) and nothing else. A second run on a copy with a bad
annotation in a strict package and an unannotated function in a lenient one proves where the
check is strict and that it can fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO


def mypy(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy"], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_mypy_passes():
    r = mypy(REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success: no issues found" in r.stdout


def test_strict_packages_refuse_what_the_rest_allows(tmp_path):
    for name in ("edge_app", "pyproject.toml"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    # A strict package: an unannotated function, and a return that lies about its type.
    policy = tmp_path / "edge_app" / "core" / "policy.py"
    policy.write_text(
        policy.read_text() + "\n\ndef _loose(x):\n    return x\n\n\ndef _wrong() -> int:\n    return 'seventeen'\n"
    )
    # A lenient package: the same unannotated function is allowed there.
    banner = tmp_path / "edge_app" / "cashier" / "banner.py"
    banner.write_text(banner.read_text() + "\n\ndef _loose(x):\n    return x\n")
    r = mypy(tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ": error:" in ln]
    assert any(ln.startswith("edge_app/core/policy.py") and "[no-untyped-def]" in ln for ln in lines), r.stdout
    assert any(ln.startswith("edge_app/core/policy.py") and "[return-value]" in ln for ln in lines), r.stdout
    assert not any(ln.startswith("edge_app/cashier/") for ln in lines), r.stdout
    assert len(lines) == 2, r.stdout
