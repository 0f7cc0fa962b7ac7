"""`agecheck estimate`: age, band and policy decision for the face in each photo, with the
shipped model; the same faces → model → policy path the till uses, on still photos."""

from __future__ import annotations

import argparse
import json
import sys

from edge_app.config import Config, ConfigError
from edge_app.vision.faces import FacePipeline, read_photos
from edge_app.vision.model import AgeModel, ModelError
from edge_app.core.policy import decide_calibrated


def run_estimate(args: argparse.Namespace, cfg: Config) -> int:
    path = args.model or cfg.model.path
    try:
        model = AgeModel(path, cfg.model.threads)
    except ModelError as exc:
        raise ConfigError(f"model.path: {exc}") from None
    if model.input_size != cfg.faces.output_size:
        raise ConfigError(f"faces.output_size: {cfg.faces.output_size} does not match the model's input size "
                          f"{model.input_size} ({path}); set faces.output_size: {model.input_size}")
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
            res = pipe.process(rgb)
            if res.aligned is None:
                failures += 1
                pol = decide_calibrated([], [], cfg.policy, model.rules)
                results.append({"file": photo, "faces": 0, "decision": pol.decision, "error": "no face found"})
                if not args.json:
                    print(f"{photo}: no face found -> {pol.decision.upper()} (ask for ID)")
                continue
            est = model.predict(res.aligned.crop)
            pol = decide_calibrated([est.age], [est.probs], cfg.policy, model.rules)
            rec = {
                "file": photo,
                "faces": len(res.faces),
                "age": round(est.age, 1),
                "age_band": pol.age_band,
                "age_low": pol.age_low,
                "age_high": pol.age_high,
                "p_over": pol.p_over,
                "decision": pol.decision,
                "challenge_age": cfg.policy.challenge_age,
                "usable": res.aligned.ok,
                "rejected_because": list(res.aligned.rejected),
                "notes": notes,
                "model_id": model.model_id,
            }
            results.append(rec)
            if not args.json:
                warn = "" if res.aligned.ok else f"  (the till would retry: {'; '.join(res.aligned.rejected)})"
                extra = f" [{'; '.join(notes)}]" if notes else ""
                p = "" if pol.p_over is None else f", P({cfg.policy.challenge_age}+) {pol.p_over:.2f}"
                print(f"{photo}: age {est.age:.1f} (range {pol.age_low:.0f}-{pol.age_high:.0f}, band {pol.age_band}{p}), "
                      f"{len(res.faces)} face(s) -> "
                      f"{pol.decision.upper()} under Challenge {cfg.policy.challenge_age}{warn}{extra}")
    if args.json:
        print(json.dumps(results, indent=2))
    return 1 if failures else 0
