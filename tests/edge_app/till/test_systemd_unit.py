"""systemd/agecheck.service: the directives the till relies on are there, and systemd itself
accepts the file (`systemd-analyze verify`, skipped where systemd-analyze is not installed)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.edge_app.service_util import REPO

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
