"""`agecheck faces` and `agecheck estimate` on still photos: the faces the till's pipeline finds,
chooses and quality-checks, and the age, band and policy decision the shipped model gives for the
chosen one (the same faces -> model -> policy path the till uses). Both walk the photos with one
loop, so a photo that cannot be read is reported and counted the same way."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2

from edge_app.config import Config
from edge_app.core.policy import decide_calibrated
from edge_app.core.words import DECISION_SHORT
from edge_app.till.check import challenge_rule, load_model
from edge_app.vision.faces import FacePipeline, read_photos

# What a command does with one readable photo and its face-pipeline result: the record for the
# JSON output and how many failures it counts (it prints its own text-mode lines).
PhotoHandler = Callable[[str, Any, list[str], Any], tuple[dict, int]]


def _each_photo(args: argparse.Namespace, cfg: Config, handle: PhotoHandler) -> int:
    """Run `handle` on every readable photo of args.photos; exit code 1 if anything failed."""
    failures = 0
    results = []
    with FacePipeline(cfg.faces) as pipe:
        for photo, rgb, notes, error in read_photos(args.photos, cfg.faces.max_image_pixels):
            if error:
                failures += 1
                # One write per line: MediaPipe's threads write to the same stderr, and print()'s
                # separate write of the newline let their warnings land inside our line.
                sys.stderr.write(f"error: {error}\n")
                sys.stderr.flush()
                results.append({"file": photo, "error": error})
                continue
            rec, failed = handle(photo, rgb, notes, pipe.process(rgb))
            failures += failed
            results.append(rec)
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failures else 0


def _face_report(path: str, res, rgb_shape, notes: list[str]) -> dict:
    faces = []
    for i, f in enumerate(res.faces):
        x, y, w, h = f.box
        faces.append(
            {
                "index": i + 1,
                "box": [round(x), round(y), round(w), round(h)],
                "score": round(f.score, 3),
                "chosen": i == res.chosen,
            }
        )
    out = {"file": path, "width": rgb_shape[1], "height": rgb_shape[0], "notes": notes, "faces": faces}
    if res.aligned is not None:
        q = res.aligned.quality
        out["quality"] = {
            "iod_px": q.iod_px,
            "sharpness": q.sharpness,
            "yaw_deg": q.yaw_deg,
            "pitch_deg": q.pitch_deg,
            "brightness": q.brightness,
        }
        out["usable"] = res.aligned.ok
        out["rejected_because"] = list(res.aligned.rejected)
    return out


def _print_face_report(rep: dict) -> None:
    note = f" [{'; '.join(rep['notes'])}]" if rep["notes"] else ""
    print(f"{rep['file']}: {len(rep['faces'])} face(s) in {rep['width']}x{rep['height']}{note}")
    for f in rep["faces"]:
        x, y, w, h = f["box"]
        mark = "  <- chosen (shopper)" if f["chosen"] else ""
        print(f"  face {f['index']}: box x={x} y={y} {w}x{h}, score {f['score']:.2f}{mark}")
    if "quality" in rep:
        q = rep["quality"]
        print(
            f"  quality: eyes {q['iod_px']:.0f} px apart, sharpness {q['sharpness']:.0f}, "
            f"yaw {q['yaw_deg']:.0f} deg, pitch {q['pitch_deg']:.0f} deg, brightness {q['brightness']:.0f}"
        )
        if rep["usable"]:
            print("  gate: usable")
        else:
            print("  gate: rejected - " + "; ".join(rep["rejected_because"]))


def _crop_target(save: str | None, photo: str, many: bool) -> Path | None:
    if not save:
        return None
    if many:
        return Path(save) / f"{Path(photo).stem}_aligned.png"
    return Path(save)


def run_faces(args: argparse.Namespace, cfg: Config) -> int:
    many = len(args.photos) > 1
    if args.save_crop and many:
        Path(args.save_crop).mkdir(parents=True, exist_ok=True)

    def one(photo: str, rgb, notes: list[str], res) -> tuple[dict, int]:
        failed = 0
        rep = _face_report(photo, res, rgb.shape, notes)
        if not res.faces:
            failed += 1
            rep["error"] = "no face found"
        target = _crop_target(args.save_crop, photo, many)
        if target is not None and res.aligned is not None:
            # Written only because the user asked for it by name (privacy rule).
            if not cv2.imwrite(str(target), cv2.cvtColor(res.aligned.crop, cv2.COLOR_RGB2BGR)):
                print(f"error: could not write crop to {target}", file=sys.stderr)
                failed += 1
            else:
                rep["crop_written"] = str(target)
        if not args.json:
            _print_face_report(rep)
            if not res.faces:
                print("  no face found")
            if "crop_written" in rep:
                print(f"  aligned crop written to {rep['crop_written']}")
        return rep, failed

    return _each_photo(args, cfg, one)


def run_estimate(args: argparse.Namespace, cfg: Config) -> int:
    path = args.model or cfg.model.path
    model = load_model(path, cfg.model.threads, cfg.faces.output_size)

    def one(photo: str, rgb, notes: list[str], res) -> tuple[dict, int]:
        if res.aligned is None:
            pol = decide_calibrated([], [], challenge_rule(cfg.policy), model.rules)
            if not args.json:
                print(f"{photo}: no face found -> {DECISION_SHORT[pol.decision]} (ask for ID)")
            return {"file": photo, "faces": 0, **pol.as_dict(), "error": "no face found"}, 1
        est = model.predict(res.aligned.crop)
        probs = [] if est.probs is None else [est.probs]  # the model always gives them; the type says maybe
        pol = decide_calibrated([est.age], probs, challenge_rule(cfg.policy), model.rules)
        rec = {
            "file": photo,
            "faces": len(res.faces),
            # The decision's fields under the names a check event gives them.
            **pol.as_dict(),
            "age": round(est.age, 1),
            "usable": res.aligned.ok,
            "rejected_because": list(res.aligned.rejected),
            "notes": notes,
            "model_id": model.model_id,
        }
        if not args.json:
            warn = "" if res.aligned.ok else f"  (the till would retry: {'; '.join(res.aligned.rejected)})"
            extra = f" [{'; '.join(notes)}]" if notes else ""
            p = "" if pol.p_over is None else f", P({cfg.policy.challenge_age}+) {pol.p_over:.2f}"
            print(
                f"{photo}: age {est.age:.1f} (range {pol.age_low:.0f}-{pol.age_high:.0f}, band {pol.age_band}{p}), "
                f"{len(res.faces)} face(s) -> "
                f"{DECISION_SHORT[pol.decision]} under Challenge {cfg.policy.challenge_age}{warn}{extra}"
            )
        return rec, 0

    return _each_photo(args, cfg, one)
