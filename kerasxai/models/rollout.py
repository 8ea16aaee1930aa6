"""Attention rollout as a pure function of per-block attention probabilities.

Kept separate from how the attentions are obtained (vit-explain's good idea), but batched
correctly: the discard step and the row normalization act on each image on its own
(vit-explain discards on image 0 only and normalizes columns). Only `keras.ops`, so it runs
under JAX (jit), TensorFlow and torch, with static shapes.
"""

from __future__ import annotations

import math

from keras import ops

FUSIONS = ("mean", "max", "min")


def fuse_heads(attention, fusion):
    """(B, heads, T, T) -> (B, T, T) by mean | max | min over the heads axis."""
    if fusion == "mean":
        return ops.mean(attention, axis=1)
    if fusion == "max":
        return ops.max(attention, axis=1)
    if fusion == "min":
        return ops.min(attention, axis=1)
    raise ValueError(f"fusion must be one of {FUSIONS}, got '{fusion}'")


def _order_keys(flat):
    """int32 keys with the same order as the float32 values (IEEE bit trick)."""
    bits = ops.view(ops.cast(flat, "float32"), "int32")
    return ops.where(ops.less(bits, 0), ops.bitwise_xor(bits, 0x7FFFFFFF), bits)


def _kth_smallest_key(keys, k):
    """Per row, the k-th smallest key (1-based), by bisection over the int32 range.

    32 counting passes instead of a sort, unrolled (an XLA while loop was 3x slower): XLA's
    CPU sort of 197*197 entries took ~30 ms per image and block, this ~1 ms, and it is exact.
    """
    lo = ops.full((ops.shape(keys)[0], 1), -(2**31), dtype="int32")
    hi = ops.full((ops.shape(keys)[0], 1), 2**31 - 1, dtype="int32")
    for _ in range(32):
        # floor((lo + hi) / 2) without int32 overflow
        mid = ops.right_shift(lo, 1) + ops.right_shift(hi, 1) + ops.bitwise_and(ops.bitwise_and(lo, hi), 1)
        enough = ops.sum(ops.cast(ops.less_equal(keys, mid), "int32"), axis=-1, keepdims=True) >= k
        lo, hi = ops.where(enough, lo, mid + 1), ops.where(enough, mid, hi)
    return lo


def _first_true(mask, count):
    """Per row, the first `count` (B, 1) True entries of the bool `mask` (B, n), by index.

    Bisection for the index of the count-th True entry (ceil(log2 n) + 1 counting passes): a
    cumsum would be the obvious tool, but XLA's CPU cumsum is a reduce-window, quadratic in
    n (38,809 here), which made the discard step cost 6x the ViT's own FLOPs.
    """
    n = mask.shape[-1]
    index = ops.arange(n, dtype="int32")[None, :]
    lo = ops.zeros((ops.shape(mask)[0], 1), dtype="int32")
    hi = ops.full((ops.shape(mask)[0], 1), n - 1, dtype="int32")
    for _ in range(max(1, math.ceil(math.log2(n))) + 1):
        mid = (lo + hi) // 2
        enough = ops.sum(ops.cast(ops.logical_and(mask, index <= mid), "int32"), axis=-1, keepdims=True) >= count
        lo, hi = ops.where(enough, lo, mid + 1), ops.where(enough, mid, hi)
    return ops.logical_and(ops.logical_and(mask, index <= lo), count > 0)


