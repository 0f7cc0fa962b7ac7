"""A manager's computer gets the manager's side only: a fresh virtual environment, the two pip
commands of docs/manager.md run from a clean copy of the checkout (the libraries from
requirements/manager.in, then agecheck itself without its till dependencies), measured with
scripts/runtime-size against a ceiling of 150 MB. In it `agecheck feed`, `report` and
`dashboard` work (the report on a stored day, the dashboard serving its page) while no camera,
vision or model package is installed or imported.

The libraries come from the package index through pip (its cache makes a second run quick);
without a network the test is skipped, saying so."""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.test_lock import norm

LIMIT_MB = 150
# The till's camera, vision and model stack, and the numeric libraries only it needs.
NOT_WANTED = ("mediapipe", "cv2", "tensorflow", "ai_edge_litert", "jax", "numpy", "matplotlib", "PIL")
DAY = "2025-03-14"


def _index_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def _run(cmd: list, cwd: Path, env: dict, timeout: float = 600) -> str:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def manager_venv(tmp_path_factory) -> tuple[Path, dict]:
    if not _index_reachable():
        pytest.skip(
            "the manager-only install is tested by installing from the package index (pypi.org), "
            "which this machine cannot reach"
        )
    from tests.test_wheel import checkout_copy

    src = checkout_copy(tmp_path_factory.mktemp("checkout"))
    venv = tmp_path_factory.mktemp("manager") / "venv"
    # Nothing of the test's own environment leaks in: no PYTHONPATH to the checkout.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "venv", venv], src, env, 120)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run([*pip, "-r", "requirements/manager.in"], src, env)
    _run([*pip, "--no-deps", "."], src, env)
    return venv, env


def test_the_manager_install_is_small_and_has_no_vision(manager_venv):
    venv, env = manager_venv
    out = _run([sys.executable, REPO / "scripts" / "runtime-size", "--max-mb", str(LIMIT_MB), venv], REPO, env)
    total = float(re.search(r"([\d.]+) MB\s+venv total", out).group(1))
    print(f"manager-only venv: {total} MB")  # shown with -s; docs/manager.md quotes it
    assert total <= LIMIT_MB
    installed = {norm(n) for n in re.findall(r"MB\s+(\S+) \S+$", out, re.M)}
    assert {"flask", "waitress", "psycopg", "paho-mqtt", "agecheck"} <= installed, installed
    assert not installed & {
        "mediapipe",
        "opencv-contrib-python",
        "opencv-contrib-python-headless",
        "opencv-python",
        "tensorflow",
        "tensorflow-cpu",
        "ai-edge-litert",
        "numpy",
        "matplotlib",
        "jax",
        "pillow",
    }, installed
    found = _run(
        [
            venv / "bin" / "python",
            "-c",
            f"import importlib.util as u, sys; print([m for m in {NOT_WANTED!r} if u.find_spec(m)])",
        ],
        venv,
        env,
    )
    assert found.strip() == "[]", found


def test_feed_report_and_dashboard_run_there(manager_venv, tmp_path):
    venv, env = manager_venv
    from tests.edge_app.manager.test_report import store_day

    db = tmp_path / "feed.sqlite3"
    store_day(db)  # written by the test's own environment; read by the manager's
    agecheck = venv / "bin" / "agecheck"
    for command in ("feed", "report", "dashboard"):
        assert f"usage: agecheck {command}" in _run([agecheck, command, "--help"], tmp_path, env, 120)
    out = _run(
        [agecheck, "report", "--db", db, "--since", DAY, "--until", DAY, "--out", tmp_path / "week"], tmp_path, env, 120
    )
    assert "ID checked on 60% of alerts (3 of 5)" in out
    assert (tmp_path / "week" / "report.html").is_file() and (tmp_path / "week" / "age_bands.svg").is_file()
    # Every manager module loads without the till's stack.
    loaded = _run(
        [
            venv / "bin" / "python",
            "-c",
            "import sys, edge_app.cli, edge_app.manager.feed, "
            "edge_app.manager.report, edge_app.manager.dashboard, edge_app.manager.copy; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({NOT_WANTED!r})))",
        ],
        tmp_path,
        env,
    )
    assert loaded.strip() == "[]", loaded
    # A till's command says what is missing instead of a traceback.
    r = subprocess.run(
        [str(agecheck), "estimate", str(REPO / "edge_app" / "data" / "astronaut.png")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "needs the till's libraries" in r.stderr and "Traceback" not in r.stderr, r.stderr

    dash = subprocess.Popen(
        [str(agecheck), "dashboard", "--db", str(db), "--port", "0"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in dash.stdout], daemon=True).start()
    try:
        url = None
        while url is None:
            line = lines.get(timeout=60)
            if m := re.search(r"agecheck dashboard: (http://\S+/)", line):
                url = m.group(1)
        with urllib.request.urlopen(f"{url}?since={DAY}&until={DAY}", timeout=30) as r:
            assert r.status == 200 and "ID checked" in r.read().decode("utf-8")
    finally:
        dash.terminate()
        dash.wait(timeout=30)


def test_manager_requirements_are_in_step_with_setup_py():
    """Each line of requirements/manager.in is setup.py's own requirement, word for word."""
    setup = (REPO / "setup.py").read_text()
    wanted = [
        line.strip()
        for line in (REPO / "requirements" / "manager.in").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert wanted
    for req in wanted:
        assert f'"{req}"' in setup, f"{req} (requirements/manager.in) is not a requirement in setup.py"
