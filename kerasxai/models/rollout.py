"""Attention rollout as a pure function of per-block attention probabilities.

Kept separate from how the attentions are obtained (vit-explain's good idea), but batched
correctly: the discard step and the row normalization act on each image on its own
(vit-explain discards on image 0 only and normalizes columns). Only `keras.ops`, so it runs
under JAX (jit), TensorFlow and torch, with static shapes; :func:`rollout_sweep`, the same
rollout over a grid of fusions and discard ratios for the evaluation, runs in NumPy.
"""

from __future__ import annotations

import math

import numpy as np
from keras import ops

from kerasxai.choices import Fusion, check_discard_ratio
from kerasxai.models.order_stats import kth_smallest, last_equal_index, order_keys, sample_range


def fuse_heads(attention, fusion):
    """(B, heads, T, T) -> (B, T, T) by mean | max | min over the heads axis."""
    reduce = {Fusion.mean: ops.mean, Fusion.max: ops.max, Fusion.min: ops.min}[Fusion.parse(fusion, "model.fusion")]
    return reduce(attention, axis=1)


def discard_smallest(fused, discard_ratio):
    """Per image, zero the k = floor(T*T*ratio) smallest entries except [CLS, CLS].

    Exactly k entries are chosen (ties broken by the lower flat index, like a stable sort):
    entries below the k-th smallest value, plus the first entries equal to it until k are
    taken. The k-th smallest comes from `order_stats.kth_smallest` (counting, no sort).
    """
    if _discard_count(fused, discard_ratio) <= 0:
        return fused
    return _apply_discard(fused, *_discard_cut(fused, discard_ratio))


def _discard_count(fused, discard_ratio):
    t = fused.shape[-1]
    return int(math.floor(t * t * float(discard_ratio)))


def _discard_cut(fused, discard_ratio):
    """(..., T, T) -> per matrix, the k-th smallest key and the index of the last tie to drop ((..., 1) each)."""
    t = fused.shape[-1]
    n = t * t
    k = _discard_count(fused, discard_ratio)
    lead = ops.shape(fused)[:-2]
    keys = ops.reshape(order_keys(fused), (-1, n))
    kth, below, at_most = kth_smallest(keys, k, guess=sample_range(keys))
    need, ties = k - below, at_most - below  # (R, 1): drop `need` >= 1 of the `ties` entries equal to the k-th
    # Ties at the k-th value do happen (in 6-14 of 32 ViT-Tiny images, mostly 2-3 equal entries
    # in one or two of the 12 blocks); rows that drop all of theirs get last_tie = n.
    last_tie = last_equal_index(keys, kth, need, ties)
    return ops.reshape(kth, (*lead, 1)), ops.reshape(last_tie, (*lead, 1))


def _apply_discard(fused, kth, last_tie):
    """Zero the entries below the cut and the ties up to ``last_tie``, never [CLS, CLS]."""
    t = fused.shape[-1]
    keys = order_keys(fused)
    kth, last_tie = kth[..., None], last_tie[..., None]  # (..., 1, 1)
    index = ops.reshape(ops.arange(t * t, dtype="int32"), (t, t))
    drop = ops.logical_or(
        ops.less(keys, kth), ops.logical_and(ops.equal(keys, kth), ops.less_equal(index, last_tie))
    )
    drop = ops.logical_and(drop, ops.not_equal(index, 0))
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
    discard_ratio = check_discard_ratio(discard_ratio)
    attentions = list(attentions)
    if not attentions:
        raise ValueError("rollout needs at least one attention tensor")
    grid = patch_grid(attentions[0].shape[-1], num_prefix_tokens, grid_size)
    # The discard's search runs image by image (ops.map over the blocks' fused matrices): one
    # image's ~2 MB of keys stay in cache over the counting passes, where the whole batch's
    # 60 MB (batch 32 at 224) went to memory and back at every pass (~1.6x slower); each block's
    # cut is then applied to the whole batch in one elementwise pass.
    fused = [fuse_heads(ops.cast(a, "float32"), fusion) for a in attentions]  # L x (B, T, T)
    if _discard_count(fused[0], discard_ratio) > 0:
        kth, last_tie = ops.map(lambda blocks: _discard_cut(ops.stack(blocks), discard_ratio), fused)  # (B, L, 1)
        fused = [_apply_discard(f, kth[:, i], last_tie[:, i]) for i, f in enumerate(fused)]
    return cls_row_heatmap(fused, num_prefix_tokens, grid)


