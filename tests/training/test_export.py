"""export and inference agree: the int8 TFLite file, run through edge_app.model (the till's
runtime), gives the ages of the float model on real aligned faces."""

from __future__ import annotations

import numpy as np
import pytest

from edge_app.config import FacesConfig
from edge_app.faces import FacePipeline, load_image
from edge_app.model import AgeModel
from tests.helpers import MODEL, REPO, SHARED, utk_sample

FLOAT_MODEL = REPO / "models" / "age_resnet10_float32.tflite"
ONNX = SHARED / "weights" / "cydral-age-resnet10" / "age-v1.onnx"


@pytest.fixture(scope="module")
def real_crops():
    sample = utk_sample(260, seed=21)
    crops, ages = [], []
    with FacePipeline(FacesConfig()) as pipe:
        for path, age in sample:
            res = pipe.process(load_image(path)[0])
            if res.aligned is not None:
                crops.append(res.aligned.crop)
                ages.append(age)
    return np.stack(crops), np.array(ages)


def test_shipped_int8_matches_shipped_float(real_crops):
    if not (MODEL.exists() and FLOAT_MODEL.exists()):
        pytest.skip("shipped models missing in models/")
    crops, ages = real_crops
    q = AgeModel(MODEL)
    f = AgeModel(FLOAT_MODEL, flip_average=q.flip_average)
    assert q._in["dtype"] == np.uint8 and f._in["dtype"] == np.float32
    aq = np.array([q.predict(c).age for c in crops])
    af = np.array([f.predict(c).age for c in crops])
    diff = np.abs(aq - af)
    mae_q, mae_f = np.abs(aq - ages).mean(), np.abs(af - ages).mean()
    print(f"\nint8 vs float on {len(crops)} real faces: mean |d| {diff.mean():.3f}, max {diff.max():.2f}; "
          f"MAE int8 {mae_q:.3f}, float {mae_f:.3f}")
    assert diff.mean() < 0.6
    assert abs(mae_q - mae_f) < 0.3


def test_export_convert_int8_agrees_with_keras(real_crops):
    """The export path itself: port the CC0 net, convert with a representative set of real
    crops, and compare the Keras float model with the int8 file through the till runtime."""
    if not ONNX.exists():
        pytest.skip(f"pretrained weights not found at {ONNX}")
    from training.export import convert
    from training.port import port_onnx_weights

    crops, _ = real_crops
    rep, check = crops[:120], crops[120:]
    model = port_onnx_weights(ONNX, rep.astype(np.float32), num_classes=101, input_size=crops.shape[1])
    data = convert(model, rep)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "m.tflite"
        p.write_bytes(data)
        q = AgeModel(p, flip_average=False)
        aq = np.array([q.predict(c).age for c in check])
    probs = model.predict(check.astype(np.float32), verbose=0)
    af = probs @ np.arange(101)
    diff = np.abs(aq - af)
    print(f"\nexported int8 vs Keras float on {len(check)} faces: mean |d| {diff.mean():.3f}, max {diff.max():.2f}")
    assert diff.mean() < 1.0
