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


def _search_passes(size, splits):
    """Counting passes that narrow an interval of ``size`` integers to one (``splits``-way)."""
    passes = 0
    while size > 1:
        size = -(-size // splits)
        passes += 1
    return passes


def _kth_smallest(keys, k, lo, hi):
    """Per row, the k-th smallest (1-based) of int32 ``keys`` (R, A, c), all in [lo, hi].

    A k-ary search by counting passes instead of a sort (XLA's CPU sort of 197*197 entries
    took ~30 ms per image and block; this ~1 ms, exact). Each pass compares against
    ``fields`` thresholds at once and sums the comparisons packed into one int32 (10 bits a
    threshold, so a chunk ``c`` of up to 1023 entries cannot overflow a field): the pass costs
    about what a single comparison does (the reduction, not the compare, is the cost), so a
    4-way split halves the passes of a plain bisection (16 instead of 32 for float keys).

    Args:
        keys: (R, A, c) int32; the rows are R, each of A * c entries (c = the chunk summed
            in packed form, e.g. T for a T x T matrix).
        k: int or (R, 1) int32, 1 <= k <= A * c.
        lo, hi: Python ints, static bounds of every key.
    Returns (R, 1) int32.
    """
    fields = 3 if keys.shape[-1] < 1024 else 1
    bits = 10
    rows = ops.shape(keys)[0]
    # The first pass has the same thresholds for every row: Python ints (the full int32 range
    # does not fit an int32 width).
    q0 = -(-(hi - lo + 1) // (fields + 1))
    lo_t = ops.full((rows, 1), lo, dtype="int32")
    hi_t = ops.full((rows, 1), hi, dtype="int32")
    thresholds = [ops.full((rows, 1), min(lo + j * q0 - 1, hi), dtype="int32") for j in range(1, fields + 1)]
    for step in range(1 + _search_passes(q0, fields + 1)):
        if step > 0:
            width = hi_t - lo_t  # hi - lo + 1 entries; fits int32 after the first pass
            q = width // (fields + 1) + 1
            thresholds = [lo_t + ops.minimum(j * q - 1, width) for j in range(1, fields + 1)]
        packed = 0
        for j, t in enumerate(thresholds):
            hit = ops.cast(ops.less_equal(keys, t[:, :, None]), "int32")
            packed = packed + (hit if j == 0 else hit * (1 << (bits * j)))
        packed = ops.sum(packed, axis=-1)  # (R, A): field j counts entries <= t_j in each chunk
        if fields > 1:
            packed = [ops.bitwise_and(ops.right_shift(packed, bits * j), (1 << bits) - 1) for j in range(fields)]
        else:
            packed = [packed]
        counts = [ops.sum(p, axis=-1, keepdims=True) for p in packed]
        new_lo, new_hi = lo_t, hi_t
        for t, c in zip(thresholds, counts):  # the k-th lies above every t_j with fewer than k entries <= t_j
            new_lo = ops.where(c < k, t + 1, new_lo)
        for t, c in zip(reversed(thresholds), reversed(counts)):  # ... and at or below the first with >= k
            new_hi = ops.where(c >= k, t, new_hi)
        lo_t, hi_t = new_lo, new_hi
    return lo_t


def _first_true(mask, count):
    """Per row, the first ``count`` (R, 1) True entries of the bool ``mask`` (R, A, c), by index.

    The count-th smallest index among the True entries, by the same k-ary search over the
    indices (False entries get index A * c, beyond the search): a cumsum would be the obvious
    tool, but XLA's CPU cumsum is a reduce-window, quadratic in the row length (38,809 here).
    """
    a, c = mask.shape[-2], mask.shape[-1]
    n = a * c
    index = ops.reshape(ops.arange(n, dtype="int32"), (1, a, c))
    last = _kth_smallest(ops.where(mask, index, n), ops.maximum(count, 1), 0, n)
    return ops.logical_and(ops.logical_and(mask, index <= last[:, :, None]), (count > 0)[:, :, None])


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
    keys = _order_keys(fused)  # (B, T, T): rows of T are the packed-count chunks
    kth = _kth_smallest(keys, k, -(2**31), 2**31 - 1)[:, :, None]  # (B, 1, 1)
    below = ops.less(keys, kth)
    equal = ops.equal(keys, kth)
    need = k - ops.sum(ops.cast(below, "int32"), axis=(1, 2))[:, None]  # (B, 1) how many ties to take
    # Ties at the k-th value are rare in float attention: when every row takes all of its
    # ties, skip the search for the first `need` of them (a third of the discard's cost).
    all_ties = ops.all(ops.equal(need, ops.sum(ops.cast(equal, "int32"), axis=(1, 2))[:, None]))
    drop = ops.cond(all_ties, lambda: ops.logical_or(below, equal),
                    lambda: ops.logical_or(below, _first_true(equal, need)))
    not_cls = ops.not_equal(ops.reshape(ops.arange(n), (1, t, t)), 0)  # never drop [CLS, CLS]
    drop = ops.logical_and(drop, not_cls)
    return ops.where(drop, ops.zeros_like(fused), fused)


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
