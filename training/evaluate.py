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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_app.config import FacesConfig, ModelConfig
from edge_app.core.bands import BANDS
from edge_app.core.policy import P_OVER_DIGITS, ChallengeRule, decide_calibrated, is_minor
from edge_app.core.words import Decision
from edge_app.vision.card import card_path
from edge_app.vision.faces import FacePipeline, ImageError, load_image
from edge_app.vision.model import AgeModel, ModelError
from training.data import GROUP_COLUMNS, LabelledPhoto, LabelsError, read_labels

SEX_NAMES = {"0": "men", "1": "women"}  # UTKFace's and All-Age-Faces' coding
RACE_NAMES = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Other"}  # UTKFace's coding
BOOTSTRAP = 2000


class EvaluateError(ValueError):
    """Input evaluate cannot use; the message names it."""


@dataclass(frozen=True)
class Prediction:
    file_name: str
    real_age: float
    pred: float
    detected: int
    decision: str = Decision.CHECK_ID
    p_over: float | None = None
    groups: dict | None = None
    # Why the till's quality gate refused the face (its keys, e.g. "blurred"; "" when it passed).
    # The decision above is the model's; a till whose every frame is refused asks for ID.
    gated: str = ""


def _rate(mask: np.ndarray, of: np.ndarray) -> float | None:
    return round(float(mask[of].mean()), 4) if of.any() else None


def bootstrap_interval(hits: np.ndarray, seed: int = 0) -> list[float] | None:
    """95% percentile interval of a share, resampling the photos it is a share of."""
    if len(hits) == 0:
        return None
    rng = np.random.default_rng(seed)
    means = hits[rng.integers(0, len(hits), (BOOTSTRAP, len(hits)))].mean(axis=1)
    return [round(float(np.percentile(means, 2.5)), 4), round(float(np.percentile(means, 97.5)), 4)]


def metrics(preds: list[Prediction], intervals: bool = True) -> dict:
    """The figures evaluate prints and the model card records. Minors approved and adults sent to
    ID are counted from the till's decision; the estimated-age shares are kept beside them."""
    real = np.array([p.real_age for p in preds], float)
    pred = np.array([p.pred for p in preds], float)
    decision = np.array([p.decision for p in preds])
    err = np.abs(pred - real)
    minors = is_minor(real)
    adults = real >= 25
    approved = decision == Decision.APPROVE
    gated = np.array([bool(p.gated) for p in preds])
    by_band = {}
    whole = np.floor(real)  # bands are whole years, as in edge_app.core.policy.age_band: 24.5 is 18-24
    for name, lo, hi in BANDS:
        m = (whole >= lo) & (whole <= hi)
        by_band[name] = {"n": int(m.sum()), "mae": round(float(err[m].mean()), 3) if m.any() else None}
    out = {
        "n": len(preds),
        "mae": round(float(err.mean()), 3),
        "cs5": round(float((err <= 5).mean()), 4),
        "mae_by_band": by_band,
        "minors_13_17_estimated_25_plus": _rate(pred >= 25, minors),
        "minors_13_17_n": int(minors.sum()),
        "adults_25_plus_estimated_under_25": _rate(pred < 25, adults),
        "adults_25_plus_n": int(adults.sum()),
        "minors_13_17_approved": _rate(approved, minors),
        "adults_25_plus_sent_to_id": _rate(~approved, adults),
        "detection_rate": round(float(np.mean([p.detected for p in preds])), 4),
        # The quality gate: the faces it refuses are never approved at the till (it asks for ID),
        # so the share of minors it catches and the approvals left after it are the till's.
        "refused_by_gate": _rate(gated, np.array([bool(p.detected) for p in preds])),
        "minors_13_17_refused_by_gate": _rate(gated, minors),
        "minors_13_17_approved_after_gate": _rate(approved & ~gated, minors),
    }
    if intervals:
        out["minors_13_17_approved_ci95"] = bootstrap_interval(approved[minors].astype(float))
        out["adults_25_plus_sent_to_id_ci95"] = bootstrap_interval((~approved[adults]).astype(float), seed=1)
    return out


# Adult age bands for the age-standardised share sent to ID (whole years, upper bound inclusive).
ADULT_BANDS = ((25, 29), (30, 34), (35, 39), (40, 49), (50, 64), (65, 200))


def standardised_sent_to_id(group: list[Prediction], everyone: list[Prediction]) -> float | None:
    """The share of a group's 25+ sent to ID as it would be if the group's adults had the ages of
    `everyone`'s adults: each adult band's rate, weighted by that band's share of all adults.
    Women and men of a data set differ in age (UTKFace's adult women are younger), and younger
    adults are sent to ID more; this separates that from the model treating them differently.
    None when the group has no adult in some band that `everyone` has."""

    def whole(ps):
        return np.floor(np.array([p.real_age for p in ps], float))

    ages, ref = whole(group), whole(everyone)
    sent = np.array([p.decision != Decision.APPROVE for p in group])
    total = float((ref >= 25).sum())
    if not total:
        return None
    out = 0.0
    for lo, hi in ADULT_BANDS:
        share = float(((ref >= lo) & (ref <= hi)).sum()) / total
        if share == 0:
            continue
        m = (ages >= lo) & (ages <= hi)
        if not m.any():
            return None
        out += share * float(sent[m].mean())
    return round(out, 4)


