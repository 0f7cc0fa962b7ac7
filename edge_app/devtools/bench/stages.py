"""Bench stages: the till's per-frame path, timed stage by stage on frames of the bench's video,
twice on every frame in the same run - today's path (the full search of every frame,
FacePipeline.process, with the model on model.threads) and the check's path since issue 29
(faces.Follower over the frames of each simulated check: a full search, then followed frames;
the model on the threads a parallel check gives it) - with the crops of followed frames compared
against the full search of the same frame; the aggregation + policy of a check; and optionally
the float32 model on the same crops."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from edge_app.core.policy import decide_calibrated
from edge_app.devtools.bench.video import video_frames
from edge_app.till.check import challenge_rule
from edge_app.vision.faces import Follower

WARMUP_FRAMES = 5  # first inferences/detections pay one-off allocation costs
# The centre of the aligned crop (half its side): the face itself, where a different crop would
# show; the border is background and hair.
_FACE = slice(1, 3)


@dataclass
class StageFigures:
    # Today's path: the full search of every frame.
    detect: list[float] = field(default_factory=list)  # colour conversion + find + refine the shopper
    align: list[float] = field(default_factory=list)  # align + quality gate
    infer: list[float] = field(default_factory=list)  # the model as today (model.threads)
    face_path: list[float] = field(default_factory=list)  # detect + align + infer, per frame
    # The check's path since issue 29, on the same frames.
    follow: list[float] = field(default_factory=list)  # colour conversion + the look around the last box
    infer_new: list[float] = field(default_factory=list)  # the model on the threads a parallel check gives it
    face_path_followed: list[float] = field(default_factory=list)  # followed frames
    face_path_full: list[float] = field(default_factory=list)  # the check's full-search frames, counted apart
    lost: int = 0
    # Followed frame against the full search of the same frame.
    eye_gap: list[float] = field(default_factory=list)  # largest eye keypoint difference, % of the IOD
    crop_gap: list[float] = field(default_factory=list)  # mean |difference| of the crops' face region, grey levels
    age_gap: list[float] = field(default_factory=list)  # |age difference|, years
    gate_agree: int = 0
    compared: int = 0
    infer_f32: list[float] = field(default_factory=list)
    infer_warm: list[float] = field(default_factory=list)  # int8 again right after float32
    aggregate: list[float] = field(default_factory=list)
    frames: int = 0
    usable: int = 0
    ages: list[float] = field(default_factory=list)
    ages_f32: list[float] = field(default_factory=list)


def run_stages(cfg, video: Path, n_frames: int, pipeline, model, model_f32, model_new=None) -> StageFigures:
    """Both per-frame paths, timed stage by stage, on the same n frames of the video. `model_new`
    is the model as a parallel check loads it (None: `model`)."""
    model_new = model_new or model
    clock = time.perf_counter
    f = StageFigures()
    group: list = []  # (age, distribution) of the frames of one simulated check
    per_check = cfg.check.max_frames
    follower = Follower(pipeline, cfg.faces.full_search_every)
    for i, bgr in enumerate(video_frames(video, n_frames + WARMUP_FRAMES)):
        keep = i >= WARMUP_FRAMES
        if i % per_check == 0:
            follower = Follower(pipeline, cfg.faces.full_search_every)  # a new check
        # Which path runs first alternates with each check, so neither always finds the cache
        # the other left behind.
        today_first = (i // per_check) % 2 == 0
        if today_first:
            today = _today(f, bgr, pipeline, model, model_f32, keep, clock)
            new = _new(f, bgr, follower, model_new, keep, clock)
        else:
            new = _new(f, bgr, follower, model_new, keep, clock)
            today = _today(f, bgr, pipeline, model, model_f32, keep, clock)
        if keep and new is not None and today is not None and new[0].followed:
            _compare(f, new, today)
        if today is None or today[1] is None or not keep:
            continue
        est = today[1]
        group.append((est.age, est.probs))
        if len(group) == cfg.check.max_frames:
            a = clock()
            decide_calibrated(
                [g[0] for g in group],
                [g[1] for g in group],
                challenge_rule(cfg.policy),
                model.rules,
                cfg.check.min_frames,
            )
            f.aggregate.append((clock() - a) * 1000)
            group = []
    return f


def _today(f: StageFigures, bgr, pipeline, model, model_f32, keep: bool, clock):
    """Today's path on one frame: (faces, estimate; None when the gate refused the face), or
    None without a face."""
    t0 = clock()
    # The camera gives BGR; the conversion is part of a check's per-frame cost (CheckRunner).
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    convert_ms = (clock() - t0) * 1000
    stage_ms: dict[str, float] = {}
    res = pipeline.process(rgb, stage_ms)
    if keep:
        f.frames += 1
        f.detect.append(convert_ms + stage_ms["detect"] + stage_ms.get("refine", 0.0))
        if "align" in stage_ms:
            f.align.append(stage_ms["align"])
    aligned = res.aligned
    if aligned is None:
        return None
    if not aligned.ok:
        return res, None
    t2 = clock()
    est = model.predict(aligned.crop)
    t3 = clock()
    if model_f32 is not None:
        # The float32 model runs right after, on the same crop; then int8 once more, so
        # both speed figures come from a warm cache (the first int8 call above follows
        # detection and pays for the cache MediaPipe left behind).
        t4 = clock()
        est32 = model_f32.predict(aligned.crop)
        t5 = clock()
        model.predict(aligned.crop)
        t6 = clock()
    if keep:
        f.usable += 1
        f.infer.append((t3 - t2) * 1000)
        f.face_path.append((t3 - t0) * 1000)
        f.ages.append(est.age)
        if model_f32 is not None:
            f.infer_f32.append((t5 - t4) * 1000)
            f.infer_warm.append((t6 - t5) * 1000)
            f.ages_f32.append(est32.age)
    return res, est


def _new(f: StageFigures, bgr, follower, model, keep: bool, clock):
    """The check's path since issue 29 on one frame, returned as `_today` does."""
    t0 = clock()
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    convert_ms = (clock() - t0) * 1000
    stage_ms: dict[str, float] = {}
    res = follower.look(rgb, stage_ms)
    if keep and res.followed:
        f.follow.append(convert_ms + stage_ms["follow"])
    if keep and "lost" in stage_ms:
        f.lost += 1
    aligned = res.aligned
    if aligned is None:
        return None
    if not aligned.ok:
        return res, None
    t2 = clock()
    est = model.predict(aligned.crop)
    t3 = clock()
    if keep:
        f.infer_new.append((t3 - t2) * 1000)
        (f.face_path_followed if res.followed else f.face_path_full).append((t3 - t0) * 1000)
    return res, est


def _compare(f: StageFigures, new, today) -> None:
    """A followed frame's shopper against the full search of the same frame."""
    (nres, nest), (tres, test) = new, today
    nface, tface = nres.faces[nres.chosen], tres.faces[tres.chosen]
    f.compared += 1
    f.eye_gap.append(float(np.abs(nface.keypoints[:2] - tface.keypoints[:2]).max() / tface.iod * 100))
    n = nres.aligned.crop.shape[0]
    c = slice(n * _FACE.start // 4, n * _FACE.stop // 4)
    f.crop_gap.append(float(np.abs(nres.aligned.crop[c, c].astype(int) - tres.aligned.crop[c, c].astype(int)).mean()))
    if nest is not None and test is not None:
        f.age_gap.append(abs(nest.age - test.age))
    f.gate_agree += nres.aligned.ok == tres.aligned.ok
