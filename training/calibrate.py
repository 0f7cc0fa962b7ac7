"""calibrate: the age map in the model card, fitted on the validation split only.

Two monotone piecewise-linear maps of the network's raw estimate, composed into one:

1. a calibration that minimises the absolute error (the expectation of a softmax pulls the old
   towards the middle of the training ages and a peak of twenty-somethings pulls young adults
   down; a monotone L1 fit undoes both without reordering faces), and
2. a gate shift that makes the till more careful around the challenge age: the (calibrated)
   estimate t reads as 25, so that at most a chosen share of 13-17-year-olds is estimated at 25+.

The map is applied by `edge_app.vision.model.AgeModel` (card key ``age_map``); the till only ever
interpolates it.
"""

from __future__ import annotations

import numpy as np

# Knots of the calibration; the fit chooses the value at each.
CAL_KNOTS = (0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 100.0)
# The gate shift only moves estimates inside this window; chosen on validation (5-fold) as the
# window that costs the least MAE for the same share of minors at 25+.
GATE_WINDOW = (22.0, 35.0)
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
    from scipy.sparse import eye, hstack, csr_matrix, diags

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


def gate_map(t: float, lo: float = GATE_WINDOW[0], hi: float = GATE_WINDOW[1]) -> dict:
    """[lo, t] is stretched onto [lo, 25] and [t, hi] onto [25, hi]; identity outside. t > 25
    makes the till more careful around the gate (a raw 26 reads as under 25), which is where a
    minor's face is most often over-estimated."""
    return {"x": [0.0, lo, t, hi, 100.0], "y": [0.0, lo, CHALLENGE, hi, 100.0]}


def apply(amap: dict | None, raw: np.ndarray) -> np.ndarray:
    return np.interp(raw, amap["x"], amap["y"]) if amap else np.asarray(raw, float)


def compose(inner: dict, outer: dict) -> dict:
    """outer(inner(x)) as one piecewise-linear map: its breaks are inner's knots plus the points
    that inner sends onto outer's knots."""
    ix, iy = np.asarray(inner["x"], float), np.asarray(inner["y"], float)
    xs = set(ix.tolist())
    for ok in outer["x"]:
        hit = np.nonzero((iy[:-1] <= ok) & (ok <= iy[1:]) & (iy[1:] > iy[:-1]))[0]
        for j in hit:
            xs.add(float(ix[j] + (ok - iy[j]) * (ix[j + 1] - ix[j]) / (iy[j + 1] - iy[j])))
    x = np.array(sorted(xs))
    x = x[np.concatenate([[True], np.diff(x) > 1e-6])]
    y = apply(outer, apply(inner, x))
    return {"x": [round(float(t), 4) for t in x], "y": [round(float(t), 4) for t in y]}


def gate_figures(pred: np.ndarray, age: np.ndarray) -> dict:
    minors = (age >= 13) & (age <= 17)
    adults = age >= 25
    return {
        "mae": float(np.mean(np.abs(pred - age))),
        "minors_at_25_plus": float(np.mean(pred[minors] >= CHALLENGE)) if minors.any() else float("nan"),
        "adults_under_25": float(np.mean(pred[adults] < CHALLENGE)) if adults.any() else float("nan"),
    }


def fit_gate(est: np.ndarray, ages: np.ndarray, max_minor_share: float, max_t: float = 32.0) -> tuple[float | None, list[dict]]:
    """The smallest shift t (steps of 0.25) that brings the share of 13-17-year-olds estimated
    at 25+ down to max_minor_share; None when none is needed. Also the trade-off table."""
    table, chosen = [], None
    for t in np.arange(CHALLENGE, max_t + 1e-9, 0.25):
        f = gate_figures(apply(gate_map(float(t)), est), ages)
        table.append({"t": round(float(t), 2), **{k: round(v, 4) for k, v in f.items()}})
        if chosen is None and f["minors_at_25_plus"] <= max_minor_share:
            chosen = float(t)
    return (chosen if chosen is not None and chosen > CHALLENGE else None), table


def fit_age_map(raw: np.ndarray, ages: np.ndarray, gate_target: float | None, calibrate: bool) -> tuple[dict | None, dict]:
    """The card's age map (None for identity) and a record of how it was fitted."""
    raw, ages = np.asarray(raw, float), np.asarray(ages, float)
    cal = fit_calibration(raw, ages) if calibrate else None
    est = apply(cal, raw)
    info: dict = {"raw": gate_figures(raw, ages)}
    if cal:
        info["calibration"] = cal
        info["calibrated"] = gate_figures(est, ages)
    t = None
    if gate_target is not None:
        t, table = fit_gate(est, ages, gate_target)
        info.update({"target_minor_share": gate_target, "gate_window": list(GATE_WINDOW), "tradeoff": table})
    amap = cal
    if t:
        gate = gate_map(t)
        amap = {**(compose(cal, gate) if cal else gate), "t": t}
    info["final"] = gate_figures(apply(amap, raw), ages)
    return amap, info
