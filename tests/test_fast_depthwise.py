"""FastDepthwiseConv2D computes exactly DepthwiseConv2D; apply() rebuilds backbones with it."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from kerasxai.models import fast_depthwise as fd

REPO = Path(__file__).resolve().parents[1]


def _close(actual, expected, tol=1e-5):
    """Equal to `tol` relative to the output's scale (random-init backbones give tiny outputs)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(float(np.abs(expected).max()), 1e-30)
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_layer_matches_depthwise_conv(kernel_size, strides, padding):
    rng = np.random.default_rng(kernel_size * 10 + strides)
    for hw, use_bias, activation in [((11, 11), True, None), ((12, 9), False, "relu")]:
        x = rng.normal(size=(2, *hw, 5)).astype("float32")
        ref = keras.layers.DepthwiseConv2D(kernel_size, strides=strides, padding=padding, use_bias=use_bias, activation=activation)
        ref.build(x.shape)
        ref.set_weights([rng.normal(size=w.shape).astype("float32") for w in ref.get_weights()])
        fast = fd.FastDepthwiseConv2D.from_config(ref.get_config())
        fast.build(x.shape)
        fast.set_weights(ref.get_weights())
        assert [w.path.split("/")[-1] for w in fast.weights] == [w.path.split("/")[-1] for w in ref.weights]
        expected = np.asarray(ref(x))
        assert np.asarray(fast(x)).shape == expected.shape
        np.testing.assert_allclose(np.asarray(fast(x)), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="jax.grad")
@pytest.mark.parametrize("kernel_size", [3, 5])
@pytest.mark.parametrize("strides", [1, 2])
@pytest.mark.parametrize("padding", ["same", "valid"])
def test_training_gradients_match_depthwise_conv(kernel_size, strides, padding):
    """The layer's own gradient (input and kernel) equals autodiff of DepthwiseConv2D."""
    import jax

    rng = np.random.default_rng(kernel_size * 10 + strides)
    for hw in [(10, 10), (12, 9)]:
        x = rng.normal(size=(2, *hw, 6)).astype("float32")
        ref = keras.layers.DepthwiseConv2D(kernel_size, strides=strides, padding=padding)
        ref.build(x.shape)
        weights = [rng.normal(size=w.shape).astype("float32") for w in ref.get_weights()]
        fast = fd.FastDepthwiseConv2D.from_config(ref.get_config())
        fast.build(x.shape)
        upstream = rng.normal(size=ref.compute_output_shape(x.shape)).astype("float32")

        def loss(layer):
            return lambda w, inp: (layer.stateless_call(w, [], inp)[0] * upstream).sum()

        g_ref = jax.jit(jax.grad(loss(ref), argnums=(0, 1)))(weights, x)
        g_fast = jax.jit(jax.grad(loss(fast), argnums=(0, 1)))(weights, x)
        for a, b in zip(jax.tree_util.tree_leaves(g_fast), jax.tree_util.tree_leaves(g_ref)):
            _close(a, b, tol=1e-4)


def test_unsupported_configurations_are_refused_and_kept_by_apply():
    for kwargs in [dict(dilation_rate=2), dict(depth_multiplier=2), dict(strides=3)]:
        layer = keras.layers.DepthwiseConv2D(3, padding="same", **kwargs)
        assert not fd.supports(layer)
        with pytest.raises(ValueError, match="does not support"):
            fd.FastDepthwiseConv2D(3, padding="same", **kwargs)
    inputs = keras.Input((16, 16, 4))
    h = keras.layers.DepthwiseConv2D(3, padding="same", dilation_rate=2, name="dilated")(inputs)
    h = keras.layers.DepthwiseConv2D(3, padding="same", name="plain")(h)
    model = keras.Model(inputs, h)
    fast = fd.apply(model, "on")
    assert type(fast.get_layer("dilated")) is keras.layers.DepthwiseConv2D
    assert isinstance(fast.get_layer("plain"), fd.FastDepthwiseConv2D)
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 4)).astype("float32")
    _close(fast(x), model(x))