def discard_smallest(fused, discard_ratio):
    """Per image, zero the k = floor(T*T*ratio) smallest entries except [CLS, CLS].

    Exactly k entries are chosen (ties broken by the lower flat index, like a stable sort):
    entries below the k-th smallest value, plus the first entries equal to it until k are
    taken.
    """
    t = fused.shape[-1]
    n = t * t
    k = int(math.floor(n * float(discard_ratio)))
    if k <= 0:
        return fused
    flat = ops.reshape(fused, (-1, n))
    keys = _order_keys(flat)
    kth = _kth_smallest_key(keys, k)  # (B, 1)
    below = ops.less(keys, kth)
    equal = ops.equal(keys, kth)
    need = k - ops.sum(ops.cast(below, "int32"), axis=-1, keepdims=True)  # how many ties to take
    drop = ops.logical_or(below, _first_true(equal, need))
    not_cls = ops.not_equal(ops.arange(n), 0)[None, :]  # never drop [CLS, CLS] (flat index 0)
    drop = ops.logical_and(drop, not_cls)
    flat = ops.where(drop, ops.zeros_like(flat), flat)
    return ops.reshape(flat, ops.shape(fused))


def layer_matrix(attention, fusion, discard_ratio):
    """One block's rollout matrix: fuse heads, discard, add identity, rows sum to 1."""
    fused = fuse_heads(ops.cast(attention, "float32"), fusion)
    fused = discard_smallest(fused, discard_ratio)
    t = fused.shape[-1]
    a = fused + ops.eye(t, dtype=fused.dtype)[None]
    return a / ops.sum(a, axis=-1, keepdims=True)


def rollout(attentions, fusion="mean", discard_ratio=0.0, num_prefix_tokens=1, grid_size=None):
    """Attention rollout heatmap (B, h, w) from per-block attention probabilities.

    Args:
        attentions: list of (B, heads, T, T) post-softmax attention probabilities, first block
            first.
        fusion: "mean" | "max" | "min" over heads.
        discard_ratio: share in [0, 1) of the smallest fused entries zeroed per image.
        num_prefix_tokens: 1 (CLS) or 2 (CLS + distillation token); patch tokens follow.
        grid_size: (h, w) patch grid; None means square.

    Returns R[:, 0, prefix:] reshaped to the grid, where R = A_L ... A_1. Only the CLS row
    is needed, so it is carried as a row vector (B, T) through the product: the same numbers
    as the full matrix product (associativity), at T times less work.

    Example:
        heat = rollout([p1, p2], fusion="max", discard_ratio=0.9)  # (B, 14, 14) at 224
    Reference: Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got '{fusion}'")
    if not 0.0 <= float(discard_ratio) < 1.0:
        raise ValueError(f"discard_ratio must be in [0, 1), got {discard_ratio}")
    attentions = list(attentions)
    if not attentions:
        raise ValueError("rollout needs at least one attention tensor")
    t = attentions[0].shape[-1]
    n_patches = t - int(num_prefix_tokens)
    if grid_size is None:
        side = int(round(math.sqrt(n_patches)))
        if side * side != n_patches:
            raise ValueError(f"{n_patches} patch tokens are not a square grid: pass grid_size=(h, w)")
        grid_size = (side, side)
    gh, gw = int(grid_size[0]), int(grid_size[1])
    if gh * gw != n_patches:
        raise ValueError(f"grid {gh}x{gw} does not match {n_patches} patch tokens")
    # All blocks' matrices at once: one discard over (L*B) rows keeps the graph small (fast
    # to compile) and the reductions large.
    depth = len(attentions)
    fused = ops.stack([fuse_heads(ops.cast(a, "float32"), fusion) for a in attentions], axis=0)  # (L, B, T, T)
    fused = discard_smallest(ops.reshape(fused, (-1, t, t)), discard_ratio)  # per (block, image)
    mats = fused + ops.eye(t, dtype=fused.dtype)[None]
    mats = ops.reshape(mats / ops.sum(mats, axis=-1, keepdims=True), (depth, -1, t, t))
    # row = e_0^T A_L; then row <- row A_l for l = L-1 .. 1
    row = mats[depth - 1][:, 0, :]
    for i in range(depth - 2, -1, -1):
        row = ops.squeeze(ops.matmul(row[:, None, :], mats[i]), axis=1)
    heat = row[:, int(num_prefix_tokens) :]
    return ops.reshape(heat, (-1, gh, gw))
