"""systemd/agecheck.service: the directives the till relies on are there, and systemd itself
accepts the file (`systemd-analyze verify`, skipped where systemd-analyze is not installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests.edge_app.service_util import REPO
from tests.helpers import demo_checks

UNIT = REPO / "systemd" / "agecheck.service"


def directives() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "[")) and "=" in line:
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_unit_has_notify_watchdog_restart_user_state_credential_and_camera_access():
    d = directives()
    assert d["Type"] == ["notify"]
    assert int(d["WatchdogSec"][0]) >= 10
    assert d["Restart"] == ["on-failure"]
    assert d["DynamicUser"] == ["yes"] or "User" in d
    assert d["SupplementaryGroups"] == ["video"]
    assert "char-video4linux rw" in d["DeviceAllow"]
    assert d["StateDirectory"] == ["agecheck"]
    assert d["LoadCredential"][0].startswith("mqtt-password:")
    # The same credential with an empty default: the unit starts without a password file.
    assert d["SetCredential"] == ["mqtt-password:\\n"]  # a bare newline: stripped to no password
    assert d["ConditionPathExists"] == ["!/etc/agecheck/NOT-CONFIGURED"]
    assert d["ExecStart"][0].split()[1:3] == ["run", "--config"]
    assert "PrivateDevices" not in d  # it would hide /dev/video*


def test_systemd_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart's program exists: point it at this Python for the check.
    text = UNIT.read_text().replace("/opt/agecheck/venv/bin/agecheck", sys.executable)
    unit = tmp_path / "agecheck.service"
    unit.write_text(text)
    r = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [ln for ln in (r.stdout + r.stderr).splitlines() if "agecheck.service" in ln]
    assert r.returncode == 0 and not problems, r.stdout + r.stderr


# `systemd-analyze security`'s exposure score for the unit (0 safest, 10 worst): 1.9 before issue
# 26 (no ~@privileged @resources, PrivateUsers, IPAddressDeny, MemoryDenyWriteExecute).
MAX_EXPOSURE = 1.5


def exposure(unit_text: str, tmp_path) -> float:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / "agecheck.service"
    unit.write_text(unit_text.replace("/opt/agecheck/venv/bin/agecheck", sys.executable))
    r = subprocess.run(
        [analyze, "security", "--offline=yes", "--no-pager", str(unit)], capture_output=True, text=True, timeout=60
    )
    found = re.search(r"Overall exposure level for agecheck\.service: (\d+\.\d+)", r.stdout)
    assert found, r.stdout + r.stderr
    return float(found.group(1))


def test_the_units_exposure_is_below_the_bound(tmp_path):
    d = directives()
    assert d["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]
    assert (d["PrivateUsers"], d["MemoryDenyWriteExecute"]) == (["yes"], ["yes"])
    assert (d["IPAddressDeny"], d["IPAddressAllow"]) == (["any"], ["localhost"])
    score = exposure(UNIT.read_text(), tmp_path)
    assert score < MAX_EXPOSURE, score
    # The installer's drop-in for a broker on another machine keeps it there.
    with_broker = UNIT.read_text().replace(
        "IPAddressAllow=localhost", "IPAddressAllow=localhost\nIPAddressAllow=192.0.2.10"
    )
    assert exposure(with_broker, tmp_path) < MAX_EXPOSURE


def test_the_till_runs_under_the_units_system_call_filter(tmp_path):
    """The unit's SystemCallFilter= and MemoryDenyWriteExecute= as systemd loads them (seccomp,
    before exec; tests/edge_app/seccomp_util.py), where systemd is not there to run the unit: the
    model and MediaPipe estimate an age, and the demo (camera, MQTT, checks) runs."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (it names the unit's system call sets)")
    import ctypes.util

    if ctypes.util.find_library("seccomp") is None:
        pytest.skip("libseccomp is not installed")
    sandbox = [sys.executable, str(REPO / "tests" / "edge_app" / "seccomp_util.py"), str(UNIT), "--"]

    def run(*a, **kw):
        return subprocess.run([*sandbox, *a], capture_output=True, text=True, cwd=tmp_path, timeout=300, **kw)

    # The filter bites: writable+executable memory and a CPU affinity change are refused.
    wx = run(sys.executable, "-c", "import mmap; mmap.mmap(-1, 4096, prot=mmap.PROT_WRITE | mmap.PROT_EXEC)")
    assert wx.returncode != 0 and "PermissionError" in wx.stderr, wx.stderr
    aff = run(sys.executable, "-c", "import os; os.sched_setaffinity(0, {0})")
    assert aff.returncode != 0 and "PermissionError" in aff.stderr, aff.stderr
    est = run(sys.executable, "-m", "edge_app.cli", "estimate", str(REPO / "edge_app" / "data" / "astronaut.png"))
    assert est.returncode == 0 and "1 face(s)" in est.stdout, est.stdout + est.stderr
    demo = subprocess.Popen(
        [*sandbox, sys.executable, "-m", "edge_app.cli", "run", "--demo"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    checks, out, err = demo_checks(demo)
    assert len(checks) >= 2 and demo.returncode == 0, out[-2000:] + err[-2000:]
