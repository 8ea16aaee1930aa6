"""Full-image localization: tile -> one batched forward pass -> stitch -> heatmap, mask, boxes.

A trained tile classifier sees one tile at a time; an inspection image is larger. This module
cuts the image with the training tiling (:class:`kerasxai.data.tiling.TileGrid`), runs the
model on fixed-size batches (the last batch is zero-padded, so a jit-compiled predict function
is traced once, not once per image), and puts the per-tile maps back into one full-resolution
map with :func:`kerasxai.data.tiling.stitch`.

Per tile, the evaluation protocol's maps (:func:`kerasxai.metrics.protocol.tile_maps`,
docs/architecture.md): the native heatmap is upsampled bilinearly to the tile size and min-max
normalized to 0..1 over its valid (non-padding) pixels; a tile whose score is at or below
``score_threshold`` contributes no defect evidence: its map is zero, yet it still counts in
the overlap average like any tile (background, not a hole), so blending stays one plain
average everywhere and identical tile maps stitch to an identical, seamless image. The
stitched map is thresholded as the protocol does (``map * 255 >= pixel_threshold``, 127 by
default, :func:`kerasxai.metrics.protocol.defect_mask`), and the connected components
(8-connectivity) of that mask become regions with a box ``[x1, y1, x2, y2]`` (x2, y2
exclusive), an area in pixels and a score = max over the component of heatmap x score of the
tiles covering the pixel.

Tiles of several images share batches (:meth:`Localizer.localize_stream`), so small images do
not waste a padded batch each. ``Localizer.timings`` accumulates seconds per stage;
:func:`benchmark` reports images/s and the share of wall time inside the model.
"""

from __future__ import annotations

import json
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import cv2
import numpy as np

from kerasxai.data.sources import DataError, oversize_message
from kerasxai.data.tiling import TileGrid, stitch, tile_image
from kerasxai.metrics import protocol

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
TIMING_KEYS = ("read", "tiling", "model", "stitch", "postprocess", "render", "write")


class LocalizeError(ValueError):
    """Bad input to localization (unreadable image, bad folder); the message names the file."""


# ----------------------------------------------------------------------------- image loading
def load_image(path: str | Path) -> np.ndarray:
    """Read any image OpenCV reads as (H, W, 3) uint8 RGB (gray -> 3 channels, alpha dropped,
    16-bit scaled to 8-bit). Raises :class:`LocalizeError` naming the file when it cannot, or
    when its header declares more pixels than ``KERASXAI_MAX_PIXELS`` (100 megapixels)."""
    path = Path(path)
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise LocalizeError(f"cannot read image '{path}': {exc.strerror or exc}") from exc
    try:
        too_big = oversize_message(path, data)
    except DataError as exc:  # a bad KERASXAI_MAX_PIXELS
        raise LocalizeError(str(exc)) from None
    if too_big:
        raise LocalizeError(too_big)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise LocalizeError(f"cannot decode image '{path}': not an image file or corrupt; replace or remove it")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img.astype(np.float32), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    else:
        img = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(img)


