"""train: fine-tune the age ResNet (Keras, TensorFlow backend) on the aligned crops that
`training.prepare` cached, with augmentation that imitates till cameras and a loss aimed at the
Challenge-25 gate. Resumable; the same code runs on a CPU or a GPU (mixed precision there).

    python -m training.train --data CACHE_DATASET_DIR --init model.keras --out RUN_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.arch import expected_age
from training.batches import make_dataset
from training.calibrate import CHALLENGE, gate_figures
from training.data import FEMALE, MALE, LabelsError, Split, band_number, load_split, read_index
from training.hint import hint_trainer, load_hints, on_net, with_hint_loss
from training.teacher import TeacherError, load_targets

AGES = 101  # classes 0..100
CHALLENGE_AGE = int(CHALLENGE)  # one challenge age for the loss and the validation figures
# Adults whose mean signed errors the per-epoch women-men figure compares (val_figures' sex_gap).
SEX_GAP_AGES = (18, 60)
# Each face's band and boost of the sampling: the bands the gate's mistakes come from.
YOUNG_BANDS = ("13-17", "18-24")

# An extra per-face loss term, for experiments (training.experiments): called with the batch's
# ages, their `female` column (1/0/-1), the signed error of the expected age and P(challenge age
# or older), it returns each face's extra cost.
LossTerm = Callable[..., Any]


def soft_labels(ages, sigma):
    """Gaussian label distribution over 0..100; sigma grows with age because labels of older
    faces are noisier."""
    import tensorflow as tf

    k = tf.range(AGES, dtype=tf.float32)[None, :]
    a = tf.clip_by_value(tf.cast(ages, tf.float32), 0.0, AGES - 1.0)[:, None]
    s = sigma + 0.03 * a
    d = tf.exp(-0.5 * tf.square((k - a) / s))
    return d / tf.reduce_sum(d, axis=1, keepdims=True)


def make_loss(
    sigma: float,
    l1_weight: float,
    over_young: float,
    gate_weight: float,
    distil: float = 0.0,
    extra: Sequence[LossTerm] = (),
):
    """Soft-label cross-entropy + L1 on the expectation, with over-estimating a face under the
    challenge age costing more than under-estimating it, + a term that pushes the probability
    of '25 or older' down for faces of 20 and younger (a minor approved is the costly error).

    y_true is the age, or (age, female) with female 1/0/-1 (unknown), or (age, female, the
    teacher's 101 age probabilities; NaN where the teacher has none). With `distil` > 0 the
    cross-entropy's target is (1 - distil) x the label's Gaussian + distil x the teacher's
    distribution: a face-pretrained teacher knows how faces of each age look across cameras and
    people, and its spread says which faces are ambiguous. `extra` terms (experiments that were
    not shipped) are added as they are."""
    import tensorflow as tf

    ks = tf.range(AGES, dtype=tf.float32)
    older = tf.cast(ks >= CHALLENGE_AGE, tf.float32)

    def loss(y_true, probs):
        yt = tf.cast(y_true, tf.float32)
        teacher = None
        if yt.shape.rank == 2 and yt.shape[-1] >= 2:
            y, female = yt[:, 0], yt[:, 1]
            if yt.shape[-1] == 2 + AGES:
                teacher = yt[:, 2:]
        else:
            y = tf.reshape(yt, [-1])
            female = -tf.ones_like(y)
        p = tf.cast(probs, tf.float32)
        p = tf.clip_by_value(p, 1e-7, 1.0)
        target = soft_labels(y, sigma)
        if teacher is not None and distil > 0:
            has = tf.reduce_all(tf.math.is_finite(teacher), axis=1, keepdims=True)
            mixed = (1.0 - distil) * target + distil * tf.where(has, teacher, target)
            target = mixed / tf.reduce_sum(mixed, axis=1, keepdims=True)
        ce = -tf.reduce_sum(target * tf.math.log(p), axis=1)
        exp = tf.reduce_sum(p * ks[None, :], axis=1)
        err = exp - y
        young = tf.cast(y < CHALLENGE_AGE, tf.float32)
        w = 1.0 + (over_young - 1.0) * young * tf.cast(err > 0, tf.float32)
        l1 = w * tf.abs(err)
        p_old = tf.reduce_sum(p * older[None, :], axis=1)
        gate = tf.cast(y <= 20, tf.float32) * -tf.math.log(tf.clip_by_value(1.0 - p_old, 1e-6, 1.0))
        total = ce + l1_weight * l1 + gate_weight * gate
        for term in extra:
            total = total + term(y, female, err, p_old)
        return total

    return loss


def chain_seconds(info: dict) -> float:
    """Training time of a run including the runs it started from (train.json's fields)."""
    return float(info.get("chain_train_seconds", info.get("train_seconds", 0)))


def rebuild(model, size: int):
    """The same age ResNet built anew for `size` px crops, with `model`'s weights: the net is
    fully convolutional, so a run can go on at another crop size. Building anew (not from the
    saved config, whose layers keep their float32 policy) also puts it under the current dtype
    policy, i.e. mixed precision on a GPU, with the softmax kept float32."""
    from training.arch import build_age_resnet

    fresh = build_age_resnet(input_size=size, num_classes=int(model.output.shape[-1]))
    fresh.set_weights(model.get_weights())
    return fresh


def sex_gap(pred: np.ndarray, age: np.ndarray, sex: np.ndarray) -> float:
    """Mean signed error of adult women minus that of adult men (the ages SEX_GAP_AGES), in
    years; NaN where either group is missing. Negative: women are read younger than men."""
    adult = (age >= SEX_GAP_AGES[0]) & (age <= SEX_GAP_AGES[1])
    f, m = adult & (sex == FEMALE), adult & (sex == MALE)
    if not f.any() or not m.any():
        return float("nan")
    err = pred - age
    return float(err[f].mean() - err[m].mean())


def val_figures(model, val: Split) -> dict:
    """Gate figures of a Keras model on validation crops, plus the MAE of the mirror average
    (what the till computes), overall and per source; `worst_mae_flip` is the worst source's,
    which is what checkpoints are chosen on (a model must carry over to every population)."""
    probs = model.predict(val.x.astype(np.float32), batch_size=256, verbose=0)
    flip = model.predict(val.x[:, :, ::-1].astype(np.float32), batch_size=256, verbose=0)
    f = gate_figures(expected_age(probs), val.age)
    both = expected_age((probs + flip) / 2)
    f["mae_flip"] = gate_figures(both, val.age)["mae"]
    f["per_source"] = {}
    for src in val.sources():
        m = val.source == src
        f["per_source"][src] = {
            **gate_figures(both[m], val.age[m]),
            "n": int(m.sum()),
            "sex_gap": sex_gap(both[m], val.age[m], val.sex[m]),
        }
    f["worst_mae_flip"] = max(v["mae"] for v in f["per_source"].values())
    return f


class TrainError(ValueError):
    """A run that cannot start as asked; the message names the option or file and why."""


def _weight(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} is below 0 (0 turns it off)")
    return value


def parser() -> argparse.ArgumentParser:
    """The shipped recipe's options (training.recipes sets them; experiments add their own)."""
    ap = argparse.ArgumentParser(prog="python -m training.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="dataset folder written by training.prepare")
    ap.add_argument(
        "--init",
        type=Path,
        required=True,
        help="starting .keras model: from training.port, or a run's best.keras/last.keras "
        "(its crop size may differ from --data's; the net is rebuilt for the new size)",
    )
    ap.add_argument("--out", type=Path, required=True, help="run folder for checkpoints and logs (outside the repo)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--weight-decay", type=float, default=5e-4)
    ap.add_argument("--sigma", type=float, default=1.5)
    ap.add_argument("--l1", type=float, default=0.05)
    ap.add_argument("--over-young", type=float, default=3.0, help="cost factor of over-estimating a face under 25")
    ap.add_argument("--gate", type=float, default=2.0, help="weight of the '20 or younger looks 25+' term")
    ap.add_argument(
        "--patience",
        type=int,
        default=100,
        help="early-stopping patience in epochs; the gains come at the low-LR end of the cosine "
        "schedule, so by default a 10-epoch run is not stopped early (best.keras still keeps the best)",
    )
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument(
        "--balance",
        type=float,
        default=0.0,
        help="sample (source, age band) cells with weight count**BALANCE within a source and sources "
        "by the square root of their size (0: plain shuffling in proportion to the data)",
    )
    ap.add_argument(
        "--boost-young",
        type=float,
        default=1.0,
        help="with --balance, extra sampling weight for the 13-17 and 18-24 bands",
    )
    ap.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="teacher targets (.npz from `training.teacher fit` on this --data): distil its age distributions",
    )
    ap.add_argument(
        "--distil",
        type=float,
        default=0.5,
        help="with --teacher, the teacher's share of each face's target distribution",
    )
    ap.add_argument(
        "--hint",
        type=_weight,
        default=0.0,
        help="weight of feature distillation: the pooled features learn to predict the teacher's "
        "embedding (teacher-embeddings.npz in --data, from `training.teacher embed`); 0: off",
    )
    ap.add_argument(
        "--leave-out",
        default=None,
        help="train without this source (leave-one-source-out); its validation crops are still scored",
    )
    ap.add_argument("--limit", type=int, default=0, help="use only this many training crops (smoke tests)")
    return ap


def load_data(a: argparse.Namespace) -> tuple[Split, Split, np.ndarray | None, np.ndarray | None]:
    """The training and validation crops of the run, the teacher's targets and (with --hint) its
    standardised embeddings of the training crops, without a left-out source and cut to --limit."""
    tr = load_split(a.data, "train")
    va = load_split(a.data, "val")
    teacher = None
    if a.teacher:
        teacher = load_targets(a.teacher, len(read_index(a.data)))[tr.row]
    if a.leave_out:
        if a.leave_out not in tr.sources():
            raise TrainError(f"--leave-out {a.leave_out}: no such source in {a.data}")
        keep = tr.source != a.leave_out
        tr = tr.where(keep)
        # The left-out source must not choose the checkpoint either.
        va = va.where(va.source != a.leave_out)
        teacher = teacher[keep] if teacher is not None else None
    hints = load_hints(a.data, tr.row) if a.hint > 0 else None
    if a.limit:
        tr, va = tr.take(a.limit), va.take(max(64, a.limit // 4))
        teacher = teacher[: a.limit] if teacher is not None else None
        hints = hints[: a.limit] if hints is not None else None
    return tr, va, teacher, hints


def start_model(a: argparse.Namespace, size: int, on_gpu: bool):
    """The --init model for `size` px crops (rebuilt when its size differs or on a GPU)."""
    import keras

    model = keras.models.load_model(a.init, compile=False)
    resized = int(model.input.shape[1]) != size
    if resized:
        print(f"--init takes {model.input.shape[1]} px; rebuilding it for the {size} px crops", flush=True)
    return rebuild(model, size) if on_gpu or resized else model


def optimizer(a: argparse.Namespace, steps: int):
    """AdamW on a cosine schedule with half an epoch of warm-up from lr/10."""
    import keras

    warm = max(1, steps // 2)
    sched = keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=a.lr / 10,
        decay_steps=steps * a.epochs - warm,
        warmup_target=a.lr,
        warmup_steps=warm,
        alpha=0.02,
    )
    return keras.optimizers.AdamW(learning_rate=sched, weight_decay=a.weight_decay, clipnorm=5.0)


def _val_gate_callback(va: Split):
    """The per-epoch validation figures as a Keras callback (logged, printed, and what the
    checkpoints are chosen on); a class made on demand so that keras is imported only to train."""
    import keras

    class ValGate(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            f = val_figures(self.model, va)
            logs.update(
                {
                    "val_mae": f["mae"],
                    "val_minors_25": f["minors_at_25_plus"],
                    "val_adults_u25": f["adults_under_25"],
                    "val_mae_flip": f["mae_flip"],
                    "val_worst_mae_flip": f["worst_mae_flip"],
                }
            )
            for src, g in f["per_source"].items():
                logs[f"val_mae_flip_{src}"] = g["mae"]
                logs[f"val_sex_gap_{src}"] = g["sex_gap"]
            print(f"\n{epoch_line(epoch, f)}", flush=True)

    return ValGate()


def epoch_line(epoch: int, f: dict) -> str:
    per = "; ".join(
        f"{src} {g['mae']:.3f}, 13-17 at 25+ {g['minors_at_25_plus']:.1%}, 25+ under 25 "
        f"{g['adults_under_25']:.1%}, women-men error {g['sex_gap']:+.2f} y"
        for src, g in f["per_source"].items()
    )
    return (
        f"epoch {epoch + 1}: val MAE {f['mae']:.3f} (flip-avg {f['mae_flip']:.3f}, worst source "
        f"{f['worst_mae_flip']:.3f}), 13-17 at 25+ {f['minors_at_25_plus']:.3%}, "
        f"25+ under 25 {f['adults_under_25']:.3%}; per source (flip-avg): {per}"
    )


def callbacks(out: Path, va: Split, patience: int, net=None) -> list:
    """Validation, checkpoints, resumption, early stopping and the log. With `net` (fit() trains a
    wrapper around it: --hint), validation and the checkpoints work on `net`, the network the till
    will run; resumption restores the whole wrapper."""
    import keras

    on_the_net = [
        _val_gate_callback(va),
        # Chosen on the worst source's validation MAE, not a pooled one: the largest source
        # would otherwise decide alone.
        keras.callbacks.ModelCheckpoint(
            str(out / "best.keras"), monitor="val_worst_mae_flip", mode="min", save_best_only=True
        ),
        keras.callbacks.ModelCheckpoint(str(out / "last.keras")),
    ]
    if net is not None:
        on_the_net = [on_net(cb, net) for cb in on_the_net]
    return [
        on_the_net[0],
        # Kept after the run, so a later call with more --epochs continues from the last epoch
        # (weights, optimizer state, epoch counter) instead of starting over.
        keras.callbacks.BackupAndRestore(str(out / "backup"), delete_checkpoint=False),
        *on_the_net[1:],
        keras.callbacks.EarlyStopping(monitor="val_worst_mae_flip", mode="min", patience=patience),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
    ]


def write_info(a: argparse.Namespace, tr: Split, va: Split, device: str, elapsed: float) -> dict:
    """train.json: the arguments, the data counts and the time (added to an earlier part's)."""
    info_path = a.out / "train.json"
    prev = json.loads(info_path.read_text()) if info_path.exists() else {}
    info = {
        "args": {k: str(v) for k, v in vars(a).items()},
        "train_images": len(tr),
        "val_images": len(va),
        "sources": {
            s: {"train": int((tr.source == s).sum()), "val": int((va.source == s).sum())} for s in tr.sources()
        },
        "device": device,
        # A resumed run adds its time to the earlier part's.
        "train_seconds": round(prev.get("train_seconds", 0) + elapsed, 1),
    }
    init_info = a.init.parent / "train.json"
    if init_info.exists() and a.init.parent.resolve() != a.out.resolve():
        # Started from another run (e.g. a 96 px run continued at 128 px): the recipe's time is
        # the whole chain's, so the card can report it.
        info["init_run"] = json.loads(init_info.read_text())
        info["chain_train_seconds"] = round(info["train_seconds"] + chain_seconds(info["init_run"]), 1)
    info_path.write_text(json.dumps(info, indent=2))
    return info


def run(a: argparse.Namespace, extra: Sequence[LossTerm] = (), by_sex: bool = False) -> dict:
    """One training run as `a` says (train.parser's options), with experiments' extra loss
    terms and sampling; returns what it wrote to train.json."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(a.seed)
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        keras.mixed_precision.set_global_policy("mixed_float16")
    a.out.mkdir(parents=True, exist_ok=True)
    check_resumable(a)
    tr, va, teacher, hints = load_data(a)
    counts = ", ".join(f"{s} {int((tr.source == s).sum())}/{int((va.source == s).sum())}" for s in tr.sources())
    print(f"train {len(tr)}, val {len(va)} ({counts}), device {'GPU' if gpus else 'CPU'}", flush=True)
    model = start_model(a, int(tr.x.shape[1]), bool(gpus))
    steps = len(tr) // a.batch
    loss = make_loss(a.sigma, a.l1, a.over_young, a.gate, a.distil if teacher is not None else 0.0, extra)
    net, fitted = model, model
    if hints is not None:
        fitted = hint_trainer(net, hints.shape[1])
        loss = with_hint_loss(loss, 2 + (AGES if teacher is not None else 0), AGES, a.hint)
    fitted.compile(optimizer=optimizer(a, steps), loss=loss, jit_compile=False)
    boost = {band_number(b): a.boost_young for b in YOUNG_BANDS}
    t0 = time.time()
    fitted.fit(
        make_dataset(tr, a.batch, True, a.seed, a.balance, boost, by_sex, teacher, hints),
        epochs=a.epochs,
        steps_per_epoch=steps,
        callbacks=callbacks(a.out, va, a.patience, net if fitted is not net else None),
        verbose=2,
    )
    device = "GPU" if gpus else f"CPU ({os.cpu_count()} cores)"
    return write_info(a, tr, va, device, time.time() - t0)


def check_resumable(a: argparse.Namespace) -> None:
    """A run folder's backup holds the model fit() trained: with --hint a wrapper with one more
    layer. Resuming it with --hint turned on or off would fail deep inside Keras; say so first.
    Records which in started.json for the next call."""
    started = a.out / "started.json"
    hint = a.hint > 0
    if (a.out / "backup").exists():
        # A backup older than started.json was made before --hint existed: without it.
        before = json.loads(started.read_text()).get("hint", False) if started.is_file() else False
        if before != hint:
            was = "with" if before else "without"
            raise TrainError(
                f"{a.out} holds a run trained {was} --hint: resume it with the same options, or give another --out"
            )
    started.write_text(json.dumps({"hint": hint}))


def main(argv: list[str] | None = None) -> int:
    try:
        info = run(parser().parse_args(argv))
    except (TrainError, TeacherError, LabelsError) as exc:
        print(f"training.train: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
