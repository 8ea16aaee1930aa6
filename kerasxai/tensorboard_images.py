"""Heatmaps in TensorBoard while training: a fixed set of validation tiles, scored and drawn
every epoch, so the maps can be watched forming.

The tiles are chosen once, deterministically: half defective, half good (as far as the
split has them), spread evenly over the validation split in manifest order. Each epoch they
go through the model in one forward pass; each tile is drawn with :func:`kerasxai.localize.overlay`
(the map as predict draws it, min-max normalized per tile and *not* gated by the score, so the
map is visible before the score is confident), the ground truth outlined in white and a caption
band with the score and the true label. Written to ``<run>/tensorboard/val_tiles`` as one
image summary (``heatmaps``) and one scalar per tile (``tile_score/<i>_<defect|good>``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import keras
import numpy as np

from kerasxai.data.tiling import TileGrid
from kerasxai.localize import assemble, overlay

LOG_SUBDIR = "val_tiles"  # beside Keras' train/ and validation/ runs in <run>/tensorboard
CAPTION = 14  # caption band height, px


def select_tiles(prepared_dir, n: int, split: str = "val") -> dict:
    """`n` tiles of `split` (about half defective), spread evenly in manifest order.

    Labels come from the manifest (in record order); only the chosen tiles are decoded. Returns
    numpy arrays ``image`` (n, S, S, 3) uint8, ``mask`` / ``valid`` (n, S, S), ``label`` (n,),
    ``index`` (n,) positions in the split; fewer when the split is smaller."""
    import tensorflow as tf

    from kerasxai.data.pipeline import open_split, read_manifest

    tile_split = open_split(prepared_dir, split)
    labels = np.array([t["label"] for t in read_manifest(prepared_dir)["tiles"] if t["split"] == split], np.int64)
    pos, neg = np.flatnonzero(labels > 0), np.flatnonzero(labels == 0)
    n_pos = min(len(pos), max(n // 2, n - len(neg)))
    n_neg = min(len(neg), n - n_pos)

    def spread(idx, k):
        return idx[np.linspace(0, len(idx) - 1, k).round().astype(int)] if k else idx[:0]

    chosen = np.sort(np.concatenate([spread(pos, n_pos), spread(neg, n_neg)]))
    keep = tf.constant(chosen, tf.int64)
    decode = tile_split.decoder()
    picked = (tile_split.records().enumerate().filter(lambda i, r: tf.reduce_any(tf.equal(i, keep)))
              .map(lambda i, r: decode(r)))
    rows = list(picked.as_numpy_iterator())
    return {
        "image": np.stack([r["image"] for r in rows]),
        "mask": np.stack([r["mask"] for r in rows]),
        "valid": np.stack([r["valid"] for r in rows]),
        "label": np.array([r["label"] for r in rows], np.float32),
        "index": chosen,
    }


def render_tile(image, mask, valid, score: float, heatmap, label: float, pixel_threshold: int = 127) -> np.ndarray:
    """One tile as RGB uint8: the predict overlay of its (ungated) map, the ground truth in
    white, and below it a caption band ``<score> defect|good``."""
    s = image.shape[0]
    result = assemble([score], heatmap[None], [(0, 0)], (s, s), TileGrid(s, 0),
                      score_threshold=-1.0, pixel_threshold=pixel_threshold, valid=valid[None].astype(bool))
    out = overlay(image, result)
    contours, _ = cv2.findContours(np.asarray(mask, np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (255, 255, 255), 1)
    text = f"{score:.2f} {'defect' if label > 0 else 'good'}"
    band = np.zeros((CAPTION, s, 3), np.uint8)
    (w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)
    scale = 0.35 * min(1.0, (s - 2) / max(w, 1))
    cv2.putText(band, text, (1, CAPTION - 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([out, band], axis=0)


def _device_multiple() -> int:
    """Batches must split evenly over the devices of an active data-parallel distribution."""
    dist = keras.distribution.distribution()
    mesh = getattr(dist, "device_mesh", None)
    return int(np.prod(mesh.shape)) if mesh is not None else 1


class HeatmapImages(keras.callbacks.Callback):
    """After every epoch: score and map of the fixed tiles of :func:`select_tiles` as
    TensorBoard summaries in ``log_dir`` (one forward pass of them)."""

    def __init__(self, log_dir, prepared_dir, n_tiles: int, pixel_threshold: int = 127):
        super().__init__()
        self.log_dir = Path(log_dir)
        self.prepared_dir = prepared_dir
        self.n_tiles = int(n_tiles)
        self.pixel_threshold = int(pixel_threshold)
        self.tiles = None
        self._writer = None

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        self.tiles = select_tiles(self.prepared_dir, self.n_tiles)
        self._writer = tf.summary.create_file_writer(str(self.log_dir))

    def predict(self) -> tuple[np.ndarray, np.ndarray]:
        """Scores (n,) and native heatmaps (n, h, w) of the tiles; one forward pass."""
        x = self.tiles["image"].astype("float32")
        n = len(x)
        pad = -n % _device_multiple()
        if pad:
            x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
        out = self.model.predict_on_batch(x)
        score = np.asarray(keras.ops.convert_to_numpy(out["score"]), np.float32).reshape(-1)[:n]
        heat = np.asarray(keras.ops.convert_to_numpy(out["heatmap"]), np.float32)[:n]
        return score, heat

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        t = self.tiles
        if not len(t["image"]):
            return
        score, heat = self.predict()
        pictures = np.stack([render_tile(t["image"][i], t["mask"][i], t["valid"][i], float(score[i]), heat[i],
                                         float(t["label"][i]), self.pixel_threshold) for i in range(len(score))])
        with self._writer.as_default(step=epoch):
            tf.summary.image("heatmaps", pictures, max_outputs=len(pictures),
                             description="fixed validation tiles: map overlay (not gated by the score), "
                                         "ground truth in white, caption: score and true label")
            for i, (s, lab) in enumerate(zip(score, t["label"])):
                tf.summary.scalar(f"tile_score/{i}_{'defect' if lab > 0 else 'good'}", float(s))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
