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
    last = [line for line in LAUNCHER.read_text().splitlines() if line.strip() and not line.startswith("#")][-1]
    argv = shlex.split(last)
    argv = argv[argv.index("exec") + 1:]
    unit = (REPO / "systemd" / "agecheck.service").read_text()
    service_exec = shlex.split(next(line for line in unit.splitlines() if line.startswith("ExecStart="))[10:])
    assert argv[0] == service_exec[0]  # the same install (/opt/agecheck/venv)
    args = build_parser().parse_args(argv[1:])
    assert args.command == "display"
    assert args.config == service_exec[service_exec.index("--config") + 1]  # the same config file
