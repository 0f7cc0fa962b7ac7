"""Tests of training/port.py: the Keras port of the CC0 age ResNet reproduces age-v1.onnx.

The ONNX comparisons need the shared weights and the UTKFace photos (read only, kept in memory);
they are skipped with a reason when those are absent. The architecture test always runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import pytest

from training import arch, port

SHARED = Path(os.environ.get("AGECHECK_SHARED", Path(__file__).resolve().parents[3] / "shared"))
ONNX_PATH = SHARED / "weights" / "cydral-age-resnet10" / "age-v1.onnx"
UTK_DIR = SHARED / "datasets" / "utkface"
N_FACES = 64

needs_shared = pytest.mark.skipif(
    not ONNX_PATH.is_file() or not (UTK_DIR / "labels.csv").is_file(),
    reason=f"needs {ONNX_PATH} and {UTK_DIR}/labels.csv + images (set AGECHECK_SHARED)",
)


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    images, _ = port.load_faces(UTK_DIR / "images", UTK_DIR / "labels.csv", N_FACES)
    if len(images) < N_FACES:
        pytest.skip(f"only {len(images)} readable UTKFace photos under {UTK_DIR / 'images'}")
    return images


@pytest.fixture(scope="module")
def onnx_probs(faces: np.ndarray) -> np.ndarray:
    return port.onnx_reference(ONNX_PATH, faces)


@pytest.fixture(scope="module")
def faithful_uncalibrated() -> keras.Model:
    return port.port_onnx_weights(ONNX_PATH, None, num_classes=81)


@pytest.fixture(scope="module")
def faithful_calibrated(faces: np.ndarray) -> keras.Model:
    return port.port_onnx_weights(ONNX_PATH, faces, num_classes=81)


@pytest.fixture(scope="module")
def widened(faces: np.ndarray) -> keras.Model:
    return port.port_onnx_weights(ONNX_PATH, faces, num_classes=101)


def test_architecture_is_standard_and_round_trips(tmp_path: Path) -> None:
    model = arch.build_age_resnet(input_size=64, num_classes=101)
    assert model.input.name == "image"
    assert tuple(model.input.shape) == (None, 64, 64, 3)
    assert tuple(model.output.shape) == (None, 101)
    assert model.layers[1].name == "normalize"  # normalisation is inside the model
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "Lambda" not in kinds and "TFOpLambda" not in kinds
    # Plain .keras save/load with no custom objects gives identical outputs.
    x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    before, after = port.predict(model, x), port.predict(reloaded, x)
    np.testing.assert_array_equal(before, after)
    np.testing.assert_allclose(before.sum(axis=1), 1.0, atol=1e-5)


@needs_shared
def test_faithful_port_matches_onnx(
    faithful_uncalibrated: keras.Model, faces: np.ndarray, onnx_probs: np.ndarray
) -> None:
    probs = port.predict(faithful_uncalibrated, faces)
    assert probs.shape == onnx_probs.shape == (N_FACES, 81)
    assert np.abs(probs - onnx_probs).max() < 1e-3
    ages = arch.expected_age(probs)
    assert np.abs(ages - arch.expected_age(onnx_probs)).max() < 1e-2


@needs_shared
def test_calibrated_batch_norms_leave_inference_unchanged(
    faithful_calibrated: keras.Model, faithful_uncalibrated: keras.Model, faces: np.ndarray, onnx_probs: np.ndarray
) -> None:
    calibrated = port.predict(faithful_calibrated, faces)
    assert np.abs(calibrated - onnx_probs).max() < 1e-3
    assert np.abs(calibrated - port.predict(faithful_uncalibrated, faces)).max() < 1e-3
    # The moving statistics really are the conv outputs' statistics on the calibration faces.
    conv_out = keras.Model(faithful_calibrated.input, faithful_calibrated.get_layer("s2b1_1_conv").output)
    feats = port.predict(conv_out, faces).reshape(-1, 128).astype(np.float64)
    bn = faithful_calibrated.get_layer("s2b1_1_bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), feats.mean(axis=0), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(bn.moving_variance.numpy(), feats.var(axis=0), rtol=1e-3, atol=1e-3)


@needs_shared
def test_widened_head_keeps_onnx_behaviour(widened: keras.Model, faces: np.ndarray, onnx_probs: np.ndarray) -> None:
    probs = port.predict(widened, faces)
    assert probs.shape == (N_FACES, 101)
    # Classes 0..79 keep their ONNX probabilities; 80..100 share the ONNX class-80 mass.
    assert np.abs(probs[:, :80] - onnx_probs[:, :80]).max() < 1e-3
    assert np.abs(probs[:, 80:].sum(axis=1) - onnx_probs[:, 80]).max() < 1e-3
    # Expected age over 0..100 stays close to the ONNX age (measured ~0.3 years mean abs: only
    # faces with mass on "80" move, by up to 10 years; class 0 moves by 0.25).
    diff = np.abs(arch.expected_age(probs) - arch.expected_age(onnx_probs))
    assert diff.mean() < 1.0
