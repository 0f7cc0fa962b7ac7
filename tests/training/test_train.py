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


def test_tiny_training_run_resumes(tmp_path):
    if not ONNX.exists():
        pytest.skip(f"pretrained weights not found at {ONNX}")
    from training.port import port_onnx_weights
    from training.prepare import prepare
    from training.train import main as train_main

    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file_name", "real_age"])
        for path, age in utk_sample(90, seed=5):
            w.writerow([path.name, age])
    images = utk_sample(1)[0][0].parent
    data = prepare(images, labels, tmp_path / "cache", seed=1, val=0.3, test=0.1, faces_cfg=FacesConfig())
    crops = np.load(data / "crops.npy")
    init = tmp_path / "init.keras"
    port_onnx_weights(ONNX, crops[:32].astype(np.float32), input_size=crops.shape[1]).save(init)
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
