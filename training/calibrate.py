"""calibrate: the age map in the model card, fitted on the validation split only.

A monotone piecewise-linear calibration of the network's raw estimate that minimises the absolute
error: the expectation of a softmax pulls the old towards the middle of the training ages and a
peak of twenty-somethings pulls young adults down; a monotone L1 fit undoes both without
reordering faces. (A second map, a gate shift that read a calibrated t > 25 as 25, served the
UTKFace-only models; the calibrated decision replaced it, and docs/model.md keeps its history.)

The map is applied by `edge_app.vision.model.AgeModel` (card key ``age_map``); the till only ever
interpolates it.
"""

from __future__ import annotations

import numpy as np

from edge_app.core.policy import is_minor
from edge_app.vision.card import AgeMap

# Knots of the calibration; the fit chooses the value at each.
CAL_KNOTS = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 100.0)
CHALLENGE = 25.0


def _hat_matrix(values: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Row i holds the weights with which np.interp(values[i], knots, v) mixes v."""
    eye = np.eye(len(knots))
    return np.stack([np.interp(values, knots, eye[k]) for k in range(len(knots))], axis=1)


def fit_calibration(raw: np.ndarray, ages: np.ndarray, knots=CAL_KNOTS) -> dict:
    """Monotone piecewise-linear map with the least total absolute error, as a linear
    programme (HiGHS): the values at the knots rise, stay within 0..100, and each photo's
    error is split into its positive and negative parts."""
    from scipy.optimize import linprog
    from scipy.sparse import csr_matrix, diags, eye, hstack

    k = np.asarray(knots, float)
    raw = np.clip(np.asarray(raw, float), k[0], k[-1])
    ages = np.asarray(ages, float)
    n, m = len(raw), len(k)
    a = csr_matrix(_hat_matrix(raw, k))
    # variables: v (m knot values), e+ (n), e- (n);  a v - e+ + e- = ages
    a_eq = hstack([a, -eye(n), eye(n)], format="csr")
    # monotone: v[j] - v[j+1] <= 0
    d = diags([np.ones(m - 1), -np.ones(m - 1)], [0, 1], shape=(m - 1, m))
    a_ub = hstack([d, csr_matrix((m - 1, 2 * n))], format="csr")
    c = np.concatenate([np.zeros(m), np.ones(2 * n)])
    bounds = [(k[0], k[-1])] * m + [(0, None)] * (2 * n)
    res = linprog(c, A_ub=a_ub, b_ub=np.zeros(m - 1), A_eq=a_eq, b_eq=ages, bounds=bounds, method="highs")
    if not res.success:
        raise RuntimeError(f"calibration fit failed: {res.message}")
    v = np.maximum.accumulate(res.x[:m])
    return {"x": k.tolist(), "y": [round(float(t), 4) for t in v]}


def apply(amap: dict | None, raw: np.ndarray) -> np.ndarray:
    return np.interp(raw, amap["x"], amap["y"]) if amap else np.asarray(raw, float)


def gate_figures(pred: np.ndarray, age: np.ndarray) -> dict:
    minors = is_minor(age)
    adults = age >= 25
    return {
        "mae": float(np.mean(np.abs(pred - age))),
        "minors_at_25_plus": float(np.mean(pred[minors] >= CHALLENGE)) if minors.any() else float("nan"),
        "adults_under_25": float(np.mean(pred[adults] < CHALLENGE)) if adults.any() else float("nan"),
    }


def fit_age_map(raw: np.ndarray, ages: np.ndarray) -> tuple[AgeMap, dict]:
    """The card's age map and a record of how it was fitted (figures before and after)."""
    raw, ages = np.asarray(raw, float), np.asarray(ages, float)
    cal = fit_calibration(raw, ages)
    calibrated = gate_figures(apply(cal, raw), ages)
    # "final" is what the till reads: the calibration alone since the gate shift was dropped.
    info = {"raw": gate_figures(raw, ages), "calibration": cal, "calibrated": calibrated, "final": calibrated}
    return AgeMap.from_dict(cal), info
