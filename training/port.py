"""Port of the CC0 dlib/Cydral age ResNet (``age-v1.onnx``) into an equivalent Keras model.

This module owns (the architecture itself is ``training.arch``):

* the weight transfer from the ONNX graph (:func:`port_onnx_weights`), including turning dlib's
  folded batch norms (a per-channel ``Mul`` and ``Add``) back into real ``BatchNormalization``
  layers, optionally calibrated on real faces so the net can be fine-tuned normally, and widening
  the 81-class head (ages 0.25, 1..80) to ``num_classes`` classes meaning ages ``0..num_classes-1``;
* the onnxruntime reference (:func:`onnx_reference`) and a CLI that proves the port reproduces it.

The ONNX graph (opset 18) as read from the file, NCHW, for a 64x64 input:

* stem: Conv 7x7/2 with *no* padding (64 -> 29), scale/shift, ReLU, MaxPool 3x3/2 with no padding
  and floor rounding (29 -> 14);
* stage 1 (64 ch, 14x14): one residual block, two 3x3/1 convs padded 1, identity shortcut;
* stage 2 (128 ch): a down-sampling block whose first conv is 3x3/2 with *no* padding (14 -> 6),
  while its shortcut is AveragePool 2x2/2 (14 -> 7, no pads, count_include_pad=0, floor); the
  shortcut gets 64 trailing zero channels and the main branch one trailing zero row and column
  (6x6 -> 7x7, top-left origin kept), then Add; then one identity block;
* stage 3 (256 ch): the same down-sampling pattern (7 -> 3 on both branches, so only the channel
  padding of the shortcut is needed), then one identity block;
* global average pool, Gemm 256 -> 81, Softmax.

Keras layers: input ``image`` (float32 RGB 0..255, NHWC); output ``age_probs`` (softmax over ages
``0..num_classes-1``); every ONNX Conv maps to ``<block>_conv*`` (no bias) + ``<block>_bn*``.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import keras
import numpy as np

from training.arch import (
    BN_EPSILON,
    CONV_SPECS,
    ONNX_INPUT_SIZE,
    ONNX_NUM_CLASSES,
    PIXEL_SCALE,
    RGB_MEANS,
    build_age_resnet,
    expected_age,
)
from training.data import LabelsError, read_labels

# --------------------------------------------------------------------------------------------
# Reading the ONNX graph
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ConvWeights:
    kernel: np.ndarray  # ONNX layout (O, I, kh, kw)
    bias: np.ndarray  # (O,)
    scale: np.ndarray  # folded batch norm s, (O,)
    shift: np.ndarray  # folded batch norm b, (O,)


def _read_onnx(onnx_path: Path) -> tuple[list[_ConvWeights], np.ndarray, np.ndarray]:
    """Return the convs (graph order, with their Mul/Add) and the Gemm weight (256,81) and bias."""
    import onnx  # local: only the port needs it, not code that merely builds the model
    from onnx import helper, numpy_helper

    graph = onnx.load(str(onnx_path)).graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def only_consumer(tensor: str, op: str) -> onnx.NodeProto:
        nodes = consumers.get(tensor, [])
        if len(nodes) != 1 or nodes[0].op_type != op:
            raise ValueError(f"expected {tensor} to feed one {op}, got {[n.op_type for n in nodes]}")
        return nodes[0]

    def const_input(node: onnx.NodeProto) -> np.ndarray:
        found = [inits[i] for i in node.input if i in inits]
        if len(found) != 1:
            raise ValueError(f"{node.name}: expected one constant input")
        return found[0].reshape(-1)

    convs: list[_ConvWeights] = []
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        spec = CONV_SPECS[len(convs)]
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        got = (
            list(attrs.get("kernel_shape", [])),
            list(attrs.get("strides", [1, 1])),
            list(attrs.get("pads", [0, 0, 0, 0])),
            attrs.get("group", 1),
            list(attrs.get("dilations", [1, 1])),
        )
        want = ([spec.kernel] * 2, [spec.stride] * 2, [spec.pad] * 4, 1, [1, 1])
        if got != want:
            raise ValueError(f"ONNX {node.name} {got} does not match Keras {spec.name} {want}")
        mul = only_consumer(node.output[0], "Mul")
        add = only_consumer(mul.output[0], "Add")
        kernel = inits[node.input[1]]
        convs.append(_ConvWeights(kernel, inits[node.input[2]], const_input(mul), const_input(add)))
        if kernel.shape[0] != spec.filters:
            raise ValueError(f"{node.name}: {kernel.shape[0]} filters, expected {spec.filters}")
    if len(convs) != len(CONV_SPECS):
        raise ValueError(f"found {len(convs)} convs, expected {len(CONV_SPECS)}")

    gemms = [n for n in graph.node if n.op_type == "Gemm"]
    if len(gemms) != 1:
        raise ValueError("expected exactly one Gemm")
    attrs = {a.name: helper.get_attribute_value(a) for a in gemms[0].attribute}
    weight = inits[gemms[0].input[1]]
    if attrs.get("transB", 0):
        weight = weight.T
    if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
        raise ValueError(f"unsupported Gemm attributes {attrs}")
    return convs, weight, inits[gemms[0].input[2]]


# --------------------------------------------------------------------------------------------
# Weight transfer
# --------------------------------------------------------------------------------------------


def _bn_weights(
    scale: np.ndarray, shift: np.ndarray, mean: np.ndarray, var: np.ndarray, eps: float
) -> list[np.ndarray]:
    """[gamma, beta, moving_mean, moving_variance] such that inference BN(x) == scale*x + shift.

    BN(x) = gamma*(x - mean)/sqrt(var + eps) + beta; with gamma = s*sqrt(var+eps) and
    beta = s*mean + b this is s*x + b for any (mean, var), so the statistics can be chosen freely:
    real ones make training-mode batch statistics agree with the moving ones.
    """
    scale64, shift64, mean64, var64 = (np.asarray(a, np.float64) for a in (scale, shift, mean, var))
    gamma = scale64 * np.sqrt(var64 + eps)
    beta = scale64 * mean64 + shift64
    return [a.astype(np.float32) for a in (gamma, beta, mean64, var64)]


def _head_weights(weight: np.ndarray, bias: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Widen the 81-class head (ages 0.25, 1..80) to classes meaning ages 0..num_classes-1.

    Class k copies ONNX class min(k, 80) (class 0, "0.25 years", becomes age 0). The ONNX class 80
    is copied into the m = num_classes - 80 slots 80..num_classes-1 and each copy's bias is lowered
    by log(m): the copies then share exactly the original class-80 probability mass (uniformly),
    and classes 0..79 keep exactly their original probabilities. The expected age only moves by
    -0.25*p0 + p80*(m-1)/2 (mass that said "80 or older" now spreads over 80..100).
    """
    if num_classes < ONNX_NUM_CLASSES:
        raise ValueError(f"num_classes must be >= {ONNX_NUM_CLASSES}, got {num_classes}")
    src = np.minimum(np.arange(num_classes), ONNX_NUM_CLASSES - 1)
    new_w = weight[:, src].astype(np.float32)
    new_b = bias[src].astype(np.float64)
    copies = num_classes - (ONNX_NUM_CLASSES - 1)
    new_b[ONNX_NUM_CLASSES - 1 :] -= math.log(copies)
    return new_w, new_b.astype(np.float32)


