"""The model contract for every model name: outputs, jit, CAM invariant, rollout in the
graph, .keras round trips, weights files, score-only variants, offline ImageNet errors.

Models are built once per module at 64x64 (4x4 patch grid, 2x2 / 4x4 CAM) and run once
inside `jax.jit`; the tests share those results (EfficientNetV2-S is slow to build on CPU).
"""

import time

import jax
import numpy as np
import pytest

import kerasxai  # noqa: F401
import keras
from kerasxai.models import (
    MODEL_NAMES,
    WeightsError,
    build_from_config,
    build_model,
    explain_model,
    is_transformer,
    rollout,
    set_rollout,
)

SIZE = 64
VITS = [n for n in MODEL_NAMES if is_transformer(n)]
GRID_64 = {n: (4, 4) if (n.endswith("_d") or is_transformer(n)) else (2, 2) for n in MODEL_NAMES}
GRID_224 = {n: (14, 14) if (n.endswith("_d") or is_transformer(n)) else (7, 7) for n in MODEL_NAMES}
# EfficientNetV2-S (both variants) costs ~1.5 CPU-minutes of first-time JAX compiles on 2 cores:
# its parametrizations are marked slow (run in CI; `-m "not slow"` skips them locally).
ALL = [pytest.param(n, marks=pytest.mark.slow) if n.startswith("efficientnet") else n for n in MODEL_NAMES]
CNN_PARAMS = [p for p in ALL if not is_transformer(getattr(p, "values", [p])[0])]
IMAGENET = "image" + "net"  # the weights keyword, never spelled out (no downloads in tests)


def images(batch=4, seed=0):
    """Raw 0..255 RGB tiles, different per image."""
    return np.random.default_rng(seed).uniform(0, 255, (batch, SIZE, SIZE, 3)).astype("float32")


def jit_forward(model):
    """`model` called inside jax.jit (stateless), returning NumPy outputs."""
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]
    fn = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
    return lambda x: jax.tree.map(np.asarray, fn(trainable, non_trainable, x))


class Zoo:
    """Models built on demand and their jitted outputs (main + explain_model) on `images()`."""

    def __init__(self):
        self.models, self.results = {}, {}

    def model(self, name):
        if name not in self.models:
            self.models[name] = build_model(name, input_shape=(SIZE, SIZE, 3))
        return self.models[name]

    def result(self, name):
        if name not in self.results:
            model = self.model(name)
            both = keras.Model(model.inputs, {"main": model.output, "explain": explain_model(model).output})
            self.results[name] = jit_forward(both)(images())
        return self.results[name]


@pytest.fixture(scope="module")
def zoo():
    return Zoo()


@pytest.mark.parametrize("name", ALL)
def test_outputs_names_shapes_dtypes_under_jit(zoo, name):
    out = zoo.result(name)["main"]
    assert set(out) == {"score", "heatmap"}
    assert out["score"].shape == (4, 1) and out["score"].dtype == np.float32
    assert out["heatmap"].shape == (4, *GRID_64[name]) and out["heatmap"].dtype == np.float32
    assert np.all((out["score"] > 0) & (out["score"] < 1))
    assert np.all(np.isfinite(out["heatmap"]))
    assert np.ptp(out["heatmap"].reshape(4, -1), axis=1).min() > 0  # a map, not a constant
    model = zoo.model(name)
    assert model.get_layer("rollout" if is_transformer(name) else "cam_head") is not None


