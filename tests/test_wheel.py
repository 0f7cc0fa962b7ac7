"""The wheel is the product: built from a copy of the checkout, installed into a fresh virtual
environment in a temporary folder, it runs `estimate` and `faces` on the demo photo and
`run --demo` for a few checks, with the model, the example config, the unit and the photo all
coming from the wheel, and with none of the checkout on the path.

How the test venv gets its third-party libraries: the wheel is installed with --no-deps into a
new venv (no system site-packages), and only then a .pth file appends the shared test venv's
site-packages to its path, after the venv's own. Downloading ~400 MB of wheels per run would make
this test slow and network-bound; what it proves does not depend on them: everything agecheck
itself needs (code and data) must come from the wheel, because the checkout is deleted and the
shared venv only holds agecheck as an editable install, whose .pth is never processed here. A
guard in the same .pth makes the libraries the till runtime leaves out (scikit-image, SciPy, jax,
TensorFlow, ..., and the [manager] extra's Flask, waitress and psycopg) unimportable, so a command
that still needed one fails. A second venv from the same wheel stands for a manager's computer
(`pip install 'agecheck[manager]'`): there the dashboard serves its page and Chart.js from the
wheel's package data. The lock file's real, minimal runtime is exercised by the Debian package
test (tests/test_deb.py).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import urllib.request
import zipfile
from pathlib import Path

import pytest

from edge_app import resources
from tests.helpers import REPO, demo_checks

# Libraries the till runtime does without (issue 18); importing one in the venv is an error.
LEFT_OUT = ("skimage", "scipy", "jax", "jaxlib", "tensorflow", "sentencepiece", "sounddevice", "pandas")
# The [manager] extra (setup.py): not on a till, present on a manager's computer.
MANAGER_EXTRA = ("flask", "werkzeug", "waitress", "psycopg")
# The dashboard's package data (edge_app/manager/templates and static/ in the checkout).
DASHBOARD_FILES = (
    "edge_app/manager/templates/dashboard.html",
    "edge_app/manager/static/chart.umd.min.js",
    "edge_app/manager/static/dashboard.js",
    "edge_app/manager/static/chart.js-LICENSE.md",
)

GUARD = """
import importlib.abc, sys
class _LeftOut(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {left_out!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not in the till runtime)", name=name)
sys.meta_path.insert(0, _LeftOut())
"""


def checkout_copy(dest: Path) -> Path:
    """The files a clean checkout has (tracked, plus new files not yet committed)."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs the git checkout")
    names = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for name in names:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = checkout_copy(tmp_path_factory.mktemp("checkout"))
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    shutil.rmtree(src)  # no checkout to fall back on from here
    (whl,) = out.glob("agecheck-*.whl")
    return whl