def patch_grid(tokens, num_prefix_tokens=1, grid_size=None):
    """(h, w) of the patch tokens among ``tokens``: ``grid_size`` checked, or the square.
    The one place that relates a token count, its prefix tokens and the patch grid."""
    n_patches = tokens - int(num_prefix_tokens)
    if grid_size is None:
        side = int(round(math.sqrt(n_patches)))
        if side * side != n_patches:
            raise ValueError(f"{n_patches} patch tokens are not a square grid: pass grid_size=(h, w)")
        grid_size = (side, side)
    gh, gw = int(grid_size[0]), int(grid_size[1])
    if gh * gw != n_patches:
        raise ValueError(f"grid {gh}x{gw} does not match {n_patches} patch tokens")
    return gh, gw


def infer_prefix_tokens(tokens: int) -> int:
    """CLS (1) or CLS + distillation (2) prefix for ``tokens`` on a square patch grid."""
    for prefix in (1, 2):
        try:
            patch_grid(tokens, prefix)
        except ValueError:
            continue
        return prefix
    raise ValueError(f"{tokens} tokens is not 1 or 2 prefix tokens plus a square patch grid")


def cls_row_heatmap(fused, num_prefix_tokens, grid):
    """Steps 4-5 on the discarded fused matrices F_l (L x (B, T, T), first block first): the
    CLS row of R = A_L ... A_1 with A_l = rows of (F_l + I) normalized, as a (B, h, w) map.

    A_l = D_l^-1 (F_l + I) with D_l = diag(row sums of F_l + I); only the CLS row of the
    product is needed: row A_l = v F_l + v with v = row D_l^-1, so A_l is never written out.
    """
    t = fused[0].shape[-1]
    sums = [ops.sum(f, axis=-1) + 1.0 for f in fused]  # L x (B, T)
    cls = ops.one_hot(ops.zeros((1,), "int32"), t, dtype=fused[0].dtype)  # e_0, (1, T)
    row = (fused[-1][:, 0, :] + cls) / sums[-1][:, 0:1]  # e_0^T A_L
    for i in range(len(fused) - 2, -1, -1):  # row <- row A_l for l = L-1 .. 1
        v = row / sums[i]
        row = ops.squeeze(ops.matmul(v[:, None, :], fused[i]), axis=1) + v
    heat = row[:, int(num_prefix_tokens) :]
    return ops.reshape(heat, (-1, *grid))


def rollout_sweep(attentions, fusions, ratios, num_prefix_tokens=1, grid_size=None) -> dict[tuple, np.ndarray]:
    """Rollout maps for every (fusion, discard ratio) from one set of attentions, in NumPy.

    The same numbers as :func:`rollout` (fuse heads; per image zero the k = floor(T*T*ratio)
    smallest entries, ties by lower flat index, never [CLS, CLS]; add identity; rows sum to 1;
    CLS row of A_L ... A_1), but each fused block is sorted once per fusion and reused for
    every ratio: a grid of 3 x 10 costs 3 sorts per block instead of 30. Tests check it
    against ``rollout`` and against ``set_rollout`` + predict.
    """
    attentions = [np.asarray(a, np.float32) for a in attentions]
    b, _, t, _ = attentions[0].shape
    n = t * t
    grid_size = patch_grid(t, num_prefix_tokens, grid_size)
    eye = np.eye(t, dtype=np.float32)[None]
    reduce = {Fusion.mean: np.mean, Fusion.max: np.max, Fusion.min: np.min}
    out = {}
    for f in fusions:
        fused = [reduce[Fusion.parse(f, "eval.fusions")](a, axis=1).reshape(b, n) for a in attentions]
        ordered = [np.sort(x, axis=1) for x in fused]
        for r in ratios:
            k = int(math.floor(n * float(r)))
            row = None
            for flat, srt in zip(reversed(fused), reversed(ordered)):
                if k > 0:
                    kth = srt[:, k - 1 : k]
                    below = flat < kth
                    equal = flat == kth
                    need = k - below.sum(axis=1, keepdims=True)
                    drop = below | (equal & (np.cumsum(equal, axis=1) <= need))
                    drop[:, 0] = False
                    flat = np.where(drop, np.float32(0), flat)
                a = flat.reshape(b, t, t) + eye
                a = a / a.sum(axis=-1, keepdims=True)
                row = a[:, 0, :] if row is None else np.einsum("bt,bts->bs", row, a)
            out[(f, float(r))] = row[:, num_prefix_tokens:].reshape(b, *grid_size)
    return out
