"""Weight averaging and batch-norm re-measurement of training.experiments.soup, on small real Keras nets."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from training.experiments.soup import SoupError, average_weights, recalibrate_batch_norms  # noqa: E402


def tiny(seed: int, filters: int = 4) -> "keras.Model":
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(filters, 3, use_bias=False)(inp)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(2, 3, use_bias=False)(x)
    x = keras.layers.BatchNormalization()(x)
    return keras.Model(inp, x)


def test_average_weights_is_the_element_wise_mean():
    a, b = tiny(1), tiny(2)
    avg = average_weights([a, b])
    for wa, wb, w in zip(a.get_weights(), b.get_weights(), avg):
        np.testing.assert_allclose(w, (wa + wb) / 2, rtol=1e-6)


def test_models_of_different_shapes_are_refused():
    with pytest.raises(SoupError, match="architecture"):
        average_weights([tiny(1), tiny(1, filters=5)])


def test_batch_norms_are_measured_layer_after_layer():
    m = tiny(3)
    x = np.random.default_rng(0).uniform(0, 255, (300, 8, 8, 3)).astype(np.float32)
    recalibrate_batch_norms(m, x, batch=64)
    bns = [layer for layer in m.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for bn in bns:
        f = keras.Model(m.input, bn.input)(x, training=False).numpy().reshape(-1, bn.input.shape[-1])
        _, _, mean, var = bn.get_weights()
        np.testing.assert_allclose(mean, f.mean(axis=0), rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(var, f.var(axis=0), rtol=1e-3, atol=1e-3)
    # With the measured statistics, the last norm's output is standardised on these images.
    out = m(x, training=False).numpy().reshape(-1, 2)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=0.05)
    np.testing.assert_allclose(out.std(axis=0), 1, atol=0.05)