def _conv_outputs_model(model: keras.Model) -> keras.Model:
    return keras.Model(model.input, [model.get_layer(f"{s.name}_conv").output for s in CONV_SPECS])


def _to_input(images: np.ndarray, input_size: int) -> np.ndarray:
    """float32 NHWC RGB 0..255 of the model's size (INTER_AREA resize when needed)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected NHWC RGB images, got shape {images.shape}")
    if images.shape[1:3] != (input_size, input_size):
        images = np.stack([cv2.resize(im, (input_size, input_size), interpolation=cv2.INTER_AREA) for im in images])
    return images.astype(np.float32)


def predict(model: keras.Model, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Inference in small batches (2 shared CPU cores: keep memory and latency spikes small)."""
    x = _to_input(images, int(model.input.shape[1]))
    outs = [
        keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outs, axis=0)


def port_onnx_weights(
    onnx_path: str | Path, calibration_images: np.ndarray | None, num_classes: int = 101, input_size: int = 64
) -> keras.Model:
    """Build the Keras age ResNet and load the ONNX weights into it.

    calibration_images: optional NHWC RGB 0..255 faces (uint8 or float; a few hundred). When given,
    each batch norm's moving mean/variance are set to the measured per-channel statistics of its
    conv's output on them (inference is exact either way, see _bn_weights). Without them the
    moving stats are mean 0, variance 1-eps, so gamma = s and beta = b exactly.
    """
    convs, fc_w, fc_b = _read_onnx(Path(onnx_path))
    model = build_age_resnet(input_size=input_size, num_classes=num_classes)
    for spec, cw in zip(CONV_SPECS, convs):
        conv = model.get_layer(f"{spec.name}_conv")
        # ONNX (O, I, kh, kw) -> Keras (kh, kw, I, O); cross-correlation in both, no flip.
        conv.set_weights([np.transpose(cw.kernel, (2, 3, 1, 0)).astype(np.float32)])
        # The conv bias c folds into the shift: s*(Wx + c) + b = s*Wx + (s*c + b).
        shift = cw.scale.astype(np.float64) * cw.bias + cw.shift
        n = cw.scale.shape[0]
        model.get_layer(f"{spec.name}_bn").set_weights(
            _bn_weights(cw.scale, shift, np.zeros(n), np.full(n, 1.0 - BN_EPSILON), BN_EPSILON)
        )
    model.get_layer("logits").set_weights(list(_head_weights(fc_w, fc_b, num_classes)))

    if calibration_images is not None and len(calibration_images):
        # The conv outputs do not depend on their own BN's stats, and every BN is already exact,
        # so one inference pass gives the statistics of all convs at once.
        x = _to_input(calibration_images, input_size)
        probe = _conv_outputs_model(model)
        # Per layer: [sum, sum of squares] per channel, in float64, and the number of positions.
        sums = [np.zeros((2, s.filters)) for s in CONV_SPECS]
        totals = [0] * len(CONV_SPECS)
        for i in range(0, len(x), 64):
            outs = probe(x[i : i + 64], training=False)
            for k, out in enumerate(outs):
                f = keras.ops.convert_to_numpy(out).astype(np.float64).reshape(-1, sums[k].shape[1])
                sums[k][0] += f.sum(axis=0)
                sums[k][1] += (f * f).sum(axis=0)
                totals[k] += f.shape[0]
        for spec, cw, acc, total in zip(CONV_SPECS, convs, sums, totals):
            mean = acc[0] / total
            var = np.maximum(acc[1] / total - mean * mean, 0.0)
            shift = cw.scale.astype(np.float64) * cw.bias + cw.shift
            model.get_layer(f"{spec.name}_bn").set_weights(_bn_weights(cw.scale, shift, mean, var, BN_EPSILON))
    return model


