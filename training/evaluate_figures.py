"""The figures of a set of predictions (what `training.evaluate` prints and the model card
records): error and Challenge-25 shares for everyone, per age band, per group the labels name
(with the age-standardised share of adults sent to ID), and the gate curve."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_app.core.bands import BANDS
from edge_app.core.policy import is_minor
from edge_app.core.words import Decision
from training.data import GROUP_COLUMNS

SEX_NAMES = {"0": "men", "1": "women"}  # UTKFace's and All-Age-Faces' coding


RACE_NAMES = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Other"}  # UTKFace's coding


BOOTSTRAP = 2000


STANDARDISED = "adults_25_plus_sent_to_id_age_standardised"


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
