"""The till's model runtime on the shipped file: input checks, quantized I/O, the card's
optional age map, and clear errors for a bad file or card."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from edge_app.config import FacesConfig
from edge_app.vision.errors import ModelError
from edge_app.vision.faces import FacePipeline
from edge_app.vision.model import AgeModel
from tests.helpers import MODEL, astronaut

pytestmark = pytest.mark.skipif(not MODEL.exists(), reason=f"shipped model missing at {MODEL}")


@pytest.fixture(scope="module")
def crop():
    with FacePipeline(FacesConfig()) as pipe:
        return pipe.process(astronaut()).aligned.crop


def test_shipped_model_and_card(crop):
    m = AgeModel(MODEL)
    assert m.input_size == crop.shape[0] and m.num_ages == 101
    card = m.card
    assert card.alignment is not None and card.alignment.template_version
    # The card describes this very file (a re-export without its card, or the reverse, shows here).
    data = MODEL.read_bytes()
    assert card.sha256 == hashlib.sha256(data).hexdigest() and card.size_bytes == len(data)
    assert card.model_id is not None and card.sha256 is not None
    assert card.model_id.endswith(card.sha256[:8]) and card.file == MODEL.name
    assert m.model_id == card.model_id and m.flip_average == card.flip_average
    est = m.predict(crop)
    assert 15 < est.age < 70 and est.spread > 0
    with pytest.raises(ValueError, match="crop must be"):
        m.predict(np.zeros((10, 10, 3), np.uint8))


def test_age_map_from_card(tmp_path, crop):
    shutil.copy(MODEL, tmp_path / "m.tflite")
    card = json.loads(MODEL.with_suffix(".json").read_text())
    card["age_map"] = {"x": [0, 18, 40, 100], "y": [0, 18, 30, 100]}
    (tmp_path / "m.json").write_text(json.dumps(card))
    mapped = AgeModel(tmp_path / "m.tflite").predict(crop).age
    card.pop("age_map")
    (tmp_path / "m.json").write_text(json.dumps(card))
    raw = AgeModel(tmp_path / "m.tflite").predict(crop).age
    assert abs(mapped - float(np.interp(raw, [0, 18, 40, 100], [0, 18, 30, 100]))) < 1e-6
    card["age_map"] = {"x": [0, 50, 40], "y": [0, 1, 2]}
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(ModelError, match="age_map"):
        AgeModel(tmp_path / "m.tflite")


def test_bad_files(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        AgeModel(tmp_path / "none.tflite")
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(ModelError, match="not a usable TFLite model"):
        AgeModel(tmp_path / "junk.tflite")
    shutil.copy(MODEL, tmp_path / "m.tflite")
    (tmp_path / "m.json").write_text("{broken")
    with pytest.raises(ModelError, match="not valid JSON"):
        AgeModel(tmp_path / "m.tflite")
