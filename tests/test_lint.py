"""The lint and the format as tests: `ruff check` and `ruff format --check` with pyproject.toml's
[tool.ruff] over the whole checkout. Runs on a copy with an unused import out of order, and with a
line written unlike the formatter, prove each can fail."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO

RUFF = Path(sys.executable).with_name("ruff")


def ruff(cwd: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUFF), *(command or ("check", "--output-format", "concise")), "--no-cache"],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_ruff_passes():
    r = ruff(REPO)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_code_is_formatted():
    r = ruff(REPO, "format", "--check")
    assert r.returncode == 0, "run `.venv/bin/ruff format` and commit:\n" + r.stdout + r.stderr


def test_a_line_written_unlike_the_formatter_fails(tmp_path):
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "edge_app").mkdir()
    times = tmp_path / "edge_app" / "times.py"
    times.write_text((REPO / "edge_app" / "core" / "times.py").read_text().replace("import ", "import  ", 1))
    r = ruff(tmp_path, "format", "--check")
    assert r.returncode == 1 and "times.py" in r.stdout, r.stdout + r.stderr


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
