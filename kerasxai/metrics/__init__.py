"""Localization metrics for explainability maps (no file I/O, constant memory).

:class:`LocalizationMetrics` is what evaluation feeds batch by batch: it prepares each
batch once (upsample, min-max normalize, gate; see :mod:`.protocol`) and updates the
thesis protocol (pooled + macro + pointing game), the threshold-free metrics (PxAP, pixel
AUROC, relevance mass; :mod:`.threshold_free`) and, given labels, tile classification
accuracy. :func:`rank_models` ranks models by average rank (:mod:`.ranking`).
"""

from __future__ import annotations

import numpy as np

from kerasxai.metrics.protocol import PreparedMaps, ProtocolMetrics, prepare_maps, upsample_bilinear, without_gate
from kerasxai.metrics.ranking import rank_models
from kerasxai.metrics.threshold_free import ThresholdFreeMetrics

__all__ = [
    "LocalizationMetrics",
    "PreparedMaps",
    "ProtocolMetrics",
    "ThresholdFreeMetrics",
    "prepare_maps",
    "rank_models",
    "upsample_bilinear",
    "METRIC_LABELS",
    "UNGATED_KEYS",
    "without_gate",
]

# Column names for tables: key -> human label (pooled = one confusion matrix over all pixels).
METRIC_LABELS = {
    "pooled_f1": "F1 (pooled)",
    "pooled_precision": "Precision (pooled)",
    "pooled_jaccard": "Jaccard (pooled)",
    "pooled_accuracy": "Pixel accuracy (pooled)",
    "pooled_recall": "Recall (pooled)",
    "pointing_game": "Pointing game",
    "classification_accuracy": "Classification accuracy",
    "pxap": "PxAP",
    "pixel_auroc": "Pixel AUROC",
    "relevance_mass": "Relevance mass",
    "macro_f1": "F1 (per tile)",
    "macro_precision": "Precision (per tile)",
    "macro_jaccard": "Jaccard (per tile)",
    "macro_accuracy": "Pixel accuracy (per tile)",
    "macro_recall": "Recall (per tile)",
}
# Keys also reported without the score gate (``LocalizationMetrics(ungated=True)``), as "<key>_ungated".
UNGATED_KEYS = ("pooled_f1", "pointing_game", "pxap", "pixel_auroc", "relevance_mass")
METRIC_LABELS.update({f"{k}_ungated": f"{METRIC_LABELS[k]}, ungated" for k in UNGATED_KEYS})


class LocalizationMetrics:
    """All map metrics and tile accuracy, streamed over batches.

    Args:
        score_threshold: a tile's map counts only when its score is above this (None: all).
        pixel_threshold: predicted defect where the 0..255 normalized map is >= this.
        bins_per_level: histogram resolution of PxAP / AUROC (bins per 0..255 level).
        ungated: also score every map as if its tile passed the score gate (keys
            ``UNGATED_KEYS`` + "_ungated"): the map's own quality, apart from the classifier
            that gates it (a weak classifier gates every map off and all gated metrics read 0).

    Example:
        >>> m = LocalizationMetrics()
        >>> for b in batches:
        ...     m.update(scores, heatmaps, b["mask"], b["valid"], labels=b["label"])
        >>> m.result()  # {"pooled_f1": ..., "macro_f1": ..., "pxap": ..., ...}
    """

    def __init__(self, score_threshold: float | None = 0.5, pixel_threshold: float = 127, bins_per_level: int = 4,
                 ungated: bool = False):
        self.score_threshold = score_threshold
        self.protocol = ProtocolMetrics(score_threshold, pixel_threshold)
        self.threshold_free = ThresholdFreeMetrics(score_threshold, bins_per_level)
        self.ungated = None
        if ungated:
            self.ungated = (ProtocolMetrics(None, pixel_threshold), ThresholdFreeMetrics(None, bins_per_level))
        self.reset()

    def reset(self) -> None:
        self.protocol.reset()
        self.threshold_free.reset()
        for acc in self.ungated or ():
            acc.reset()
        self.correct = 0
        self.labelled = 0

    def update(self, scores, heatmaps, masks, valid=None, labels=None) -> None:
        p = prepare_maps(scores, heatmaps, masks, valid, self.score_threshold)
        self.protocol.update_prepared(p)
        self.threshold_free.update_prepared(p)
        if self.ungated:
            free = without_gate(p)
            for acc in self.ungated:
                acc.update_prepared(free)
        if labels is not None:
            labels = np.asarray(labels).reshape(-1) > 0.5
            pred = np.asarray(scores, np.float64).reshape(-1) > (0.5 if self.score_threshold is None else self.score_threshold)
            self.correct += int((labels == pred).sum())
            self.labelled += labels.size

    def result(self) -> dict:
        out = self.protocol.result()
        out.update(self.threshold_free.result())
        if self.ungated:
            free = {**self.ungated[0].result(), **self.ungated[1].result()}
            out.update({f"{k}_ungated": free[k] for k in UNGATED_KEYS})
        out["classification_accuracy"] = self.correct / self.labelled if self.labelled else float("nan")
        return out
