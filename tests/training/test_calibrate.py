"""The card's age map: the L1 calibration, the gate shift and their composition."""

import numpy as np
import pytest

from training.calibrate import CAL_KNOTS, apply, compose, fit_age_map, fit_calibration, fit_gate, gate_figures, gate_map


@pytest.fixture(scope="module")
def shrunk():
    """Estimates pulled towards 30 like a softmax expectation's, with noise."""
    rng = np.random.default_rng(7)
    ages = rng.integers(1, 95, 3000).astype(float)
    raw = 30 + 0.75 * (ages - 30) + rng.normal(0, 3, len(ages))
    return np.clip(raw, 0, 100), ages


def test_calibration_undoes_a_shrink_and_stays_monotone(shrunk):
    raw, ages = shrunk
    cal = fit_calibration(raw, ages)
    assert cal["x"] == list(CAL_KNOTS)
    y = np.array(cal["y"])
    assert np.all(np.diff(y) >= 0) and y.min() >= 0 and y.max() <= 100
    before = np.abs(raw - ages).mean()
    after = np.abs(apply(cal, raw) - ages).mean()
    assert after < 0.6 * before
    # The inverse of the shrink: 30 + (r - 30) / 0.75 at the inner knots.
    for k in (20.0, 50.0, 70.0):
        assert apply(cal, np.array([k]))[0] == pytest.approx(30 + (k - 30) / 0.75, abs=1.5)


def test_calibration_of_an_unbiased_estimate_is_near_identity():
    rng = np.random.default_rng(3)
    ages = rng.uniform(0, 100, 4000)
    raw = np.clip(ages + rng.laplace(0, 2, len(ages)), 0, 100)
    cal = fit_calibration(raw, ages)
    inner = np.array(cal["x"][1:-1])
    assert np.abs(np.array(cal["y"][1:-1]) - inner).max() < 1.5


def test_compose_is_the_two_maps_in_turn(shrunk):
    raw, ages = shrunk
    cal = fit_calibration(raw, ages)
    gate = gate_map(27.5)
    both = compose(cal, gate)
    assert np.all(np.diff(both["x"]) > 0)
    x = np.linspace(0, 100, 2001)
    assert np.abs(apply(both, x) - apply(gate, apply(cal, x))).max() < 1e-3


@pytest.fixture(scope="module")
def careless():
    """Teenagers estimated several years too old."""
    rng = np.random.default_rng(5)
    ages = np.concatenate([rng.integers(13, 18, 400), rng.integers(25, 60, 1600)]).astype(float)
    return ages + rng.normal(6, 4, len(ages)), ages


def test_gate_brings_minors_down_to_target(careless):
    est, ages = careless
    assert gate_figures(est, ages)["minors_at_25_plus"] > 0.1
    t, table = fit_gate(est, ages, 0.03)
    assert t is not None and t > 25
    assert gate_figures(apply(gate_map(t), est), ages)["minors_at_25_plus"] <= 0.03
    assert [row["t"] for row in table][:2] == [25.0, 25.25]
    # Already careful enough: no shift.
    assert fit_gate(ages - 5, ages, 0.03)[0] is None


def test_fit_age_map_records_how_it_was_fitted(shrunk):
    raw, ages = shrunk
    amap, info = fit_age_map(raw, ages, 0.03, calibrate=True)
    assert {"raw", "calibration", "calibrated", "final", "tradeoff"} <= set(info)
    assert info["final"]["minors_at_25_plus"] <= 0.03
    assert info["final"]["mae"] == pytest.approx(np.abs(apply(amap, raw) - ages).mean())
    assert info["calibrated"]["mae"] < info["raw"]["mae"]
    assert fit_age_map(raw, ages, None, calibrate=False)[0] is None


def test_gate_only_map(careless):
    est, ages = careless
    amap, info = fit_age_map(est, ages, 0.03, calibrate=False)
    assert amap["x"] == gate_map(amap["t"])["x"] and "calibration" not in info
    assert info["final"]["minors_at_25_plus"] <= 0.03
