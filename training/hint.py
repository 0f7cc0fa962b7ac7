"""hint: feature distillation. The till's ResNet learns to predict the face-pretrained teacher's
1024-d embedding from its own pooled features (a linear "hint" layer), beside the teacher's age
distribution. Distilling the distribution alone left the student about 6.5 points of adults sent
to ID behind its teacher; the embedding carries what the teacher knows about a face, not only the
age it reads from it. The hint layer exists only while training: the saved network, its export
and the till are unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.data import read_index
from training.teacher import EMBEDDINGS_FILE, TeacherError

HINT_LAYER = "hint"
POOLED_LAYER = "gap"


def load_hints(data: Path, rows: np.ndarray) -> np.ndarray:
    """The teacher's embeddings of the given crop rows of `data`, each dimension standardised over
    those rows (so the hint loss reads as the share of the embedding's variance left unexplained);
    rows the teacher could not embed stay NaN and get no hint."""
    path = data / EMBEDDINGS_FILE
    try:
        with np.load(path) as z:
            emb, done = z["embedding"], z["done"]
    except (OSError, KeyError, ValueError) as exc:
        raise TeacherError(f"{path}: no teacher embeddings; run `training.teacher embed` on {data} ({exc})") from None
    if not done.all():
        raise TeacherError(f"{path}: {int((~done).sum())} rows not embedded yet; run `training.teacher embed` again")
    n_rows = len(read_index(data))
    if len(emb) != n_rows:
        # Left over from before the dataset was prepared again: every row would get another face's.
        raise TeacherError(f"{path} holds {len(emb)} rows, the dataset {n_rows}: run `training.teacher embed` on it")
    e = emb[rows].astype(np.float32)
    ok = np.isfinite(e).all(1)
    if not ok.any():
        raise TeacherError(f"{path}: none of the training rows has an embedding")
    mu, sd = e[ok].mean(0), e[ok].std(0) + 1e-6
    return np.where(ok[:, None], (e - mu) / sd, np.nan).astype(np.float32)


def hint_trainer(net, width: int):
    """A training wrapper around the age network `net`: one output, its age probabilities followed
    by a linear read-out of its pooled features to the teacher's `width`-d embedding. The layers
    are shared, so training the wrapper trains `net`."""
    import keras

    pooled = net.get_layer(POOLED_LAYER).output
    hint = keras.layers.Dense(width, name=HINT_LAYER, dtype="float32")(pooled)
    both = keras.layers.Concatenate(name="probs_and_hint", dtype="float32")([net.output, hint])
    return keras.Model(net.input, both, name="age_resnet_with_hint")


def with_hint_loss(base, n_base: int, n_probs: int, weight: float):
    """The loss of the wrapper: `base` on the first `n_base` target columns and the `n_probs`
    probabilities, plus `weight` x the mean squared error between the hint and the standardised
    embedding in the remaining columns (no cost on rows without an embedding)."""
    import tensorflow as tf

    def loss(y_true, y_pred):
        yt = tf.cast(y_true, tf.float32)
        target = yt[:, n_base:]
        hint = tf.cast(y_pred[:, n_probs:], tf.float32)
        has = tf.reduce_all(tf.math.is_finite(target), axis=1)
        err = tf.reduce_mean(tf.square(hint - tf.where(tf.math.is_finite(target), target, 0.0)), axis=1)
        return base(yt[:, :n_base], y_pred[:, :n_probs]) + weight * tf.where(has, err, 0.0)

    return loss


def on_net(callback, net):
    """`callback` working on the age network `net` while fit() trains its wrapper: checkpoints save
    the network the till will run, validation scores it."""
    import keras

    class OnNet(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            callback.set_model(net)

        def set_model(self, model):
            # fit() binds every callback to the wrapper; this one stays on the network.
            pass

        def on_train_begin(self, logs=None):
            callback.on_train_begin(logs)

        def on_train_end(self, logs=None):
            callback.on_train_end(logs)

        def on_epoch_begin(self, epoch, logs=None):
            callback.on_epoch_begin(epoch, logs)

        def on_epoch_end(self, epoch, logs=None):
            callback.on_epoch_end(epoch, logs)

        def on_train_batch_end(self, batch, logs=None):
            callback.on_train_batch_end(batch, logs)

    return OnNet()
