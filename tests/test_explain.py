"""Post-hoc baselines: gradients, Grad-CAM / Grad-CAM++, gradient rollout, trivial maps.

Small local models stand in for explain_model(...) so the maths is checked exactly; the
integration with kerasxai.models is tested when that module is present.
"""

import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import layers, ops

from kerasxai.explain import (
    GradCAMExplainer,
    GradRolloutExplainer,
    centre_gaussian_maps,
    gradcam,
    gradcam_plus_plus,
    gradient_fn,
    uniform_maps,
)
from kerasxai.metrics import LocalizationMetrics


def tiny_cam_explainer(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((16, 16, 3))
    f = layers.Conv2D(5, 3, strides=4, padding="same", activation="relu")(inp)
    g = layers.GlobalAveragePooling2D()(f)
    logit = layers.Dense(1, name="dense")(g)
    return keras.Model(inp, {"logit": logit, "features": f})


def test_gradient_fn_matches_finite_differences():
    keras.utils.set_random_seed(1)
    inp = keras.Input((6,))
    h = layers.Dense(8, activation="tanh")(inp)
    out = layers.Dense(1)(h)
    model = keras.Model(inp, out)
    x = np.random.default_rng(0).normal(size=(3, 6)).astype(np.float32)
    y, (g,) = gradient_fn(model)([x])
    np.testing.assert_allclose(y, model.predict_on_batch(x), rtol=1e-5, atol=1e-6)
    eps = 1e-2
    d = np.eye(6, dtype=np.float32)[:, None, :] * eps  # (6, 1, 6): one coordinate at a time
    both = np.concatenate([(x[None] + d).reshape(-1, 6), (x[None] - d).reshape(-1, 6)])
    y2 = model.predict_on_batch(both)[:, 0].reshape(2, 6, 3)
    fd = ((y2[0] - y2[1]) / (2 * eps)).T  # (3, 6)
    np.testing.assert_allclose(g, fd, rtol=2e-2, atol=1e-3)


def test_gradcam_on_a_cam_head_is_relu_cam():
    em = tiny_cam_explainer()
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype(np.float32)
    maps = GradCAMExplainer(em)(x)
    feats = np.asarray(em.predict_on_batch(x)["features"])
    w = keras.ops.convert_to_numpy(em.get_layer("dense").kernel)[:, 0]
    cam = feats @ w
    hw = feats.shape[1] * feats.shape[2]
    np.testing.assert_allclose(maps["Grad-CAM"], np.maximum(cam, 0) / hw, rtol=1e-4, atol=1e-6)
    # Grad-CAM++ with the constant gradient g_c = w_c / hw: channel weight hw * relu(g_c) / (2 + S_c g_c)
    g = w / hw
    s = feats.sum(axis=(1, 2))  # (B, C)
    wpp = hw * np.maximum(g, 0) / (2 + s * g)
    ref = np.maximum(np.einsum("bhwc,bc->bhw", feats, wpp), 0)
    np.testing.assert_allclose(maps["Grad-CAM++"], ref, rtol=1e-4, atol=1e-6)
    assert maps["Grad-CAM"].shape == (2, 4, 4)


def test_gradcam_plus_plus_zero_denominator_gives_zero_weight():
    f = np.ones((1, 2, 2, 1))
    g = np.zeros((1, 2, 2, 1))
    assert np.all(gradcam_plus_plus(f, g) == 0) and np.all(gradcam(f, g) == 0)


def test_gradcam_rejects_a_transformer_explainer():
    inp = keras.Input((4,))
    bad = keras.Model(inp, {"logit": layers.Dense(1)(inp), "attentions": [layers.Dense(4)(inp)]})
    with pytest.raises(ValueError, match="features"):
        GradCAMExplainer(bad)


# --- a tiny transformer with exposed attention probabilities -------------------------


class _Probs(keras.layers.Layer):
    """softmax(q k^T / sqrt(d)) per head: (B, T, D) -> (B, H, T, T)."""

    def __init__(self, heads=2, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads

    def build(self, shape):
        d = shape[-1]
        self.q = self.add_weight(shape=(d, d), initializer="glorot_uniform")
        self.k = self.add_weight(shape=(d, d), initializer="glorot_uniform")

    def call(self, x):
        b, t, d = ops.shape(x)[0], x.shape[1], x.shape[2]
        q = ops.transpose(ops.reshape(x @ self.q, (b, t, self.heads, d // self.heads)), (0, 2, 1, 3))
        k = ops.transpose(ops.reshape(x @ self.k, (b, t, self.heads, d // self.heads)), (0, 2, 1, 3))
        return ops.softmax(q @ ops.transpose(k, (0, 1, 3, 2)) / np.sqrt(d // self.heads), axis=-1)


class _Apply(keras.layers.Layer):
    """tokens + merge_heads(P @ V): the block output uses the given probabilities."""

    def __init__(self, heads=2, **kwargs):
        super().__init__(**kwargs)
        self.heads = heads

    def build(self, shapes):
        d = shapes[1][-1]
        self.v = self.add_weight(shape=(d, d), initializer="glorot_uniform")

    def call(self, inputs):
        p, x = inputs
        b, t, d = ops.shape(x)[0], x.shape[1], x.shape[2]
        v = ops.transpose(ops.reshape(x @ self.v, (b, t, self.heads, d // self.heads)), (0, 2, 1, 3))
        o = ops.reshape(ops.transpose(p @ v, (0, 2, 1, 3)), (b, t, d))
        return x + ops.tanh(o)


def tiny_vit_explainer(seed=0, prefix=1, depth=2):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    patches = layers.Reshape((4, 48))(layers.Permute((1, 2, 3))(
        layers.Conv2D(48, 1)(layers.AveragePooling2D(4)(inp))))
    tokens = layers.Dense(8)(patches)  # (B, 4, 8)
    prefix_tok = layers.Dense(8)(layers.GlobalAveragePooling1D(keepdims=True)(patches))
    parts = [prefix_tok] * prefix + [tokens]
    x = layers.Concatenate(axis=1)(parts)
    attentions = []
    for _ in range(depth):
        p = _Probs()(x)
        attentions.append(p)
        x = _Apply()([p, x])
    logit = layers.Dense(1)(layers.Flatten()(x))
    return keras.Model(inp, {"logit": logit, "attentions": attentions})


def numpy_rollout(mats, prefix):
    r = None
    for a in mats:  # first block first: R = A_L ... A_1
        a = a + np.eye(a.shape[-1])[None]
        a = a / a.sum(-1, keepdims=True)
        r = a if r is None else a @ r
    row = r[:, 0, prefix:]
    side = int(np.sqrt(row.shape[1]))
    return row.reshape(-1, side, side)


@pytest.mark.parametrize("prefix", [1, 2])
def test_gradient_rollout_matches_numpy_reference(prefix):
    em = tiny_vit_explainer(prefix=prefix)
    x = np.random.default_rng(0).uniform(0, 255, (3, 8, 8, 3)).astype(np.float32)
    gr = GradRolloutExplainer(em)
    assert gr.num_prefix_tokens == prefix
    maps = gr(x)["Gradient rollout"]
    attn = [np.asarray(a, np.float64) for a in em.predict_on_batch(x)["attentions"]]
    _, grads = gradient_fn(gr.sub)([x, *attn])
    weighted = [np.maximum(g * a, 0).mean(axis=1) for a, g in zip(attn, grads[1:])]
    np.testing.assert_allclose(maps, numpy_rollout(weighted, prefix), rtol=1e-4, atol=1e-6)
    assert maps.shape == (3, 2, 2)


def test_attention_gradient_matches_finite_difference():
    em = tiny_vit_explainer(seed=3)
    x = np.random.default_rng(1).uniform(0, 1, (1, 8, 8, 3)).astype(np.float32)
    gr = GradRolloutExplainer(em)
    attn = [np.asarray(a) for a in em.predict_on_batch(x)["attentions"]]
    _, grads = gradient_fn(gr.sub)([x, *attn])
    eps = 5e-2
    for idx in [(0, 0, 0, 1), (0, 1, 2, 3)]:
        up = [a.copy() for a in attn]
        dn = [a.copy() for a in attn]
        up[0][idx] += eps
        dn[0][idx] -= eps
        fd = (gr.sub.predict_on_batch([x, *up]) - gr.sub.predict_on_batch([x, *dn]))[0, 0] / (2 * eps)
        assert grads[1][idx] == pytest.approx(fd, rel=2e-2, abs=1e-4)


def test_trivial_maps_shapes_and_centre_peak():
    g = centre_gaussian_maps(2, 9)
    assert g.shape == (2, 9, 9) and np.unravel_index(g[0].argmax(), (9, 9)) == (4, 4)
    u = uniform_maps(3, 8)
    assert u.shape == (3, 8, 8) and np.all(u == 1)


def test_centre_gaussian_beats_uniform_on_centred_defects():
    mask = np.zeros((2, 16, 16), np.uint8)
    mask[:, 6:10, 6:10] = 1
    scores = np.full(2, 0.9)
    res = {}
    for name, maps in {"uniform": uniform_maps(2, 16), "gauss": centre_gaussian_maps(2, 16)}.items():
        m = LocalizationMetrics()
        m.update(scores, maps, mask)
        res[name] = m.result()
    assert res["gauss"]["pointing_game"] == 1.0 and res["gauss"]["pxap"] == pytest.approx(1.0)
    assert res["uniform"]["pxap"] == pytest.approx(16 / 256)


@pytest.mark.slow
@pytest.mark.tf_backend
def test_gradient_fn_tensorflow_backend_matches_jax():
    code = textwrap.dedent(
        """
        import numpy as np, keras
        from keras import layers
        from kerasxai.explain import gradient_fn
        keras.utils.set_random_seed(0)
        inp = keras.Input((4,))
        m = keras.Model(inp, layers.Dense(1)(layers.Dense(3, activation="tanh")(inp)))
        x = np.linspace(-1, 1, 8, dtype="float32").reshape(2, 4)
        _, (g,) = gradient_fn(m)([x])
        k1, b1 = [keras.ops.convert_to_numpy(v) for v in m.layers[1].weights]
        k2 = keras.ops.convert_to_numpy(m.layers[2].kernel)
        ref = ((1 - np.tanh(x @ k1 + b1) ** 2) * k2[:, 0]) @ k1.T
        assert np.allclose(g, ref, atol=1e-5), (g, ref)
        print("OK", keras.backend.backend())
        """
    )
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "OK tensorflow" in r.stdout, r.stderr[-2000:]


# --- with the real models -------------------------------------------------------------


@pytest.mark.slow
def test_gradcam_on_a_real_cnn_is_relu_of_its_cam():
    models = pytest.importorskip("kerasxai.models")
    keras.utils.set_random_seed(0)
    model = models.build_model("mobilenetv3_large_d", input_shape=(64, 64, 3))
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    maps = GradCAMExplainer(models.explain_model(model))(x)
    heat = np.asarray(model.predict_on_batch(x)["heatmap"])
    hw = heat.shape[1] * heat.shape[2]
    np.testing.assert_allclose(maps["Grad-CAM"], np.maximum(heat, 0) / hw, rtol=1e-3, atol=1e-6)


@pytest.mark.slow
def test_gradient_rollout_on_a_real_distilled_deit():
    models = pytest.importorskip("kerasxai.models")
    keras.utils.set_random_seed(0)
    model = models.build_model("deit_tiny_distilled_patch16_224", input_shape=(64, 64, 3))
    em = models.explain_model(model)
    gr = GradRolloutExplainer(em)
    assert gr.probes is not None and gr.num_prefix_tokens == 2
    x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32)
    logit, attn, grads = gr.attention_gradients(x)
    ref = em.predict_on_batch(x)
    np.testing.assert_allclose(logit, ref["logit"], rtol=1e-5, atol=1e-5)  # the probe re-run is the model
    for a, b in zip(attn, ref["attentions"]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    eps = 1e-2
    for block, idx in [(0, (1, 2, 0, 5)), (11, (0, 0, 0, 3))]:
        off = [np.zeros_like(a) for a in attn]
        off[block][idx] = eps
        up, _, _ = gr._probe_grad(off, [x])
        off[block][idx] = -eps
        dn, _, _ = gr._probe_grad(off, [x])
        fd = (up - dn)[idx[0], 0] / (2 * eps)
        assert grads[block][idx] == pytest.approx(fd, rel=5e-2, abs=1e-3)
    heat = gr(x)["Gradient rollout"]
    assert heat.shape == (2, 4, 4) and np.all(np.isfinite(heat))
