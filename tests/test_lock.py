"""The till runtime's lock file and its size script: every runtime dependency of setup.py is
pinned with a hash, the libraries the till does without are not, and scripts/runtime-size
measures a virtual environment and enforces a ceiling."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from tests.helpers import REPO

LOCK = REPO / "requirements" / "till.lock"
# What the runtime leaves out, with the reason in requirements/till-nodeps.in; and the [manager]
# extra of setup.py (the dashboard and PostgreSQL run on a manager's computer, not the till).
LEFT_OUT = {
    "jax",
    "jaxlib",
    "sentencepiece",
    "sounddevice",
    "scikit-image",
    "scipy",
    "ml-dtypes",
    "tensorflow",
    "tensorflow-cpu",
    "opencv-contrib-python",
    "flask",
    "werkzeug",
    "waitress",
    "psycopg",
    "psycopg-binary",
}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    text = LOCK.read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\\n    --hash=sha256:[0-9a-f]{64}$", text, re.M))
    assert len(pins) == len(re.findall(r"==", text)), "every pin has a sha256 hash on the next line"
    return {norm(k): v for k, v in pins.items()}


def install_requires() -> list[str]:
    setup = (REPO / "setup.py").read_text()
    block = setup.split("install_requires=[", 1)[1].split("],", 1)[0]
    return [re.split(r"[<>=!; \[]", s, maxsplit=1)[0] for s in re.findall(r'^\s*"([^"]+)",', block, re.M)]


def test_every_runtime_dependency_is_locked_and_the_left_out_ones_are_not():
    pins = locked()
    for name in install_requires():
        # The lock uses the headless build of the same OpenCV (requirements/till.in says why).
        want = "opencv-contrib-python-headless" if norm(name) == "opencv-contrib-python" else norm(name)
        assert want in pins, f"{name} from setup.py is not in {LOCK.name}"
    assert not LEFT_OUT & set(pins), LEFT_OUT & set(pins)
    assert pins["mediapipe"] == "0.10.21" and pins["numpy"].startswith("1.") and pins["protobuf"].startswith("4.")


def test_runtime_size_prints_each_package_and_the_total(tmp_path):
    venv = tmp_path / "v"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = next(venv.glob("lib/python3*/site-packages"))
    # A one-file distribution of known size, as pip would record it.
    (site / "blob.bin").write_bytes(b"x" * 3_000_000)
    info = site / "blob-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: blob\nVersion: 1.0\nLicense-Expression: MIT\n")
    (info / "RECORD").write_text("blob.bin,,\nblob-1.0.dist-info/METADATA,,\nblob-1.0.dist-info/RECORD,,\n")
    script = [sys.executable, str(REPO / "scripts" / "runtime-size")]
    r = subprocess.run(script + ["--licences", str(venv)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^\s+3\.0 MB  blob 1\.0  MIT$", r.stdout, re.M), r.stdout
    assert re.search(r"^\s+\d+\.\d MB  venv total \(till runtime installed size\)$", r.stdout, re.M)
    data = json.loads(
        subprocess.run(script + ["--json", str(venv)], capture_output=True, text=True, timeout=120, check=True).stdout
    )
    assert data["venv_total_mb"] >= 3.0 and [p["name"] for p in data["packages"]] == ["blob"]
    over = subprocess.run(script + ["--max-mb", "1", str(venv)], capture_output=True, text=True, timeout=120)
    assert over.returncode == 1 and "above the 1 MB target" in over.stderr
