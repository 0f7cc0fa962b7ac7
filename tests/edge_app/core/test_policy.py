"""policy: the calibrated decision (monotone in the probability, threshold and map from the card,
frames averaged) and the margin rule kept for cards without one."""

from __future__ import annotations

import numpy as np
import pytest

from edge_app.core.policy import (
    P_OVER_DIGITS,
    ChallengeRule,
    DecisionRules,
    GateRule,
    age_interval,
    calibrated_p_over,
    decide_calibrated,
    raw_p_over,
)

RULE = GateRule(25, raw=(0.0, 0.5, 0.9, 1.0), calibrated=(0.0, 0.2, 0.7, 0.95), threshold=0.6)
RULES = DecisionRules((RULE,), interval_level=0.8, interval_temperature=1.0)


def peaked(age: float, sd: float = 3.0) -> np.ndarray:
    k = np.arange(101)
    p = np.exp(-0.5 * ((k - age) / sd) ** 2)
    return p / p.sum()


def test_p_over_is_the_mass_at_or_over_the_challenge_age_through_the_map():
    p = np.zeros(101)
    p[24], p[25] = 0.3, 0.7
    assert raw_p_over(p, 25) == pytest.approx(0.7)
    assert calibrated_p_over(p, RULE) == pytest.approx(np.interp(0.7, RULE.raw, RULE.calibrated))


def test_decision_is_monotone_in_age_and_uses_the_cards_threshold():
    cfg = ChallengeRule()
    ages = np.arange(10, 60, 0.5)
    results = [decide_calibrated([a], [peaked(a)], cfg, RULES) for a in ages]
    ps = [r.p_over for r in results]
    assert all(b >= a - 1e-12 for a, b in zip(ps, ps[1:]))  # older faces never get a lower probability
    approved = [r.decision == "approve" for r in results]
    first = approved.index(True)
    assert all(approved[first:]) and not any(approved[:first])  # one switch from check_id to approve
    for r in results:
        assert (r.decision == "approve") == (r.p_over >= RULE.threshold)
        assert "threshold 0.600" in r.reason
    stricter = DecisionRules((GateRule(25, RULE.raw, RULE.calibrated, 0.69),), 0.8, 1.0)
    later = [decide_calibrated([a], [peaked(a)], cfg, stricter).decision == "approve" for a in ages].index(True)
    assert later > first


def test_a_face_on_the_threshold_gets_the_decision_its_published_p_over_shows():
    """An isotonic map has plateaus, so real faces land exactly on the card's threshold. The check
    carries p_over to P_OVER_DIGITS and is decided on that figure, so a record can always be
    re-checked against the card: never "p_over 0.8531, threshold 0.853126, approve"."""
    cfg = ChallengeRule()
    rules = DecisionRules((GateRule(25, RULE.raw, RULE.calibrated, 0.2),), 0.8, 1.0)
    # The map is 0.4 x raw up to raw 0.5, so these raw masses land just around the threshold 0.2.
    for below, decision in ((0.0, "approve"), (-3e-7, "approve"), (-2e-6, "check_id")):
        p = np.zeros(101)
        p[30] = 0.5 + below / 0.4
        p[20] = 1 - p[30]
        assert calibrated_p_over(p, rules.gates[0]) == pytest.approx(0.2 + below, abs=1e-12)
        r = decide_calibrated([25.0], [p], cfg, rules)
        assert r.p_over == round(r.p_over, P_OVER_DIGITS)
        assert r.decision == decision, (below, r)
        assert (r.decision == "approve") == (r.p_over >= rules.gates[0].threshold)


def test_frames_are_combined_by_averaging_their_distributions():
    cfg = ChallengeRule()
    frames = [peaked(22), peaked(40)]
    r = decide_calibrated([22.0, 40.0], frames, cfg, RULES)
    assert r.p_over == pytest.approx(calibrated_p_over(np.mean(frames, axis=0), RULE), abs=1e-4)
    assert r.frames_used == 2


def test_interval_is_the_distributions_not_the_spread_between_frames():
    cfg = ChallengeRule()
    r = decide_calibrated([30.0, 30.1], [peaked(30, 4), peaked(30.1, 4)], cfg, RULES)
    lo, hi = age_interval(np.mean([peaked(30, 4), peaked(30.1, 4)], axis=0), 0.8, 1.0)
    assert hi - lo > 8 and r.spread < 0.2  # about 2 x 1.28 sd, while the frames agree to 0.1 year
    assert r.age_low <= 30 <= r.age_high
    wider = age_interval(peaked(30, 4), 0.8, 2.0)
    assert wider[1] - wider[0] > hi - lo  # a temperature above 1 widens it


def test_without_a_rule_for_the_challenge_age_the_margin_rule_decides():
    r = decide_calibrated([30.0], [peaked(30)], ChallengeRule(challenge_age=30), RULES)
    assert r.p_over is None and "estimate" in r.reason
    r = decide_calibrated([30.0], [peaked(30)], ChallengeRule(), None)
    assert r.p_over is None and r.decision == "approve"


def test_no_frames_is_no_face():
    r = decide_calibrated([], [], ChallengeRule(), RULES)
    assert r.decision == "no_face" and r.p_over is None
