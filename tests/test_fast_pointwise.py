"""FastPointwiseConv2D computes exactly a 1x1 Conv2D, with the same gradients under JAX."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasxai.models import fast_depthwise as fd
from kerasxai.models import fast_pointwise as fp
from kerasxai.models.layer_swap import swap_layers

REPO = Path(__file__).resolve().parents[1]


def _close(actual, expected, tol=1e-5):
    """Equal to `tol` relative to the output's scale."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(float(np.abs(expected).max()), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


def _pair(x_shape, filters, rng, **kwargs):
    """A built Conv2D with random weights and the fast layer with the same weights."""
    ref = keras.layers.Conv2D(filters, 1, **kwargs)
    ref.build(x_shape)
    ref.set_weights([rng.normal(size=w.shape).astype("float32") for w in ref.get_weights()])
    fast = fp.FastPointwiseConv2D.from_config(ref.get_config())
    fast.build(x_shape)
    fast.set_weights(ref.get_weights())
    return ref, fast


@pytest.mark.parametrize("use_bias, activation", [(True, None), (False, "relu")])
def test_layer_matches_conv2d(use_bias, activation):
    rng = np.random.default_rng(0)
    for shape in [(2, 7, 5, 6), (3, 1, 1, 16)]:  # a feature map, and a squeeze-excite vector
        x = rng.normal(size=shape).astype("float32")
        ref, fast = _pair(x.shape, 9, rng, use_bias=use_bias, activation=activation)
        assert [w.path.split("/")[-1] for w in fast.weights] == [w.path.split("/")[-1] for w in ref.weights]
        _close(fast(x), ref(x))


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="jax.grad")
def test_training_gradients_match_conv2d():
    """The layer's own gradient (input, kernel and bias) equals autodiff of Conv2D."""
    import jax

    rng = np.random.default_rng(1)
    for shape in [(2, 6, 5, 7), (4, 1, 1, 12)]:
        x = rng.normal(size=shape).astype("float32")
        ref, fast = _pair(x.shape, 5, rng)
        upstream = rng.normal(size=ref.compute_output_shape(x.shape)).astype("float32")

        def loss(layer):
            return lambda w, inp: (layer.stateless_call(w, [], inp)[0] * upstream).sum()

        weights = [np.asarray(w) for w in ref.get_weights()]
        g_ref = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(weights, x)
        g_fast = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(weights, x)
        for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_ref)):
            _close(a, b, tol=1e-4)


def test_unsupported_configurations_are_refused_and_kept():
    for kwargs in [dict(kernel_size=3), dict(kernel_size=1, strides=2), dict(kernel_size=1, groups=2)]:
        layer = keras.layers.Conv2D(4, **kwargs)
        assert not fp.supports(layer)
        with pytest.raises(ValueError, match="does not support"):
            fp.FastPointwiseConv2D(4, **kwargs)
    inputs = keras.Input((8, 8, 4))
    h = keras.layers.Conv2D(4, 3, padding="same", name="spatial")(inputs)
    h = keras.layers.Conv2D(6, 1, name="pointwise")(h)
    model = keras.Model(inputs, h)
    fast = fp.apply(model, "on")
    assert type(fast.get_layer("spatial")) is keras.layers.Conv2D
    assert isinstance(fast.get_layer("pointwise"), fp.FastPointwiseConv2D)
    x = np.random.default_rng(2).normal(size=(2, 8, 8, 4)).astype("float32")
    _close(fast(x), model(x))


def test_both_forms_swap_in_one_rebuild_and_round_trip(tmp_path):
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(8, 1)(inputs)
    h = keras.layers.DepthwiseConv2D(3, padding="same")(h)
    h = keras.layers.BatchNormalization()(h)
    h = keras.layers.Conv2D(4, 1, activation="relu")(h)
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(size=w.shape).astype("float32") + (1.5 if "variance" in w.path else 0) for w in model.weights])
    x = rng.uniform(0, 255, size=(2, 12, 12, 3)).astype("float32")
    expected = np.asarray(model(x))
    fast = swap_layers(model, fd.replacement("on"), fp.replacement("on"))
    kinds = [type(layer) for layer in fast.layers]
    assert kinds.count(fp.FastPointwiseConv2D) == 2 and kinds.count(fd.FastDepthwiseConv2D) == 1
    _close(fast(x), expected)
    fast.save(tmp_path / "fast.keras")
    loaded = keras.models.load_model(tmp_path / "fast.keras")  # safe mode, no custom_objects
    assert [type(layer) for layer in loaded.layers] == kinds
    _close(loaded(x), expected)
    back = fp.apply(loaded, "off")
    assert not any(isinstance(layer, fp.FastPointwiseConv2D) for layer in back.layers)
    _close(back(x), expected)
    assert fp.apply(back, "off") is back  # nothing to swap: the same model


def test_mode_resolution():
    import jax

    assert fp.resolve("on") is True and fp.resolve("off") is False
    assert fp.resolve("auto") is (keras.backend.backend() == "jax" and jax.default_backend() == "cpu")
    with pytest.raises(ValueError, match="fast_pointwise"):
        fp.resolve("fast")


def test_tensorflow_backend_layer_and_auto_mode():
    script = textwrap.dedent(
        """
        import numpy as np, keras
        from kerasxai.models import fast_pointwise as fp
        assert keras.backend.backend() == "tensorflow" and fp.resolve("auto") is False
        x = np.random.default_rng(0).normal(size=(2, 6, 6, 4)).astype("float32")
        ref = keras.layers.Conv2D(5, 1)
        ref.build(x.shape)
        ref.set_weights([np.random.default_rng(1).normal(size=w.shape).astype("float32") for w in ref.get_weights()])
        fast = fp.FastPointwiseConv2D.from_config(ref.get_config())
        fast.build(x.shape)
        fast.set_weights(ref.get_weights())
        np.testing.assert_allclose(np.asarray(fast(x)), np.asarray(ref(x)), atol=1e-5)
        inputs = keras.Input((6, 6, 4))
        model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
        assert fp.apply(model, "auto") is model
        print("ok")
        """
    )
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
