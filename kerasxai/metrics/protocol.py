"""The thesis evaluation protocol (section 2.5), as a streaming accumulator.

Per tile the heatmap is upsampled bilinearly to the tile size, min-max normalized to
0..255 over the tile's valid pixels and thresholded (value >= ``pixel_threshold``), but
only when the tile's score is above ``score_threshold``; otherwise the predicted mask is
empty. Pixels with ``valid == 0`` (tile padding) never count anywhere.

Definitions (all stated here once, tested in tests/test_metrics.py):

- **pooled** precision / recall / F1 / Jaccard / pixel accuracy: one confusion matrix
  summed over all valid pixels of all tiles (what the thesis tables report).
- **macro** (per-tile) variants: the same metric per tile, averaged over *defective
  tiles* (tiles whose ground-truth mask has at least one valid defect pixel). Per-tile F1
  is ``2TP / (2TP + FP + FN)``, the mean of per-tile F1s (not F1 of the mean P and R).
- **zero denominators** give 0: precision with no predicted pixel, recall with no defect
  pixel, F1 / Jaccard with neither. A result over no pixels (or no defective tile for the
  macro means and the pointing game) is NaN.
- **constant map** (max == min over the valid pixels): normalized to all zeros, so it
  predicts no pixel; it is an uninformative map, so its peak is a tie over every pixel.
- **pointing game**: over defective tiles. The peak is taken on the upsampled map over
  valid pixels. Ties: a tile scores the *share of its tied maxima that lie inside the
  mask* (the expected hit of a uniformly random tie-break), so a unique peak scores 0 or
  1 and a constant map scores the mask's area share. A gated-off tile is a miss (0).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, NamedTuple

import numpy as np

__all__ = [
    "ArrayOps", "NUMPY", "PreparedMaps", "ProtocolMetrics", "TileMaps", "defect_mask", "pixel_cut", "pointing_hits", "prepare_maps",
    "score_gate", "tensorflow_ops", "tile_maps", "upsample_bilinear", "without_gate",
]


@lru_cache(maxsize=32)
def _taps(src: int, dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps from ``src`` to ``dst`` samples, half-pixel centres, edge clamp (cv2
    INTER_LINEAR): output i = w_lo[i] * x[lo[i]] + w_hi[i] * x[hi[i]]."""
    pos = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    pos = np.clip(pos, 0, src - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, src - 1)
    frac = pos - lo
    taps = lo, hi, (1 - frac).astype(np.float32), frac.astype(np.float32)
    for t in taps:
        t.setflags(write=False)
    return taps


