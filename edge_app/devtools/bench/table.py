"""Bench table: which figures the table shows, in what order, with the issues' targets (issue 6,
and issue 29's for the followed frames, the 5-frame check, idle CPU and memory; printed beside
the figures, the bench reports a miss, it does not fail on one) and today's path's figure beside
each one the run measured both ways - from everything one run measured (`Measured`) to the list
of `Row`s."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from edge_app.devtools.bench.checks import CheckFigures
from edge_app.devtools.bench.figures import Row, dist_row, na_row, value_row
from edge_app.devtools.bench.latency import LatencyFigures
from edge_app.devtools.bench.service_figures import IDLE_FPS, ServiceFigures
from edge_app.devtools.bench.stages import StageFigures


@dataclass
class Measured:
    """Everything one bench run measured, before it becomes table rows."""

    stages: StageFigures
    latency: LatencyFigures
    service: ServiceFigures
    throughput: dict[int, tuple[float | None, str]]  # cores -> (checks/s, note)
    model_id: str
    flip_average: bool
    load_ms: float
    f32_path: Path
    f32_load_ms: float | None  # None: no float32 comparison (see f32_note)
    f32_note: str
    members: int = 1  # networks in the model file (a pair: the second sees the mirror)
    checks: CheckFigures | None = None
    service_today: ServiceFigures | None = None  # the `agecheck run` child on today's path
    threads_new: int = 0  # the model's threads beside the parallel face look


def _ratio_ok(v: float) -> bool:
    return v >= 2.0


def table(cfg, m: Measured) -> list[Row]:
    """The rows of the one table, in the order printed, with the issue's targets."""
    return [*_face_path_rows(cfg, m), *_float32_rows(m), *_check_rows(cfg, m), *_service_rows(cfg, m)]


def _face_path_rows(cfg, m: Measured) -> list[Row]:
    """Each stage of a frame's path, and the path whole: followed frames beside full searches."""
    return [*_stage_rows(cfg, m), *_whole_path_rows(cfg, m.stages)]


def _stage_rows(cfg, m: Measured) -> list[Row]:
    """Each stage of a frame's path on its own, from the face search to the published event."""
    st = m.stages
    rows: list[Row] = []
    usable = f"{st.usable}/{st.frames} frames with a usable face"
    detect = dist_row("detect", "detect: full search (find + refine)", "ms/frame", st.detect, note=usable)
    rows.append(detect)
    followed = len(st.face_path_followed)
    rows.append(
        dist_row(
            "follow",
            "detect: follow (one look at the last box)",
            "ms/frame",
            st.follow,
            note=f"{followed} followed, {len(st.face_path_full)} full searches, {st.lost} tracks lost",
        ).beside(detect)
    )
    rows.append(dist_row("align", "align + quality gate", "ms/frame", st.align))
    passes = "; flip-averaged: 2 invocations per crop" if m.flip_average else ""
    if m.members == 2:
        passes += "; a pair: 2 networks in one invocation, the second on the mirror"
    infer = dist_row(
        "infer",
        "infer int8",
        "ms/frame",
        st.infer,
        note=Path(cfg.model.path).name + f" on {cfg.model.threads} thread(s)" + passes,
    )
    rows.append(infer)
    if m.threads_new and m.threads_new != cfg.model.threads:
        rows.append(
            dist_row(
                "infer_parallel",
                f"infer int8 on {m.threads_new} thread(s)",
                "ms/frame",
                st.infer_new,
                note="the model beside the parallel face look",
            ).beside(infer)
        )
    rows.append(
        dist_row(
            "aggregate", "aggregate + policy", "ms/check", st.aggregate, note=f"{cfg.check.max_frames} ages per call"
        )
    )
    rows.append(dist_row("publish", "publish (outbox + MQTT to a subscriber)", "ms/event", m.latency.publish))
    return rows


def _whole_path_rows(cfg, st: StageFigures) -> list[Row]:
    """The face path whole (detect + align + infer): followed frames and a check's full searches
    beside today's path, and how far a followed frame's crop is from a full search's."""
    rows: list[Row] = []
    today_path = dist_row(
        "face_path_today",
        "detect + align + infer, full search",
        "ms/frame",
        st.face_path,
        "p95 <= 15",
        15.0,
        note="today's path: every frame searched in full",
    )
    rows.append(
        dist_row(
            "face_path",
            "detect + align + infer, followed frames",
            "ms/frame",
            st.face_path_followed,
            "p95 <= 8",
            8.0,
            note="a check's frames after its first",
        ).beside(today_path)
    )
    rows.append(
        dist_row(
            "face_path_full",
            "detect + align + infer, full searches of a check",
            "ms/frame",
            st.face_path_full,
            note=f"every {cfg.faces.full_search_every}th frame of a check, and a lost track",
        ).beside(today_path)
    )
    rows.append(today_path)
    if st.compared:
        ages = (
            f"; |age difference| median {statistics.median(st.age_gap):.2f} y, max {max(st.age_gap):.2f} y"
            if st.age_gap
            else ""
        )
        rows.append(
            dist_row(
                "follow_eyes",
                "followed vs full search: eyes",
                "% of IOD",
                st.eye_gap,
                note=f"crop face region |diff| median {statistics.median(st.crop_gap):.1f} grey levels"
                f"{ages}; gate agrees {st.gate_agree}/{st.compared}",
            )
        )
    else:
        rows.append(na_row("follow_eyes", "followed vs full search: eyes", "% of IOD", "no followed frame"))
    return rows


