"""Tiling (study section 2.4.2): a sliding square window with overlap, tile labels, stitching.

The grid is stateless: ``TileGrid(size, overlap).positions(H, W)`` gives the top-left corners.
Along each side the window steps by ``size - overlap`` and the last row/column is placed flush
with the border, so every pixel is covered and none is dropped (the last step may overlap more).
A side shorter than ``size`` gets one position 0 and is padded at the bottom/right; padded
pixels are marked invalid and never count in labels or metrics.

``stitch`` is the inverse: per-tile maps of any resolution are resized (bilinear, half-pixel
centres, as cv2/tf/jax do) to the tile size, overlaps are averaged (optionally weighted) and the
padding is cropped, so ``stitch(tile_image(x)) == x`` exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class TileGrid:
    """Square tiles of side ``size`` sharing ``overlap`` pixels with their neighbours."""

    size: int = 224
    overlap: int = 2

    def __post_init__(self):
        if self.size < 1 or not 0 <= self.overlap < self.size:
            raise ValueError(f"TileGrid needs size >= 1 and 0 <= overlap < size, got {self.size}, {self.overlap}")

    def starts(self, length: int) -> list[int]:
        """Start offsets along one side of ``length`` pixels (last one flush with the border)."""
        if length <= self.size:
            return [0]
        stride = self.size - self.overlap
        out = list(range(0, length - self.size, stride))
        out.append(length - self.size)
        return out

    def positions(self, height: int, width: int) -> list[tuple[int, int]]:
        """Top-left corners ``(y, x)`` in row-major order."""
        return [(y, x) for y in self.starts(height) for x in self.starts(width)]

    def padded_shape(self, height: int, width: int) -> tuple[int, int]:
        """Image size after padding a side shorter than a tile up to the tile size."""
        return max(height, self.size), max(width, self.size)


def tile_image(array: np.ndarray, grid: TileGrid):
    """Cut ``array`` (H, W) or (H, W, C) into tiles.

    Returns ``(tiles (N, S, S[, C]), valid (N, S, S) bool, positions [(y, x)] )``; pixels that
    come from zero padding (image side < S) have ``valid == False``.
    """
    array = np.asarray(array)
    h, w = array.shape[:2]
    s = grid.size
    ph, pw = grid.padded_shape(h, w)
    if (ph, pw) != (h, w):
        pad = [(0, ph - h), (0, pw - w)] + [(0, 0)] * (array.ndim - 2)
        array = np.pad(array, pad)
    valid_full = np.zeros((ph, pw), bool)
    valid_full[:h, :w] = True
    positions = grid.positions(h, w)
    tiles = np.stack([array[y:y + s, x:x + s] for y, x in positions])
    valid = np.stack([valid_full[y:y + s, x:x + s] for y, x in positions])
    return tiles, valid, positions


def defect_threshold(tile_cfg, valid_pixels: int) -> float:
    """Defect pixels a tile may hold and still be "good" (strictly more -> defective).

    ``tile_cfg.defect_pixels`` when set, else ``defect_fraction`` of the tile's *valid* area
    (padding counts neither in the defect area nor in the tile area).
    """
    pixels = getattr(tile_cfg, "defect_pixels", None)
    if pixels is not None:
        return float(pixels)
    return float(tile_cfg.defect_fraction) * float(valid_pixels)


def tile_label(mask_tile: np.ndarray, valid_tile: np.ndarray, tile_cfg) -> int:
    """1 when the defect area (valid pixels only) exceeds the threshold, else 0.

    At 224 px and 1%: up to 501 defect pixels is good, 502 is defective (thesis table 2.2).
    """
    valid_tile = np.asarray(valid_tile, bool)
    area = int(np.count_nonzero(np.asarray(mask_tile)[valid_tile]))
    return int(area > defect_threshold(tile_cfg, int(valid_tile.sum())))


def _resize(m: np.ndarray, s: int) -> np.ndarray:
    if m.shape[0] == s and m.shape[1] == s:
        return m
    return cv2.resize(m, (s, s), interpolation=cv2.INTER_LINEAR)


def stitch(maps, positions, image_hw, grid: TileGrid, weights=None) -> np.ndarray:
    """Put per-tile maps (N, h, w[, C]) back into one (H, W[, C]) float32 map.

    Each map is resized bilinearly to the tile size, overlapping pixels are averaged (weighted
    by ``weights``: shape (S, S), (N,) or (N, S, S), e.g. a Hann window) and the padding of
    small images is cropped. Sums run in float64 so averaging identical values is exact.
    """
    maps = np.asarray(maps, np.float32)
    if len(maps) != len(positions):
        raise ValueError(f"stitch: {len(maps)} maps but {len(positions)} positions")
    h, w = int(image_hw[0]), int(image_hw[1])
    s = grid.size
    ph, pw = grid.padded_shape(h, w)
    extra = maps.shape[3:]
    acc = np.zeros((ph, pw) + extra, np.float64)
    norm = np.zeros((ph, pw), np.float64)
    wts = None if weights is None else np.asarray(weights, np.float64)
    for i, (y, x) in enumerate(positions):
        m = _resize(maps[i], s).astype(np.float64)
        if wts is None:
            wi = np.ones((s, s))
        elif wts.ndim == 1:
            wi = np.full((s, s), wts[i])
        elif wts.ndim == 2:
            wi = wts
        else:
            wi = wts[i]
        wm = wi.reshape((s, s) + (1,) * len(extra))
        acc[y:y + s, x:x + s] += m * wm
        norm[y:y + s, x:x + s] += wi
    norm = norm.reshape((ph, pw) + (1,) * len(extra))
    out = np.divide(acc, norm, out=np.zeros_like(acc), where=norm > 0)
    return out[:h, :w].astype(np.float32)
