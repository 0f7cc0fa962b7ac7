"""Age model runtime: loads the shipped int8 TFLite ResNet and its model card once, and turns
aligned face crops into age estimates. The same class runs the till and `training.evaluate`.

Runtime preference: ai-edge-litert (maintained), then tflite_runtime, then tensorflow.lite.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_app.vision.card import CardError, ModelCard
from edge_app.vision.errors import CropSizeError, ModelError


def _interpreter_class():
    """The first TFLite runtime installed. Imported only when a model loads (deferred on purpose:
    each is a heavy native library, and which one a machine has is only known by trying)."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # type: ignore[import-not-found]

        return Interpreter
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return tf.lite.Interpreter
    except ImportError:
        raise ModelError("no TFLite runtime installed: pip install ai-edge-litert") from None


@dataclass(frozen=True)
class AgeEstimate:
    age: float  # expectation of the age distribution (through the card's age map), years
    spread: float  # standard deviation of that distribution, years
    # The distribution over ages 0..N-1 (crop and mirror averaged when the card asks for it);
    # the calibrated decision is built from it. Never leaves the process.
    probs: np.ndarray | None = field(default=None, compare=False, repr=False)


class AgeModel:
    """One interpreter, loaded once; `predict` is serialised by a lock so the service's worker and
    a benchmark thread cannot interleave tensor writes."""

    def __init__(self, path: str | Path, threads: int = 2, flip_average: bool | None = None, use_age_map: bool = True):
        self.path = Path(path)
        self.threads = threads
        if not self.path.is_file():
            raise ModelError(f"model file {str(self.path)!r} does not exist; set model.path in the config")
        try:
            self.card = ModelCard.read_beside(self.path)
        except CardError as exc:
            raise ModelError(str(exc)) from None
        try:
            self._interp = _interpreter_class()(model_path=str(self.path), num_threads=threads)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"{self.path} is not a usable TFLite model ({exc})") from None
        self._in = self._interp.get_input_details()[0]
        self._out = self._interp.get_output_details()[0]
        shape = self._in["shape"]
        if len(shape) != 4 or shape[3] != 3 or shape[1] != shape[2]:
            raise ModelError(f"{self.path}: expected an NHWC RGB square input, got shape {list(shape)}")
        self.input_size = int(shape[1])
        self.num_ages = int(self._out["shape"][-1])
        self._ages = np.arange(self.num_ages, dtype=np.float64)
        self.flip_average = self.card.flip_average if flip_average is None else flip_average
        # Optional monotone piecewise-linear map of the raw estimate, fitted on the validation
        # split by training.export (the card says how and why); identity when absent.
        amap = self.card.age_map if use_age_map else None
        self._map_x = np.asarray(amap.x if amap else [], float)
        self._map_y = np.asarray(amap.y if amap else [], float)
        self.rules = self.card.decision.rules if self.card.decision else None
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self.card.model_id or self.path.stem

    def _quantize_input(self, crop: np.ndarray) -> np.ndarray:
        dtype = self._in["dtype"]
        scale, zero = self._in["quantization"]
        if dtype == np.uint8 and crop.dtype == np.uint8 and scale == 1.0 and zero == 0:
            # The shipped int8 model takes the pixels as they are (scale 1, zero point 0): no
            # float round trip per crop.
            return crop[None]
        x = crop.astype(np.float32)[None]
        if dtype == np.float32:
            return x
        if scale == 0:
            return x.astype(dtype)
        info = np.iinfo(dtype)
        return np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)

    def _probs(self, crop: np.ndarray) -> np.ndarray:
        self._interp.set_tensor(self._in["index"], self._quantize_input(crop))
        self._interp.invoke()
        out = self._interp.get_tensor(self._out["index"])[0]
        if out.dtype != np.float32:
            scale, zero = self._out["quantization"]
            out = (out.astype(np.float32) - zero) * scale
        total = float(out.sum())
        return out / total if total > 0 else out

    def predict(self, crop: np.ndarray) -> AgeEstimate:
        """Age of one aligned RGB uint8 crop (input_size x input_size x 3)."""
        if crop.shape != (self.input_size, self.input_size, 3):
            raise ValueError(f"crop must be {self.input_size}x{self.input_size}x3, got {crop.shape}")
        with self._lock:
            p = self._probs(crop)
            if self.flip_average:
                p = (p + self._probs(crop[:, ::-1])) / 2
        mean = float(p @ self._ages)
        spread = float(np.sqrt(max(0.0, p @ (self._ages - mean) ** 2)))
        if len(self._map_x):
            mean = float(np.interp(mean, self._map_x, self._map_y))
        return AgeEstimate(age=mean, spread=spread, probs=p)


def load_for_faces(path: str | Path, threads: int, crop_size: int) -> AgeModel:
    """The model at `path`, checked against the crops the face code makes (faces.output_size):
    what the till and `agecheck estimate` both run. ModelError for a file that cannot be used,
    CropSizeError for one that takes other crops."""
    model = AgeModel(path, threads)
    require_crop_size(model, crop_size)
    return model


def require_crop_size(model: AgeModel, crop_size: int) -> None:
    """CropSizeError unless the model takes the crops the face code makes (faces.output_size)."""
    if model.input_size != crop_size:
        raise CropSizeError(crop_size, model.input_size, str(model.path))
