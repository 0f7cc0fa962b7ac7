"""A real Mosquitto for the display/feed/integrity tests: started on a free loopback port with a
temporary config, optionally with on-disk persistence so sessions survive a restart.

(The service's tests bring their own `mqtt_broker` fixture in tests/conftest.py; this helper
keeps these tests independent of it.)"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Broker:
    """`with Broker(persistent=True) as b:` ... b.restart() keeps the port and the sessions."""

    def __init__(self, persistent: bool = False) -> None:
        if not os.path.exists(MOSQUITTO):
            pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
        self.host = "127.0.0.1"
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="agecheck-broker-"))
        self.log = self.dir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            f"log_dest file {self.log}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 10000",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # otherwise it drops to 'mosquitto', who cannot write here
        if persistent:
            lines += ["persistence true", f"persistence_location {self.dir}/", "autosave_interval 1"]
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while not _port_open(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text() if self.log.exists() else ''}")
            if time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not open its port within 10 s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto writes its persistence file on the way out
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, down_s: float = 0.5) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Broker":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