@pytest.mark.parametrize("name", CNN_PARAMS)
def test_cam_invariant(zoo, name):
    res = zoo.result(name)
    heat, logit, feats = res["main"]["heatmap"], res["explain"]["logit"], res["explain"]["features"]
    kernel, bias = (np.asarray(w) for w in zoo.model(name).get_layer("cam_head").get_weights())
    np.testing.assert_allclose(heat.mean(axis=(1, 2))[:, None] + bias, logit, atol=1e-4)
    np.testing.assert_allclose(res["main"]["score"], 1 / (1 + np.exp(-logit)), atol=1e-6)
    assert feats.shape[:3] == (4, *GRID_64[name])
    np.testing.assert_allclose(heat, np.einsum("bhwc,c->bhw", feats, kernel[:, 0]), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", VITS)
def test_transformer_heatmap_is_rollout_of_its_attentions(zoo, name):
    res = zoo.result(name)
    att = res["explain"]["attentions"]
    prefix = 2 if "distilled" in name else 1
    t = prefix + 16
    assert len(att) == 12 and all(a.shape == (4, 3, t, t) for a in att)
    np.testing.assert_allclose(att[0].sum(-1), 1.0, atol=1e-5)  # post-softmax probabilities
    layer = zoo.model(name).get_layer("rollout")
    assert (layer.fusion, layer.discard_ratio, layer.num_prefix_tokens) == ("max", 0.9, prefix)
    want = np.asarray(rollout(att, "max", 0.9, prefix))
    np.testing.assert_allclose(res["main"]["heatmap"], want, rtol=1e-5, atol=1e-7)
    logit = res["explain"]["logit"]
    np.testing.assert_allclose(res["main"]["score"], 1 / (1 + np.exp(-logit)), atol=1e-6)


def test_heatmap_of_an_image_does_not_depend_on_its_batch(zoo):
    model = zoo.model("deit_tiny_patch16_224")
    batch = images(batch=8, seed=5)
    fwd = jit_forward(model)
    together = fwd(batch)["heatmap"]
    alone = fwd(batch[3:4])["heatmap"]
    np.testing.assert_allclose(alone[0], together[3], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_keras_round_trip_safe_mode(zoo, name, tmp_path):
    path = tmp_path / f"{name}.keras"
    zoo.model(name).save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)  # no custom_objects
    out = jit_forward(loaded)(images())
    want = zoo.result(name)["main"]
    assert set(out) == set(want)
    for key in want:
        np.testing.assert_allclose(out[key], want[key], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_native_resolution_at_224(zoo, name):
    model = build_model(name)  # symbolic shapes only, nothing is run
    assert tuple(model.output["heatmap"].shape) == (None, *GRID_224[name])
    assert tuple(model.output["score"].shape) == (None, 1)
    if is_transformer(name):
        assert model.get_layer("pos_embed").embedding.shape[1] == 196 + (2 if "distilled" in name else 1)


def test_cnn_weights_from_file(zoo, tmp_path):
    name = "mobilenetv3_large_d"
    path = tmp_path / "m.weights.h5"
    zoo.model(name).save_weights(path)
    again = build_model(name, input_shape=(SIZE, SIZE, 3), weights=str(path))
    out = jit_forward(again)(images())
    for key, want in zoo.result(name)["main"].items():
        np.testing.assert_allclose(out[key], want, rtol=1e-6, atol=1e-6)


def test_weights_file_errors(zoo, tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        build_model("deit_tiny_patch16_224", input_shape=(SIZE, SIZE, 3), weights=str(tmp_path / "no.weights.h5"))
    with pytest.raises(WeightsError, match=r"\.weights\.h5"):
        build_model("deit_tiny_patch16_224", input_shape=(SIZE, SIZE, 3), weights=str(tmp_path / "w.h5"))
    wrong = tmp_path / "vit.weights.h5"
    zoo.model("deit_tiny_patch16_224").save_weights(wrong)  # 16 + 1 positions
    with pytest.raises(WeightsError, match="does not fit"):
        build_model("deit_tiny_patch16_224", input_shape=(32, 32, 3), weights=str(wrong))


def test_imagenet_offline_fails_fast_with_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("KERASXAI_OFFLINE", "1")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # empty cache
    start = time.monotonic()
    for name, file in [("mobilenetv3_large", "weights_mobilenet_v3_large"), ("efficientnetv2_s_d", "efficientnetv2-s_notop.h5")]:
        with pytest.raises(WeightsError) as info:
            build_model(name, input_shape=(SIZE, SIZE, 3), weights=IMAGENET)
        msg = str(info.value)
        assert name in msg and file in msg and "weights=" in msg and str(tmp_path) in msg
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        build_model("vit_tiny_patch16_224", weights=IMAGENET)
    assert time.monotonic() - start < 5


def test_imagenet_unreachable_host_is_bounded(tmp_path, monkeypatch):
    from kerasxai.models import weights

    monkeypatch.delenv("KERASXAI_OFFLINE", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(weights, "IMAGENET_URL", "https://kerasxai-no-such-host.invalid/")
    monkeypatch.setattr(weights, "TIMEOUT_S", 2.0)
    start = time.monotonic()
    with pytest.raises(WeightsError, match="could not be downloaded"):
        build_model("mobilenetv3_large_d", input_shape=(SIZE, SIZE, 3), weights=IMAGENET)
    assert time.monotonic() - start < 10


@pytest.mark.parametrize("name", ["mobilenetv3_large_d", "deit_tiny_distilled_patch16_224"])
def test_score_only_variant_shares_weights(zoo, name):
    full = zoo.model(name)
    fast = build_model(name, input_shape=(SIZE, SIZE, 3), heatmap=False)
    assert [w.shape for w in fast.weights] == [w.shape for w in full.weights]
    fast.set_weights(full.get_weights())
    out = jit_forward(fast)(images())
    assert set(out) == {"score"}
    np.testing.assert_allclose(out["score"], zoo.result(name)["main"]["score"], rtol=1e-4, atol=1e-5)


def test_distilled_training_outputs(zoo):
    name = "deit_tiny_distilled_patch16_224"
    model = build_model(name, input_shape=(SIZE, SIZE, 3), training_outputs=True)
    model.set_weights(zoo.model(name).get_weights())
    out = jit_forward(model)(images())
    assert set(out) == {"score", "heatmap", "logit", "cls_logit", "distill_logit"}
    np.testing.assert_allclose(out["logit"], (out["cls_logit"] + out["distill_logit"]) / 2, atol=1e-6)
    np.testing.assert_allclose(out["score"], zoo.result(name)["main"]["score"], atol=1e-6)
    assert not np.allclose(out["cls_logit"], out["distill_logit"])  # two separate heads


def test_set_rollout_changes_predictions_and_survives_saving(zoo, tmp_path):
    name = "vit_tiny_patch16_224"
    model = build_model(name, input_shape=(SIZE, SIZE, 3))
    model.set_weights(zoo.model(name).get_weights())
    x = images()
    before = model.predict(x, verbose=0)["heatmap"]  # compiles a predict function
    np.testing.assert_allclose(before, zoo.result(name)["main"]["heatmap"], rtol=1e-5, atol=1e-7)
    set_rollout(model, fusion="min", discard_ratio=0.5)
    after = model.predict(x, verbose=0)["heatmap"]
    att = zoo.result(name)["explain"]["attentions"]
    np.testing.assert_allclose(after, np.asarray(rollout(att, "min", 0.5, 1)), rtol=1e-5, atol=1e-7)
    assert not np.allclose(before, after)
    model.save(tmp_path / "changed.keras")
    loaded = keras.saving.load_model(tmp_path / "changed.keras")
    layer = loaded.get_layer("rollout")
    assert (layer.fusion, layer.discard_ratio) == ("min", 0.5)
    with pytest.raises(ValueError, match="fusion"):
        set_rollout(loaded, fusion="median")
    assert loaded.get_layer("rollout").fusion == "min"  # a rejected change leaves it as it was
    with pytest.raises(ValueError, match="no attention rollout"):
        set_rollout(zoo.model("mobilenetv3_large_d"), fusion="min")


def test_bad_names_and_inputs_are_explained():
    with pytest.raises(ValueError, match="unknown model name 'resnet50'"):
        build_model("resnet50")
    with pytest.raises(ValueError, match="multiples of 16"):
        build_model("vit_tiny_patch16_224", input_shape=(100, 100, 3))
    with pytest.raises(TypeError, match="unexpected keyword argument 'fusoin'"):
        build_model("vit_tiny_patch16_224", input_shape=(32, 32, 3), fusoin="max")


def test_build_model_defaults_are_the_model_config_defaults(tmp_path):
    from kerasxai.config import ModelConfig

    default = ModelConfig()
    model = build_model("deit_tiny_patch16_224", input_shape=(32, 32, 3))
    layer = model.get_layer("rollout")
    assert (layer.fusion, layer.discard_ratio) == (default.fusion, default.discard_ratio)
    model.save(tmp_path / "default.keras")  # the enum defaults are stored as plain strings
    loaded = keras.saving.load_model(tmp_path / "default.keras").get_layer("rollout")
    assert type(loaded.fusion) is str and loaded.fusion == default.fusion
    cam = build_model("mobilenetv3_large_d", input_shape=(32, 32, 3)).get_layer("cam_head")
    assert cam.pooling == default.pooling


def test_build_from_config_uses_the_model_keys():
    from kerasxai.config import ModelConfig

    cfg = ModelConfig(name="deit_tiny_distilled_patch16_224", fusion="mean", discard_ratio=0.3, dropout=0.1)
    model = build_from_config(cfg, (32, 32, 3))
    layer = model.get_layer("rollout")
    assert (layer.fusion, layer.discard_ratio, layer.num_prefix_tokens, layer.grid_size) == ("mean", 0.3, 2, (2, 2))
    assert model.get_layer("head_dropout").rate == 0.1
    assert tuple(model.output["heatmap"].shape) == (None, 2, 2)
