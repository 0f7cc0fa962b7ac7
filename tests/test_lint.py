"""The lint as a test: `ruff check` with pyproject.toml's [tool.ruff] over the whole checkout. A
second run on a copy with an unused import and imports out of order proves it can fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

RUFF = Path(sys.executable).with_name("ruff")


def ruff(cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUFF), "check", "--no-cache", "--output-format", "concise"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ruff_passes():
    r = ruff(REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_an_unused_or_misplaced_import_fails(tmp_path):
    for name in ("edge_app", "pyproject.toml"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    times = tmp_path / "edge_app" / "core" / "times.py"
    text = times.read_text()
    # Two imports nothing uses, out of order, in a block apart from the module's sorted one.
    times.write_text(
        text.replace(
            "from __future__ import annotations\n", "from __future__ import annotations\n\nimport zlib\nimport os\n", 1
        )
    )
    r = ruff(tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "edge_app/core/times.py" in r.stdout
    assert "F401" in r.stdout and "I001" in r.stdout, r.stdout
