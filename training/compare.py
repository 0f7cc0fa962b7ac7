"""compare: candidates side by side at the same number of minors approved, from the predictions
CSVs `training.evaluate --predictions` writes (use validation predictions to choose; a test split
only to report what was already chosen).

    python -m training.compare RUN_A/val.csv RUN_B/val.csv [--pair] [--minors 0 2 4 7]

A threshold set "just above the k-th highest minor's P(25+)" lets k minors through on any
candidate, so the adults each one then sends to ID compare the rankings themselves, free of where
each card happened to put its threshold. `--pair` adds the mean of the candidates' P(25+) per
photo (what averaging the networks at the till would give). Photos without a face count as sent
to ID (the till asks for ID when it sees no face).
"""

from __future__ import annotations

import argparse
import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_app.core.policy import is_minor
from edge_app.core.words import Decision
from training.calibrate import CHALLENGE
from training.data import FEMALE, MALE, per_source_mae

CHALLENGE_AGE = int(CHALLENGE)


class CompareError(ValueError):
    """A predictions file that cannot be compared; the message names it."""


@dataclass(frozen=True)
class Predictions:
    """One candidate's predictions on the same photos: real age, P(25+) (-1 without a face), the
    estimated age (NaN without a face), source and sex per photo."""

    name: str
    keys: tuple[str, ...]
    age: np.ndarray
    p_over: np.ndarray
    pred: np.ndarray
    source: np.ndarray
    sex: np.ndarray


def read(path: Path) -> Predictions:
    try:
        with open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise CompareError(f"{path}: cannot read it ({exc.strerror})") from None
    need = {"file_name", "real_age", "pred", "decision", "p_over", "source"}
    if not rows or not need <= set(rows[0]):
        raise CompareError(
            f"{path}: not a predictions CSV of training.evaluate (needs columns {', '.join(sorted(need))})"
        )
    keyed = {(r["source"], r["file_name"]): r for r in rows}
    keys = tuple(sorted(keyed))

    def p_over(r: dict) -> float:
        return float(r["p_over"]) if r["p_over"] and r["decision"] != Decision.NO_FACE else -1.0

    def pred(r: dict) -> float:
        return float(r["pred"]) if r["pred"] and r["decision"] != Decision.NO_FACE else math.nan

    return Predictions(
        name=path.stem,
        keys=keys,
        age=np.array([float(keyed[k]["real_age"]) for k in keys]),
        p_over=np.array([p_over(keyed[k]) for k in keys]),
        pred=np.array([pred(keyed[k]) for k in keys]),
        source=np.array([keyed[k]["source"] for k in keys]),
        sex=np.array([keyed[k].get("gender", "") for k in keys]),
    )


def pair(a: Predictions, b: Predictions) -> Predictions:
    """The mean of two candidates on the same photos (a photo without a face in either has none)."""
    if a.keys != b.keys:
        raise CompareError(f"{a.name} and {b.name} are not predictions on the same photos")
    face = (a.p_over >= 0) & (b.p_over >= 0)
    return Predictions(
        f"mean({a.name}, {b.name})",
        a.keys,
        a.age,
        np.where(face, (a.p_over + b.p_over) / 2, -1.0),
        np.where(face, (a.pred + b.pred) / 2, math.nan),
        a.source,
        a.sex,
    )


@dataclass(frozen=True)
class Row:
    minors_approved: int
    minors: int
    adults_to_id: float
    per_source: dict[str, float]
    women: float
    men: float


def at_minors(p: Predictions, k: int) -> Row:
    """Adults (25+) sent to ID when the threshold lets exactly the k highest-scoring minors through."""
    minor, adult = is_minor(p.age), p.age >= CHALLENGE_AGE
    ranked = np.sort(p.p_over[minor])[::-1]
    if k >= len(ranked):
        raise CompareError(f"{p.name}: only {len(ranked)} minors, cannot let {k} through")
    approved = p.p_over > ranked[k]  # ranked[0..k-1] pass, ties with the k-th do not
    to_id = ~approved

    def share(mask: np.ndarray) -> float:
        return float(to_id[mask].mean()) if mask.any() else math.nan

    return Row(
        int(approved[minor].sum()),
        int(minor.sum()),
        share(adult),
        {s: share(adult & (p.source == s)) for s in sorted(set(p.source))},
        share(adult & (p.sex == FEMALE)),
        share(adult & (p.sex == MALE)),
    )


def mae(p: Predictions) -> dict[str, float]:
    return per_source_mae(p.pred, p.age, p.source)


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f}%"


def minors_lines(p: Predictions, minors: list[int]) -> list[str]:
    """One line per k: adults sent to ID with k minors let through, per source, women and men."""
    lines = []
    for k in minors:
        r = at_minors(p, k)
        lines.append(
            f"  {r.minors_approved} of {r.minors} minors approved: 25+ sent to ID {_pct(r.adults_to_id)} ["
            + ", ".join(f"{s} {_pct(v)}" for s, v in r.per_source.items())
            + f"] women {_pct(r.women)} / men {_pct(r.men)}"
        )
    return lines


def table(cands: list[Predictions], minors: list[int]) -> str:
    lines = []
    for p in cands:
        lines.append(f"== {p.name}: MAE " + ", ".join(f"{s} {v:.2f}" for s, v in mae(p).items()))
        lines += minors_lines(p, minors)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("predictions", type=Path, nargs="+", help="CSV files from training.evaluate --predictions")
    ap.add_argument("--pair", action="store_true", help="also the mean of the first two candidates")
    ap.add_argument("--minors", type=int, nargs="+", default=[0, 2, 4, 7], help="minors let through (k)")
    a = ap.parse_args(argv)
    try:
        cands = [read(p) for p in a.predictions]
        if a.pair:
            if len(cands) < 2:
                raise CompareError("--pair needs two predictions files")
            cands.append(pair(cands[0], cands[1]))
        print(table(cands, a.minors))
    except CompareError as exc:
        print(f"error: {exc}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
