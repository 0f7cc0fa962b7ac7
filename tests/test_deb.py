"""The Debian package, for real: `scripts/build-deb` builds it from a clean copy of the checkout,
dpkg-deb shows what is in it, `dpkg -i` installs it on this machine, systemd accepts the
installed unit, `agecheck` works from the PATH in the package's own (lock-only) virtual
environment, the runtime fits the size target, and purge leaves nothing behind but the outbox,
which it keeps unless asked.

It changes the machine (/opt/agecheck, /etc/agecheck, /usr/bin/agecheck, the unit), so it runs
only as root on a Debian machine where agecheck is not installed, and removes everything at the
end. The build fetches the locked wheels through pip (cached after the first run).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.edge_app.till.test_systemd_unit import MAX_EXPOSURE
from tests.helpers import REPO, demo_checks

pytestmark = pytest.mark.timeout(900)

OWNED = [
    Path("/opt/agecheck"),
    Path("/etc/agecheck"),
    Path("/usr/bin/agecheck"),
    Path("/lib/systemd/system/agecheck.service"),
    Path("/etc/xdg/autostart/agecheck-display.desktop"),
    Path("/usr/share/agecheck"),
    Path("/usr/share/doc/agecheck"),
]
ENABLED = Path("/etc/systemd/system/multi-user.target.wants/agecheck.service")
OUTBOX = Path("/var/lib/agecheck")
SIZE_TARGET_MB = 500


def sh(*cmd: str, env: dict | None = None, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check:
        assert r.returncode == 0, f"{cmd}: {r.stdout}\n{r.stderr}"
    return r


def installed() -> bool:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "agecheck"], capture_output=True, text=True)
    return r.returncode == 0 and "installed" in r.stdout


@pytest.fixture(scope="module")
def deb() -> Path:
    for tool in ("dpkg", "dpkg-deb", "fakeroot", "/usr/bin/python3.11", "deb-systemd-helper"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not available")
    if os.geteuid() != 0:
        pytest.skip("installing a .deb needs root")
    if installed() or any(p.exists() or p.is_symlink() for p in OWNED + [OUTBOX]):
        pytest.skip("agecheck (or something in its place) is already on this machine; not touching it")
    r = sh(str(REPO / "scripts" / "build-deb"), timeout=900)
    (path,) = re.findall(r"^build-deb: (\S+\.deb) ", r.stdout, re.M)
    return Path(path)


def test_the_package_as_dpkg_deb_shows_it(deb):
    info = sh("dpkg-deb", "--info", str(deb)).stdout
    assert re.search(r"^ Package: agecheck$", info, re.M) and "Depends: python3.11" in info
    for script in ("postinst", "prerm", "postrm", "conffiles"):
        assert f" {script} " in info
    conffiles = subprocess.run(
        ["sh", "-c", f"dpkg-deb --ctrl-tarfile '{deb}' | tar -xOf - ./conffiles"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "/etc/agecheck/config.yaml" in conffiles
    contents = sh("dpkg-deb", "--contents", str(deb)).stdout
    for path in (
        "./etc/agecheck/config.yaml",
        "./lib/systemd/system/agecheck.service",
        "./etc/xdg/autostart/agecheck-display.desktop",
        "./usr/share/doc/agecheck/copyright",
        "/edge_app/data/models/age_resnet10_int8.tflite",
        "/edge_app/data/astronaut.png",
    ):
        assert path in contents, path
    assert "./usr/bin/agecheck -> /opt/agecheck/venv/bin/agecheck" in contents
    for left_out in (
        "site-packages/jax/",
        "site-packages/jaxlib/",
        "site-packages/skimage/",
        "site-packages/scipy/",
        "site-packages/pip/",
        "site-packages/training/",
        "__pycache__",
    ):
        assert left_out not in contents, left_out


def test_install_verify_run_and_purge(deb, tmp_path):
    try:
        r = sh("dpkg", "-i", str(deb), timeout=900)
        assert "not configured yet" in r.stdout  # postinst tells the installer what to do next
        assert installed()

        # Enabled, waiting for configuration; the installed unit passes systemd's own check.
        assert ENABLED.is_symlink() and Path("/etc/agecheck/NOT-CONFIGURED").is_file()
        verify = sh("systemd-analyze", "verify", "--man=no", "/lib/systemd/system/agecheck.service", check=False)
        problems = [ln for ln in (verify.stdout + verify.stderr).splitlines() if "agecheck" in ln]
        assert verify.returncode == 0 and not problems, verify.stdout + verify.stderr
        # Its exposure as systemd rates it (tests/edge_app/till/test_systemd_unit.py: what and why).
        security = sh(
            "systemd-analyze", "security", "--offline=yes", "--no-pager", "/lib/systemd/system/agecheck.service"
        )
        score = float(re.search(r"Overall exposure level for agecheck\.service: (\d+\.\d+)", security.stdout).group(1))
        assert score < MAX_EXPOSURE, security.stdout

        # From the PATH, in a folder with no checkout, with the config the package installed.
        path_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": ""}
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AGECHECK_CONFIG", "VIRTUAL_ENV")}
        env.update(path_env)

        def run(*a, **kw):
            return subprocess.run(list(a), capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, **kw)

        v = run("agecheck", "--version")
        assert v.returncode == 0 and v.stdout.strip() == "agecheck 0.1.0", v.stdout + v.stderr
        est = run("agecheck", "estimate", "/usr/share/agecheck/astronaut.png")
        assert est.returncode == 0, est.stderr
        assert "1 face(s)" in est.stdout and "age " in est.stdout
        assert est.stderr == "", est.stderr  # no native chatter
        which = run("agecheck", "faces", "--json", "/usr/share/agecheck/astronaut.png")
        assert which.returncode == 0 and '"usable": true' in which.stdout
        # The service refuses to start on a config error, naming the key (exit 2, no restart loop).
        bad = tmp_path / "bad.yaml"
        bad.write_text("store_id: Bad Store\n")
        r2 = run("agecheck", "run", "--config", str(bad))
        assert r2.returncode == 2 and "store_id" in r2.stderr

        # A few checks of the demo on the lock-only runtime (no jax, no scikit-image in it).
        demo = subprocess.Popen(
            ["agecheck", "run", "--demo"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        checks, out, err = demo_checks(demo)
        assert len(checks) >= 2 and demo.returncode == 0, err

        # The installed runtime, measured: under the target, and without the left-out libraries.
        size = sh(str(REPO / "scripts" / "runtime-size"), "--max-mb", str(SIZE_TARGET_MB), "/opt/agecheck/venv")
        total = float(re.search(r"([\d.]+) MB  venv total", size.stdout).group(1))
        assert total <= SIZE_TARGET_MB
        for name in ("jax", "jaxlib", "scikit-image", "scipy", "ml_dtypes", "opencv-contrib-python "):
            assert f" {name} " not in size.stdout.replace("\n", " \n"), name

        # The outbox the service would have written, and a broker password.
        OUTBOX.mkdir()
        (OUTBOX / "outbox.sqlite3").write_bytes(b"undelivered events")
        Path("/etc/agecheck/mqtt-password").write_text("s3cret\n")

        r = sh("dpkg", "--purge", "agecheck", timeout=600)
        assert "kept the outbox" in r.stdout
        assert not installed()
        left = [str(p) for p in OWNED + [ENABLED] if p.exists() or p.is_symlink()]
        assert not left, f"purge left {left}"
        assert (OUTBOX / "outbox.sqlite3").read_bytes() == b"undelivered events"

        # Asked to, the same postrm removes the outbox too.
        ctrl = tmp_path / "ctrl"
        sh("dpkg-deb", "-e", str(deb), str(ctrl))
        sh("sh", str(ctrl / "postrm"), "purge", env={"AGECHECK_PURGE_OUTBOX": "yes"})
        assert not OUTBOX.exists()
    finally:
        if installed():
            subprocess.run(["dpkg", "--purge", "agecheck"], capture_output=True, timeout=600)
        shutil.rmtree(OUTBOX, ignore_errors=True)
