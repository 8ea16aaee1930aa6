"""TF SavedModel export for TF Serving, from any Keras backend (JAX: through jax2tf).

Signatures (``saved_model_cli show --dir DIR --all`` lists them):

- ``serving_default`` (alias of ``serve``): ``tiles`` uint8 (None, S, S, 3) raw RGB pixels
  -> ``score`` float32 (None, 1), ``heatmap`` float32 (None, h, w). Any normalization is a
  layer of the model, so a client sends raw pixels.
- ``localize``: ``image`` uint8 (H, W, 3) of any size -> ``heatmap`` float32 (H, W) in 0..1,
  ``mask`` uint8 (H, W) in {0, 1}, ``scores`` float32 (N,), ``positions`` int32 (N, 2)
  (tile top-left ``y, x``). The image is tiled, sent through the same exported model
  function, and stitched in TF ops as :mod:`kerasxai.localize` does it (same grid, per-tile
  maps from :func:`kerasxai.metrics.protocol.tile_maps` in TF ops, overlap averaging,
  :func:`kerasxai.metrics.protocol.defect_mask`), at most ``localize_batch_size`` tiles per
  forward pass.

Both check their input at run time (TF Serving does not check a signature's shapes): a wrong
shape or an empty image is an InvalidArgumentError whose message says what to send; an
empty batch of tiles gives empty outputs.

``assets.extra/kerasxai.json`` records the tiling and thresholds (TF Serving ignores it).
The export is written to a temporary folder beside the target and renamed into place; an
existing version folder is never overwritten.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

SERVE = "serve"
LOCALIZE = "localize"
MODEL_FN = "model_tiles"  # the model on a non-empty batch, unchecked: tracked, not a signature
# Tiles per forward pass inside ``localize`` (``kerasxai.export --localize-batch``): a serving
# process's peak memory grows with the tiles of one pass, so a small pass keeps a large image's
# peak close to a small one's; on CPU the time per tile hardly depends on it (BENCHMARKS.md,
# "Serving"); an accelerator wants larger passes.
LOCALIZE_BATCH = 8


class ExportError(ValueError):
    """Bad export target or model; the message says what to do."""


def check_target(out_dir: str | Path) -> Path:
    """``out_dir`` must be ``.../<model_name>/<integer version>`` and not exist yet."""
    out = Path(out_dir)
    if not out.name.isdigit():
        raise ExportError(f"'{out}': the last folder must be an integer version (TF Serving layout "
                          f"<model_name>/<version>), e.g. exported/kerasxai/1")
    if out.exists():
        raise ExportError(f"'{out}' already exists: a served version is never overwritten; "
                          f"export to a new version number (e.g. {out.parent / str(int(out.name) + 1)})")
    return out


def _tile_starts(tf, length, size: int, stride: int):
    """TileGrid.starts in TF ops: steps of ``stride``, the last start flush with the border."""
    span = tf.maximum(length - size, 0)
    count = tf.where(length <= size, 1, (span + stride - 1) // stride + 1)
    return tf.minimum(tf.range(count) * stride, span)


def _coverage(tf, starts, length, size: int):
    """How many tiles starting at `starts` (each `size` long) cover each of `length` positions.
    The grid is a product of row and column starts, so a pixel's overlap count is the product
    of its row's and its column's: no image-sized count is needed."""
    ones = tf.ones_like(starts)
    edges = tf.scatter_nd(starts[:, None], ones, [length + 1]) - tf.scatter_nd(starts[:, None] + size, ones,
                                                                                [length + 1])
    return tf.cumsum(edges)[:length]


def _assert(tf, ok, message: str, *data):
    """A runtime check with a message a client can act on (TF Serving does not check the
    signature's shapes, and XLA's shape errors name no input)."""
    return tf.debugging.Assert(ok, [message, *data], summarize=8)


def _shape_is(tf, shape, expected) -> "tf.Tensor":
    """Whether the runtime `shape` is `expected` (-1: any size), whatever rank it has."""
    rank = len(expected)
    head = tf.concat([shape, tf.zeros([rank], tf.int32)], 0)[:rank]
    fixed = [i for i, d in enumerate(expected) if d >= 0]
    same = tf.reduce_all(tf.equal(tf.gather(head, fixed), [expected[i] for i in fixed]))
    return tf.logical_and(tf.equal(tf.size(shape), rank), same)


def make_serve_fn(tf, model_fn, *, tile_size: int):
    """The checked tile signature around `model_fn` (the exported model on a non-empty batch):
    shape errors name the expected shape, an empty batch gives empty outputs."""
    s = int(tile_size)
    spec = model_fn.get_concrete_function().structured_outputs
    score_spec, heat_spec = spec["score"], spec["heatmap"]

    @tf.function(input_signature=[tf.TensorSpec((None, s, s, 3), tf.uint8, name="tiles")], autograph=False)
    def serve(tiles):
        shape = tf.shape(tiles)
        check = _assert(tf, _shape_is(tf, shape, [-1, s, s, 3]),
                        f"tiles must be uint8 of shape (N, {s}, {s}, 3): N RGB tiles of {s}x{s} pixels; got shape",
                        shape)
        with tf.control_dependencies([check]):
            tiles = tf.identity(tiles)
        out = tf.cond(shape[0] > 0, lambda: dict(model_fn(tiles)),
                      lambda: {"score": tf.zeros([0, *score_spec.shape[1:]], score_spec.dtype),
                               "heatmap": tf.zeros([0, *heat_spec.shape[1:]], heat_spec.dtype)})
        return {"score": out["score"], "heatmap": out["heatmap"]}

    return serve


def make_localize_fn(tf, serve_fn, *, tile_size: int, overlap: int, score_threshold: float,
                     pixel_threshold: int, batch_size: int = LOCALIZE_BATCH):
    """A ``tf.function`` (H, W, 3) uint8 -> stitched outputs, calling ``serve_fn`` on at most
    `batch_size` tiles at a time (a ``tf.while_loop``, one batch after the other).

    Beyond the image and the outputs, memory does not grow with the image: tiles are gathered
    from the image itself (out-of-image pixels zeroed per tile, no padded copy), each tile's
    map is divided by its pixels' overlap counts (row count x column count) before it is added
    into the one image-sized sum, which becomes the heatmap, and the mask is one comparison."""
    from kerasxai.metrics.protocol import defect_mask, tensorflow_ops, tile_maps

    s, stride, chunk = int(tile_size), int(tile_size) - int(overlap), int(batch_size)
    ops = tensorflow_ops(tf)

    @tf.function(input_signature=[tf.TensorSpec((None, None, 3), tf.uint8, name="image")], autograph=False)
    def localize(image):
        shape = tf.shape(image)
        checks = [
            _assert(tf, _shape_is(tf, shape, [-1, -1, 3]),
                    "image must be uint8 of shape (H, W, 3), one RGB image; got shape", shape),
            _assert(tf, tf.reduce_all(shape[:2] > 0), "image is empty (H or W is 0): send an image of at "
                    "least 1x1 pixels; got shape", shape),
        ]
        with tf.control_dependencies(checks):
            image = tf.identity(image)
        h, w = tf.shape(image)[0], tf.shape(image)[1]
        ph, pw = tf.maximum(h, s), tf.maximum(w, s)  # a side shorter than a tile is padded, as tile_image
        pixels = tf.reshape(image, [-1, 3])  # flat (pixel, channel): a tile is one gather
        ys, xs = _tile_starts(tf, h, s, stride), _tile_starts(tf, w, s, stride)
        cover_y, cover_x = _coverage(tf, ys, ph, s), _coverage(tf, xs, pw, s)
        gy, gx = tf.meshgrid(ys, xs, indexing="ij")  # row-major like TileGrid.positions
        ty, tx = tf.reshape(gy, [-1]), tf.reshape(gx, [-1])
        n = tf.size(ty)
        r = tf.range(s)
        no_pixel = tf.zeros([], tf.uint8)

        def step(i, total, scores):
            yy, xx = ty[i:i + chunk, None] + r, tx[i:i + chunk, None] + r  # (k, S) rows, columns
            valid = (yy < h)[:, :, None] & (xx < w)[:, None, :]
            inside = tf.minimum(yy, h - 1)[:, :, None] * w + tf.minimum(xx, w - 1)[:, None, :]
            tiles = tf.where(valid[..., None], tf.gather(pixels, inside), no_pixel)  # zeros, as tile_image
            out = serve_fn(tiles)
            tile_scores = tf.reshape(tf.cast(out["score"], tf.float32), [-1])
            maps = tile_maps(tile_scores, out["heatmap"], valid, (s, s), score_threshold, ops).maps
            count = tf.cast(tf.gather(cover_y, yy)[:, :, None] * tf.gather(cover_x, xx)[:, None, :], tf.float32)
            index = tf.reshape(yy[:, :, None] * pw + xx[:, None, :], [-1])
            # adds row by row into `total` itself (repeated indices add up); tensor_scatter_nd_add
            # would copy the image-sized loop variable at every batch
            total = tf.raw_ops.InplaceAdd(x=total, i=index, v=tf.reshape(maps / count, [-1, 1]))
            return i + chunk, total, scores.write(i // chunk, tile_scores)

        scores = tf.TensorArray(tf.float32, size=(n + chunk - 1) // chunk, infer_shape=False)
        total = tf.zeros([ph * pw, 1])  # one row per pixel: the rows InplaceAdd adds into
        _, total, scores = tf.while_loop(lambda i, *_: i < n, step, (tf.constant(0), total, scores),
                                         parallel_iterations=1)
        heatmap = tf.reshape(total, (ph, pw))[:h, :w]
        mask = tf.cast(defect_mask(heatmap, pixel_threshold), tf.uint8)  # one comparison, no product
        return {"heatmap": heatmap, "mask": mask, "scores": scores.concat(), "positions": tf.stack([ty, tx], axis=1)}

    return localize


def _hide_endpoint(archive, name: str) -> None:
    """Keep endpoint `name` out of the SavedModel's signatures (it stays a tracked function
    the signatures call). Keras has no public switch for it; without its private list the
    endpoint stays a signature."""
    names = getattr(archive, "_endpoint_names", None)
    if isinstance(names, list) and name in names:
        names.remove(name)


def export_model(model, out_dir: str | Path, *, tile_size: int, overlap: int = 2, score_threshold: float = 0.5,
                 pixel_threshold: int = 127, localize: bool = True, batch_size: int = LOCALIZE_BATCH,
                 metadata: dict | None = None, verbose: bool = False) -> Path:
    """Write ``model`` as a TF Serving SavedModel at ``out_dir`` (``.../name/<version>``).

    Returns the final path. Raises :class:`ExportError` when the target is not a fresh
    version folder.
    """
    import keras
    import tensorflow as tf

    out = check_target(out_dir)
    s = int(tile_size)
    if tuple(model.input_shape[1:3]) not in ((s, s), (None, None)):
        raise ExportError(f"model input {model.input_shape[1:]} does not match tile size {s}")

    def serve(tiles):
        outputs = model(keras.ops.cast(tiles, "float32"), training=False)
        return {"score": outputs["score"], "heatmap": outputs["heatmap"]}

    if int(batch_size) < 1:
        raise ExportError(f"the localize batch size (--localize-batch) must be >= 1, got {batch_size}")
    archive = keras.export.ExportArchive()
    archive.track(model)
    model_fn = archive.add_endpoint(
        MODEL_FN, serve, input_signature=[tf.TensorSpec((None, s, s, 3), tf.uint8, name="tiles")]
    )
    serve_fn = make_serve_fn(tf, model_fn, tile_size=s)
    serve_fn.get_concrete_function()
    archive.add_endpoint(SERVE, serve_fn)
    if localize:
        loc = make_localize_fn(tf, model_fn, tile_size=s, overlap=overlap, score_threshold=score_threshold,
                               pixel_threshold=pixel_threshold, batch_size=batch_size)
        loc.get_concrete_function()
        archive.add_endpoint(LOCALIZE, loc)
    _hide_endpoint(archive, MODEL_FN)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        archive.write_out(str(tmp), verbose=verbose)
        info = {
            "model": model.name,
            "tile_size": s,
            "overlap": int(overlap),
            "score_threshold": float(score_threshold),
            "pixel_threshold": int(pixel_threshold),
            "localize_batch_size": int(batch_size),
            "signatures": {"serving_default": "tiles uint8 (None, S, S, 3) -> score (None, 1), heatmap (None, h, w)"}
            | ({LOCALIZE: "image uint8 (H, W, 3) -> heatmap (H, W), mask (H, W), scores (N,), positions (N, 2)"}
               if localize else {}),
            "backend": keras.backend.backend(),
            **(metadata or {}),
        }
        (tmp / "assets.extra").mkdir(exist_ok=True)
        (tmp / "assets.extra" / "kerasxai.json").write_text(json.dumps(info, indent=2) + "\n")
        if out.exists():  # someone else exported this version meanwhile
            raise ExportError(f"'{out}' appeared during the export; not overwriting it")
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_run(run_dir: str | Path, out_dir: str | Path, *, which: str = "best", localize: bool = True,
               localize_batch: int = LOCALIZE_BATCH, verbose: bool = False) -> Path:
    """Export a training run's model with its config's tiling and thresholds."""
    check_target(out_dir)  # fail before loading a model
    from kerasxai.runs import load_run

    cfg, model = load_run(run_dir, which=which)
    return export_model(model, out_dir, tile_size=cfg.data.tile.size, overlap=cfg.data.tile.overlap,
                        score_threshold=cfg.eval.score_threshold, pixel_threshold=cfg.eval.pixel_threshold,
                        localize=localize, batch_size=localize_batch, verbose=verbose,
                        metadata={"run": str(run_dir), "checkpoint": which, "model_name": cfg.model.name})
