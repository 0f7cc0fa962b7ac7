"""train: a tiny real run on real aligned faces writes checkpoints and resumes where it stopped;
the loss punishes over-estimating a young face more than under-estimating it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from edge_app.config import FacesConfig
from tests.helpers import SHARED, utk_sample

ONNX = SHARED / "weights" / "cydral-age-resnet10" / "age-v1.onnx"


def test_loss_is_asymmetric_for_the_young():
    import tensorflow as tf

    from training.train import AGES, make_loss

    loss = make_loss(1.5, 0.05, 2.0, 1.0)

    def peaked(age):
        p = np.full((1, AGES), 1e-4, np.float32)
        p[0, age] = 1.0
        return tf.constant(p / p.sum())

    y = tf.constant([16.0])
    over = float(loss(y, peaked(26))[0])
    under = float(loss(y, peaked(6))[0])
    assert over > under  # same 10-year error, but approving a 16-year-old is the costly one
    y = tf.constant([40.0])
    assert abs(float(loss(y, peaked(50))[0]) - float(loss(y, peaked(30))[0])) < 0.2


def tiny_dataset(tmp_path, n: int, seed: int):
    """A prepared dataset of `n` real UTKFace photos and the CC0 network ported for its crops:
    what a tiny real training run needs. Returns (dataset folder, photo folder, init .keras)."""
    from training.port import port_onnx_weights
    from training.prepare import prepare

    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "real_age"])
        for path, age in utk_sample(n, seed=seed):
            w.writerow([path.name, age])
    images = utk_sample(1)[0][0].parent
    data = prepare(images, labels, tmp_path / "cache", seed=1, val=0.3, test=0.1, faces_cfg=FacesConfig())
    crops = np.load(data / "crops.npy")
    init = tmp_path / "init.keras"
    port_onnx_weights(ONNX, crops[:32].astype(np.float32), input_size=crops.shape[1]).save(init)
    return data, images, init


def test_tiny_training_run_resumes(tmp_path):
    if not ONNX.exists():
        pytest.skip(f"pretrained weights not found at {ONNX}")
    from training.train import main as train_main

    data, _, init = tiny_dataset(tmp_path, 90, seed=5)
    crops = np.load(data / "crops.npy")
    run = tmp_path / "run"
    args = ["--data", str(data), "--init", str(init), "--out", str(run), "--batch", "16", "--epochs", "1"]
    assert train_main(args) == 0
    assert (run / "best.keras").exists() and (run / "last.keras").exists()
    first = json.loads((run / "train.json").read_text())["train_seconds"]
    # A second invocation with more epochs continues from the saved state instead of starting over.
    assert train_main(args[:-1] + ["2"]) == 0
    with open(run / "history.csv") as fh:
        epochs = [int(r["epoch"]) for r in csv.DictReader(fh)]
    assert epochs == [0, 1]
    assert json.loads((run / "train.json").read_text())["train_seconds"] > first

    # Continued on crops of another size (how a 96 px run goes on at 128 px): the same weights in
    # the ResNet built for the new size, and train.json counts the whole chain's time.
    import cv2
    import keras

    big = tmp_path / "big"
    big.mkdir()
    size = crops.shape[1] + 32
    np.save(big / "crops.npy", np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_CUBIC) for c in crops]))
    for name in ("index.csv", "dataset.json"):
        (big / name).write_bytes((data / name).read_bytes())
    run2 = tmp_path / "run2"
    assert (
        train_main(
            [
                "--data",
                str(big),
                "--init",
                str(run / "last.keras"),
                "--out",
                str(run2),
                "--batch",
                "16",
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    assert keras.models.load_model(run2 / "best.keras", compile=False).input_shape == (None, size, size, 3)
    info = json.loads((run2 / "train.json").read_text())
    whole = json.loads((run / "train.json").read_text())["train_seconds"]
    assert info["init_run"]["train_seconds"] == whole
    assert info["chain_train_seconds"] == pytest.approx(info["train_seconds"] + whole, abs=0.11)


def test_rebuild_runs_mixed_precision_and_keeps_the_weights():
    """On a GPU, train rebuilds the net under the mixed_float16 policy. A model re-made from its
    saved config would keep every layer's float32 policy, so this checks the policy took hold."""
    import keras

    from training.arch import build_age_resnet
    from training.train import rebuild

    src = build_age_resnet(input_size=64)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        got = rebuild(src, 96)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert got.input_shape == (None, 96, 96, 3)
    assert got.get_layer("stem_conv").compute_dtype == "float16"
    assert got.get_layer("age_probs").compute_dtype == "float32"
    for a, b in zip(src.get_weights(), got.get_weights()):
        np.testing.assert_array_equal(a, b)
