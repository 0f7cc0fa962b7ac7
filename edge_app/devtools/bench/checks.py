"""Bench checks: whole checks (the till's own CheckRunner) run by today's path and by issue 29's
on the same frames in the same run - a real Capture of the bench's video fills the ring buffer,
and for each scan the frames of its lookback are given to both runners, in alternating order,
with the worker idle (the figure is scan -> decision without queueing). Every check reads all
`check.max_frames` frames (agree_frames 0): the borderline shopper, the bench's worst case. Their
decisions are compared frame set by frame set, and beside that how often today's path itself
changes its decision when the same frames move by one pixel: a borderline shopper's decision
turns on noise that small, so that is the yardstick for a followed crop that is as good as a
full search's but not bit-identical to it."""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_app.core.pos import Item, Scan
from edge_app.till.capture import Capture, Frame, FrameBuffer
from edge_app.till.check import CheckRunner
from edge_app.till.triggers import Trigger, now_pair


@dataclass
class CheckFigures:
    today: list[float] = field(default_factory=list)  # ms, scan -> decision, today's path
    new: list[float] = field(default_factory=list)  # ms, the same frames through issue 29's path
    frames_used: list[int] = field(default_factory=list)
    same_decision: int = 0
    same_when_moved: int = 0  # today's path on the frames moved by one pixel, against itself
    compared: int = 0
    decisions: dict[str, int] = field(default_factory=dict)
    note: str = ""


def today_config(cfg):
    """The configuration of today's path: every frame searched in full, one frame after another,
    every camera frame decoded as it arrives."""
    return dataclasses.replace(
        cfg,
        faces=dataclasses.replace(cfg.faces, full_search_every=1),
        check=dataclasses.replace(cfg.check, parallel=False),
        camera=dataclasses.replace(cfg.camera, keep_encoded=False),
    )


def worst_case(cfg):
    """Every check reads all max_frames frames, as a borderline shopper's does."""
    return dataclasses.replace(cfg, check=dataclasses.replace(cfg.check, agree_frames=0))


def _buffer_at(frames, t0: float, now: float, seconds: float):
    """A ring buffer holding `frames` shifted in time so that a scan at `now` sees them as a scan
    at `t0` did."""
    buf = FrameBuffer(seconds, max(1.0, len(frames) / max(seconds, 1e-3)))
    for f in frames:
        buf.append(Frame(f.index, f.t - t0 + now, f.image, f.encoded))
    return buf


def measure_checks(cfg, video: Path, checks: int, pipeline, model_today, model_new) -> CheckFigures:
    out = CheckFigures()
    new_cfg = worst_case(cfg)
    old_cfg = worst_case(today_config(cfg))
    cam = dataclasses.replace(cfg.camera, source=str(video), loop=True)
    cap = Capture(cam).start()
    try:
        deadline = time.monotonic() + 30
        while cap.status != "up":
            if time.monotonic() > deadline:
                out.note = f"n/a: the bench's camera did not come up ({cap.reason})"
                return out
            time.sleep(0.02)
        time.sleep(cam.buffer_seconds)  # ring buffer warm
        rnd = random.Random(29)
        for k in range(checks):
            t0 = time.monotonic()
            kept = cap.buffer.between(t0 - cfg.check.lookback_seconds, t0)
            # Today's capture decoded every frame as it arrived: its runner gets them decoded.
            decoded = [Frame(f.index, f.t, f.bgr()) for f in kept]
            moved = [Frame(f.index, f.t, np.ascontiguousarray(np.roll(f.bgr(), (1, 1), axis=(0, 1)))) for f in decoded]
            results = {}
            order = ("today", "new", "moved") if k % 2 == 0 else ("new", "today", "moved")
            for which in order:
                c, model, frames = {
                    "today": (old_cfg, model_today, decoded),
                    "new": (new_cfg, model_new, kept),
                    "moved": (old_cfg, model_today, moved),
                }[which]
                now, iso = now_pair()
                runner = CheckRunner(c, _buffer_at(frames, t0, now, cam.buffer_seconds), pipeline, model)
                try:
                    res = runner.run(Trigger(Scan(Item("bench", "alcohol"), f"W{k}"), "pos", 18, now, iso))
                finally:
                    runner.close()
                ms = res.check.latency_ms
                results[which] = res
                if which != "moved":
                    # A finished check has timed both (Latency's fields are optional on the wire).
                    assert ms.total is not None and ms.queue is not None, f"check {k} was not timed"
                    (out.today if which == "today" else out.new).append(ms.total - ms.queue)
            a, b = results["today"].check, results["new"].check
            out.compared += 1
            out.same_decision += a.decision == b.decision
            out.same_when_moved += a.decision == results["moved"].check.decision
            out.frames_used.append(b.frames_used)
            out.decisions[str(b.decision)] = out.decisions.get(str(b.decision), 0) + 1
            time.sleep(0.1 + rnd.random() * 0.15)  # new frames; scans at random camera phases
    finally:
        cap.stop()
    return out
