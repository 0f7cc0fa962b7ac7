"""arch: the age ResNet's Keras architecture (dlib's ResNet-10 as standard Keras layers, so it
saves as plain .keras and converts to a full-integer int8 TFLite model), its input constants,
and the age expectation of its output. Shared by port (which fills it with the CC0 weights),
train, export and soup; imports nothing else of the project.

The ONNX graph this mirrors (opset 18, NCHW, for a 64x64 input): a Conv 7x7/2 stem with no
padding, ReLU, MaxPool 3x3/2; stage 1 (64 ch) one residual block; stages 2 and 3 (128, 256 ch) a
down-sampling block (3x3/2 unpadded main branch, AveragePool 2x2/2 shortcut zero-padded in
channels, rows and columns as dlib's add layer does) then an identity block; global average
pool, Gemm 256 -> classes, Softmax. Keras layers: input ``image`` (float32 RGB 0..255, NHWC);
output ``age_probs``; every ONNX Conv maps to ``<block>_conv*`` (no bias) + ``<block>_bn*``.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np

# Per-channel RGB means and the 1/256 scale of the dlib network (manifest.json, "normalization").
RGB_MEANS: tuple[float, float, float] = (122.782, 117.001, 104.298)
PIXEL_SCALE: float = 1.0 / 256.0
# Ages of the 81 ONNX classes (manifest.json, "age_weights"): the first class stands for 0.25 years.
ONNX_AGE_WEIGHTS: np.ndarray = np.array([0.25] + list(range(1, 81)), dtype=np.float64)
ONNX_NUM_CLASSES: int = 81
ONNX_INPUT_SIZE: int = 64
BN_EPSILON: float = 1e-3  # Keras' default; inference stays exact for any epsilon (see _bn_weights)


@dataclass(frozen=True)
class ConvSpec:
    """One ONNX convolution and where it lives in the Keras model."""

    name: str  # Keras name prefix: the conv is f"{name}_conv", its batch norm f"{name}_bn"
    filters: int
    kernel: int
    stride: int
    pad: int  # symmetric explicit ONNX pad; 0 means "valid"


# The convolutions in the order the ONNX graph lists them (which is also their topological order).
# port_onnx_weights checks every entry against the graph's attributes, so a different graph fails
# loudly instead of being mis-ported.
CONV_SPECS: tuple[ConvSpec, ...] = (
    ConvSpec("stem", 64, 7, 2, 0),
    ConvSpec("s1b1_1", 64, 3, 1, 1),
    ConvSpec("s1b1_2", 64, 3, 1, 1),
    ConvSpec("s2b1_1", 128, 3, 2, 0),
    ConvSpec("s2b1_2", 128, 3, 1, 1),
    ConvSpec("s2b2_1", 128, 3, 1, 1),
    ConvSpec("s2b2_2", 128, 3, 1, 1),
    ConvSpec("s3b1_1", 256, 3, 2, 0),
    ConvSpec("s3b1_2", 256, 3, 1, 1),
    ConvSpec("s3b2_1", 256, 3, 1, 1),
    ConvSpec("s3b2_2", 256, 3, 1, 1),
)
_SPEC = {s.name: s for s in CONV_SPECS}


def _conv_bn(x: keras.KerasTensor, spec: ConvSpec) -> keras.KerasTensor:
    """Conv (no bias: the batch norm's beta absorbs it) followed by a real BatchNormalization."""
    if spec.pad == 0:
        padding = "valid"
    elif spec.stride == 1 and spec.pad == (spec.kernel - 1) // 2 and spec.kernel % 2 == 1:
        # For stride 1 and an odd kernel Keras 'same' pads (k-1)/2 on every side, exactly like the
        # ONNX pads [1,1,1,1]; it keeps the conv a single TFLite op (no separate PAD).
        padding = "same"
    else:
        # Any other case would need explicit ZeroPadding2D + 'valid' ('same' with stride 2 pads
        # bottom/right only); the dlib graph has none, so refuse rather than guess.
        raise ValueError(f"unsupported padding for {spec}")
    x = keras.layers.Conv2D(
        spec.filters,
        spec.kernel,
        strides=spec.stride,
        padding=padding,
        use_bias=False,
        name=f"{spec.name}_conv",
    )(x)
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, name=f"{spec.name}_bn")(x)


