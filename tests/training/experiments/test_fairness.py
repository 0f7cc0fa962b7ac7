"""The loss terms of training.experiments.fairness (tried, not shipped), on hand-made batches;
and that its command line is train's with three options more."""

import numpy as np
import pytest

pytest.importorskip("tensorflow")


def test_sex_bias_term_costs_a_gap_between_women_and_men():
    """With --sex-bias, a batch whose adult women are read younger than its adult men costs more
    than one where both err alike, and the term needs the (age, female) targets."""
    import tensorflow as tf

    from training.experiments.fairness import sex_bias_term
    from training.train import AGES, make_loss

    def peaked(ages):
        p = np.full((len(ages), AGES), 1e-4, np.float32)
        for i, a in enumerate(ages):
            p[i, a] = 1.0
        return tf.constant(p / p.sum(axis=1, keepdims=True))

    y = tf.constant([[30.0, 1.0], [30.0, 0.0], [40.0, 1.0], [40.0, 0.0]])
    alike = peaked([27, 27, 37, 37])  # everyone read 3 years young
    apart = peaked([25, 29, 35, 39])  # same MAE, but women 5 years young and men 1
    plain = make_loss(1.5, 0.05, 3.0, 2.0)
    fair = make_loss(1.5, 0.05, 3.0, 2.0, extra=[sex_bias_term(0.3)])
    # Without the term, both batches cost nearly the same (same absolute errors).
    assert abs(float(tf.reduce_mean(plain(y, alike))) - float(tf.reduce_mean(plain(y, apart)))) < 0.3
    gap_cost = float(tf.reduce_mean(fair(y, apart))) - float(tf.reduce_mean(plain(y, apart)))
    assert gap_cost == pytest.approx(0.3 * 4.0**2, rel=0.05)  # women -5 vs men -1: a 4-year gap
    assert float(tf.reduce_mean(fair(y, alike))) == pytest.approx(float(tf.reduce_mean(plain(y, alike))), abs=0.05)
    # Faces whose sex is not given (-1) and ages outside the adult range do not enter the gap.
    unknown = tf.constant([[30.0, -1.0], [30.0, 0.0], [12.0, 1.0], [40.0, 0.0]])
    assert float(tf.reduce_mean(fair(unknown, apart))) == pytest.approx(
        float(tf.reduce_mean(plain(unknown, apart))), abs=1e-5
    )
    # A plain age vector (no sex) still works, and then the term is off.
    ages = tf.constant([30.0, 30.0, 40.0, 40.0])
    assert float(tf.reduce_mean(fair(ages, apart))) == pytest.approx(float(tf.reduce_mean(plain(ages, apart))))


def test_adult_gate_term_costs_an_adult_read_as_maybe_under_the_challenge_age():
    """With --adult-gate, a 30-year-old whose distribution leaves mass under 25 costs more, in
    proportion to -log P(25+); a face within 3 years of 25 and a minor do not pay it."""
    import tensorflow as tf

    from training.experiments.fairness import adult_gate_term
    from training.train import AGES, make_loss

    def spread(centre, width):
        k = np.arange(AGES, dtype=np.float32)
        p = np.exp(-0.5 * ((k - centre) / width) ** 2)
        return tf.constant((p / p.sum())[None, :])

    plain = make_loss(1.5, 0.05, 3.0, 2.0)
    gated = make_loss(1.5, 0.05, 3.0, 2.0, extra=[adult_gate_term(1.0)])
    wide = spread(30, 6)  # centred right, but a fifth of its mass under 25
    p_old = float(tf.reduce_sum(wide[0, 25:]))
    extra = float(gated(tf.constant([30.0]), wide)[0]) - float(plain(tf.constant([30.0]), wide)[0])
    assert extra == pytest.approx(-np.log(p_old), rel=1e-3) and extra > 0.1
    for age in (26.0, 16.0):  # inside the margin, and a minor: unchanged
        assert float(gated(tf.constant([age]), wide)[0]) == pytest.approx(float(plain(tf.constant([age]), wide)[0]))


def test_the_command_is_trains_with_its_three_options():
    from training.experiments.fairness import loss_terms, parser
    from training.train import parser as train_parser

    base = ["--data", "d", "--init", "i.keras", "--out", "o"]
    a = parser().parse_args(base + ["--balance-sex", "--sex-bias", "0.5"])
    assert a.balance_sex and a.sex_bias == 0.5 and a.adult_gate == 0.0 and len(loss_terms(a)) == 1
    shipped = vars(train_parser().parse_args(base))
    assert {k: v for k, v in vars(a).items() if k in shipped} == {**shipped}
    assert set(vars(a)) - set(shipped) == {"balance_sex", "sex_bias", "adult_gate"}
    with pytest.raises(SystemExit):
        train_parser().parse_args(base + ["--sex-bias", "0.5"])  # not a shipped option any more
