"""Bench stages: the till's per-frame path (FacePipeline.process, the very call a check makes,
asked for its stage times; then the model) and the aggregation + policy of a check, timed stage
by stage on frames of the bench's video; optionally the float32 model on the same crops."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from edge_app.devtools.bench.video import video_frames

WARMUP_FRAMES = 5  # first inferences/detections pay one-off allocation costs


@dataclass
class StageFigures:
    detect: list[float] = field(default_factory=list)  # colour conversion + find + refine the shopper
    align: list[float] = field(default_factory=list)  # align + quality gate
    infer: list[float] = field(default_factory=list)
    infer_f32: list[float] = field(default_factory=list)
    infer_warm: list[float] = field(default_factory=list)  # int8 again right after float32
    face_path: list[float] = field(default_factory=list)  # detect + align + infer, per frame
    aggregate: list[float] = field(default_factory=list)
    frames: int = 0
    usable: int = 0
    ages: list[float] = field(default_factory=list)
    ages_f32: list[float] = field(default_factory=list)


def run_stages(cfg, video: Path, n_frames: int, pipeline, model, model_f32) -> StageFigures:
    """The check's per-frame path, timed stage by stage, on n frames of the video."""
    import cv2

    from edge_app.core.policy import decide_calibrated

    clock = time.perf_counter
    f = StageFigures()
    group: list = []  # (age, distribution) of the frames of one simulated check
    for i, bgr in enumerate(video_frames(video, n_frames + WARMUP_FRAMES)):
        keep = i >= WARMUP_FRAMES
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
        if aligned is None or not aligned.ok:
            continue
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
        if not keep:
            continue
        f.usable += 1
        f.infer.append((t3 - t2) * 1000)
        f.face_path.append((t3 - t0) * 1000)
        f.ages.append(est.age)
        if model_f32 is not None:
            f.infer_f32.append((t5 - t4) * 1000)
            f.infer_warm.append((t6 - t5) * 1000)
            f.ages_f32.append(est32.age)
        group.append((est.age, est.probs))
        if len(group) == cfg.check.max_frames:
            a = clock()
            decide_calibrated([g[0] for g in group], [g[1] for g in group], cfg.policy, model.rules,
                              cfg.check.min_frames)
            f.aggregate.append((clock() - a) * 1000)
            group = []
    return f
