"""Custom layers: CAMHead math, SelfAttention vs NumPy, token layers, config round trips."""

import numpy as np
import pytest

import kerasxai  # noqa: F401
import keras
from kerasxai.models.layers import (
    AttentionRollout, CAMHead, PositionEmbedding, PrefixTokens, SelectToken, SelfAttention,
)


def roundtrip(layer):
    """A layer rebuilt from its serialized config (what .keras files store)."""
    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))


def cam_head_outputs(pooling, seed):
    """A CAMHead's outputs on random features, its weights and the map F . W computed in NumPy."""
    feats = np.random.default_rng(seed).normal(size=(3, 5, 4, 7)).astype("float32")
    head = CAMHead(pooling=pooling, name="cam_head")
    out = {k: np.asarray(v) for k, v in head(feats).items()}
    kernel, bias = (np.asarray(w) for w in head.get_weights())
    cam = np.einsum("bhwc,c->bhw", feats, kernel[:, 0])
    np.testing.assert_allclose(out["heatmap"], cam, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["score"], 1 / (1 + np.exp(-out["logit"])), atol=1e-6)
    assert out["heatmap"].shape == (3, 5, 4) and out["score"].shape == (3, 1)
    return head, out, bias, cam


def test_cam_head_invariant_and_heatmap():
    _, out, bias, cam = cam_head_outputs("avg", seed=0)
    # mean over (h, w) of the heatmap + bias == logit; score = sigmoid(logit)
    np.testing.assert_allclose(cam.mean(axis=(1, 2))[:, None] + bias, out["logit"], atol=1e-5)


def test_cam_head_lse_pooling_is_a_smooth_max_of_the_map():
    head, out, bias, cam = cam_head_outputs("lse", seed=1)
    # logit = log(mean(exp(map))) + bias: between the mean and the max of the map
    expected = np.log(np.exp(cam.astype("float64")).mean(axis=(1, 2)))[:, None] + bias
    np.testing.assert_allclose(out["logit"], expected, rtol=1e-5, atol=1e-5)
    assert np.all(out["logit"] - bias >= cam.mean(axis=(1, 2))[:, None] - 1e-6)
    assert np.all(out["logit"] - bias <= cam.max(axis=(1, 2))[:, None] + 1e-6)
    # one hot cell moves the logit far more than under average pooling
    spike = np.zeros((1, 14, 14, 1), "float32")
    spike[0, 3, 5, 0] = 10.0
    for pooling, low, high in (("avg", 0.0, 0.1), ("lse", 4.0, 10.0)):
        layer = CAMHead(pooling=pooling)
        layer.build(spike.shape)
        layer.set_weights([np.ones((1, 1), "float32"), np.zeros(1, "float32")])
        assert low <= float(np.asarray(layer(spike)["logit"])[0, 0]) <= high, pooling
    assert roundtrip(head).pooling == "lse"
    with pytest.raises(ValueError, match="model.pooling"):
        CAMHead(pooling="max")


def test_cam_head_dropout_only_in_training_and_score_only_variant():
    feats = np.ones((4, 2, 2, 64), dtype="float32")
    head = CAMHead(dropout=0.5)
    infer = np.asarray(head(feats)["logit"])
    train = np.asarray(head(feats, training=True)["logit"])
    assert not np.allclose(infer, train)
    score_only = CAMHead(heatmap=False, dropout=0.5)
    score_only.build(feats.shape)
    score_only.set_weights(head.get_weights())  # same weights layout
    out = score_only(feats)
    assert set(out) == {"score", "logit"}
    np.testing.assert_allclose(np.asarray(out["logit"]), infer, atol=1e-6)
    clone = roundtrip(head)
    assert (clone.heatmap, clone.dropout) == (True, 0.5)


def numpy_attention(x, qkv_k, qkv_b, proj_k, proj_b, heads):
    b, t, d = x.shape
    hd = d // heads
    qkv = (x @ qkv_k + qkv_b).reshape(b, t, 3, heads, hd).transpose(2, 0, 3, 1, 4)
    q, k, v = qkv
    logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p = p / p.sum(-1, keepdims=True)
    out = (p @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
    return out @ proj_k + proj_b, p


def test_self_attention_matches_numpy_and_fused_path():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2, 5, 12)).astype("float32")
    layer = SelfAttention(3)
    y, probs = layer(x)
    weights = [np.asarray(w) for w in layer.get_weights()]
    want_y, want_p = numpy_attention(x.astype("float64"), *weights, heads=3)
    np.testing.assert_allclose(np.asarray(probs), want_p, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(y), want_y, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, atol=1e-5)
    fused = SelfAttention(3, return_attention=False)
    fused.build(x.shape)
    fused.set_weights(layer.get_weights())  # same weights, dot_product_attention path
    np.testing.assert_allclose(np.asarray(fused(x)), np.asarray(y), rtol=1e-4, atol=1e-5)
    assert roundtrip(fused).return_attention is False


def test_self_attention_attend_is_the_call_and_takes_an_offset():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 5, 12)).astype("float32")
    layer = SelfAttention(3)
    y, probs = layer(x)
    out, p = layer.attend(x)
    assert np.array_equal(np.asarray(out), np.asarray(y)) and np.array_equal(np.asarray(p), np.asarray(probs))
    offset = rng.normal(size=probs.shape).astype("float32") * 0.1
    out2, p2 = layer.attend(x, offset)
    np.testing.assert_allclose(np.asarray(p2), np.asarray(probs) + offset, atol=1e-6)
    weights = [np.asarray(w) for w in layer.get_weights()]
    v = (x @ weights[0] + weights[1]).reshape(2, 5, 3, 3, 4)[:, :, 2].transpose(0, 2, 1, 3)  # (B, heads, T, hd)
    want = (np.asarray(p2) @ v).transpose(0, 2, 1, 3).reshape(2, 5, 12) @ weights[2] + weights[3]
    np.testing.assert_allclose(np.asarray(out2), want, rtol=1e-4, atol=1e-5)


def test_token_layers():
    x = np.arange(2 * 4 * 3, dtype="float32").reshape(2, 4, 3)
    prefix = PrefixTokens(2)
    y = np.asarray(prefix(x))
    assert y.shape == (2, 6, 3)
    np.testing.assert_array_equal(y[:, 2:], x)
    np.testing.assert_array_equal(y[0, :2], y[1, :2])  # the same learned tokens per image
    pos = PositionEmbedding()
    z = np.asarray(pos(y))
    np.testing.assert_allclose(z - y, np.broadcast_to(np.asarray(pos.embedding), z.shape), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(SelectToken(1)(y)), y[:, 1])
    assert roundtrip(prefix).num_tokens == 2 and roundtrip(SelectToken(1)).index == 1


def test_rollout_layer_config_and_validation():
    layer = AttentionRollout("min", 0.5, 2, (2, 3), name="rollout")
    clone = roundtrip(layer)
    assert (clone.fusion, clone.discard_ratio, clone.num_prefix_tokens, clone.grid_size) == ("min", 0.5, 2, (2, 3))
    t = 2 + 6
    att = [np.full((1, 3, t, t), 1 / t, dtype="float32")]
    assert tuple(clone(att).shape) == (1, 2, 3)
    with pytest.raises(ValueError, match="fusion"):
        AttentionRollout("avg")
    with pytest.raises(ValueError, match="discard_ratio"):
        AttentionRollout("mean", 1.5)