def upsample_bilinear(maps: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize (B, h, w) maps to (B, H, W) float32 bilinearly (half-pixel centres, like OpenCV)."""
    maps = np.asarray(maps, np.float32)
    if maps.ndim != 3:
        raise ValueError(f"heatmaps must be (B, h, w), got shape {maps.shape}")
    H, W = (size, size) if np.isscalar(size) else size
    _, h, w = maps.shape
    out = maps
    if h != H:  # rows first, then columns (np.take keeps the result C-ordered)
        lo, hi, w_lo, w_hi = _taps(h, H)
        out = np.take(out, lo, axis=1) * w_lo[:, None] + np.take(out, hi, axis=1) * w_hi[:, None]
    if w != W:
        lo, hi, w_lo, w_hi = _taps(w, W)
        out = np.take(out, lo, axis=2) * w_lo + np.take(out, hi, axis=2) * w_hi
    return out


class ArrayOps(NamedTuple):
    """The array operations :func:`tile_maps` runs on, so one definition serves NumPy (evaluation,
    ``predict``, the report) and TensorFlow graphs (the SavedModel's ``localize`` signature)."""

    float32: Callable  # x -> float32 array
    scores: Callable  # (B,) or (B, 1) -> (B,) float64 (compared with the threshold as given)
    ones_like: Callable
    min: Callable  # (B, h, w), where=None|(B, h, w) bool -> (B, 1, 1); +inf where nothing counts
    max: Callable  # likewise, -inf where nothing counts
    where: Callable
    clip: Callable  # (x, lo, hi)
    resize: Callable  # (B, h, w), (H, W) -> (B, H, W) bilinear, half-pixel centres


NUMPY = ArrayOps(
    float32=lambda x: np.asarray(x, np.float32),
    scores=lambda x: np.asarray(x, np.float64).reshape(-1),
    ones_like=np.ones_like,
    min=lambda x, where=None: (x if where is None else np.where(where, x, np.float32(np.inf))).min(axis=(1, 2),
                                                                                                 keepdims=True),
    max=lambda x, where=None: (x if where is None else np.where(where, x, np.float32(-np.inf))).max(axis=(1, 2),
                                                                                                  keepdims=True),
    where=np.where,
    clip=np.clip,
    resize=upsample_bilinear,
)


def tensorflow_ops(tf) -> ArrayOps:
    """:class:`ArrayOps` in TensorFlow ops (``tf`` passed in: importing this module loads no framework)."""
    return ArrayOps(
        float32=lambda x: tf.cast(x, tf.float32),
        scores=lambda x: tf.reshape(tf.cast(x, tf.float64), [-1]),
        ones_like=tf.ones_like,
        min=lambda x, where=None: tf.reduce_min(x if where is None else tf.where(where, x, np.inf), axis=[1, 2],
                                                keepdims=True),
        max=lambda x, where=None: tf.reduce_max(x if where is None else tf.where(where, x, -np.inf), axis=[1, 2],
                                                keepdims=True),
        where=tf.where,
        clip=tf.clip_by_value,
        resize=lambda maps, size: tf.image.resize(maps[..., None], size, method="bilinear")[..., 0],
    )


class TileMaps(NamedTuple):
    """What :func:`tile_maps` returns, per tile."""

    maps: object  # (B, S, S) float32 in [0, 1]: min-max over valid pixels, 0 where gated, constant or padding
    ungated: object  # (B, S, S) the same maps before the score gate
    raw: object  # (B, S, S) float32 upsampled (shifted to min 0), not normalized: peaks and ties
    gate: object  # (B,) bool: the score is above the threshold (the map counts)
    constant: object  # (B,) bool: max == min over the valid pixels (or no valid pixel)


def tile_maps(scores, heatmaps, valid, size, score_threshold: float | None = 0.5, ops: ArrayOps = NUMPY) -> TileMaps:
    """The protocol's per-tile maps: upsample, min-max normalize over valid pixels, gate.

    ``scores`` (B,) or (B, 1); ``heatmaps`` (B, h, w) any resolution; ``valid`` (B, S, S)
    bool; ``size`` S or (S, S2). ``score_threshold=None`` keeps every map. The one definition
    behind evaluation (:func:`prepare_maps`), ``predict`` (:mod:`kerasxai.localize`), the
    report's overlays and the SavedModel's ``localize`` signature (``ops``: see :class:`ArrayOps`).
    """
    size = (size, size) if np.isscalar(size) else tuple(size)
    # Shift each map to min 0 first: min-max normalization ignores the shift, and a constant
    # map becomes exact zeros, so it stays exactly constant through float32 interpolation.
    heatmaps = ops.float32(heatmaps)
    raw = ops.resize(heatmaps - ops.min(heatmaps), size)
    lo = ops.min(raw, where=valid)
    span = ops.max(raw, where=valid) - lo  # (B, 1, 1)
    informative = span > 0  # False for a constant map and for a tile without valid pixels
    maps = (raw - lo) / ops.where(informative, span, np.float32(1.0))
    ungated = ops.where(informative & valid, ops.clip(maps, np.float32(0.0), np.float32(1.0)), np.float32(0.0))
    constant = ~informative[:, 0, 0]
    if score_threshold is None:
        return TileMaps(ungated, ungated, raw, ops.ones_like(constant), constant)
    gate = score_gate(scores, score_threshold, ops)
    return TileMaps(ops.where(gate[:, None, None], ungated, np.float32(0.0)), ungated, raw, gate, constant)


def score_gate(scores, score_threshold: float, ops: ArrayOps = NUMPY):
    """(B,) bool: the tiles whose map counts, score above the threshold."""
    return ops.scores(scores) > score_threshold


def pixel_cut(pixel_threshold: float) -> float:
    """The least float32 ``x`` with ``float32(x * 255) >= pixel_threshold``: ``map >= cut`` is
    exactly ``map * 255 >= pixel_threshold`` (float32 maps) without a map-sized product."""
    thr, k = np.float32(pixel_threshold), np.float32(255)
    cut = np.float32(thr / k)
    while np.float32(np.nextafter(cut, -np.inf) * k) >= thr:
        cut = np.nextafter(cut, np.float32(-np.inf))
    while np.float32(cut * k) < thr:
        cut = np.nextafter(cut, np.float32(np.inf))
    return float(cut)


def defect_mask(maps, pixel_threshold: float):
    """Predicted defect pixels of float32 maps in 0..1: ``map * 255 >= pixel_threshold``
    (NumPy arrays or TF tensors alike)."""
    return maps >= pixel_cut(pixel_threshold)


@dataclass
class PreparedMaps:
    """Per-tile normalized maps and flags shared by every accumulator: the fields of
    :class:`TileMaps` (as NumPy arrays, described there), then the ground truth."""

    maps: np.ndarray
    ungated: np.ndarray
    raw: np.ndarray
    gate: np.ndarray
    constant: np.ndarray
    masks: np.ndarray  # (B, S, S) bool ground truth, False on padding
    valid: np.ndarray  # (B, S, S) bool


def prepare_maps(scores, heatmaps, masks, valid=None, score_threshold: float | None = 0.5) -> PreparedMaps:
    """:func:`tile_maps` of one batch with its ground truth, checked.

    ``scores`` (B,) or (B, 1); ``heatmaps`` (B, h, w) any resolution; ``masks`` (B, S, S)
    {0,1}; ``valid`` (B, S, S) {0,1} or None (all valid). ``score_threshold=None`` keeps
    every map (no gating).
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (B, S, S), got shape {masks.shape}")
    B, S, S2 = masks.shape
    valid = np.ones(masks.shape, bool) if valid is None else np.asarray(valid).astype(bool)
    if valid.shape != masks.shape:
        raise ValueError(f"valid {valid.shape} and masks {masks.shape} must have the same shape")
    scores = np.asarray(scores, np.float64).reshape(-1)
    heatmaps = np.asarray(heatmaps)
    if scores.shape[0] != B or heatmaps.shape[0] != B:
        raise ValueError(f"batch sizes differ: scores {scores.shape[0]}, heatmaps {heatmaps.shape[0]}, masks {B}")
    if heatmaps.ndim != 3:
        raise ValueError(f"heatmaps must be (B, h, w), got shape {heatmaps.shape}")
    t = tile_maps(scores, heatmaps, valid, (S, S2), score_threshold)
    return PreparedMaps(t.maps, t.ungated, t.raw, t.gate, t.constant, masks.astype(bool) & valid, valid)


def without_gate(p: PreparedMaps) -> PreparedMaps:
    """The same batch as if every tile's score passed the gate (no second upsampling)."""
    return PreparedMaps(p.ungated, p.ungated, p.raw, np.ones_like(p.gate), p.constant, p.masks, p.valid)


def _safe_div(num, den):
    num = np.asarray(num, np.float64)
    den = np.asarray(den, np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def pointing_hits(p: PreparedMaps) -> np.ndarray:
    """(B,) each tile's pointing-game hit before the score gate: the share of its tied peaks
    (on the upsampled map; normalization is monotone, ties are exact) inside the mask."""
    peak = np.where(p.valid, p.raw, -np.inf).max(axis=(1, 2))
    tied = (p.raw == peak[:, None, None]) & p.valid
    tied |= p.constant[:, None, None] & p.valid  # a constant map: every pixel ties
    return _safe_div((tied & p.masks).sum(axis=(1, 2)), tied.sum(axis=(1, 2)))


class ProtocolMetrics:
    """Streaming thesis-protocol metrics (pooled, macro, pointing game); O(1) memory.

    Args:
        score_threshold: a tile's map counts only when its score is above this (None: all).
        pixel_threshold: predicted defect where the 0..255 normalized map is >= this.

    Example:
        >>> m = ProtocolMetrics()
        >>> m.update(scores, heatmaps, masks, valid)  # per batch
        >>> m.result()["pooled_f1"]
    """

    MACRO = ("precision", "recall", "f1", "jaccard", "accuracy")

    def __init__(self, score_threshold: float | None = 0.5, pixel_threshold: float = 127):
        self.score_threshold = score_threshold
        self.pixel_threshold = float(pixel_threshold)
        self.reset()

    def reset(self) -> None:
        self.tp = self.fp = self.fn = self.tn = 0
        self.tiles = 0
        self.defective = 0
        self.macro_sums = dict.fromkeys(self.MACRO, 0.0)
        self.pointing_sum = 0.0

    def update(self, scores, heatmaps, masks, valid=None) -> None:
        self.update_prepared(prepare_maps(scores, heatmaps, masks, valid, self.score_threshold))

    def update_prepared(self, p: PreparedMaps) -> None:
        pred = defect_mask(p.maps, self.pixel_threshold) & p.gate[:, None, None] & ~p.constant[:, None, None] & p.valid
        gt = p.masks
        tp = (pred & gt).sum(axis=(1, 2))
        fp = (pred & ~gt).sum(axis=(1, 2))
        fn = (~pred & gt).sum(axis=(1, 2))
        n = p.valid.sum(axis=(1, 2))
        tn = n - tp - fp - fn
        self.tp += int(tp.sum())
        self.fp += int(fp.sum())
        self.fn += int(fn.sum())
        self.tn += int(tn.sum())
        self.tiles += int((n > 0).sum())

        d = gt.any(axis=(1, 2))
        self.defective += int(d.sum())
        per = {
            "precision": _safe_div(tp, tp + fp),
            "recall": _safe_div(tp, tp + fn),
            "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
            "jaccard": _safe_div(tp, tp + fp + fn),
            "accuracy": _safe_div(tp + tn, n),
        }
        for k, v in per.items():
            self.macro_sums[k] += float(v[d].sum())

        hit = np.where(p.gate, pointing_hits(p), 0.0)
        self.pointing_sum += float(hit[d].sum())

    def result(self) -> dict:
        tp, fp, fn, tn = self.tp, self.fp, self.fn, self.tn
        total = tp + fp + fn + tn
        nan = float("nan")
        out = {
            "pooled_precision": float(_safe_div(tp, tp + fp)),
            "pooled_recall": float(_safe_div(tp, tp + fn)),
            "pooled_f1": float(_safe_div(2 * tp, 2 * tp + fp + fn)),
            "pooled_jaccard": float(_safe_div(tp, tp + fp + fn)),
            "pooled_accuracy": float(_safe_div(tp + tn, total)),
        }
        if total == 0:
            out = dict.fromkeys(out, nan)
        for k in self.MACRO:
            out[f"macro_{k}"] = self.macro_sums[k] / self.defective if self.defective else nan
        out["pointing_game"] = self.pointing_sum / self.defective if self.defective else nan
        out["tiles"] = self.tiles
        out["defective_tiles"] = self.defective
        return out
