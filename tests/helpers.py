"""Shared test helpers: where the shared data lives, the free sample photo, and the one wait loop."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("AGECHECK_SHARED", REPO.parent / "shared"))
UTKFACE = SHARED / "datasets" / "utkface"
AAF = SHARED / "datasets" / "aaf-train"
APPA = SHARED / "datasets" / "appa-real"
MODEL = REPO / "models" / "age_resnet10_int8.tflite"

T = TypeVar("T")


def wait_until(pred: Callable[[], T], timeout: float = 10.0, what: str = "condition", step: float = 0.05) -> T:
    """Poll `pred` until it returns something truthy and return that; fail the test after `timeout` s.

    The one polling loop of the suite: tests wait on an observable condition with it instead of
    sleeping a guessed time, so a slow machine only makes them slower, never red.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} ({timeout:g} s)")
        time.sleep(step)


def astronaut() -> np.ndarray:
    """Public-domain NASA portrait shipped with agecheck (RGB uint8, 512x512)."""
    from edge_app.devtools.sim import demo_photo_bgr

    return np.ascontiguousarray(demo_photo_bgr()[:, :, ::-1])


def need_utkface() -> Path:
    if not (UTKFACE / "labels.csv").is_file():
        pytest.skip(f"UTKFace photos not found at {UTKFACE} (set AGECHECK_SHARED to the shared folder)")
    return UTKFACE


def need_aaf() -> Path:
    if not (AAF / "labels.csv").is_file():
        pytest.skip(f"All-Age-Faces photos not found at {AAF} (set AGECHECK_SHARED to the shared folder)")
    return AAF


def need_appa() -> Path:
    if not (APPA / "labels.csv").is_file():
        pytest.skip(f"APPA-REAL photos not found at {APPA} (set AGECHECK_SHARED to the shared folder)")
    return APPA


def utk_sample(n: int, seed: int = 0) -> list[tuple[Path, float]]:
    import csv

    root = need_utkface()
    with open(root / "labels.csv", newline="") as fh:
        rows = [(root / "images" / r["file_name"], float(r["real_age"])) for r in csv.DictReader(fh)]
    rng = np.random.default_rng(seed)
    return [rows[i] for i in rng.choice(len(rows), size=min(n, len(rows)), replace=False)]


def demo_checks(proc, n: int = 2, timeout: float = 150.0) -> tuple[list[str], str, str]:
    """Read a running `agecheck run --demo` until it has printed `n` check lines (or `timeout`
    has passed), stop it with SIGTERM as a user's Ctrl-C would, and return the check lines and
    the rest of its stdout and stderr. The process is killed if it does not stop."""
    import signal

    checks: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        assert proc.stdout is not None
        for line in proc.stdout:  # the demo prints one line per check as it happens
            if " check " in line and "txn demo-" in line:
                checks.append(line)
            if len(checks) >= n or time.monotonic() > deadline:
                break
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return checks, out, err


class Calls:
    """A till service listener (edge_app.till.plugins.ServiceListener) made of plain functions, for
    tests that only want to see one kind of call."""

    def __init__(self, on_event=None, on_publishing=None, on_sale=None, on_recording=None) -> None:
        nothing = lambda _x: None  # noqa: E731
        self.on_event = on_event or nothing
        self.on_publishing = on_publishing or nothing
        self.on_sale = on_sale or nothing
        self.on_recording = on_recording or nothing
