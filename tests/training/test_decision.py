"""decision: the isotonic calibration, the threshold chosen for a share of approved minors, and
the interval temperature, on synthetic distributions whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from edge_app.core.policy import GateRule, age_interval, calibrated_p_over
from edge_app.vision.card import CardError, ModelCard
from training.data import source_weights
from training.decision import carry_over_margin, choose_threshold, fit_decision, fit_isotonic, summary


def dists(ages: np.ndarray, bias: np.ndarray, sd: float, rng) -> np.ndarray:
    k = np.arange(101)
    centre = ages + bias + rng.normal(0, sd, len(ages))
    p = np.exp(-0.5 * ((k[None, :] - centre[:, None]) / 4.0) ** 2)
    return p / p.sum(axis=1, keepdims=True)


def data(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    ages = rng.uniform(5, 70, n).round()
    sources = np.where(rng.random(n) < 0.3, "b", "a")
    # Source b looks 4 years younger than it is, like the East Asian set to a UTKFace model.
    bias = np.where(sources == "b", -4.0, 0.0)
    return dists(ages, bias, 4.0, rng), ages, sources


def test_isotonic_map_is_monotone_and_spans_0_to_1():
    rng = np.random.default_rng(1)
    raw = rng.random(500)
    outcome = rng.random(500) < raw**2
    xs, ys = fit_isotonic(raw, outcome, np.ones(500))
    assert xs[0] == 0.0 and xs[-1] == 1.0
    assert all(b > a for a, b in zip(xs, xs[1:])) and all(b >= a for a, b in zip(ys, ys[1:]))
    assert ys[0] < 0.2 and ys[-1] > 0.8


def test_fitted_decision_meets_its_target_on_its_data_and_is_calibrated():
    probs, ages, sources = data()
    d = fit_decision(probs, ages, sources, minors_pooled=0.02, minors_each=0.03)
    minors_n = int(((ages >= 13) & (ages <= 17)).sum())
    assert d.fit["25"]["minors"] == minors_n
    assert f"13-17 approved {100 * d.chosen(25)['minors_approved']:.2f}% of {minors_n}," in "\n".join(
        summary(d, ["a", "b"])
    )
    rule = d.rules.gate(25)
    assert isinstance(rule, GateRule) and d.chosen(25)["threshold"] == rule.threshold
    p = np.array([calibrated_p_over(q, rule) for q in probs])
    minors = (ages >= 13) & (ages <= 17)
    approved = p >= rule.threshold
    assert approved[minors].mean() <= 0.02
    for s in ("a", "b"):
        assert approved[minors & (sources == s)].mean() <= 0.03
    # Calibrated (with each source weighing the same, as fitted): of the faces given between 0.4
    # and 0.9, the share that is 25 or older matches the mean probability given.
    w = source_weights(sources)
    band = (p > 0.4) & (p < 0.9)
    assert band.sum() > 100
    assert abs(np.average(ages[band] >= 25, weights=w[band]) - np.average(p[band], weights=w[band])) < 0.03
    # The interval covers about its level (sources weighing the same, as fitted).
    t = d.rules.interval_temperature
    cover = np.average(
        [lo <= a <= hi for (lo, hi), a in ((age_interval(q, 0.8, t), a) for q, a in zip(probs, ages))], weights=w
    )
    assert abs(cover - 0.8) < 0.03


def test_the_threshold_is_exact_not_rounded_below_a_minor():
    # Two calibrated values 2e-5 apart: a threshold rounded to 4 decimals would approve both.
    p = np.array([0.12344, 0.12346, 0.9, 0.95])
    ages = np.array([15.0, 16.0, 40.0, 50.0])
    t = choose_threshold(p, ages, np.array(["a"] * 4), 0.5, 0.5)
    assert t == 0.12346 and (p[:2] >= t).sum() == 1


def test_a_stricter_target_gives_a_higher_threshold():
    probs, ages, sources = data(seed=2)
    p = np.array([q[25:].sum() for q in probs])
    assert choose_threshold(p, ages, sources, 0.005, 0.005) >= choose_threshold(p, ages, sources, 0.05, 0.05)


def test_the_map_keeps_the_networks_ranking_between_its_end_knots():
    # A step fit puts a minor whose score sits among adults' on one plateau with them, and no
    # threshold can then pass the adults above the minor without the minor: the centred fit keeps
    # every face's rank, so the threshold can fall just above the minor.
    rng = np.random.default_rng(3)
    raw = np.sort(rng.random(400))
    outcome = rng.random(400) < raw
    xs, ys = fit_isotonic(raw, outcome, np.ones(400))
    cal = np.interp(raw, xs, ys)
    inside = (raw > xs[1]) & (raw < xs[-2])
    assert inside.sum() > 300
    assert np.all(np.diff(cal[inside]) > 0)


def test_the_threshold_can_pass_one_minor_and_keep_out_the_next():
    # Two minors among adults' scores (0.80 and 0.86), the target one of the two. With steps both
    # share a plateau with the adults between them, so the threshold had to clear both and send
    # those adults to ID; centred, it lands just above the lower minor.
    raw = np.concatenate([np.linspace(0.01, 0.4, 60), [0.80, 0.86], np.linspace(0.70, 0.99, 40)])
    ages = np.concatenate([np.full(60, 10.0), [16.0, 15.0], np.full(40, 40.0)])
    xs, ys = fit_isotonic(raw, ages >= 25, np.ones(len(raw)))
    cal = np.interp(raw, xs, ys)
    t = choose_threshold(cal, ages, np.array(["a"] * len(raw)), 0.5, 0.5)
    approved = cal >= t
    assert approved[60:62].tolist() == [False, True]
    assert approved[62:][raw[62:] > 0.80].all()


def test_a_carry_over_margin_raises_the_challenge_25_threshold_only():
    probs, ages, sources = data(seed=4)
    plain = fit_decision(probs, ages, sources, 0.02, 0.03)
    held = fit_decision(probs, ages, sources, 0.02, 0.03, margin=0.05)
    assert held.rules.gate(25).threshold == pytest.approx(plain.rules.gate(25).threshold + 0.05)
    assert held.rules.gate(21).threshold == plain.rules.gate(21).threshold
    f = held.fit["25"]
    assert f["fitted_threshold"] == plain.rules.gate(25).threshold and f["margin"] == 0.05
    # The validation figures are those of the threshold the till applies, not of the fitted one.
    assert f["chosen"]["threshold"] == held.rules.gate(25).threshold
    assert f["chosen"]["adults_to_id"] > plain.chosen(25)["adults_to_id"]
    assert any("+0.050 carry-over margin" in line for line in summary(held, ["a", "b"]))


def test_the_carry_over_margin_must_be_in_the_card(tmp_path):
    card = ModelCard.from_dict({"model_id": "m"})
    with pytest.raises(CardError, match="no carry-over margin.*training.loso"):
        carry_over_margin(card)
    assert carry_over_margin(card.replace(carry_over={"margin_needed": 0.049})) == 0.049
    for bad in (-0.1, 1.2, "0.05", True):
        with pytest.raises(CardError, match=f"margin_needed is {bad!r}, not a number"):
            carry_over_margin(card.replace(carry_over={"margin_needed": bad}))


def test_faces_with_one_raw_score_are_one_point_whatever_their_order():
    # int8 outputs tie: three faces at 0.2 (one of them 25+) must map to 1/3 in any order.
    raw = np.array([0.2, 0.2, 0.2, 0.9])
    for outcome in ([1, 0, 0, 1], [0, 0, 1, 1]):
        xs, ys = fit_isotonic(raw, np.array(outcome), np.ones(4))
        assert np.interp(0.2, xs, ys) == pytest.approx(1 / 3, abs=1e-6)
    xs, ys = fit_isotonic(np.ones(60), np.r_[np.zeros(40), np.ones(20)], np.ones(60))
    assert np.interp(1.0, xs, ys) == pytest.approx(1 / 3, abs=1e-6)


def test_a_margin_never_lowers_a_threshold_and_is_recorded_when_asked():
    probs, ages, sources = data(seed=5)
    none_meets = fit_decision(probs, ages, sources, 0.0, 0.0, margin=0.05)  # no threshold keeps every minor out
    assert none_meets.rules.gate(25).threshold >= none_meets.fit["25"]["fitted_threshold"]
    zero = fit_decision(probs, ages, sources, 0.02, 0.03, margin=0.0)
    assert zero.fit["25"]["margin"] == 0.0 and "margin" not in fit_decision(probs, ages, sources, 0.02, 0.03).fit["25"]