# --------------------------------------------------------------------------------------------
# Reference and checks
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _onnx_session(onnx_path: str):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    # The manifest's runtime settings: no graph rewrites, one thread (the reference stays plain).
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(onnx_path, sess_options=opts, providers=["CPUExecutionProvider"])


def onnx_reference(onnx_path: str | Path, images_nhwc_0_255: np.ndarray) -> np.ndarray:
    """The ONNX model's 81 probabilities for NHWC RGB 0..255 images (resized to 64x64 if needed)."""
    session = _onnx_session(str(onnx_path))
    x = _to_input(images_nhwc_0_255, ONNX_INPUT_SIZE)
    x = (x - np.asarray(RGB_MEANS, np.float32)) * np.float32(PIXEL_SCALE)
    x = np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))  # NHWC -> NCHW
    name = session.get_inputs()[0].name
    outs = [session.run(None, {name: x[i : i + 64]})[0] for i in range(0, len(x), 64)]
    return np.concatenate(outs, axis=0)


def load_faces(
    images_dir: Path, labels_csv: Path, n: int, size: int = ONNX_INPUT_SIZE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """n labelled photos (seeded random pick from the CSV), resized whole to size x size, RGB.

    Kept in memory only: the dataset's licence forbids writing faces or crops into the project.
    """
    rows = [(r.file_name, r.real_age) for r in read_labels(labels_csv)]
    order = np.random.default_rng(seed).permutation(len(rows))
    images: list[np.ndarray] = []
    ages: list[float] = []
    for idx in order:
        if len(images) >= n:
            break
        name, age = rows[idx]
        bgr = cv2.imread(str(images_dir / name), cv2.IMREAD_COLOR)
        if bgr is None:  # unreadable/missing file: skip rather than fail the whole check
            continue
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        images.append(cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA))
        ages.append(age)
    return np.stack(images), np.asarray(ages)


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except LabelsError as exc:
        print(f"training.port: {exc}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="where to save the widened .keras")
    parser.add_argument("--images", type=Path, help="folder of face photos (UTKFace layout)")
    parser.add_argument("--labels", type=Path, help="CSV with file_name,real_age")
    parser.add_argument("--n", type=int, default=300, help="photos used to calibrate and check")
    parser.add_argument("--num-classes", type=int, default=101)
    parser.add_argument(
        "--input-size",
        type=int,
        default=None,
        help="input side of the saved model (default: the crop size of --calibrate-data, else 64); "
        "the net is fully convolutional, so the ported weights work at any size",
    )
    parser.add_argument(
        "--calibrate-data",
        type=Path,
        default=None,
        help="dataset folder from training.prepare: calibrate the batch norms on "
        "512 of its aligned training crops (what fine-tuning will see)",
    )
    args = parser.parse_args(argv)

    if args.images is not None:
        labels = args.labels or args.images.parent / "labels.csv"
        faces, real_ages = load_faces(args.images, labels, args.n)
        print(f"loaded {len(faces)} real faces from {args.images}")
    else:
        # No photos: the check still runs, on random pixels, and BN stays uncalibrated.
        faces = np.random.default_rng(0).uniform(0, 255, (32, 64, 64, 3)).astype(np.float32)
        real_ages = None
        print("no --images: checking on 32 random-noise images, batch norms not calibrated")
    calib = faces if args.images is not None else None
    if args.calibrate_data is not None:
        from training.data import load_split

        crops = load_split(args.calibrate_data, "train").x
        pick = np.random.default_rng(0).choice(len(crops), min(512, len(crops)), replace=False)
        calib = crops[np.sort(pick)].astype(np.float32)
        print(f"calibrating batch norms on {len(calib)} aligned training crops from {args.calibrate_data}")
    size = args.input_size or (calib.shape[1] if args.calibrate_data is not None else 64)

    ref = onnx_reference(args.onnx, faces)
    ref_age = expected_age(ref)

    faithful = port_onnx_weights(args.onnx, calib, num_classes=ONNX_NUM_CLASSES)
    probs = predict(faithful, faces)
    age = expected_age(probs)
    print(f"faithful 81-class port vs onnxruntime on {len(faces)} images:")
    print(f"  max |dp|   = {np.abs(probs - ref).max():.3e}")
    print(f"  max |dage| = {np.abs(age - ref_age).max():.3e} years")

    widened = port_onnx_weights(args.onnx, calib, num_classes=args.num_classes, input_size=size)
    wide_age = expected_age(predict(widened, faces))
    d = np.abs(wide_age - ref_age)
    print(f"widened {args.num_classes}-class head (ages 0..{args.num_classes - 1}) vs ONNX age:")
    print(f"  mean |dage| = {d.mean():.3f}, max |dage| = {d.max():.3f} years")
    if real_ages is not None:
        print(
            f"  MAE vs labels: onnx {np.abs(ref_age - real_ages).mean():.2f}, "
            f"widened {np.abs(wide_age - real_ages).mean():.2f}"
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    widened.save(args.out)
    reloaded = keras.models.load_model(args.out)  # proves: no custom objects needed
    dr = np.abs(predict(reloaded, faces) - predict(widened, faces)).max()
    print(f"saved {args.out} ({widened.count_params():,} params); reload max |dp| = {dr:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
