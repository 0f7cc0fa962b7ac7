"""Bench run: `agecheck bench` end to end - the sample videos in a temporary folder (deleted on
exit), the models and their load times, each measurement in turn (stages, the `agecheck run`
child, latency in this process, throughput workers), the table with the run's circumstances
(machine load, cores, date), printed as text or JSON."""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from edge_app.config.files import require_model_file
from edge_app.devtools.bench.checks import measure_checks, today_config
from edge_app.devtools.bench.figures import Row, render
from edge_app.devtools.bench.harness import bench_config, write_config
from edge_app.devtools.bench.latency import measure_latency
from edge_app.devtools.bench.service_figures import IDLE_FPS, measure_service
from edge_app.devtools.bench.stages import run_stages
from edge_app.devtools.bench.table import Measured, table
from edge_app.devtools.bench.throughput import measure_throughput
from edge_app.devtools.bench.video import PhotosError, make_video
from edge_app.devtools.sim import LocalBroker
from edge_app.errors import RunError
from edge_app.till.check import model_threads
from edge_app.vision.faces import FacePipeline
from edge_app.vision.model import AgeModel


def float_model_path(cfg, given: str | None) -> Path:
    if given:
        return Path(given)
    p = Path(cfg.model.path)
    name = p.name.replace("int8", "float32") if "int8" in p.name else "age_resnet10_float32.tflite"
    return p.with_name(name)


def _load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def load_models(cfg, f32_path: Path) -> tuple[Any, Any, float, float | None, str]:
    """The int8 model and, when its file is there, the float32 one; with their load times (ms)."""
    # The first load in this process includes importing the TFLite runtime, as in the service.
    t = time.perf_counter()
    model = AgeModel(cfg.model.path, cfg.model.threads)
    load_ms = (time.perf_counter() - t) * 1000
    if not f32_path.is_file():
        return (
            model,
            None,
            load_ms,
            None,
            (f"{f32_path} not found (write it with python -m training.export --float-out PATH, or pass --float-model)"),
        )
    t = time.perf_counter()
    # Same work per crop as the int8 model: its card may ask for flip averaging (two
    # invocations per crop), and the float32 file usually has no card of its own.
    model_f32 = AgeModel(f32_path, cfg.model.threads, flip_average=model.flip_average)
    f32_ms = (time.perf_counter() - t) * 1000
    if model_f32.input_size != model.input_size:
        return (
            model,
            None,
            load_ms,
            None,
            (f"{f32_path} takes {model_f32.input_size} px, the int8 model {model.input_size} px: not the same model"),
        )
    return model, model_f32, load_ms, f32_ms, ""


def run(args: argparse.Namespace, cfg) -> tuple[dict[str, Any], list[Row]]:
    """Measure everything; returns the run's circumstances (meta) and the table's rows."""
    require_model_file(cfg)
    n_frames = max(10, int(args.frames))
    # The other parts scale with --frames, so a quick run stays quick.
    checks = max(5, min(40, n_frames // 10))
    idle_s = max(3.0, min(10.0, n_frames / 30))
    tp_seconds = max(2.0, min(8.0, n_frames / 40))
    cores = sorted(os.sched_getaffinity(0))
    t_start = time.monotonic()
    load_start = _load_avg()
    images = Path(args.images) if args.images else None
    with tempfile.TemporaryDirectory(prefix="agecheck-bench-") as tmpname:
        tmp = Path(tmpname)
        cam = cfg.camera
        video, source = make_video(
            images, tmp / "camera.avi", cam.fps, cam.width, cam.height, 8.0, cfg.faces.max_image_pixels
        )
        video30, _ = make_video(
            images, tmp / "camera30.avi", IDLE_FPS, cam.width, cam.height, 8.0, cfg.faces.max_image_pixels
        )
        f32_path = float_model_path(cfg, getattr(args, "float_model", None))
        model, model_f32, load_ms, f32_ms, f32_note = load_models(cfg, f32_path)
        # The model as a parallel check loads it (one thread fewer than the cores), beside
        # today's (model.threads): each path is timed with its own.
        model_new = AgeModel(cfg.model.path, model_threads(cfg))
        with FacePipeline(cfg.faces) as pipeline:
            st = run_stages(cfg, video, n_frames, pipeline, model, model_f32, model_new)
            chk = measure_checks(cfg, video, checks, pipeline, model, model_new)
            with LocalBroker() as broker:
                svc = measure_service(cfg, video30, broker, tmp, idle_s, warm_checks=3)
                svc_today = measure_service(today_config(cfg), video30, broker, tmp, idle_s, warm_checks=3)
                lat = measure_latency(cfg, video, broker, tmp, checks, pipeline, model_new)
        tconf = write_config(
            bench_config(cfg, video, 1, tmp, "bench-throughput", loop=True), tmp / "bench-throughput.yaml"
        )
        tp = {1: measure_throughput(tconf, cores[:1], tp_seconds)}
        tp[2] = (
            measure_throughput(tconf, cores[:2], tp_seconds)
            if len(cores) >= 2
            else (None, "n/a: this process may use only one core")
        )
    m = Measured(
        st,
        lat,
        svc,
        tp,
        model.model_id,
        model.flip_average,
        load_ms,
        f32_path,
        f32_ms,
        f32_note,
        model.card.members or 1,
        chk,
        svc_today,
        model_new.threads,
    )
    meta = {
        "source": source,
        "frames": n_frames,
        "checks": checks,
        "model": Path(cfg.model.path).name,
        "model_id": model.model_id,
        "float_model": str(f32_path) if f32_ms is not None else None,
        "cores": len(cores),
        "model_threads": cfg.model.threads,
        "model_threads_parallel": model_threads(cfg),
        # Other work on the machine skews every figure: the 1-minute load average says if any ran.
        "load_avg_1min_at_start": load_start,
        "load_avg_1min_at_end": _load_avg(),
        "bench_seconds": round(time.monotonic() - t_start, 1),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }
    return meta, table(cfg, m)


def header(meta: dict[str, Any]) -> list[str]:
    """The lines above the table: what was measured, with what, on what, and how busy it was."""
    m = meta
    return [
        f"agecheck bench: {m['frames']} frames of {m['source']}; {m['checks']} triggered checks",
        f"model {m['model_id']} ({m['model_threads']} threads today, {m['model_threads_parallel']} beside the "
        f"parallel face look), {m['cores']} CPU core(s), {m['date']}, "
        f"1-min load average {m['load_avg_1min_at_start']} at the start, {m['load_avg_1min_at_end']} at the end; "
        f"bench took {m['bench_seconds']:.0f} s",
        "",
    ]


def main(args: argparse.Namespace, cfg) -> int:
    # The bench runs a service in this process: its per-check log lines would bury the table.
    if cfg.logging.level != "DEBUG":
        logging.getLogger("edge_app").setLevel(logging.WARNING)
    try:
        meta, rows = run(args, cfg)
    except (FileNotFoundError, RuntimeError, PhotosError) as exc:  # e.g. no mosquitto, no usable photos
        raise RunError(str(exc)) from None
    if getattr(args, "json", False):
        print(json.dumps({"meta": meta, "rows": [r.as_dict() for r in rows]}, indent=2))
        return 0
    print(render(rows, header(meta)))
    return 0
