"""decision: fits the card's calibrated decision on the validation split (both sources).

For each challenge age: a monotone (isotonic) map from the distribution's mass at or over that
age to the observed share of faces at or over it, each source weighted equally so the larger one
does not decide alone; then the threshold on the calibrated probability that approves at most a
target share of 13-17-year-olds. And one temperature for the age interval shown to the cashier,
chosen so the central interval covers its nominal share of validation ages. The till applies
the result with `edge_app.core.policy` (np.interp and a comparison), never with this module.

    python -m training.decision --model models/age_resnet10_int8.tflite --data CACHE_DATASET_DIR \
        --minors-approved 0.015 [--minors-approved-each 0.03]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from edge_app.core.policy import age_interval, is_minor, raw_p_over
from edge_app.vision.card import CardDecision, CardError, ModelCard, card_path
from training.data import source_weights

CHALLENGE_AGES = (21, 25)  # Challenge 21 and Challenge 25; the item's legal age never exceeds these here
CARRY_OVER_CHALLENGE = 25  # the challenge age training.loso measures the left-out margin at


def fit_isotonic(raw: np.ndarray, outcome: np.ndarray, weights: np.ndarray) -> tuple[list[float], list[float]]:
    """Centred isotonic fit of outcome on raw, as piecewise-linear knots: faces with one raw
    score pooled into one point, scipy's PAVA, then one knot per run of equal fitted values at
    the run's weighted mean raw value (centred isotonic regression, Oron & Flournoy 2017), linear
    between knots; flat from raw 0 to the first centre and from the last centre to raw 1.

    Why centred: PAVA's steps put a minor whose raw score sits among adults on one plateau with
    them, and a threshold cannot split faces with one value. With the steps the shipped network's
    validation faces took 136 distinct calibrated values (their raw scores 3,086), so the strictest
    thresholds could pass 3 or 6 minors and nothing between. Between its first and last centre
    this map is strictly increasing, so it keeps the network's ranking of faces. Why pooled: int8
    outputs tie, and PAVA on single rows would split faces of one score by their order."""
    from scipy.optimize import isotonic_regression

    keep = np.asarray(weights, float) > 0
    if not keep.any():
        raise ValueError("no face with a positive weight to fit the calibration on")
    x, inverse = np.unique(np.asarray(raw, float)[keep], return_inverse=True)
    w_rows = np.asarray(weights, float)[keep]
    w = np.bincount(inverse, weights=w_rows)
    y = np.bincount(inverse, weights=w_rows * np.asarray(outcome, float)[keep]) / w
    fit = isotonic_regression(y, weights=w, increasing=True)
    vals, starts = fit.x, list(fit.blocks[:-1])
    # Runs of blocks with the same value (PAVA does not merge equal neighbours) become one knot.
    runs = [s for i, s in enumerate(starts) if i == 0 or vals[s] != vals[starts[i - 1]]] + [len(x)]
    knots: list[list[float]] = []  # [centre, value, weight]
    for b0, b1 in zip(runs[:-1], runs[1:]):
        centre, value, weight = round(float(np.average(x[b0:b1], weights=w[b0:b1])), 6), float(vals[b0]), w[b0:b1].sum()
        if knots and centre <= knots[-1][0]:
            # Two centres one after rounding (the card wants strictly increasing knots): one knot
            # with their weighted mean value.
            c, v, vw = knots[-1]
            knots[-1] = [c, (v * vw + value * weight) / (vw + weight), vw + weight]
        else:
            knots.append([centre, value, weight])
    xs, ys = [k[0] for k in knots], [k[1] for k in knots]
    if xs[0] > 0.0:
        xs, ys = [0.0, *xs], [ys[0], *ys]
    if xs[-1] < 1.0:
        xs, ys = [*xs, 1.0], [*ys, ys[-1]]
    ys = np.maximum.accumulate(np.clip(np.round(ys, 6), 0, 1))
    return [float(v) for v in xs], [float(v) for v in ys]


def gate_table(p: np.ndarray, ages: np.ndarray, sources: np.ndarray, thresholds, challenge_age: int = 25) -> list[dict]:
    """Share of 13-17 approved and of faces at or over the challenge age sent to ID, pooled and
    per source, per threshold."""
    minors = is_minor(ages)
    adults = ages >= challenge_age
    rows = []
    for t in thresholds:
        ok = p >= t
        row = {
            "threshold": round(float(t), 4),
            "minors_approved": float(ok[minors].mean()) if minors.any() else float("nan"),
            "adults_to_id": float((~ok[adults]).mean()) if adults.any() else float("nan"),
        }
        for s in sorted(set(sources.tolist())):
            m = sources == s
            row[f"{s}:minors_approved"] = float(ok[m & minors].mean()) if (m & minors).any() else float("nan")
            row[f"{s}:adults_to_id"] = float((~ok[m & adults]).mean()) if (m & adults).any() else float("nan")
        rows.append(row)
    return rows


def choose_threshold(
    p: np.ndarray, ages: np.ndarray, sources: np.ndarray, pooled: float, each: float, challenge_age: int = 25
) -> float:
    """The lowest threshold whose share of approved 13-17-year-olds is at most `pooled` over all
    sources and at most `each` in every source (lowest: the fewest adults sent to ID)."""
    cands = np.unique(np.concatenate([p, [1.0 + 1e-9]]))
    for t, row in zip(cands, gate_table(p, ages, sources, cands, challenge_age)):
        per = [v for k, v in row.items() if k.endswith(":minors_approved") and np.isfinite(v)]
        if row["minors_approved"] <= pooled and all(v <= each for v in per):
            # The exact value: the table's rounded one could fall below it and approve one more.
            return float(t)
    return float(cands[-1])


def fit_temperature(probs: np.ndarray, ages: np.ndarray, weights: np.ndarray, level: float) -> float:
    """Temperature whose central `level` interval covers `level` of validation ages (weighted)."""
    lo_t, hi_t = 0.3, 5.0
    for _ in range(30):  # coverage rises with the temperature: bisect
        t = (lo_t + hi_t) / 2
        cover = np.average(
            [lo <= a <= hi for (lo, hi), a in ((age_interval(q, level, t), a) for q, a in zip(probs, ages))],
            weights=weights,
        )
        lo_t, hi_t = (t, hi_t) if cover < level else (lo_t, t)
    return round((lo_t + hi_t) / 2, 4)


def fit_decision(
    probs: np.ndarray,
    ages: np.ndarray,
    sources: np.ndarray,
    minors_pooled: float,
    minors_each: float,
    level: float = 0.8,
    margin: float | None = None,
) -> CardDecision:
    """The card's decision, with the validation figures it was chosen on. `margin` (None: not
    asked for, and not recorded) is added to the Challenge 25 threshold, at most up to 1: what the worst source left out of training needed on top of the
    validation fit (training.loso measures it at 25 only, and a margin on one calibrated
    probability says nothing of another's)."""
    probs, ages, sources = np.asarray(probs, float), np.asarray(ages, float), np.asarray(sources)
    w = source_weights(sources)
    gates, fit = [], {}
    minors = int(is_minor(ages).sum())
    grid = np.round(np.linspace(0, 1, 41), 3)
    for c in CHALLENGE_AGES:
        raw = np.array([raw_p_over(q, c) for q in probs])
        xs, ys = fit_isotonic(raw, ages >= c, w)
        cal = np.interp(raw, xs, ys)
        fitted = choose_threshold(cal, ages, sources, minors_pooled, minors_each, c)
        add = margin if c == CARRY_OVER_CHALLENGE else None
        # A fitted threshold over 1 (no threshold meets the target) is never lowered to 1.
        thr = fitted if add is None else max(fitted, min(1.0, fitted + add))
        gates.append({"challenge_age": c, "raw": xs, "calibrated": ys, "threshold": thr})
        fit[str(c)] = {
            "minors": minors,
            "chosen": {**gate_table(cal, ages, sources, [thr], c)[0], "threshold": thr},  # exact, as in "gates"
            "curve": gate_table(cal, ages, sources, grid, c),
            # The margin actually applied (capped at 1), so threshold = fitted_threshold + margin.
            **({"fitted_threshold": fitted, "margin": round(thr - fitted, 6)} if add is not None else {}),
        }
    temp = fit_temperature(probs, ages, w, level)
    return CardDecision.from_dict(
        {
            "method": "centred isotonic calibration of P(age >= challenge age) on validation, sources weighted equally; "
            "approve when it is at least the threshold",
            "gates": gates,
            "target": {"minors_approved_pooled": minors_pooled, "minors_approved_each_source": minors_each},
            "interval": {"level": level, "temperature": temp},
            "fit": {
                "on": f"validation split ({len(ages)} crops: "
                + ", ".join(f"{s} {int((sources == s).sum())}" for s in sorted(set(sources.tolist())))
                + ")",
                **fit,
            },
        }
    )


def summary(decision: CardDecision, sources: list[str]) -> list[str]:
    lines = []
    for c, f in decision.fit.items():
        if c == "on":
            continue
        ch = f["chosen"]
        if "margin" in f:
            lines.append(
                f"challenge {c}: threshold {f['fitted_threshold']:.3f} fitted on validation, "
                f"+{f['margin']:.3f} carry-over margin (training.loso's worst left-out source)"
            )
        per = "; ".join(
            f"{s} {100 * ch[f'{s}:minors_approved']:.1f}% / {100 * ch[f'{s}:adults_to_id']:.1f}%" for s in sources
        )
        # How many minors stand behind the threshold: with a hundred, one face moves it.
        lines.append(
            f"validation, challenge {c}: threshold {ch['threshold']:.3f}: 13-17 approved "
            f"{100 * ch['minors_approved']:.2f}% of {f['minors']}, {c}+ sent to ID {100 * ch['adults_to_id']:.2f}% "
            f"(per source, approved / to ID: {per})"
        )
    lines.append(
        f"age interval: {100 * decision.rules.interval_level:.0f}% at temperature {decision.rules.interval_temperature}"
    )
    return lines


def fit_for_model(
    model_path: Path, data: Path, pooled: float, each: float, level: float, margin: float | None = None
) -> CardDecision:
    """The decision block for a TFLite file, from its distributions on the validation crops."""
    from edge_app.vision.model import AgeModel
    from training.data import load_split

    val = load_split(data, "val")
    model = AgeModel(model_path, use_age_map=False)
    if model.input_size != val.x.shape[1]:
        raise ValueError(f"{data} holds {val.x.shape[1]} px crops but {model_path} takes {model.input_size} px")
    probs = np.stack([model.predict(c).probs for c in val.x])
    decision = fit_decision(probs, val.age, val.source, pooled, each, level, margin)
    print("\n".join(summary(decision, val.sources())))
    return decision


def carry_over_margin(card: ModelCard) -> float:
    """The margin recorded by `training.loso --record-in`; CardError when there is none."""
    carry = card.carry_over or {}
    if "margin_needed" not in carry:
        raise CardError(
            f"card {card.model_id!r} has no carry-over margin (carry_over.margin_needed); run training.loso with "
            "--record-in on this card first"
        )
    value = carry["margin_needed"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise CardError(
            f"card {card.model_id!r}: carry_over.margin_needed is {value!r}, not a number from 0 to below 1"
        )
    return float(value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m training.decision",
        description="fit (again) the calibrated decision in a model's card, on validation",
    )
    ap.add_argument("--model", type=Path, required=True, help="the .tflite whose card gets the decision")
    ap.add_argument("--data", type=Path, required=True, help="dataset folder from training.prepare")
    ap.add_argument(
        "--minors-approved",
        type=float,
        required=True,
        help="share of 13-17-year-olds the threshold may approve over all sources (e.g. 0.015)",
    )
    ap.add_argument(
        "--minors-approved-each", type=float, default=None, help="the same in each source (default: the same)"
    )
    ap.add_argument("--interval", type=float, default=0.8, help="level of the age interval shown to the cashier")
    ap.add_argument(
        "--carry-over-margin",
        action="store_true",
        help="add to the Challenge 25 threshold the margin the card's carry_over (training.loso --record-in) "
        "says its worst left-out source needed",
    )
    ap.add_argument(
        "--same-in",
        type=Path,
        action="append",
        default=[],
        help="another model card to get the same decision (the float build's: export gives it the int8 file's)",
    )
    a = ap.parse_args(argv)
    for p, flag in ((a.model, "--model"), (a.data / "index.csv", "--data"), *((c, "--same-in") for c in a.same_in)):
        if not p.exists():
            ap.error(f"{flag}: {p} does not exist")
    each = a.minors_approved if a.minors_approved_each is None else a.minors_approved_each
    cp = card_path(a.model)
    try:  # CardError (a ValueError) names a card that cannot be read
        card = ModelCard.read_beside(a.model)
        others = [ModelCard.read(c) for c in a.same_in]
        margin = carry_over_margin(card) if a.carry_over_margin else None
        decision = fit_for_model(a.model, a.data, a.minors_approved, each, a.interval, margin)
    except ValueError as exc:
        ap.error(str(exc))
    for path, c in ((cp, card), *zip(a.same_in, others)):
        c.replace(decision=decision).write(path)
        print(f"decision recorded in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
