"""Bench throughput: checks per second on one core and on two, each measured in a child process
(`python -m edge_app.devtools.bench --worker throughput`) pinned to its cores before any thread
starts, running the till's own CheckRunner back to back on a real Capture of the video."""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edge_app.config.files import load
from edge_app.devtools.bench.harness import CHILD_TIMEOUT_S, child_env


def measure_throughput(conf: Path, cores: list[int], seconds: float) -> tuple[float | None, str]:
    """(checks per second, note) from a worker pinned to `cores`; (None, why) when it failed."""
    cmd = [
        sys.executable,
        "-m",
        "edge_app.devtools.bench",
        "--worker",
        "throughput",
        "--config",
        str(conf),
        "--cores",
        ",".join(map(str, cores)),
        "--seconds",
        f"{seconds:.2f}",
    ]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S + seconds, env=child_env())
    except subprocess.TimeoutExpired:
        return None, "the worker timed out"
    for line in reversed(res.stdout.splitlines()):
        if line.startswith("{"):
            data = json.loads(line)
            return data["checks_per_s"], f"{data['checks']} checks, {data['frames_per_check']:.1f} frames/check"
    return None, f"the worker failed: {(res.stderr or res.stdout).strip()[-300:]}"


def throughput_worker(cfg, cores: list[int], seconds: float) -> dict[str, Any]:
    """Child process: pinned to `cores`, a real Capture of the video and back-to-back checks."""
    # Deferred until the process is pinned (worker_main): OpenCV and the model's runtime size
    # their thread pools to the cores they see when they load.
    from edge_app.core.pos import Item, Scan
    from edge_app.till.capture import Capture
    from edge_app.till.check import CheckRunner, model_threads
    from edge_app.till.triggers import Trigger, now_pair
    from edge_app.vision.faces import FacePipeline
    from edge_app.vision.model import AgeModel

    model = AgeModel(cfg.model.path, min(model_threads(cfg), len(cores)))
    with FacePipeline(cfg.faces) as pipeline:
        cap = Capture(cfg.camera).start()
        try:
            deadline = time.monotonic() + 30
            while cap.status != "up":
                if time.monotonic() > deadline:
                    raise RuntimeError(f"camera {cfg.camera.source} did not come up: {cap.reason}")
                time.sleep(0.02)
            time.sleep(cfg.camera.buffer_seconds)
            runner = CheckRunner(cfg, cap.buffer, pipeline, model, camera_status=lambda: cap.status)
            n = frames = 0
            t0 = time.monotonic()
            try:
                while time.monotonic() - t0 < seconds or n < 3:
                    now, iso = now_pair()
                    out = runner.run(Trigger(Scan(Item("bench", "alcohol"), f"T{n}"), "pos", 18, now, iso))
                    frames += out.check.frames_seen or 0
                    n += 1
            finally:
                runner.close()
            wall = time.monotonic() - t0
        finally:
            cap.stop()
    return {"checks": n, "checks_per_s": n / wall, "frames_per_check": frames / n, "cores": cores}


def build_worker_parser() -> argparse.ArgumentParser:
    """The pinned child processes of the throughput figure (`agecheck bench` starts them)."""
    ap = argparse.ArgumentParser(
        prog="python -m edge_app.devtools.bench",
        description="a worker process of `agecheck bench` (run `agecheck bench` instead)",
    )
    ap.add_argument("--worker", choices=["throughput"], required=True)
    ap.add_argument("--config", default=None)
    ap.add_argument("--cores", default="0")
    ap.add_argument("--seconds", type=float, default=3.0)
    return ap


def worker_main(argv: Iterable[str] | None = None) -> int:
    args = build_worker_parser().parse_args(list(argv) if argv is not None else None)
    cores = [int(c) for c in args.cores.split(",")]
    # Before anything starts a thread: every thread of this process stays on these cores.
    os.sched_setaffinity(0, cores)
    cfg = load(args.config)
    logging.basicConfig(level=logging.WARNING)
    print(json.dumps(throughput_worker(cfg, cores, args.seconds)), flush=True)
    return 0
