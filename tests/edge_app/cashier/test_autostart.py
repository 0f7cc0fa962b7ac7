"""The XDG autostart entry the Debian package installs to start `agecheck display` in the
cashier's desktop session: a valid desktop entry (desktop-file-validate) that runs the package's
launcher, whose command line is one `agecheck` accepts, with the same install paths as the
systemd unit."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess

import pytest

from edge_app.cli import build_parser
from tests.helpers import REPO

ENTRY = REPO / "packaging" / "debian" / "agecheck-display.desktop"
LAUNCHER = REPO / "packaging" / "debian" / "agecheck-display"


def entry() -> configparser.SectionProxy:
    cp = configparser.ConfigParser(interpolation=None, comment_prefixes=("#",))
    cp.optionxform = str  # keys are case-sensitive in desktop entries
    cp.read_string(ENTRY.read_text(encoding="utf-8"))
    return cp["Desktop Entry"]


def test_entry_is_valid():
    if shutil.which("desktop-file-validate") is None:
        pytest.skip("desktop-file-validate is not installed (apt-get install desktop-file-utils)")
    out = subprocess.run(["desktop-file-validate", str(ENTRY)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and not out.stdout.strip(), out.stdout + out.stderr


def test_entry_starts_the_window_like_the_service_is_installed():
    e = entry()
    assert e["Type"] == "Application" and e["Terminal"] == "false"
    build_deb = (REPO / "scripts" / "build-deb").read_text()
    assert f"packaging/debian/{LAUNCHER.name}" in build_deb and shlex.split(e["Exec"])[0].endswith(LAUNCHER.name)
    run = next(line for line in LAUNCHER.read_text().splitlines() if " display " in line and not line.startswith("#"))
    argv = shlex.split(run.strip().rstrip("&"))
    unit = (REPO / "systemd" / "agecheck.service").read_text()
    service_exec = shlex.split(next(line for line in unit.splitlines() if line.startswith("ExecStart="))[10:])
    assert argv[0] == service_exec[0]  # the same install (/opt/agecheck/venv)
    args = build_parser().parse_args(argv[1:])
    assert args.command == "display"
    assert args.config == service_exec[service_exec.index("--config") + 1]  # the same config file


def test_the_launcher_starts_the_window_again_until_the_session_ends(tmp_path):
    """The launcher as shipped, pointed at a stand-in `agecheck` that dies twice (a crash, then a
    config error) and then ends as on SIGTERM: it is started three times, and the launcher ends."""
    runs = tmp_path / "runs"
    fake = tmp_path / "agecheck"
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> {runs}\nn=$(wc -l < {runs})\n'
        '[ "$n" -eq 1 ] && exit 1\n[ "$n" -eq 2 ] && exit 2\nexit 0\n'
    )
    fake.chmod(0o755)
    script = (
        LAUNCHER.read_text()
        .replace("/opt/agecheck/venv/bin/agecheck", str(fake))
        .replace("/etc/agecheck/NOT-CONFIGURED", str(tmp_path / "NOT-CONFIGURED"))
        .replace("sleep 30", "sleep 0.1")
        .replace("sleep 2", "sleep 0.1")
    )
    launcher = tmp_path / "agecheck-display"
    launcher.write_text(script)
    launcher.chmod(0o755)
    out = subprocess.run(
        [str(launcher)],
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert runs.read_text().splitlines() == ["display --config /etc/agecheck/config.yaml"] * 3