def collect_images(inputs: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Expand files and folders (a folder: its image files, sorted, not recursive).

    Returns ``(paths, errors)``; an input that does not exist is an error message, not a raise,
    so one bad argument does not stop a batch."""
    paths, errors = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                errors.append(f"folder '{p}' holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            errors.append(f"'{p}' does not exist: pass image files or folders of images")
    return paths, errors


# ----------------------------------------------------------------------------- results
@dataclass
class Region:
    """One connected defect region of the full-resolution mask."""

    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive)
    score: float  # max over the region of heatmap * covering tile score
    area: int  # pixels
    peak: tuple[int, int]  # x, y of the heatmap maximum inside the region

    def to_dict(self) -> dict:
        return {"box": [int(v) for v in self.box], "score": round(float(self.score), 6),
                "area": int(self.area), "peak": [int(v) for v in self.peak]}


@dataclass
class Localization:
    """Everything predicted for one full image."""

    heatmap: np.ndarray  # (H, W) float32 in 0..1: stitched, gated, per-tile normalized
    mask: np.ndarray  # (H, W) uint8 in {0, 1}
    tile_scores: np.ndarray  # (N,) float32
    positions: list  # [(y, x)] tile top-left corners
    regions: list = field(default_factory=list)
    score_threshold: float = 0.5
    pixel_threshold: int = 127
    tile_size: int = 224
    score_map: np.ndarray | None = None  # (H, W) stitched tile scores; None when no region

    @property
    def max_score(self) -> float:
        return float(self.tile_scores.max()) if len(self.tile_scores) else 0.0

    @property
    def verdict(self) -> str:
        return "defective" if self.max_score > self.score_threshold else "good"

    def to_dict(self, image: str = "") -> dict:
        h, w = self.heatmap.shape
        return {
            "image": image,
            "height": int(h),
            "width": int(w),
            "verdict": self.verdict,
            "max_score": round(self.max_score, 6),
            "score_threshold": self.score_threshold,
            "pixel_threshold": self.pixel_threshold,
            "tile_size": self.tile_size,
            "tiles": [{"y": int(y), "x": int(x), "score": round(float(s), 6)}
                      for (y, x), s in zip(self.positions, self.tile_scores)],
            "regions": [r.to_dict() for r in self.regions],
        }


# ----------------------------------------------------------------------------- pure steps
def tile_maps(scores: np.ndarray, heatmaps: np.ndarray, tile_size: int, score_threshold: float,
              valid: np.ndarray | None = None) -> np.ndarray:
    """Per-tile maps for stitching: the evaluation protocol's gated maps
    (:func:`kerasxai.metrics.protocol.tile_maps`). ``scores`` (N,), ``heatmaps`` (N, h, w),
    ``valid`` (N, S, S) or None (all valid) -> (N, S, S) float32. Only the tiles that pass
    the score gate are computed (most tiles of a board are good ones)."""
    s = int(tile_size)
    heatmaps = np.asarray(heatmaps, np.float32)
    out = np.zeros((len(heatmaps), s, s), np.float32)
    gate = protocol.score_gate(scores, score_threshold)
    if gate.any():
        valid = np.ones((int(gate.sum()), s, s), bool) if valid is None else np.asarray(valid, bool)[gate]
        out[gate] = protocol.tile_maps(None, heatmaps[gate], valid, s, score_threshold=None).maps
    return out


def stitch_scores(scores: np.ndarray, positions, image_hw, grid: TileGrid) -> np.ndarray:
    """(H, W) map of the tile scores, averaged where tiles overlap."""
    scores = np.asarray(scores, np.float32).reshape(-1, 1, 1)
    return stitch(np.broadcast_to(scores, (len(scores), grid.size, grid.size)), positions, image_hw, grid)


def extract_regions(heatmap: np.ndarray, mask: np.ndarray, score_map: np.ndarray | None = None) -> list[Region]:
    """Connected components (8-connectivity) of ``mask`` as :class:`Region` s, best first.

    Region score: max over the component of ``heatmap * score_map`` (``score_map`` = 1 when
    None)."""
    mask = (np.asarray(mask) > 0).astype(np.uint8)
    if not mask.any():
        return []
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    value = heatmap if score_map is None else heatmap * score_map
    regions = []
    for k in range(1, n):
        x, y, w, h, area = (int(v) for v in stats[k])
        sub_lab = labels[y:y + h, x:x + w] == k
        sub_val = np.where(sub_lab, value[y:y + h, x:x + w], -np.inf)
        py, px = np.unravel_index(int(np.argmax(sub_val)), sub_val.shape)
        regions.append(Region((x, y, x + w, y + h), float(sub_val[py, px]), area, (x + px, y + py)))
    regions.sort(key=lambda r: (-r.score, r.box))
    return regions


def assemble(scores, heatmaps, positions, image_hw, grid: TileGrid, *, score_threshold=0.5,
             pixel_threshold=127, valid=None, timings: dict | None = None) -> Localization:
    """Model outputs of one image's tiles -> :class:`Localization` (stitch, threshold, regions).

    ``valid`` (N, S, S): the tiles' non-padding pixels (from ``tile_image``); None = all."""
    t0 = time.perf_counter()
    scores = np.asarray(scores, np.float32).reshape(-1)
    maps = tile_maps(scores, heatmaps, grid.size, score_threshold, valid)
    heatmap = stitch(maps, positions, image_hw, grid)
    t1 = time.perf_counter()
    mask = protocol.defect_mask(heatmap, pixel_threshold).astype(np.uint8)
    # tile scores per pixel, for region scores: only needed when there are regions
    score_map = stitch_scores(scores, positions, image_hw, grid) if mask.any() else None
    regions = extract_regions(heatmap, mask, score_map)
    t2 = time.perf_counter()
    if timings is not None:
        timings["stitch"] = timings.get("stitch", 0.0) + (t1 - t0)
        timings["postprocess"] = timings.get("postprocess", 0.0) + (t2 - t1)
    return Localization(heatmap, mask, scores, list(positions), regions, float(score_threshold),
                        int(pixel_threshold), grid.size, score_map)


# ----------------------------------------------------------------------------- the localizer
class Localizer:
    """Runs a ``{"score", "heatmap"}`` tile model over full images.

    Args:
        model: a kerasxai model (the model contract, docs/architecture.md) taking (B, S, S, 3) raw pixels.
        tile_size, overlap: the tiling the model was trained with (``cfg.data.tile``).
        score_threshold: tiles at or below it are "good" (``cfg.eval.score_threshold``).
        pixel_threshold: on the 0..255 normalized map (``cfg.eval.pixel_threshold``).
        batch_size: tiles per forward pass; every pass has exactly this many (zero padding).
        host_parallel: "auto" | "on" | "off": split each pass over the CPU cores under JAX
            (:mod:`kerasxai.models.host_parallel`; ``cfg.model.host_parallel``).

    Example:
        >>> loc = Localizer(model, tile_size=224, overlap=2)
        >>> result = loc.localize(load_image("board.jpg"))
        >>> result.verdict, [r.box for r in result.regions]
    """

    def __init__(self, model, *, tile_size: int, overlap: int = 2, score_threshold: float = 0.5,
                 pixel_threshold: int = 127, batch_size: int = 32, host_parallel: str = "auto"):
        from kerasxai.models.host_parallel import HostParallelPredictor, resolve

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model
        self.predictor = HostParallelPredictor(model, resolve(host_parallel))
        self.grid = TileGrid(int(tile_size), int(overlap))
        self.score_threshold = float(score_threshold)
        self.pixel_threshold = int(pixel_threshold)
        self.batch_size = int(batch_size)
        self.timings = {k: 0.0 for k in TIMING_KEYS}

    @classmethod
    def from_run(cls, run_dir, *, which: str = "best", batch_size: int | None = None,
                 score_threshold: float | None = None, pixel_threshold: int | None = None):
        """A localizer for a training run folder (its config's tiling and thresholds)."""
        from kerasxai.runs import load_run

        cfg, model = load_run(run_dir, which=which)
        return cls(model, tile_size=cfg.data.tile.size, overlap=cfg.data.tile.overlap,
                   score_threshold=cfg.eval.score_threshold if score_threshold is None else score_threshold,
                   pixel_threshold=cfg.eval.pixel_threshold if pixel_threshold is None else pixel_threshold,
                   batch_size=batch_size or cfg.eval.batch_size, host_parallel=cfg.model.host_parallel)

    def reset_timings(self) -> None:
        self.timings = {k: 0.0 for k in TIMING_KEYS}

    def _run_batch(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One forward pass on exactly ``batch_size`` tiles (zero-padded); returns the real ones."""
        n = len(tiles)
        if n < self.batch_size:
            pad = np.zeros((self.batch_size - n,) + tiles.shape[1:], tiles.dtype)
            tiles = np.concatenate([tiles, pad])
        t0 = time.perf_counter()
        out = self.predictor.predict_on_batch(tiles.astype(np.float32))
        score = np.asarray(out["score"], np.float32).reshape(-1)[:n]
        heat = np.asarray(out["heatmap"], np.float32)[:n]
        self.timings["model"] += time.perf_counter() - t0
        return score, heat

    def predict_tiles(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (N,) and native heatmaps (N, h, w) of uint8 tiles (N, S, S, 3)."""
        tiles = np.asarray(tiles)
        scores, heats = [], []
        for i in range(0, len(tiles), self.batch_size):
            s, h = self._run_batch(tiles[i:i + self.batch_size])
            scores.append(s)
            heats.append(h)
        if not scores:
            return np.zeros((0,), np.float32), np.zeros((0, 1, 1), np.float32)
        return np.concatenate(scores), np.concatenate(heats)

    def _tile(self, image: np.ndarray):
        t0 = time.perf_counter()
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise LocalizeError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
        tiles, valid, positions = tile_image(image, self.grid)
        self.timings["tiling"] += time.perf_counter() - t0
        return tiles, valid, positions, image.shape[:2]

    def _assemble(self, scores, heats, valid, positions, hw) -> Localization:
        return assemble(scores, heats, positions, hw, self.grid, score_threshold=self.score_threshold,
                        pixel_threshold=self.pixel_threshold, valid=valid, timings=self.timings)

    def localize(self, image: np.ndarray) -> Localization:
        """One (H, W, 3) uint8 RGB image (or (H, W) gray) of any size -> :class:`Localization`."""
        tiles, valid, positions, hw = self._tile(image)
        scores, heats = self.predict_tiles(tiles)
        return self._assemble(scores, heats, valid, positions, hw)

    def localize_stream(self, items: Iterable[tuple[object, np.ndarray]]) -> Iterator[tuple[object, Localization]]:
        """``(key, image)`` pairs -> ``(key, Localization)`` in the same order.

        Tiles of consecutive images fill the same batches; an image is yielded as soon as all
        its tiles have been through the model."""
        pending: deque = deque()  # [key, positions, hw, n_tiles, scores list, heats list, valid]
        buffer: list[np.ndarray] = []  # tile arrays not yet run, in order
        n_buffered = 0

        def run(count: int):
            nonlocal buffer, n_buffered
            tiles = np.concatenate(buffer) if len(buffer) > 1 else buffer[0]
            batch, rest = tiles[:count], tiles[count:]
            buffer = [rest] if len(rest) else []
            n_buffered = len(rest)
            scores, heats = self._run_batch(batch)
            j = 0
            for rec in pending:
                need = rec[3] - sum(len(s) for s in rec[4])
                if need == 0:
                    continue
                take = min(need, count - j)
                rec[4].append(scores[j:j + take])
                rec[5].append(heats[j:j + take])
                j += take
                if j == count:
                    break

        def finished():
            while pending and sum(len(s) for s in pending[0][4]) == pending[0][3]:
                key, positions, hw, _, sc, he, valid = pending.popleft()
                yield key, self._assemble(np.concatenate(sc), np.concatenate(he), valid, positions, hw)

        for key, image in items:
            tiles, valid, positions, hw = self._tile(image)
            pending.append([key, positions, hw, len(tiles), [], [], valid])
            buffer.append(tiles)
            n_buffered += len(tiles)
            while n_buffered >= self.batch_size:
                run(self.batch_size)
                yield from finished()
        while n_buffered:
            run(min(n_buffered, self.batch_size))
            yield from finished()
        yield from finished()


# ----------------------------------------------------------------------------- rendering
def overlay(image: np.ndarray, result: Localization) -> np.ndarray:
    """RGB uint8 picture: the image, the heatmap (JET colormap, opacity grows with the map
    value so good areas stay clean), region outlines (green) and boxes with scores (red)."""
    img = np.asarray(image, np.uint8)
    heat = np.clip(result.heatmap, 0.0, 1.0)
    color = cv2.cvtColor(cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    alpha = (0.6 * heat)[:, :, None]
    out = (img.astype(np.float32) * (1 - alpha) + color.astype(np.float32) * alpha).astype(np.uint8)
    h, w = heat.shape
    thick = max(1, round(min(h, w) / 400))
    contours, _ = cv2.findContours(result.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 255, 0), thick)
    font = max(0.35, min(h, w) / 1200)
    for r in result.regions:
        x1, y1, x2, y2 = r.box
        cv2.rectangle(out, (x1, y1), (max(x1, x2 - 1), max(y1, y2 - 1)), (255, 0, 0), thick)
        cv2.putText(out, f"{r.score:.2f}", (x1, max(10, y1 - 3)), cv2.FONT_HERSHEY_SIMPLEX, font,
                    (255, 0, 0), max(1, thick // 2), cv2.LINE_AA)
    return out


def _png(rgb_or_gray: np.ndarray) -> bytes:
    arr = rgb_or_gray if rgb_or_gray.ndim == 2 else cv2.cvtColor(rgb_or_gray, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 1])  # fast; size matters less
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return buf.tobytes()


def output_names(stem: str) -> dict[str, str]:
    """The file names written for an image, by role (what predict checks before writing)."""
    return {"overlay": f"{stem}_overlay.png", "mask": f"{stem}_mask.png", "json": f"{stem}.json"}


def render_outputs(image: np.ndarray, result: Localization, stem: str, source: str = "") -> dict[str, bytes]:
    """The files written per image, as ``{file name: bytes}``: ``<stem>_overlay.png``,
    ``<stem>_mask.png`` (full resolution, 0/255) and ``<stem>.json``."""
    names = output_names(stem)
    files = {names["overlay"]: _png(overlay(image, result)),
             names["mask"]: _png((result.mask > 0).astype(np.uint8) * 255)}
    doc = result.to_dict(image=source)
    doc["files"] = {"overlay": names["overlay"], "mask": names["mask"]}
    files[names["json"]] = (json.dumps(doc, indent=2) + "\n").encode()
    return files


# ----------------------------------------------------------------------------- benchmark
class OutputQueue:
    """Runs output work (PNG encoding, writing) on one background thread, in order.

    OpenCV's encoder releases the GIL, so an image's outputs are encoded while the model
    runs the next batch instead of after it. At most `depth` calls wait; an exception in the
    worker surfaces at the next `submit` or at `close`.
    """

    def __init__(self, depth: int = 4):
        self.depth = depth
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kerasxai-output")
        self._pending: deque = deque()

    def submit(self, fn, *args) -> None:
        self._pending.append(self._pool.submit(fn, *args))
        while len(self._pending) > self.depth:
            self._pending.popleft().result()

    def close(self) -> None:
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def benchmark(localizer: Localizer, paths: list, *, repeats: int = 1, warmup: bool = True) -> dict:
    """Read, localize and render (encode, not write) ``paths`` as ``predict`` does (rendering on
    the :class:`OutputQueue` thread); returns images/s and the ``timings`` breakdown in seconds
    (render time overlaps the model's), with ``model_share`` = model time / wall time.

    The first batch is run once before timing (``warmup``) so jit compilation is excluded."""
    if warmup:
        localizer._run_batch(np.zeros((1, localizer.grid.size, localizer.grid.size, 3), np.uint8))
    localizer.reset_timings()
    t_start = time.perf_counter()
    for _ in range(repeats):
        def items():
            for p in paths:
                t0 = time.perf_counter()
                img = load_image(p)
                localizer.timings["read"] += time.perf_counter() - t0
                yield (Path(p).stem, img), img
        def render(img, res, stem):
            t0 = time.perf_counter()
            render_outputs(img, res, stem)
            localizer.timings["render"] += time.perf_counter() - t0

        with OutputQueue() as outputs:
            for (stem, img), res in localizer.localize_stream(items()):
                outputs.submit(render, img, res, stem)
    wall = time.perf_counter() - t_start
    n = len(paths) * repeats
    return {"images": n, "wall_s": wall, "images_per_s": n / wall if wall else float("nan"),
            "model_share": localizer.timings["model"] / wall if wall else float("nan"),
            "batch_size": localizer.batch_size, "timings": dict(localizer.timings)}