def group_name(column: str, value: str) -> str:
    if column == "gender":
        return SEX_NAMES.get(value, f"gender {value}")
    if column == "race":
        return RACE_NAMES.get(value, f"race {value}")
    return value


def breakdown(preds: list[Prediction]) -> dict:
    """Figures per value of each optional column present: {column: {group: metrics}}. With a
    source column, sex and ethnicity are also broken down within each source."""
    out: dict = {}
    columns = [c for c in GROUP_COLUMNS if preds and c in (preds[0].groups or {})]
    for col in columns:
        values = sorted({(p.groups or {}).get(col, "") for p in preds} - {""})
        if not values:
            continue
        out[col] = {
            group_name(col, v): _group_metrics(col, [p for p in preds if p.groups.get(col) == v], preds) for v in values
        }
    if "source" in columns and len(out.get("source", {})) > 1:
        for col in ("gender", "race"):
            if col not in columns:
                continue
            for src in sorted({p.groups["source"] for p in preds}):
                sub = [p for p in preds if p.groups["source"] == src]
                values = sorted({p.groups.get(col, "") for p in sub} - {""})
                if values:
                    out.setdefault(f"{col} within source", {}).update(
                        {
                            f"{src} / {group_name(col, v)}": _group_metrics(
                                col, [p for p in sub if p.groups[col] == v], sub
                            )
                            for v in values
                        }
                    )
    return out


def _group_metrics(column: str, group: list[Prediction], scope: list[Prediction]) -> dict:
    m = metrics(group)
    if column in ("gender", "race"):
        m[STANDARDISED] = standardised_sent_to_id(group, scope)
    return m


def gate_curve(preds: list[Prediction], steps: int = 41) -> list[dict]:
    """13-17 approved and 25+ sent to ID as the threshold on p_over moves (a face without a
    usable face or probability is never approved)."""
    real = np.array([p.real_age for p in preds], float)
    p = np.array([-1.0 if p.p_over is None or p.decision == Decision.NO_FACE else p.p_over for p in preds])
    minors, adults = is_minor(real), real >= 25
    rows = []
    for t in np.linspace(0, 1, steps):
        ok = p >= t
        rows.append(
            {
                "threshold": round(float(t), 3),
                "minors_13_17_approved": _rate(ok, minors),
                "adults_25_plus_sent_to_id": _rate(~ok, adults),
            }
        )
    return rows


def pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _ci(v) -> str:
    return "" if not v else f" (95% CI {100 * v[0]:.1f}-{100 * v[1]:.1f}%)"


def format_metrics(m: dict) -> str:
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
        f"13-17 approved            {pct(m['minors_13_17_approved'])} of {m['minors_13_17_n']}"
        + _ci(m.get("minors_13_17_approved_ci95")),
        f"25+ sent to ID            {pct(m['adults_25_plus_sent_to_id'])} of {m['adults_25_plus_n']}"
        + _ci(m.get("adults_25_plus_sent_to_id_ci95")),
        f"detection rate            {pct(m['detection_rate'])}",
        f"refused by quality gate   {pct(m.get('refused_by_gate'))} of faces, {pct(m.get('minors_13_17_refused_by_gate'))} of 13-17"
        f" (13-17 approved after the gate: {pct(m.get('minors_13_17_approved_after_gate'))})",
    ]
    return "\n".join(lines)


STANDARDISED = "adults_25_plus_sent_to_id_age_standardised"


def format_breakdown(groups: dict) -> str:
    lines = []
    for col, table in groups.items():
        lines.append(f"by {col}:")
        std = STANDARDISED in next(iter(table.values()))
        lines.append(
            f"  {'group':<22} {'n':>6} {'MAE':>7} {'13-17 approved':>22} {'25+ sent to ID':>22}"
            f" {'gate refused':>13}" + (f" {'same ages':>10}" if std else "")
        )
        for name, m in table.items():
            mi = f"{pct(m['minors_13_17_approved'])} of {m['minors_13_17_n']}"
            ad = f"{pct(m['adults_25_plus_sent_to_id'])} of {m['adults_25_plus_n']}"
            lines.append(
                f"  {name:<22} {m['n']:>6} {m['mae']:>7.3f} {mi:>22} {ad:>22}"
                f" {pct(m.get('refused_by_gate')):>13}" + (f" {pct(m[STANDARDISED]):>10}" if std else "")
            )
    if any(STANDARDISED in next(iter(t.values())) for t in groups.values()):
        lines.append("(same ages: 25+ sent to ID if the group's adults had the ages of all adults in its scope)")
    return "\n".join(lines)


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