def make_venv(wheel: Path, root: Path, left_out: tuple[str, ...]) -> Path:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    py = root / "bin" / "python"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    site = Path(
        subprocess.run(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "_till_only.py").write_text(GUARD.format(left_out=set(left_out)))
    shared = sysconfig.get_paths()["purelib"]
    (site / "zz_shared_libraries.pth").write_text(f"{shared}\nimport _till_only\n")
    return root


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A till's install: the wheel without extras."""
    return make_venv(wheel, tmp_path_factory.mktemp("venv") / "v", LEFT_OUT + MANAGER_EXTRA)


@pytest.fixture(scope="module")
def manager_venv(wheel, tmp_path_factory) -> Path:
    """A manager's computer: the same wheel with its [manager] extra."""
    return make_venv(wheel, tmp_path_factory.mktemp("venv") / "m", LEFT_OUT)


def run(venv: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AGECHECK_CONFIG")}
    return subprocess.run(
        [str(venv / "bin" / "agecheck"), *args],
        capture_output=True,
        text=True,
        cwd=venv.parent,
        env=env,
        timeout=timeout,
    )


def installed_photo(venv: Path) -> Path:
    (photo,) = venv.glob("lib/python3*/site-packages/edge_app/data/astronaut.png")
    return photo


def test_the_wheel_holds_the_model_card_config_unit_photo_and_licences(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for item in resources.ALL:
        assert f"edge_app/data/{item.packaged}" in names, item
    assert not any("float32" in n for n in names)  # the comparison model stays in the checkout
    # Training runs from the checkout; a till's Python gets no top-level `training` package.
    assert not any(n.startswith("training/") for n in names), sorted(n for n in names if n.startswith("training/"))
    assert (
        "training"
        not in zipfile.ZipFile(wheel)
        .read(next(n for n in names if n.endswith(".dist-info/top_level.txt")))
        .decode()
        .split()
    )
    assert any(n.endswith(".dist-info/LICENSE") or n.endswith("licenses/LICENSE") for n in names)
    assert any(n.endswith("NOTICE") for n in names)
    for name in DASHBOARD_FILES:
        assert name in names, name
        assert zipfile.ZipFile(wheel).read(name) == (REPO / name).read_bytes(), name
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "scikit-image" not in meta and "Requires-Dist: mediapipe==0.10.21" in meta
    # The web dashboard and PostgreSQL driver are asked for by the extra only, never by a till.
    requires = [ln for ln in meta.splitlines() if ln.startswith("Requires-Dist:")]
    for lib in ("flask", "waitress", "psycopg"):
        (line,) = [ln for ln in requires if ln.lower().startswith(f"requires-dist: {lib}")]
        assert 'extra == "manager"' in line, line


def test_agecheck_comes_from_the_wheel_not_the_checkout(venv):
    py = venv / "bin" / "python"
    r = subprocess.run(
        [
            str(py),
            "-c",
            "import edge_app, edge_app.resources as r\n"
            "print(edge_app.__file__)\nprint(r.model_path())\nprint(r.path(r.EXAMPLE_CONFIG))\n"
            "print(r.path(r.SYSTEMD_UNIT))",
        ],
        capture_output=True,
        text=True,
        cwd=venv.parent,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    for line in r.stdout.splitlines():
        assert line.startswith(str(venv)), line
    blocked = subprocess.run([str(py), "-c", "import skimage"], capture_output=True, text=True, timeout=60)
    assert blocked.returncode != 0 and "not in the till runtime" in blocked.stderr


def test_estimate_and_faces_on_the_demo_photo(venv):
    photo = installed_photo(venv)
    r = run(venv, "estimate", str(photo))
    assert r.returncode == 0, r.stderr
    assert "1 face(s)" in r.stdout and "age " in r.stdout and "Challenge 25" in r.stdout
    assert r.stderr == ""  # a quiet journal: no native start-up chatter
    r = run(venv, "faces", str(photo))
    assert r.returncode == 0, r.stderr
    assert "1 face(s) in 512x512" in r.stdout and "gate: usable" in r.stdout
    assert run(venv, "--version").stdout.startswith("agecheck ")


def test_run_demo_makes_checks_and_stops_cleanly(venv):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AGECHECK_CONFIG")}
    proc = subprocess.Popen(
        [str(venv / "bin" / "agecheck"), "run", "--demo"],
        cwd=venv.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    checks, out, err = demo_checks(proc)
    assert len(checks) >= 2, err
    assert all(("APPROVE" in c or "CHECK ID" in c) and "age " in c for c in checks), checks
    assert proc.returncode == 0, err
    assert "stopped after" in out


def test_the_dashboard_on_a_till_names_the_extra_to_install(venv):
    r = run(venv, "dashboard", "--port", "0", timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "flask and waitress" in r.stderr and "pip install 'agecheck[manager]'" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    pg = run(venv, "report", "--db", "postgresql://manager@127.0.0.1:1/agecheck", timeout=120)
    assert pg.returncode == 2 and "psycopg" in pg.stderr and "agecheck[manager]" in pg.stderr, pg.stderr


def test_the_dashboard_serves_its_page_and_chart_js_from_the_wheel(manager_venv, tmp_path):
    from edge_app.manager.store import FeedStore

    db = tmp_path / "feed.sqlite3"
    FeedStore(db).close()  # an empty store, as a new feed leaves it
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AGECHECK_CONFIG")}
    proc = subprocess.Popen(
        [str(manager_venv / "bin" / "agecheck"), "dashboard", "--db", str(db), "--port", "0"],
        cwd=manager_venv.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the start-up line, once it listens (empty if it exited)
        m = re.search(r"(http://127\.0\.0\.1:\d+/)", first)
        assert m, first or proc.communicate(timeout=30)[1]
        page = urllib.request.urlopen(m.group(1), timeout=30).read().decode()
        # Relative, so the page also works behind a reverse proxy's sub-path.
        assert '"static/chart.umd.min.js"' in page and '"static/dashboard.js"' in page
        for name in ("chart.umd.min.js", "dashboard.js"):
            served = urllib.request.urlopen(m.group(1) + "static/" + name, timeout=30).read()
            assert served == (REPO / "edge_app" / "manager" / "static" / name).read_bytes(), name
        # The files came from the installed wheel, not from the checkout.
        (static,) = manager_venv.glob("lib/python3*/site-packages/edge_app/manager/static")
        assert (static / "chart.umd.min.js").is_file()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