def _identity_block(x: keras.KerasTensor, block: str) -> keras.KerasTensor:
    """Two 3x3 convs with an identity shortcut (dlib ``res``)."""
    y = _conv_bn(x, _SPEC[f"{block}_1"])
    y = keras.layers.ReLU(name=f"{block}_relu")(y)
    y = _conv_bn(y, _SPEC[f"{block}_2"])
    y = keras.layers.Add(name=f"{block}_add")([y, x])
    return keras.layers.ReLU(name=f"{block}_out")(y)


def _down_block(x: keras.KerasTensor, block: str) -> keras.KerasTensor:
    """Down-sampling block (dlib ``res_down``): 3x3/2 'valid' main branch, avg-pool shortcut.

    The two branches generally differ in size: the shortcut has fewer channels, and for an even
    input the unpadded stride-2 conv yields one row/column fewer than the 2x2/2 pool. dlib's add
    layer zero-fills the missing trailing channels, rows and columns, which we reproduce with
    ZeroPadding2D layers (no Lambda, so no custom objects and a plain PAD op in TFLite).
    """
    main = _conv_bn(x, _SPEC[f"{block}_1"])
    main = keras.layers.ReLU(name=f"{block}_relu")(main)
    main = _conv_bn(main, _SPEC[f"{block}_2"])
    # ONNX AveragePool: no pads, floor rounding, so count_include_pad never matters: 'valid'.
    short = keras.layers.AveragePooling2D(2, strides=2, padding="valid", name=f"{block}_pool")(x)

    _, mh, mw, mc = main.shape
    _, sh, sw, sc = short.shape
    if mh > sh or mw > sw or sc > mc:
        raise ValueError(f"{block}: unexpected branch shapes {main.shape} vs {short.shape}")
    if (mh, mw) != (sh, sw):
        # Trailing rows/columns of zeros: top-left origin preserved, as in the ONNX Pad [..,1,1].
        main = keras.layers.ZeroPadding2D(((0, sh - mh), (0, sw - mw)), name=f"{block}_main_pad")(main)
    if sc != mc:
        # Trailing zero channels. ZeroPadding2D pads the last two axes when told the data is
        # channels_first, so on an NHWC tensor ((0,0),(0,n)) pads W by 0 and C by n: one standard
        # layer, no Lambda/Concatenate-with-constant needed.
        short = keras.layers.ZeroPadding2D(
            ((0, 0), (0, mc - sc)), data_format="channels_first", name=f"{block}_pool_pad"
        )(short)
    y = keras.layers.Add(name=f"{block}_add")([main, short])
    return keras.layers.ReLU(name=f"{block}_out")(y)


def build_age_resnet(input_size: int = 64, num_classes: int = 101) -> keras.Model:
    """Build the (untrained) age ResNet: RGB 0..255 NHWC in, softmax over ages 0..num_classes-1 out.

    The dlib normalisation (x - mean) / 256 is the first layer (a Rescaling with a per-channel
    offset, i.e. x * 1/256 - mean/256), so callers feed raw pixels; it serialises in the .keras
    config and becomes MUL+ADD in TFLite, both int8-friendly.
    """
    inputs = keras.Input((input_size, input_size, 3), dtype="float32", name="image")
    x = keras.layers.Rescaling(scale=PIXEL_SCALE, offset=[-m * PIXEL_SCALE for m in RGB_MEANS], name="normalize")(
        inputs
    )
    x = _conv_bn(x, _SPEC["stem"])
    x = keras.layers.ReLU(name="stem_relu")(x)
    # ONNX MaxPool 3x3/2, no pads, ceil_mode=0 == Keras 'valid' (floor).
    x = keras.layers.MaxPooling2D(3, strides=2, padding="valid", name="stem_pool")(x)
    x = _identity_block(x, "s1b1")
    x = _down_block(x, "s2b1")
    x = _identity_block(x, "s2b2")
    x = _down_block(x, "s3b1")
    x = _identity_block(x, "s3b2")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dense(num_classes, name="logits")(x)
    # float32 even under a mixed-precision policy (train builds the net anew under it on a GPU).
    outputs = keras.layers.Softmax(name="age_probs", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="age_resnet")


def expected_age(probs: np.ndarray) -> np.ndarray:
    """Age expectation: ONNX class weights for 81 classes, else class k means age k."""
    if probs.shape[-1] == ONNX_NUM_CLASSES:
        return probs @ ONNX_AGE_WEIGHTS
    return probs @ np.arange(probs.shape[-1], dtype=np.float64)
