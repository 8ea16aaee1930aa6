"""Train steps split over the CPU cores compute the update of the whole batch."""

import keras
import numpy as np
import pytest

from kerasxai.config import load_config
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


def test_parts_follow_the_switch(monkeypatch):
    monkeypatch.setattr(host_parallel, "cores", lambda: 2)
    cfg = lambda name, mode: load_config(None, ["data.reader=synthetic", f"model.name={name}",  # noqa: E731
                                                f"train.host_parallel={mode}"])
    assert host_parallel.resolve_parts(cfg("mobilenetv3_large_d", "auto")) == 2
    assert host_parallel.resolve_parts(cfg("efficientnetv2_s_d", "auto")) == 2  # stochastic depth
    assert host_parallel.resolve_parts(cfg("mobilenetv3_large_d", "off")) == 1
    assert host_parallel.resolve_parts(cfg("vit_tiny_patch16_224", "auto")) == 1
    assert host_parallel.resolve_parts(cfg("vit_tiny_patch16_224", "on")) == 2
    monkeypatch.setattr(host_parallel, "cores", lambda: 1)
    assert host_parallel.resolve_parts(cfg("mobilenetv3_large_d", "on")) == 1


def test_random_layers_draw_other_numbers_in_each_part():
    """Two parts with the same tiles get different dropout masks (so different gradients); the
    seed state after a step is the one of one execution."""
    import jax

    split, whole = _plain_model(4, dropout=0.5), _plain_model(4, dropout=0.5)
    host_parallel.install(split, 2)
    x, y = _batch(4, seed=2)
    split.train_on_batch(x, y)  # builds the step and the optimizer
    whole.train_on_batch(x, y)
    step = host_parallel.HostParallelTrainStep(split, 2)
    state = tuple([v.value for v in vs] for vs in (split.trainable_variables, split.non_trainable_variables,
                                                    split.optimizer.variables, split.metrics_variables))
    grads = [step._part(state, np.uint32(i), x, y, None)[0] for i in (0, 1, 0)]
    flat = [np.concatenate([np.ravel(g) for g in jax.tree.leaves(gs)]) for gs in grads]
    np.testing.assert_array_equal(flat[2], flat[0])  # the same part draws the same numbers
    assert not np.allclose(flat[1], flat[0])
    seeds = [v for v in split.non_trainable_variables if "int" in str(v.dtype)]
    assert seeds
    for a, b in zip(seeds, [v for v in whole.non_trainable_variables if "int" in str(v.dtype)]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


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
