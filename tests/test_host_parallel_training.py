"""Train steps split over the CPU cores compute the update of the whole batch."""

import keras
import numpy as np
import pytest

from kerasxai.config import ConfigError, load_config
from kerasxai.training import host_parallel

pytestmark = pytest.mark.skipif(keras.backend.backend() != "jax", reason="the split train step is JAX's")


def _plain_model(seed, dropout=0.0, batchnorm=False):
    """A small conv net with a sigmoid score (no BatchNormalization unless asked)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(8, 3, activation="relu")(inputs)
    if batchnorm:
        h = keras.layers.BatchNormalization(momentum=0.5)(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    if dropout:
        h = keras.layers.Dropout(dropout)(h)
    score = keras.layers.Dense(1, activation="sigmoid", name="score")(h)
    model = keras.Model(inputs, {"score": score})
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss={"score": "binary_crossentropy"},
                  metrics={"score": [keras.metrics.BinaryAccuracy(name="accuracy"), keras.metrics.AUC(name="auc")]})
    return model


def _batch(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 16, 16, 3)).astype("float32")
    y = {"score": (rng.random((n, 1)) > 0.5).astype("float32")}
    return x, y


@pytest.mark.parametrize("n", [8, 7])
def test_split_step_equals_one_execution(n):
    """Same weights, optimizer state, loss and metrics after three steps, also for an odd batch."""
    whole, split = _plain_model(1), _plain_model(1)
    host_parallel.install(split, 2)
    for step in range(3):
        x, y = _batch(n, seed=step)
        a = whole.train_on_batch(x, y, return_dict=True)
        b = split.train_on_batch(x, y, return_dict=True)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
    for va, vb in zip(whole.weights + whole.optimizer.variables, split.weights + split.optimizer.variables):
        np.testing.assert_allclose(np.asarray(vb), np.asarray(va), rtol=1e-5, atol=1e-6, err_msg=va.path)


def test_batchnorm_statistics_are_the_parts_weighted_mean():
    """Each part normalizes with its own statistics; the moving mean moves by their weighted mean."""
    model = _plain_model(2, batchnorm=True)
    host_parallel.install(model, 2)
    x, y = _batch(7, seed=5)
    bn = next(layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    conv = model.layers[1]
    features = np.asarray(keras.ops.relu(conv(x)))
    means = [features[:4].mean(axis=(0, 1, 2)), features[4:].mean(axis=(0, 1, 2))]
    model.train_on_batch(x, y)
    expected = 0.5 * 0 + 0.5 * (4 / 7 * means[0] + 3 / 7 * means[1])
    np.testing.assert_allclose(np.asarray(bn.moving_mean), expected, rtol=1e-5, atol=1e-6)


def test_fit_trains_with_the_split_step():
    model = _plain_model(3)
    host_parallel.install(model, 2)
    x, y = _batch(32, seed=1)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    assert model.train_function is not None
    assert history.history["loss"][1] < history.history["loss"][0]


def test_parts_follow_the_switch_and_refuse_random_layers(monkeypatch):
    monkeypatch.setattr(host_parallel, "cores", lambda: 2)
    cfg = lambda mode: load_config(None, ["data.reader=synthetic", "model.name=mobilenetv3_large_d", f"train.host_parallel={mode}"])  # noqa: E731
    plain, dropout = _plain_model(4), _plain_model(4, dropout=0.5)
    assert host_parallel.resolve_parts(cfg("auto"), plain) == 2
    assert host_parallel.resolve_parts(cfg("off"), plain) == 1
    assert host_parallel.resolve_parts(cfg("auto"), dropout) == 1
    vit = lambda mode: load_config(None, ["data.reader=synthetic", "model.name=vit_tiny_patch16_224",  # noqa: E731
                                          f"train.host_parallel={mode}"])
    assert host_parallel.resolve_parts(vit("auto"), plain) == 1
    assert host_parallel.resolve_parts(vit("on"), plain) == 2
    with pytest.raises(ConfigError, match="train.host_parallel"):
        host_parallel.resolve_parts(cfg("on"), dropout)
    monkeypatch.setattr(host_parallel, "cores", lambda: 1)
    assert host_parallel.resolve_parts(cfg("on"), plain) == 1


def test_compile_model_installs_the_split_step(monkeypatch):
    """kerasxai.training compiles its models with the split step under auto (JAX on CPU)."""
    from kerasxai import training

    monkeypatch.setattr(host_parallel, "cores", lambda: 2)
    cfg = load_config(None, ["data.reader=synthetic", "model.name=mobilenetv3_large_d", "data.tile.size=64"])
    model = training.compile_model(training.build_model(cfg), cfg)
    assert model.make_train_function.__qualname__.startswith("install")
    cfg.train.host_parallel = "off"
    model = training.compile_model(training.build_model(cfg), cfg)
    assert "make_train_function" not in vars(model)
