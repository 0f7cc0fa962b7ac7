"""`agecheck faces` and `agecheck estimate` on real and bad photos, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge_app.config import FacesConfig
from tests.helpers import MODEL, REPO, astronaut


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_app.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=300
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    d = tmp_path_factory.mktemp("photos")
    img = astronaut()
    cv2.imwrite(str(d / "astronaut.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(d / "grey.png"), cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
    cv2.imwrite(str(d / "rgba.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGRA))
    cv2.imwrite(str(d / "noface.png"), np.full((300, 300, 3), 128, np.uint8))
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.jpg").write_text("this is text, not a photo")
    # 60 MP of one colour compresses to a small PNG but is over the 40 MP limit.
    cv2.imwrite(str(d / "huge.png"), np.zeros((6000, 10000), np.uint8))
    return d


def test_faces_reports_and_keeps_going(photos):
    names = ["astronaut.png", "missing.jpg", "empty.jpg", "notes.jpg", "huge.png", "grey.png", "rgba.png", "noface.png"]
    r = run("faces", *[str(photos / n) for n in names])
    assert r.returncode == 1, r.stderr
    err = r.stderr
    assert "missing.jpg: file does not exist" in err
    assert "empty.jpg: file is empty" in err
    assert "notes.jpg: not an image file" in err
    assert "huge.png: image too large (10000x6000" in err
    out = r.stdout
    # Good and convertible photos were processed despite the bad ones before them.
    assert "astronaut.png: 1 face(s)" in out
    assert "grey.png: 1 face(s)" in out and "grey-scale image converted" in out
    assert "rgba.png: 1 face(s)" in out and "alpha channel dropped" in out
    assert "noface.png: 0 face(s)" in out and "no face found" in out
    assert "<- chosen (shopper)" in out and "gate: usable" in out
    assert "Traceback" not in err


def test_faces_writes_crop_only_when_asked(photos, tmp_path):
    r = run("faces", str(photos / "astronaut.png"))
    assert r.returncode == 0
    assert not list(REPO.glob("*.png")) and not list(photos.glob("*aligned*"))
    target = tmp_path / "crop.png"
    r = run("faces", str(photos / "astronaut.png"), "--save-crop", str(target))
    assert r.returncode == 0, r.stderr
    crop = cv2.imread(str(target))
    n = FacesConfig().output_size
    assert crop.shape == (n, n, 3)


def test_faces_json(photos):
    r = run("faces", "--json", str(photos / "astronaut.png"))
    rep = json.loads(r.stdout)
    assert rep[0]["faces"][0]["chosen"] and rep[0]["usable"]
    assert rep[0]["quality"]["iod_px"] > 20


@pytest.mark.skipif(not MODEL.exists(), reason=f"shipped model missing at {MODEL}")
def test_estimate_with_shipped_model(photos):
    names = ["astronaut.png", "notes.jpg", "noface.png", "grey.png"]
    r = run("estimate", "--json", *[str(photos / n) for n in names])
    assert r.returncode == 1
    res = {x["file"].rsplit("/", 1)[-1]: x for x in json.loads(r.stdout)}
    a = res["astronaut.png"]
    # Eileen Collins was about 35 in this NASA portrait; an honest model lands in a wide band.
    assert 22 <= a["age"] <= 55, a
    assert a["decision"] in ("approve", "check_id") and a["age_band"]
    assert res["noface.png"]["decision"] == "no_face"
    assert "not an image file" in res["notes.jpg"]["error"]
    assert 22 <= res["grey.png"]["age"] <= 60


def test_estimate_bad_model_path_exits_2(photos, tmp_path):
    r = run("estimate", "--model", str(tmp_path / "none.tflite"), str(photos / "astronaut.png"))
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr


def _without_root_powers() -> list[str]:
    """As root, file permissions do not apply; drop the capabilities that bypass them so a
    locked folder is locked for the command under test too."""
    import os
    import shutil

    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): cannot test permission errors")
    caps = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={caps}", f"--inh-caps={caps}"]


def test_non_utf8_file_names_are_processed(photos, tmp_path):
    """A file name that is not valid UTF-8 used to segfault OpenCV and end the whole batch."""
    import os

    src = (photos / "astronaut.png").read_bytes()
    odd = os.path.join(os.fsencode(tmp_path), b"caf\xe9-\xff.png")
    with open(odd, "wb") as f:
        f.write(src)
    good = str(photos / "grey.png")
    r = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "faces", odd, good], capture_output=True, cwd=REPO, timeout=300
    )
    out, err = r.stdout.decode(), r.stderr.decode()
    assert r.returncode == 0, err
    assert "caf\\xe9-\\xff.png: 1 face(s)" in out and "grey.png: 1 face(s)" in out
    r = subprocess.run(
        [sys.executable, "-m", "edge_app.cli", "estimate", "--json", odd], capture_output=True, cwd=REPO, timeout=300
    )
    assert r.returncode == 0, r.stderr.decode()
    [rep] = json.loads(r.stdout)
    assert rep["file"].endswith("caf\\xe9-\\xff.png") and rep["age"] > 0


def test_permission_errors_are_one_line_per_file(photos, tmp_path):
    import os

    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "a.png").write_bytes((photos / "astronaut.png").read_bytes())
    unreadable = tmp_path / "b.png"
    unreadable.write_bytes((photos / "astronaut.png").read_bytes())
    os.chmod(unreadable, 0)
    os.chmod(locked, 0)
    try:
        r = subprocess.run(
            [
                *_without_root_powers(),
                sys.executable,
                "-m",
                "edge_app.cli",
                "faces",
                str(locked / "a.png"),
                str(unreadable),
                str(photos / "astronaut.png"),
            ],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
        )
    finally:
        os.chmod(locked, 0o755)
    assert r.returncode == 1
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [
        f"error: {locked / 'a.png'}: permission denied (cannot look at the file)",
        f"error: {unreadable}: permission denied (cannot read the file)",
    ], r.stderr
    assert "Traceback" not in r.stderr
    assert "astronaut.png: 1 face(s)" in r.stdout  # the batch went on
