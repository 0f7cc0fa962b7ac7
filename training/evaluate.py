"""evaluate: run labelled photos through the SAME code the till uses (edge_app.vision.faces for
detection and alignment, the TFLite file through edge_app.vision.model, edge_app.core.policy for the
decision) and report the figures that matter for the Challenge-25 gate, for everyone and for
each source, sex and ethnicity group the labels name.

    python -m training.evaluate --images DIR --labels CSV [--model PATH] --predictions OUT.csv
        [--split test] [--report DIR] [--update-card] [--limit N]

The predictions CSV has the columns file_name,real_age,pred,detected,decision,p_over (then
source/gender/race when the labels have them, then `gate`: why the till's quality gate refused
the face, empty when it passed; the figures count the gate's refusals per group). `decision` is the till's decision for the photo
as a one-frame check (approve / check_id / no_face, as `agecheck estimate` gives it) and
`p_over` the calibrated probability of being at or over the challenge age (empty for a model
without a calibrated decision). A photo where no face is found is still estimated, from the
whole photo resized to the model input, marked detected 0, and decided no_face.
`--split NAME` keeps only rows whose `split` column equals NAME (the split.csv that
`training.prepare` writes is a labels CSV with that column, and with a `source` column when it
holds several sources: give `--images NAME=DIR` once per source then).
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import cv2

from edge_app.config import FacesConfig, ModelConfig
from edge_app.core.policy import P_OVER_DIGITS, ChallengeRule, decide_calibrated
from edge_app.vision.card import card_path
from edge_app.vision.faces import FacePipeline, ImageError, load_image
from edge_app.vision.model import AgeModel, ModelError
from training.data import GROUP_COLUMNS, LabelledPhoto, LabelsError, read_labels
from training.evaluate_figures import Prediction, breakdown, gate_curve, metrics
from training.evaluate_report import format_breakdown, format_metrics, write_report


class EvaluateError(ValueError):
    """Input evaluate cannot use; the message names it."""


def image_dirs(specs: list[str]) -> dict[str | None, Path]:
    """--images DIR (any source) or NAME=DIR (the photos of source NAME)."""
    out: dict[str | None, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        key, path = (name, Path(folder)) if sep and not Path(spec).exists() else (None, Path(spec))
        if not path.is_dir():
            raise EvaluateError(f"--images: {path} is not a folder")
        out[key] = path
    return out


def photo_path(row: LabelledPhoto, dirs: dict[str | None, Path]) -> Path:
    src = row.columns.get("source")
    folder = dirs.get(src) if src in dirs else dirs.get(None)
    if folder is None:
        raise EvaluateError(f"no --images folder for source {src!r}: give --images {src}=DIR")
    return folder / row.file_name


def predict_all(
    rows: list[LabelledPhoto],
    dirs: dict[str | None, Path],
    pipe: FacePipeline,
    model: AgeModel,
    max_pixels: int,
    policy: ChallengeRule,
) -> tuple[list[Prediction], list[str]]:
    out, problems = [], []
    t0 = time.time()
    for i, row in enumerate(rows):
        try:
            rgb, _ = load_image(photo_path(row, dirs), max_pixels)
        except ImageError as exc:
            problems.append(str(exc))
            continue
        res = pipe.process(rgb)
        gated = ""
        if res.aligned is not None:
            crop, det = res.aligned.crop, 1
            gated = "; ".join(r.split(" (")[0] for r in res.aligned.rejected)
        else:
            n = model.input_size
            crop, det = cv2.resize(rgb, (n, n), interpolation=cv2.INTER_AREA), 0
        est = model.predict(crop)
        # The same call `agecheck estimate` makes: one frame, no face means no_face.
        pol = decide_calibrated([est.age] if det else [], [est.probs] if det else [], policy, model.rules)
        groups = {c: v for c, v in row.columns.items() if c in GROUP_COLUMNS}
        out.append(
            Prediction(row.file_name, row.real_age, round(est.age, 3), det, pol.decision, pol.p_over, groups, gated)
        )
        if (i + 1) % 1000 == 0:
            print(f"  {i + 1}/{len(rows)} photos ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    return out, problems


def record_figures(model: AgeModel, a: argparse.Namespace, figures: dict) -> None:
    """The figures in the model's card, under a key naming the labels, split and sources: the
    card the model was loaded with (checked then), with these added."""
    cp = card_path(a.model)
    key = f"{a.labels.parent.name}/{a.labels.name}" + (f":{a.split}" if a.split else "")
    key += "".join(f":{s}" for s in a.source)
    key += ":raw" if a.no_age_map else ""
    model.card.replace(metrics={**model.card.metrics, key: figures}).write(cp)
    print(f"figures recorded in {cp} under metrics[{key!r}]")


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--images",
        action="append",
        required=True,
        help="folder of the photos; NAME=DIR for the photos of source NAME (repeat per source)",
    )
    ap.add_argument("--labels", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=Path(ModelConfig().path))
    ap.add_argument("--predictions", type=Path, required=True, help="CSV to write")
    ap.add_argument("--split", default=None, help="only rows whose 'split' column has this value")
    ap.add_argument(
        "--source",
        action="append",
        default=[],
        help="only rows of this source (the labels' 'source' column); repeat for several",
    )
    ap.add_argument("--report", type=Path, default=None, help="folder for report.md and PNG plots")
    ap.add_argument("--update-card", action="store_true", help="record the figures in the model card")
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N photos")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--challenge-age",
        type=int,
        default=ChallengeRule.challenge_age,
        help="the challenge age the decision is made for (default %(default)s)",
    )
    ap.add_argument(
        "--no-age-map", action="store_true", help="ignore the card's age map: figures of the network's raw estimate"
    )
    return ap


def _inputs(
    ap: argparse.ArgumentParser, a: argparse.Namespace
) -> tuple[dict[str | None, Path], list[LabelledPhoto], AgeModel]:
    """The photo folders, the labelled rows to evaluate and the model; bad input ends in ap.error."""
    for p, flag in ((a.labels, "--labels"), (a.model, "--model")):
        if not p.exists():
            ap.error(f"{flag}: {p} does not exist")
    try:
        dirs = image_dirs(a.images)
        rows = read_labels(a.labels, a.split)
        if a.source:
            rows = [r for r in rows if r.columns.get("source") in a.source]
        if a.limit:
            rows = rows[: a.limit]
        if not rows:
            raise EvaluateError("no labelled photos to evaluate")
        for src in sorted({r.columns.get("source") for r in rows} - {None}):
            if src not in dirs and None not in dirs:
                raise EvaluateError(f"no --images folder for source {src!r}: give --images {src}=DIR")
        model = AgeModel(a.model, a.threads, use_age_map=not a.no_age_map)
    except (EvaluateError, LabelsError, ModelError) as exc:
        ap.error(str(exc))
    return dirs, rows, model


def _write_predictions(path: Path, preds: list[Prediction]) -> None:
    group_cols = list(preds[0].groups or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "real_age", "pred", "detected", "decision", "p_over", *group_cols, "gate"])
        for p in preds:
            w.writerow(
                [
                    p.file_name,
                    f"{p.real_age:g}",
                    f"{p.pred:.3f}",
                    p.detected,
                    p.decision,
                    "" if p.p_over is None else f"{p.p_over:.{P_OVER_DIGITS}f}",
                    *(p.groups.get(c, "") for c in group_cols),
                    p.gated,
                ]
            )


def _print_figures(a: argparse.Namespace, model: AgeModel, m: dict, groups: dict, t0: float) -> None:
    mapped = (
        "raw estimate (age map ignored)"
        if a.no_age_map
        else ("with the card's age map" if model.card.age_map else "no age map")
    )
    rule = (
        f"calibrated decision (P(age >= {a.challenge_age}))"
        if model.rules and model.rules.gate(a.challenge_age)
        else "margin rule (no calibrated decision in the card)"
    )
    print(
        f"model {a.model} ({model.model_id}, {mapped}, {rule}), labels {a.labels}"
        + (f", split {a.split}" if a.split else "")
    )
    print(format_metrics(m))
    if groups:
        print(format_breakdown(groups))
    print(f"({time.time() - t0:.0f} s; predictions in {a.predictions})")


def main(argv: list[str] | None = None) -> int:
    ap = _parser()
    a = ap.parse_args(argv)
    dirs, rows, model = _inputs(ap, a)
    # The till's face code with the crop size the model takes, as a till configured for this
    # model would run it (faces.output_size must equal the model's input there).
    faces_cfg = FacesConfig(output_size=model.input_size)
    policy = ChallengeRule(challenge_age=a.challenge_age)
    t0 = time.time()
    with FacePipeline(faces_cfg) as pipe:
        preds, problems = predict_all(rows, dirs, pipe, model, faces_cfg.max_image_pixels, policy)
    for msg in problems:
        print(f"skipped: {msg}", file=sys.stderr)
    if not preds:
        print("error: no photo could be read", file=sys.stderr)
        return 1
    _write_predictions(a.predictions, preds)
    m = metrics(preds)
    groups = breakdown(preds)
    curve = gate_curve(preds)
    _print_figures(a, model, m, groups, t0)
    report = a.report or a.predictions.with_name(a.predictions.stem + "_report")
    write_report(preds, m, groups, curve, report, a.model)
    print(f"report: {report / 'report.md'}")
    if a.update_card:
        record_figures(model, a, {**m, "groups": groups})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
