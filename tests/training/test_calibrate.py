"""The card's age map: the L1 calibration, fitted on validation."""

import numpy as np
import pytest

from edge_app.vision.card import AgeMap
from training.calibrate import CAL_KNOTS, apply, fit_age_map, fit_calibration


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


def test_fit_age_map_records_how_it_was_fitted(shrunk):
    raw, ages = shrunk
    amap, info = fit_age_map(raw, ages)
    assert isinstance(amap, AgeMap) and amap.to_dict() == info["calibration"]
    assert {"raw", "calibration", "calibrated", "final"} == set(info)
    assert info["final"]["mae"] == pytest.approx(np.abs(apply(amap.to_dict(), raw) - ages).mean())
    assert info["calibrated"]["mae"] < info["raw"]["mae"]
