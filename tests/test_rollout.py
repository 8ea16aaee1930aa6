"""Attention rollout (kerasxai.models.rollout) against an independent NumPy version."""

import numpy as np
import pytest

import kerasxai  # noqa: F401  (sets the JAX backend default)
from kerasxai.models import rollout
from kerasxai.models.rollout import discard_smallest, layer_matrix


def reference_discard(matrix, k):
    """The T x T ``matrix`` flattened, its k smallest (stable order) zeroed except [CLS, CLS]."""
    flat = np.asarray(matrix).reshape(-1).copy()
    smallest = np.argsort(flat, kind="stable")[:k]
    flat[smallest[smallest != 0]] = 0.0
    return flat


def reference_rollout(attentions, fusion, discard_ratio, prefix, grid=None):
    """Straightforward NumPy rollout: full T x T products, one image at a time."""
    attentions = [np.asarray(a, dtype=np.float64) for a in attentions]
    b, _, t, _ = attentions[0].shape
    out = []
    for i in range(b):
        result = np.eye(t)
        for a in attentions:
            fused = {"mean": np.mean, "max": np.max, "min": np.min}[fusion](a[i], axis=0)
            flat = reference_discard(fused, int(np.floor(t * t * discard_ratio)))
            m = flat.reshape(t, t) + np.eye(t)
            m = m / m.sum(axis=-1, keepdims=True)
            result = m @ result  # the last layer ends up on the left
        row = result[0, prefix:]
        side = grid or (int(np.sqrt(row.size)),) * 2
        out.append(row.reshape(side))
    return np.stack(out)