def _float32_rows(m: Measured) -> list[Row]:
    """The int8 model beside its float32 original, when the run had one."""
    st = m.stages
    rows: list[Row] = []
    speedup = "int8 speed-up over float32 (warm medians)"
    if m.f32_load_ms is not None:
        rows.append(dist_row("infer_f32", "infer float32", "ms/frame", st.infer_f32, note=m.f32_path.name))
        rows.append(
            dist_row(
                "infer_warm",
                "infer int8, right after float32",
                "ms/frame",
                st.infer_warm,
                note="same crop, warm cache: the like-for-like pair",
            )
        )
        ratio = statistics.median(st.infer_f32) / statistics.median(st.infer_warm) if st.infer_warm else None
        agree = statistics.median(abs(a - b) for a, b in zip(st.ages, st.ages_f32)) if st.ages_f32 else None
        rows.append(
            value_row(
                "int8_speedup",
                speedup,
                "x",
                ratio,
                ">= 2",
                _ratio_ok,
                note=f"median |age int8 - float32| {agree:.2f} y" if agree is not None else "",
            )
        )
    else:
        rows.append(na_row("infer_f32", "infer float32", "ms/frame", m.f32_note))
        rows.append(na_row("int8_speedup", speedup, "x", "no float32 model", ">= 2"))
    return rows


def _check_rows(cfg, m: Measured) -> list[Row]:
    """A whole check: scan to decision, to the event on the broker, to the alert on screen."""
    lat = m.latency
    rows: list[Row] = []
    fu = statistics.median(lat.frames_used) if lat.frames_used else 0
    fs = statistics.median(lat.frames_seen) if lat.frames_seen else 0
    dec = ", ".join(f"{k} {v}" for k, v in sorted(lat.decisions.items()))
    rows.append(
        dist_row(
            "trigger_decision",
            "trigger -> decision (buffer warm)",
            "ms",
            lat.decision,
            "p95 <= 120",
            120.0,
            note=f"median {fu:g}/{fs:g} frames used/seen; {dec}" + (f"; {lat.missed} missed" if lat.missed else ""),
        )
    )
    ck = m.checks
    if ck is not None and ck.new:
        old_row = dist_row("check_today", "", "ms", ck.today)
        dec = ", ".join(f"{k} {v}" for k, v in sorted(ck.decisions.items()))
        rows.append(
            dist_row(
                "check_worst",
                f"scan -> decision, {cfg.check.max_frames}-frame check",
                "ms",
                ck.new,
                "p95 <= 50",
                50.0,
                note=f"worst case (every frame read); decision as today's path on the same frames "
                f"{ck.same_decision}/{ck.compared} (today's path on them moved 1 px: "
                f"{ck.same_when_moved}/{ck.compared}); {dec}",
            ).beside(old_row)
        )
    else:
        rows.append(
            na_row(
                "check_worst",
                f"scan -> decision, {cfg.check.max_frames}-frame check",
                "ms",
                (ck.note if ck is not None else "") or "not measured",
                "p95 <= 50",
            )
        )
    rows.append(dist_row("pos_to_event", "POS scan -> check event on the broker", "ms", lat.pos_to_event))
    if lat.visible:
        rows.append(
            dist_row(
                "trigger_visible",
                "POS scan -> alert drawn on screen",
                "ms",
                lat.visible,
                note=f"Tk window under {lat.screen}",
            )
        )
    else:
        rows.append(
            Row(
                "trigger_visible",
                "POS scan -> alert drawn on screen",
                "ms",
                note=lat.display_note or "n/a: the banner was never seen drawn",
            )
        )
    return rows


def _service_rows(cfg, m: Measured) -> list[Row]:
    """The service as a process: checks per second, idle CPU, memory, model load and start-up."""
    svc = m.service
    rows: list[Row] = []
    for n in (1, 2):
        value, note = m.throughput[n]
        if value is not None:
            note += "; one check at a time (the service's single check worker)"
        rows.append(
            value_row(f"throughput_{n}", f"throughput, {n} core{'s' if n > 1 else ''}", "checks/s", value, note=note)
        )
    today = m.service_today
    idle = value_row(
        "idle_cpu",
        f"idle CPU, camera at {IDLE_FPS:.0f} fps",
        "% of a core",
        svc.idle_cpu_pct,
        "<= 3",
        lambda v: v <= 3.0,
        note=f"whole service process over {svc.idle_window_s:.0f} s, every frame kept"
        + (" (as JPEG)" if cfg.camera.keep_encoded else "")
        if svc.idle_cpu_pct is not None
        else svc.note,
    )
    rss = value_row(
        "rss",
        "resident memory after warm-up",
        "MB",
        svc.rss_mb,
        "<= 250",
        lambda v: v <= 250.0,
        note=f"peak {svc.hwm_mb:.0f} MB" if svc.hwm_mb else svc.note,
    )
    if today is not None:
        idle.today_median, rss.today_median = today.idle_cpu_pct, today.rss_mb
    rows += [idle, rss]
    rows.append(value_row("model_load", "model load int8 (incl. runtime import)", "ms", m.load_ms))
    if m.f32_load_ms is not None:
        rows.append(value_row("model_load_f32", "model load float32", "ms", m.f32_load_ms))
    tf = {True: "TensorFlow loaded", False: "no TensorFlow loaded", None: ""}[svc.tensorflow_loaded]
    rows.append(
        value_row(
            "startup",
            "start-up to retained `online`",
            "s",
            svc.startup_s,
            "<= 3",
            lambda v: v <= 3.0,
            note=f"`agecheck run` child process; {tf}" if svc.startup_s is not None else svc.note,
        )
    )
    return rows