def _plot(folder: Path, name: str, draw) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4) if name != "pred_vs_real.png" else (5.5, 5.5))
    draw(ax)
    fig.tight_layout()
    fig.savefig(folder / name, dpi=100)
    plt.close(fig)


def write_report(
    preds: list[Prediction], m: dict, groups: dict, curve: list[dict], folder: Path, model_path: Path
) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    real = np.array([p.real_age for p in preds])
    pred = np.array([p.pred for p in preds])

    def hist(ax):
        bins = np.arange(0, 106, 5)
        ax.hist(real, bins=bins, alpha=0.6, label="real age")
        ax.hist(pred, bins=bins, alpha=0.6, label="estimated age")
        ax.set(xlabel="age (years)", ylabel="photos", title="Age histogram")
        ax.legend()

    def scatter(ax):
        ax.scatter(real, pred, s=3, alpha=0.3)
        ax.plot([0, 100], [0, 100], "k--", lw=1)
        ax.axhline(25, color="r", lw=0.8)
        ax.axvline(25, color="r", lw=0.8)
        ax.set(xlabel="real age", ylabel="estimated age", title="Estimated vs real (red: challenge age 25)")

    def bands(ax):
        names = list(m["mae_by_band"])
        ax.bar(names, [m["mae_by_band"][b]["mae"] or 0 for b in names])
        ax.set(xlabel="age band", ylabel="MAE (years)", title="Error by age band")

    def gate(ax):
        pts = [
            (r["adults_25_plus_sent_to_id"], r["minors_13_17_approved"])
            for r in curve
            if r["adults_25_plus_sent_to_id"] is not None and r["minors_13_17_approved"] is not None
        ]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(np.array(xs) * 100, np.array(ys) * 100, "o-", ms=3, label="threshold moved 0..1")
        if m["adults_25_plus_sent_to_id"] is not None and m["minors_13_17_approved"] is not None:
            ax.plot(
                [100 * m["adults_25_plus_sent_to_id"]],
                [100 * m["minors_13_17_approved"]],
                "r*",
                ms=12,
                label="the card's threshold",
            )
        ax.set(xlabel="25+ sent to ID (%)", ylabel="13-17 approved (%)", title="Gate curve")
        ax.legend()

    for name, draw in (
        ("age_histogram.png", hist),
        ("pred_vs_real.png", scatter),
        ("error_by_band.png", bands),
        ("gate_curve.png", gate),
    ):
        _plot(folder, name, draw)

    md = [f"# Evaluation of {model_path.name}", "", "```", format_metrics(m), "```", ""]
    if groups:
        md += ["## By group", "", "```", format_breakdown(groups), "```", ""]
    md += [
        "## Gate curve (threshold on the calibrated P(age >= challenge age))",
        "",
        "| threshold | 13-17 approved | 25+ sent to ID |",
        "| --- | --- | --- |",
    ]
    md += [
        f"| {r['threshold']:.3f} | {pct(r['minors_13_17_approved'])} | {pct(r['adults_25_plus_sent_to_id'])} |"
        for r in curve
    ]
    md += [
        "",
        "![Gate curve](gate_curve.png)",
        "",
        "![Age histogram](age_histogram.png)",
        "",
        "![Estimated vs real](pred_vs_real.png)",
        "",
        "![Error by band](error_by_band.png)",
        "",
    ]
    (folder / "report.md").write_text("\n".join(md))


def record_figures(model: AgeModel, a: argparse.Namespace, figures: dict) -> None:
    """The figures in the model's card, under a key naming the labels, split and sources: the
    card the model was loaded with (checked then), with these added."""
    cp = card_path(a.model)
    key = f"{a.labels.parent.name}/{a.labels.name}" + (f":{a.split}" if a.split else "")
    key += "".join(f":{s}" for s in a.source)
    key += ":raw" if a.no_age_map else ""
    model.card.replace(metrics={**model.card.metrics, key: figures}).write(cp)
    print(f"figures recorded in {cp} under metrics[{key!r}]")


def main(argv: list[str] | None = None) -> int:
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
    a = ap.parse_args(argv)
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
    group_cols = list(preds[0].groups or {})
    a.predictions.parent.mkdir(parents=True, exist_ok=True)
    with open(a.predictions, "w", newline="") as fh:
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
    m = metrics(preds)
    groups = breakdown(preds)
    curve = gate_curve(preds)
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
    report = a.report or a.predictions.with_name(a.predictions.stem + "_report")
    write_report(preds, m, groups, curve, report, a.model)
    print(f"report: {report / 'report.md'}")
    if a.update_card:
        record_figures(model, a, {**m, "groups": groups})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
