"""The stream training reads: batches of cached crops with their targets, sampled by (source,
sex, age band) cell when balancing, and the augmentation that imitates till cameras (JPEG,
geometry, blur, small faces, night and flash, grey-scale, lighting)."""

from __future__ import annotations

import math

import numpy as np

from training.data import Split, band_index, cell_weights


def augment_batch(x):
    """Till-camera augmentation on a batch of uint8-valued float crops: flip, small rotation /
    scale / shift, brightness/contrast, blur, grey-scale. All vectorised, cheap at 64 px."""
    import tensorflow as tf

    b = tf.shape(x)[0]
    n = tf.cast(tf.shape(x)[1], tf.float32)
    x = tf.where(tf.random.uniform([b, 1, 1, 1]) < 0.5, tf.reverse(x, axis=[2]), x)
    # Up to 15 degrees: the over-estimated teenagers of in-the-wild photos tilt their heads more
    # than the till's alignment can undo when a keypoint is off.
    ang = tf.random.uniform([b], -15.0, 15.0) * math.pi / 180
    sc = tf.random.uniform([b], 0.92, 1.08)
    tx = tf.random.uniform([b], -0.04, 0.04) * n
    ty = tf.random.uniform([b], -0.04, 0.04) * n
    c, s = tf.cos(ang) / sc, tf.sin(ang) / sc
    cx = cy = (n - 1) / 2
    # Output->input mapping for ImageProjectiveTransformV3: rotate/scale about the centre.
    a0, a1 = c, -s
    b0, b1 = s, c
    a2 = cx - a0 * cx - a1 * cy + tx
    b2 = cy - b0 * cx - b1 * cy + ty
    z = tf.zeros([b])
    transforms = tf.stack([a0, a1, a2, b0, b1, b2, z, z], axis=1)
    x = tf.raw_ops.ImageProjectiveTransformV3(
        images=x,
        transforms=transforms,
        output_shape=tf.shape(x)[1:3],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="REFLECT",
    )
    # Blur on a quarter of the images (focus, motion, low-resolution webcams).
    g = tf.constant([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0
    k = tf.tile((g[:, None] * g[None, :])[:, :, None, None], [1, 1, 3, 1])
    blurred = tf.nn.depthwise_conv2d(x, k, [1, 1, 1, 1], "SAME")
    x = tf.where(tf.random.uniform([b, 1, 1, 1]) < 0.25, blurred, x)
    # Small faces: a fifth are shrunk to 24-48 px and blown up again (a shopper far from the
    # camera, a cheap webcam), one size per batch.
    small = tf.random.uniform([], 24, 49, dtype=tf.int32)
    lowres = tf.image.resize(tf.image.resize(x, [small, small], antialias=True), tf.shape(x)[1:3])
    x = tf.where(tf.random.uniform([b, 1, 1, 1]) < 0.2, lowres, x)
    # Night and flash: a fifth darkened (gamma 1.3-2.5) with sensor noise, a tenth flash-lit
    # (hard contrast, bright): the lighting of the party photos the gate failed on.
    gamma = tf.random.uniform([b, 1, 1, 1], 1.3, 2.5)
    dark = 255.0 * tf.pow(tf.clip_by_value(x, 0.0, 255.0) / 255.0, gamma)
    dark = dark + tf.random.normal(tf.shape(x)) * tf.random.uniform([b, 1, 1, 1], 2.0, 8.0)
    x = tf.where(tf.random.uniform([b, 1, 1, 1]) < 0.2, dark, x)
    flash = (x - 128.0) * 1.4 + 128.0 + tf.random.uniform([b, 1, 1, 1], 10.0, 40.0)
    x = tf.where(tf.random.uniform([b, 1, 1, 1]) < 0.1, flash, x)
    # Grey-scale on a tenth (IR / mono cameras).
    grey = tf.image.rgb_to_grayscale(x)
    x = tf.where(tf.random.uniform([b, 1, 1, 1]) < 0.1, tf.tile(grey, [1, 1, 1, 3]), x)
    # Brightness and contrast (till lighting), then colour cast.
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    contrast = tf.random.uniform([b, 1, 1, 1], 0.7, 1.3)
    bright = tf.random.uniform([b, 1, 1, 1], -30.0, 30.0)
    cast = tf.random.uniform([b, 1, 1, 3], 0.92, 1.08)
    x = ((x - mean) * contrast + mean + bright) * cast
    return tf.clip_by_value(x, 0.0, 255.0)


def jpeg_one(img):
    import tensorflow as tf

    u8 = tf.cast(img, tf.uint8)
    return tf.cond(
        tf.random.uniform([]) < 0.3,
        lambda: tf.image.random_jpeg_quality(u8, 30, 90),
        lambda: u8,
    )


def make_dataset(
    data: Split,
    batch: int,
    train: bool,
    seed: int,
    balance: float = 0.0,
    boost: dict[int, float] | None = None,
    by_sex: bool = False,
    teacher: np.ndarray | None = None,
    hints: np.ndarray | None = None,
):
    """Batches of (crop, (age, female[, teacher's 101 probabilities][, teacher's embedding])). With balance > 0 the training stream samples (source,
    sex, age band) cells by `data.cell_weights` instead of in proportion to their size; it is
    endless, so fit() is given the number of steps an epoch."""
    import tensorflow as tf

    target = np.stack([data.age, data.female()], axis=1).astype(np.float32)
    if teacher is not None:
        target = np.concatenate([target, teacher.astype(np.float32)], axis=1)
    if hints is not None:
        target = np.concatenate([target, hints.astype(np.float32)], axis=1)
    if train and balance > 0:
        weights = cell_weights(data, balance, boost or {}, by_sex=by_sex)
        bands = band_index(data.age)
        sexes = data.sex if by_sex else np.full(len(data), "", dtype=object)
        parts, probs = [], []
        for (src, sex, band), w in sorted(weights.items()):
            m = (data.source == src) & (sexes == sex) & (bands == band)
            parts.append(
                tf.data.Dataset.from_tensor_slices((data.x[m], target[m]))
                .shuffle(int(m.sum()), seed=seed + len(parts), reshuffle_each_iteration=True)
                .repeat()
            )
            probs.append(w)
        ds = tf.data.Dataset.sample_from_datasets(parts, weights=probs, seed=seed)
    else:
        ds = tf.data.Dataset.from_tensor_slices((data.x, target))
        if train:
            ds = ds.shuffle(len(data), seed=seed, reshuffle_each_iteration=True)
    if train:
        ds = ds.map(lambda a, b: (jpeg_one(a), b), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=train)
    ds = ds.map(lambda a, b: (tf.cast(a, tf.float32), b), num_parallel_calls=tf.data.AUTOTUNE)
    if train:
        ds = ds.map(lambda a, b: (augment_batch(a), b), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