def _nested_model():
    inner_in = keras.Input((16, 16, 8))
    inner = keras.Model(inner_in, keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(inner_in), name="inner")
    seq = keras.Sequential([keras.layers.DepthwiseConv2D(5, padding="same", activation="relu")], name="seq")
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Rescaling(1 / 255.0)(inputs)
    h = keras.layers.Conv2D(8, 1)(h)
    h = keras.layers.DepthwiseConv2D(3, padding="valid")(keras.layers.ZeroPadding2D(1)(h))
    h = keras.layers.BatchNormalization()(h)
    h = seq(inner(h))
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))


def _count(model, cls):
    n = 0
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            n += _count(layer, cls)
        n += isinstance(layer, cls)
    return n


def test_apply_rebuilds_nested_models_weights_unchanged_and_round_trips(tmp_path):
    model = _nested_model()
    rng = np.random.default_rng(1)
    model.set_weights([rng.normal(size=w.shape).astype("float32") + (1.5 if "variance" in w.path else 0) for w in model.weights])
    x = rng.uniform(0, 255, size=(3, 16, 16, 3)).astype("float32")
    expected = np.asarray(model(x))
    fast = fd.apply(model, "on")
    assert _count(fast, fd.FastDepthwiseConv2D) == 3 and _count(model, fd.FastDepthwiseConv2D) == 0
    _close(fast(x), expected)
    path = tmp_path / "fast.keras"
    fast.save(path)
    loaded = keras.models.load_model(path)  # safe_mode=True by default, no custom_objects
    assert _count(loaded, fd.FastDepthwiseConv2D) == 3
    _close(loaded(x), expected)
    back = fd.apply(loaded, "off")
    assert _count(back, fd.FastDepthwiseConv2D) == 0 and _count(back, keras.layers.DepthwiseConv2D) == 3
    _close(back(x), expected)
    assert fd.apply(back, "off") is back  # nothing to swap: the same model


def test_mode_resolution():
    import jax

    assert fd.resolve("on") is True and fd.resolve("off") is False
    assert fd.resolve("auto") is (keras.backend.backend() == "jax" and jax.default_backend() == "cpu")
    with pytest.raises(ValueError, match="fast_depthwise"):
        fd.resolve("fast")


@pytest.mark.slow
@pytest.mark.parametrize("ctor", ["MobileNetV3Large", "EfficientNetV2S"])
def test_keras_applications_backbones(ctor, tmp_path):
    model = getattr(keras.applications, ctor)(input_shape=(64, 64, 3), include_top=False, weights=None)
    n_dw = _count(model, keras.layers.DepthwiseConv2D)
    fast = fd.apply(model, "on")
    assert n_dw > 10 and _count(fast, fd.FastDepthwiseConv2D) == n_dw
    for a, b in zip(model.weights, fast.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    x = np.random.default_rng(2).uniform(0, 255, size=(2, 64, 64, 3)).astype("float32")
    expected = model.predict_on_batch(x)
    _close(fast.predict_on_batch(x), expected)
    path = tmp_path / "backbone.keras"
    fast.save(path)
    _close(keras.models.load_model(path, safe_mode=True).predict_on_batch(x), expected)


def test_tensorflow_backend_layer_and_auto_mode():
    script = textwrap.dedent(
        """
        import numpy as np, keras
        from kerasxai.models import fast_depthwise as fd
        assert keras.backend.backend() == "tensorflow" and fd.resolve("auto") is False
        x = np.random.default_rng(0).normal(size=(2, 10, 10, 4)).astype("float32")
        for strides in (1, 2):
            ref = keras.layers.DepthwiseConv2D(3, strides=strides, padding="same")
            ref.build(x.shape)
            ref.set_weights([np.random.default_rng(1).normal(size=w.shape).astype("float32") for w in ref.get_weights()])
            fast = fd.FastDepthwiseConv2D.from_config(ref.get_config())
            fast.build(x.shape)
            fast.set_weights(ref.get_weights())
            np.testing.assert_allclose(np.asarray(fast(x)), np.asarray(ref(x)), atol=1e-5)
        inputs = keras.Input((10, 10, 4))
        model = keras.Model(inputs, keras.layers.DepthwiseConv2D(3)(inputs))
        assert fd.apply(model, "auto") is model
        print("ok")
        """
    )
    env = dict(os.environ, KERAS_BACKEND="tensorflow", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]
