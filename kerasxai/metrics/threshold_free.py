"""Threshold-free map metrics: PxAP, pixel AUROC and relevance mass, in O(1) memory.

PxAP (pixel average precision, Choe et al., "Evaluating Weakly Supervised Object
Localization Methods Right", CVPR 2020) is the area under the pixel precision-recall curve
as the map threshold sweeps, ``sum_k (R_k - R_{k-1}) P_k`` (no interpolation, as sklearn's
``average_precision_score``). Pixel AUROC is the area under the ROC curve (trapezoids).

Streaming approximation: every valid pixel's normalized value on the 0..255 scale is put
into a fixed bin of width 1/``bins_per_level`` (default 0.25, 1021 bins); pixels in one bin
count as tied. Both numbers are therefore *exact* for maps quantized to that grid and
within one bin of the exact values otherwise; thresholds at integers (127 included) are
bin edges, so the PR curve passes exactly through the protocol's pooled precision/recall.

Maps are the ones the protocol thresholds (:func:`prepare_maps`): min-max normalized over
valid pixels, and all zeros for a gated-off tile (score not above the threshold) or a
constant map. So a perfect map has PxAP 1 and a constant map has PxAP equal to the share of
defect pixels (AUROC 0.5).

Relevance mass (the "weighting game"): per defective tile, the share of the normalized
map's mass that falls inside the mask, averaged over defective tiles. A gated-off tile
scores 0 (no map); a constant map is uniform, so it scores the mask's area share.
"""

from __future__ import annotations

import numpy as np

from kerasxai.metrics.protocol import PreparedMaps, prepare_maps

__all__ = ["ThresholdFreeMetrics", "average_precision_from_hist", "auroc_from_hist"]


def _cumulative_from_top(pos: np.ndarray, neg: np.ndarray):
    tp = np.cumsum(pos[::-1]).astype(np.float64)
    fp = np.cumsum(neg[::-1]).astype(np.float64)
    return tp, fp


def average_precision_from_hist(pos: np.ndarray, neg: np.ndarray) -> float:
    """AP from per-bin counts of positive / negative pixels (bin 0 = lowest value)."""
    P = float(pos.sum())
    if P == 0:
        return float("nan")
    tp, fp = _cumulative_from_top(pos, neg)
    used = (pos[::-1] + neg[::-1]) > 0
    tp, fp = tp[used], fp[used]
    recall = tp / P
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def auroc_from_hist(pos: np.ndarray, neg: np.ndarray) -> float:
    """Area under the ROC curve from per-bin counts (ties inside a bin count half)."""
    P, N = float(pos.sum()), float(neg.sum())
    if P == 0 or N == 0:
        return float("nan")
    tp, fp = _cumulative_from_top(pos, neg)
    tpr = np.concatenate([[0.0], tp / P])
    fpr = np.concatenate([[0.0], fp / N])
    return float(np.trapezoid(tpr, fpr))


class ThresholdFreeMetrics:
    """Streaming PxAP, pixel AUROC and relevance mass (see the module docstring).

    Args:
        score_threshold: gating as in the protocol (None: every map counts).
        bins_per_level: histogram bins per 0..255 level (4: bins of width 0.25).

    Example:
        >>> m = ThresholdFreeMetrics()
        >>> m.update(scores, heatmaps, masks, valid)
        >>> m.result()["pxap"]
    """

    def __init__(self, score_threshold: float | None = 0.5, bins_per_level: int = 4):
        self.score_threshold = score_threshold
        self.bins_per_level = int(bins_per_level)
        self.reset()

    def reset(self) -> None:
        n = 255 * self.bins_per_level + 1
        self.pos = np.zeros(n, np.int64)
        self.neg = np.zeros(n, np.int64)
        self.mass_sum = 0.0
        self.defective = 0

    def update(self, scores, heatmaps, masks, valid=None) -> None:
        self.update_prepared(prepare_maps(scores, heatmaps, masks, valid, self.score_threshold))

    def update_prepared(self, p: PreparedMaps) -> None:
        n = self.pos.size
        idx = np.floor(p.maps * 255.0 * self.bins_per_level).astype(np.int64)
        idx = np.clip(idx, 0, n - 1)
        self.pos += np.bincount(idx[p.masks], minlength=n)
        self.neg += np.bincount(idx[p.valid & ~p.masks], minlength=n)

        d = p.masks.any(axis=(1, 2))
        inside = (p.maps * p.masks).sum(axis=(1, 2))
        total = p.maps.sum(axis=(1, 2))
        share = p.masks.sum(axis=(1, 2)) / np.maximum(p.valid.sum(axis=(1, 2)), 1)
        mass = np.divide(inside, total, out=np.zeros_like(inside), where=total > 0)
        mass = np.where(p.constant, share, mass)
        mass = np.where(p.gate, mass, 0.0)
        self.mass_sum += float(mass[d].sum())
        self.defective += int(d.sum())

    def result(self) -> dict:
        return {
            "pxap": average_precision_from_hist(self.pos, self.neg),
            "pixel_auroc": auroc_from_hist(self.pos, self.neg),
            "relevance_mass": self.mass_sum / self.defective if self.defective else float("nan"),
        }

    def curve(self) -> dict:
        """Precision-recall points, one per non-empty bin, from the highest threshold down."""
        P = max(float(self.pos.sum()), 1.0)
        tp, fp = _cumulative_from_top(self.pos, self.neg)
        used = (self.pos[::-1] + self.neg[::-1]) > 0
        thr = (np.arange(self.pos.size)[::-1] / self.bins_per_level)[used]
        tp, fp = tp[used], fp[used]
        return {"threshold": thr, "recall": tp / P, "precision": tp / np.maximum(tp + fp, 1)}
