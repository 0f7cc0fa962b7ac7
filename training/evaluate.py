"""evaluate: run labelled photos through the SAME code the till uses (edge_app.faces for
detection and alignment, the TFLite file through edge_app.model) and report the figures that
matter for the Challenge-25 gate.

    python -m training.evaluate --images DIR --labels CSV [--model PATH] --predictions OUT.csv
        [--split test] [--report DIR] [--update-card] [--limit N]

The predictions CSV has the columns file_name,real_age,pred,detected. A photo where no face is
found is still predicted, from the whole photo resized to the model input, and marked 0.
`--split NAME` keeps only rows whose `split` column equals NAME (the split.csv that
`training.prepare` writes is a labels CSV with that column).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_app.config import FacesConfig, ModelConfig
from edge_app.faces import FacePipeline, ImageError, load_image
from edge_app.model import AgeModel, ModelError, card_path
from edge_app.policy import BANDS


@dataclass(frozen=True)
class Prediction:
    file_name: str
    real_age: float
    pred: float
    detected: int


def metrics(preds: list[Prediction]) -> dict:
    """The figures evaluate prints and the model card records."""
    real = np.array([p.real_age for p in preds], float)
    pred = np.array([p.pred for p in preds], float)
    err = np.abs(pred - real)
    minors = (real >= 13) & (real <= 17)
    adults = real >= 25
    by_band = {}
    whole = np.floor(real)  # bands are whole years, as in edge_app.policy.age_band: 24.5 is 18-24
    for name, lo, hi in BANDS:
        m = (whole >= lo) & (whole <= hi)
        by_band[name] = {"n": int(m.sum()), "mae": round(float(err[m].mean()), 3) if m.any() else None}
    return {
        "n": len(preds),
        "mae": round(float(err.mean()), 3),
        "cs5": round(float((err <= 5).mean()), 4),
        "mae_by_band": by_band,
        "minors_13_17_estimated_25_plus": round(float((pred[minors] >= 25).mean()), 4) if minors.any() else None,
        "minors_13_17_n": int(minors.sum()),
        "adults_25_plus_estimated_under_25": round(float((pred[adults] < 25).mean()), 4) if adults.any() else None,
        "adults_25_plus_n": int(adults.sum()),
        "detection_rate": round(float(np.mean([p.detected for p in preds])), 4),
    }


def format_metrics(m: dict) -> str:
    pct = lambda v: "n/a" if v is None else f"{100 * v:.2f}%"  # noqa: E731
    lines = [
        f"n                         {m['n']}",
        f"MAE                       {m['mae']:.3f} years",
        f"CS@5                      {pct(m['cs5'])}",
        "MAE by band:",
    ]
    for name, b in m["mae_by_band"].items():
        mae = "n/a" if b["mae"] is None else f"{b['mae']:.3f}"
        lines.append(f"  {name:>6}  n={b['n']:<5} MAE {mae}")
    lines += [
        f"13-17 estimated 25+       {pct(m['minors_13_17_estimated_25_plus'])} of {m['minors_13_17_n']}",
        f"25+ estimated under 25    {pct(m['adults_25_plus_estimated_under_25'])} of {m['adults_25_plus_n']}",
        f"detection rate            {pct(m['detection_rate'])}",
    ]
    return "\n".join(lines)


def read_labels(path: Path, split: str | None) -> list[tuple[str, float]]:
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        if not {"file_name", "real_age"} <= cols:
            raise SystemExit(f"error: {path} must have the columns file_name,real_age")
        if split and "split" not in cols:
            raise SystemExit(f"error: --split given but {path} has no 'split' column (use the split.csv from training.prepare)")
        rows = []
        for i, r in enumerate(reader, start=2):
            if split and r["split"] != split:
                continue
            try:
                rows.append((r["file_name"], float(r["real_age"])))
            except ValueError:
                print(f"warning: {path}:{i}: age {r['real_age']!r} is not a number; skipped", file=sys.stderr)
        return rows


def predict_all(rows, images: Path, pipe: FacePipeline, model: AgeModel, max_pixels: int) -> tuple[list[Prediction], list[str]]:
    out, problems = [], []
    t0 = time.time()
    for i, (name, age) in enumerate(rows):
        try:
            rgb, _ = load_image(images / name, max_pixels)
        except ImageError as exc:
            problems.append(str(exc))
            continue
        res = pipe.process(rgb)
        if res.aligned is not None:
            crop, det = res.aligned.crop, 1
        else:
            n = model.input_size
            crop, det = cv2.resize(rgb, (n, n), interpolation=cv2.INTER_AREA), 0
        out.append(Prediction(name, age, round(model.predict(crop).age, 3), det))
        if (i + 1) % 1000 == 0:
            print(f"  {i + 1}/{len(rows)} photos ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    return out, problems


def write_report(preds: list[Prediction], m: dict, folder: Path, model_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    real = np.array([p.real_age for p in preds])
    pred = np.array([p.pred for p in preds])

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.arange(0, 106, 5)
    ax.hist(real, bins=bins, alpha=0.6, label="real age")
    ax.hist(pred, bins=bins, alpha=0.6, label="estimated age")
    ax.set_xlabel("age (years)")
    ax.set_ylabel("photos")
    ax.legend()
    ax.set_title("Age histogram")
    fig.tight_layout()
    fig.savefig(folder / "age_histogram.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.scatter(real, pred, s=3, alpha=0.3)
    ax.plot([0, 100], [0, 100], "k--", lw=1)
    ax.axhline(25, color="r", lw=0.8)
    ax.axvline(25, color="r", lw=0.8)
    ax.set_xlabel("real age")
    ax.set_ylabel("estimated age")
    ax.set_title("Estimated vs real (red: challenge age 25)")
    fig.tight_layout()
    fig.savefig(folder / "pred_vs_real.png", dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    names = [b for b in m["mae_by_band"]]
    vals = [m["mae_by_band"][b]["mae"] or 0 for b in names]
    ax.bar(names, vals)
    ax.set_xlabel("age band")
    ax.set_ylabel("MAE (years)")
    ax.set_title("Error by age band")
    fig.tight_layout()
    fig.savefig(folder / "error_by_band.png", dpi=100)
    plt.close(fig)

    md = [
        f"# Evaluation of {model_path.name}",
        "",
        "```",
        format_metrics(m),
        "```",
        "",
        "![Age histogram](age_histogram.png)",
        "",
        "![Estimated vs real](pred_vs_real.png)",
        "",
        "![Error by band](error_by_band.png)",
        "",
    ]
    (folder / "report.md").write_text("\n".join(md))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--labels", type=Path, required=True)
    ap.add_argument("--model", type=Path, default=Path(ModelConfig.path))
    ap.add_argument("--predictions", type=Path, required=True, help="CSV to write")
    ap.add_argument("--split", default=None, help="only rows whose 'split' column has this value")
    ap.add_argument("--report", type=Path, default=None, help="folder for report.md and PNG plots")
    ap.add_argument("--update-card", action="store_true", help="record the figures in the model card")
    ap.add_argument("--limit", type=int, default=0, help="evaluate only the first N photos")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-age-map", action="store_true",
                    help="ignore the card's age map: figures of the network's raw estimate")
    a = ap.parse_args(argv)
    for p, flag in ((a.images, "--images"), (a.labels, "--labels"), (a.model, "--model")):
        if not p.exists():
            ap.error(f"{flag}: {p} does not exist")

    rows = read_labels(a.labels, a.split)
    if a.limit:
        rows = rows[: a.limit]
    if not rows:
        ap.error("no labelled photos to evaluate")
    try:
        model = AgeModel(a.model, a.threads, use_age_map=not a.no_age_map)
    except ModelError as exc:
        ap.error(str(exc))
    # The till's face code with the crop size the model takes, as a till configured for this
    # model would run it (faces.output_size must equal the model's input there).
    faces_cfg = FacesConfig(output_size=model.input_size)
    t0 = time.time()
    with FacePipeline(faces_cfg) as pipe:
        preds, problems = predict_all(rows, a.images, pipe, model, faces_cfg.max_image_pixels)
    for msg in problems:
        print(f"skipped: {msg}", file=sys.stderr)
    if not preds:
        print("error: no photo could be read", file=sys.stderr)
        return 1
    a.predictions.parent.mkdir(parents=True, exist_ok=True)
    with open(a.predictions, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "real_age", "pred", "detected"])
        for p in preds:
            w.writerow([p.file_name, f"{p.real_age:g}", f"{p.pred:.3f}", p.detected])
    m = metrics(preds)
    mapped = "raw estimate (age map ignored)" if a.no_age_map else ("with the card's age map" if model.card.get("age_map") else "no age map")
    print(f"model {a.model} ({model.model_id}, {mapped}), labels {a.labels}" + (f", split {a.split}" if a.split else ""))
    print(format_metrics(m))
    print(f"({time.time() - t0:.0f} s; predictions in {a.predictions})")
    report = a.report or a.predictions.with_name(a.predictions.stem + "_report")
    write_report(preds, m, report, a.model)
    print(f"report: {report / 'report.md'}")
    if a.update_card:
        cp = card_path(a.model)
        card = json.loads(cp.read_text()) if cp.exists() else {}
        key = f"{a.labels.parent.name}/{a.labels.name}" + (f":{a.split}" if a.split else "")
        key += ":raw" if a.no_age_map else ""
        card.setdefault("metrics", {})[key] = m
        cp.write_text(json.dumps(card, indent=2) + "\n")
        print(f"figures recorded in {cp} under metrics[{key!r}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
