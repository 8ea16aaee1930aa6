"""HostParallelPredictor: the batch split over CPU cores gives the same numbers as predict_on_batch."""

import numpy as np
import pytest

import kerasxai  # noqa: F401  (sets the JAX backend default)
from kerasxai.models import build_model, explain_model
from kerasxai.models.host_parallel import HostParallelPredictor, resolve


def _tiles(n, size, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.mark.parametrize("parts", [2, 3])
def test_cnn_outputs_equal_predict_on_batch(parts):
    model = build_model("mobilenetv3_large_d", input_shape=(64, 64, 3))
    x = _tiles(8, 64)
    want = model.predict_on_batch(x)
    fast = HostParallelPredictor(model, parts=parts)
    for n in (8, 7, 1):  # even, uneven and smaller-than-parts batches
        got = fast.predict_on_batch(x[:n])
        for k in ("score", "heatmap"):
            np.testing.assert_allclose(got[k], np.asarray(want[k])[:n], rtol=1e-6, atol=1e-6, err_msg=k)
    fast.close()


def test_nested_outputs_of_a_transformer_view():
    model = build_model("vit_tiny_patch16_224", input_shape=(32, 32, 3))
    view = explain_model(model)  # {"logit", "attentions": [12 x (B, heads, T, T)]}
    x = _tiles(4, 32, seed=1)
    want = view.predict_on_batch(x)
    got = HostParallelPredictor(view, parts=2).predict_on_batch(x)
    assert len(got["attentions"]) == len(want["attentions"])
    for a, b in zip(got["attentions"], want["attentions"]):
        np.testing.assert_allclose(a, np.asarray(b), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got["logit"], np.asarray(want["logit"]), rtol=1e-6, atol=1e-6)


def test_weights_changed_after_construction_are_used():
    model = build_model("mobilenetv3_large_d", input_shape=(64, 64, 3))
    fast = HostParallelPredictor(model, parts=2)
    x = _tiles(4, 64, seed=2)
    before = fast.predict_on_batch(x)["score"]
    for w in model.get_layer("cam_head").weights:  # the score's weights and bias
        w.assign(w.numpy() + 0.5)
    after = fast.predict_on_batch(x)["score"]
    np.testing.assert_allclose(after, np.asarray(model.predict_on_batch(x)["score"]), rtol=1e-6, atol=1e-6)
    assert not np.allclose(before, after)


def test_resolve_modes():
    assert resolve("off") == 1
    assert resolve("on") >= 1 and resolve("auto") >= 1  # JAX on CPU: one part per core
    with pytest.raises(ValueError, match="model.host_parallel"):
        resolve("fast")
