"""Procedural defect images with exact masks (tests, demo, benchmarks without real data).

Each image is a smooth random texture with faint stripes; about 60% carry 1-3 defects
(bright/dark ellipses, scratches, blobs) whose masks are exactly the pixels the defects were drawn on.
Image ``i`` depends only on ``(seed, i)``, so samples can be generated lazily and in any order.
"""

from __future__ import annotations

import cv2
import numpy as np


def _size(size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def make_one(size, seed: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``index`` of the stream ``seed``: ((H, W, 3) uint8 RGB, (H, W) uint8 {0, 1})."""
    h, w = _size(size)
    rng = np.random.default_rng([int(seed), int(index)])
    # texture: upsampled low-frequency noise + stripes + fine noise
    coarse = rng.normal(0, 1, (max(2, h // 16), max(2, w // 16))).astype(np.float32)
    base = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 20)
    stripes = np.sin((np.cos(angle) * xx + np.sin(angle) * yy) * 2 * np.pi / period)
    gray = 120 + 18 * base + 10 * stripes + rng.normal(0, 4, (h, w))
    tint = rng.uniform(0.85, 1.15, 3)
    image = np.clip(gray[..., None] * tint, 0, 255)
    mask = np.zeros((h, w), np.uint8)
    if rng.random() < 0.6:
        for _ in range(int(rng.integers(1, 4))):
            shape = np.zeros((h, w), np.uint8)
            kind = rng.integers(0, 3)
            cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
            r = max(2, int(min(h, w) * rng.uniform(0.02, 0.08)))
            if kind == 0:  # ellipse
                axes = (r, max(2, int(r * rng.uniform(0.4, 1.0))))
                cv2.ellipse(shape, (cx, cy), axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
            elif kind == 1:  # scratch
                length = r * 4
                a = rng.uniform(0, np.pi)
                p2 = (int(cx + length * np.cos(a)), int(cy + length * np.sin(a)))
                cv2.line(shape, (cx, cy), p2, 1, max(1, r // 4))
            else:  # blob: random polygon
                n = int(rng.integers(5, 9))
                ang = np.sort(rng.uniform(0, 2 * np.pi, n))
                rad = r * rng.uniform(0.5, 1.2, n)
                pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)
                cv2.fillPoly(shape, [pts], 1)
            sel = shape.astype(bool)
            delta = rng.choice([-1, 1]) * rng.uniform(60, 100)
            image[sel] = np.clip(image[sel] + delta, 0, 255)
            mask |= shape
    return image.astype(np.uint8), mask


def make_synthetic(n: int, size=256, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (image, mask) pairs, deterministic in ``seed``; ``size`` is an int or (H, W)."""
    return [make_one(size, seed, i) for i in range(n)]