def random_attentions(rng, batch=3, heads=3, tokens=17, depth=4, sharp=3.0):
    """Softmax-normalized random attention, (B, heads, T, T) per block."""
    out = []
    for _ in range(depth):
        logits = rng.normal(size=(batch, heads, tokens, tokens)) * sharp
        p = np.exp(logits - logits.max(-1, keepdims=True))
        out.append((p / p.sum(-1, keepdims=True)).astype("float32"))
    return out


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard_ratio", [0.0, 0.5, 0.9])
def test_matches_numpy_reference(fusion, discard_ratio):
    rng = np.random.default_rng(0)
    att = random_attentions(rng)
    got = np.asarray(rollout(att, fusion, discard_ratio, 1))
    want = reference_rollout(att, fusion, discard_ratio, 1)
    assert got.shape == (3, 4, 4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("discard_ratio", [0.0, 0.9])
def test_distillation_prefix_and_non_square_grid(discard_ratio):
    rng = np.random.default_rng(1)
    att = random_attentions(rng, tokens=2 + 2 * 3, depth=3)  # CLS + dist + 2x3 patches
    got = np.asarray(rollout(att, "max", discard_ratio, 2, grid_size=(2, 3)))
    want = reference_rollout(att, "max", discard_ratio, 2, grid=(2, 3))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard_ratio", [0.0, 0.5, 0.9])
def test_rows_sum_to_one_and_exactly_k_discarded(fusion, discard_ratio):
    rng = np.random.default_rng(2)
    att = random_attentions(rng, batch=4)[0]
    m = np.asarray(layer_matrix(att, fusion, discard_ratio))
    np.testing.assert_allclose(m.sum(-1), 1.0, atol=1e-5)
    fused = {"mean": np.mean, "max": np.max, "min": np.min}[fusion](att, axis=1)
    dropped = np.asarray(discard_smallest(fused, discard_ratio))
    t = att.shape[-1]
    k = int(np.floor(t * t * discard_ratio))
    for i in range(4):  # per image: the k smallest entries (less [CLS, CLS]) are zeroed
        zeroed = np.sum(dropped[i] == 0) - np.sum(fused[i] == 0)
        smallest = np.argsort(fused[i].reshape(-1), kind="stable")[:k]
        assert zeroed == k - (0 in smallest)
        assert dropped[i, 0, 0] == fused[i, 0, 0]


def test_ties_take_exactly_k_lowest_indices():
    fused = np.full((2, 3, 3), 0.5, dtype="float32")  # all tied
    fused[1, 2, 2] = 0.1
    out = np.asarray(discard_smallest(fused, 0.5))  # k = floor(9 * 0.5) = 4
    # image 0: flat indices 0..3 are the 4 "smallest" (stable order); index 0 is kept.
    np.testing.assert_array_equal(out[0].reshape(-1), [0.5, 0, 0, 0, 0.5, 0.5, 0.5, 0.5, 0.5])
    # image 1: 0.1 at index 8 first, then ties 0, 1, 2 (0 kept): its discard is its own.
    np.testing.assert_array_equal(out[1].reshape(-1), [0.5, 0, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0])


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_image_alone_equals_image_in_batch(fusion):
    """The vit-explain bug: discarding on image 0 only makes a map depend on its batch."""
    rng = np.random.default_rng(3)
    att = random_attentions(rng, batch=8, depth=4)
    batched = np.asarray(rollout(att, fusion, 0.9, 1))
    for i in (0, 5):
        alone = np.asarray(rollout([a[i : i + 1] for a in att], fusion, 0.9, 1))
        np.testing.assert_allclose(alone[0], batched[i], rtol=1e-6, atol=1e-9)
    assert not np.allclose(batched[0], batched[5])  # different images, different maps


def test_uniform_attention_gives_uniform_heatmap():
    t = 1 + 16
    att = [np.full((2, 3, t, t), 1.0 / t, dtype="float32")]
    heat = np.asarray(rollout(att, "mean", 0.0, 1))
    np.testing.assert_allclose(heat, np.full((2, 4, 4), heat[0, 0, 0]), rtol=1e-6)
    # (I + U) rows normalized: CLS row = (1/t + e_0) / 2 -> patches get 1 / (2t)
    np.testing.assert_allclose(heat, 1.0 / (2 * t), rtol=1e-5)


def test_jit_under_jax():
    import jax

    rng = np.random.default_rng(4)
    att = random_attentions(rng, batch=2, depth=3)
    f = jax.jit(lambda *a: rollout(list(a), "min", 0.5, 1))
    np.testing.assert_allclose(np.asarray(f(*att)), reference_rollout(att, "min", 0.5, 1), rtol=1e-4, atol=1e-7)


def test_bad_arguments_are_named():
    att = [np.full((1, 1, 5, 5), 0.2, dtype="float32")]
    with pytest.raises(ValueError, match="fusion"):
        rollout(att, "median", 0.0, 1)
    with pytest.raises(ValueError, match="discard_ratio"):
        rollout(att, "mean", 1.0, 1)
    with pytest.raises(ValueError, match="square"):
        rollout([np.full((1, 1, 4, 4), 0.25, dtype="float32")], "mean", 0.0, 1)


def test_discard_orders_any_float_exactly():
    """The bisection over float bit patterns ranks negatives, tiny and huge values right."""
    rng = np.random.default_rng(5)
    fused = (rng.normal(size=(3, 9, 9)) * np.exp(rng.normal(size=(3, 9, 9)) * 20)).astype("float32")
    for ratio in (0.1, 0.5, 0.9):
        got = np.asarray(discard_smallest(fused, ratio))
        k = int(np.floor(81 * ratio))
        for i in range(3):
            np.testing.assert_array_equal(got[i].reshape(-1), reference_discard(fused[i], k))


@pytest.mark.parametrize("levels", [3, 40, 2000])
def test_discard_with_many_ties_matches_a_stable_sort(levels):
    """Quantized values: ties at the k-th value of every size (2, 3, many) in one batch."""
    rng = np.random.default_rng(levels)
    fused = (rng.integers(0, levels, size=(6, 17, 17)) / levels).astype("float32")
    for ratio in (0.3, 0.5, 0.9):
        got = np.asarray(discard_smallest(fused, ratio))
        k = int(np.floor(17 * 17 * ratio))
        for i in range(6):
            np.testing.assert_array_equal(got[i].reshape(-1), reference_discard(fused[i], k))


def test_one_patch_grid_for_prefix_tokens_and_grids():
    from kerasxai.models.rollout import infer_prefix_tokens, patch_grid, rollout_sweep

    assert infer_prefix_tokens(17) == 1 and infer_prefix_tokens(198) == 2 and infer_prefix_tokens(197) == 1
    with pytest.raises(ValueError, match="prefix tokens"):
        infer_prefix_tokens(20)
    assert patch_grid(14, 2, (3, 4)) == (3, 4)
    with pytest.raises(ValueError, match="grid_size"):
        rollout_sweep([np.ones((1, 1, 14, 14), np.float32)], ["mean"], [0.0], 2)
    maps = rollout_sweep([np.ones((1, 1, 14, 14), np.float32)], ["mean"], [0.0], 2, (3, 4))
    assert maps[("mean", 0.0)].shape == (1, 3, 4)
