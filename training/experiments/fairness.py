"""fairness: `training.train` with the options that aimed the training at the gap between women
and men sent to an ID check. Tried as a second stage of the previous models and as a whole run;
none shipped (docs/model.md, "Tried: aiming the training at the women/men gap"): the networks'
women-men error gap shrank, the gate's did not.

    python -m training.experiments.fairness --data $D --init RUN/best.keras --out RUN2 \\
        --epochs 4 --lr 5e-5 --balance 0.7 --boost-young 1.3 --balance-sex --sex-bias 0.5 [--adult-gate 1.0]

Every `training.train` option works here as there; train.json records these three besides.
"""

from __future__ import annotations

import argparse
import json

from training.train import CHALLENGE_AGE, LossTerm, run
from training.train import parser as train_parser

# Ages whose signed errors the sex-bias term compares: the adults a gate can wrongly send to ID.
SEX_BIAS_AGES = (18, 60)
# The adult-gate term leaves the years just over the challenge age alone: there a wide interval
# is honest, and pushing them over would push the minors' neighbours over too.
ADULT_GATE_MARGIN = 3


def sex_bias_term(weight: float) -> LossTerm:
    """weight * (mean signed error of adult women - that of adult men)**2, per batch: one
    threshold serves everyone, so a net that reads women younger than men of the same age sends
    more women to an ID check; this asks the net itself to err alike for both. Faces whose sex is
    not given (female -1) and batches without both sexes do not pay it."""
    import tensorflow as tf

    def term(y, female, err, p_old):
        adult = tf.cast((y >= SEX_BIAS_AGES[0]) & (y <= SEX_BIAS_AGES[1]), tf.float32)
        wf = adult * tf.cast(female == 1.0, tf.float32)
        wm = adult * tf.cast(female == 0.0, tf.float32)
        nf, nm = tf.reduce_sum(wf), tf.reduce_sum(wm)
        gap = tf.reduce_sum(wf * err) / tf.maximum(nf, 1.0) - tf.reduce_sum(wm * err) / tf.maximum(nm, 1.0)
        both = tf.cast((nf > 0) & (nm > 0), tf.float32)
        return weight * both * tf.square(gap)

    return term


def adult_gate_term(weight: float) -> LossTerm:
    """weight * -log P('challenge age or older') for faces ADULT_GATE_MARGIN or more years over
    it: the mirror of the gate term, for the adult sent to an ID check. It acts on the
    probability the till's decision reads, where a face read as uncertain (a wide distribution)
    costs as much as one read young."""
    import tensorflow as tf

    def term(y, female, err, p_old):
        clear = tf.cast(y >= CHALLENGE_AGE + ADULT_GATE_MARGIN, tf.float32)
        return weight * clear * -tf.math.log(tf.clip_by_value(p_old, 1e-6, 1.0))

    return term


def parser() -> argparse.ArgumentParser:
    ap = train_parser()
    ap.prog = "python -m training.experiments.fairness"
    ap.description = __doc__.split("\n\n")[0]
    ap.add_argument(
        "--balance-sex",
        action="store_true",
        help="with --balance, give women and men of each source equal shares, each with its own bands",
    )
    ap.add_argument(
        "--sex-bias",
        type=float,
        default=0.0,
        help="weight of the term that asks adult women's and men's mean signed errors to agree "
        "(needs the gender column that prepare keeps from the labels)",
    )
    ap.add_argument(
        "--adult-gate",
        type=float,
        default=0.0,
        help="weight of the term that pushes P(challenge age or older) up for faces 3+ years over it",
    )
    return ap


def loss_terms(a: argparse.Namespace) -> list[LossTerm]:
    return ([sex_bias_term(a.sex_bias)] if a.sex_bias > 0 else []) + (
        [adult_gate_term(a.adult_gate)] if a.adult_gate > 0 else []
    )


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    info = run(a, loss_terms(a), by_sex=a.balance_sex)
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
