"""Pins the per-tile map protocol's outputs bit for bit, on every path that applies it.

The tile-map protocol (bilinear upsampling to the tile size, min-max normalization over the
tile's valid pixels, score gate, ``map * 255 >= pixel_threshold``) is applied by the
evaluation (``prepare_maps``), by ``predict`` (``kerasxai.localize``), by the report's overlay
figure and inside the SavedModel's ``localize`` signature. This test records what each path
returns on fixed inputs in ``tests/fixtures/map_pin.npz`` and asserts the same bytes:

- post-processing, exact everywhere: fixed model outputs (seeded NumPy draws) through
  ``prepare_maps``, ``localize.tile_maps`` / ``assemble``, the report's overlay map, and the
  SavedModel's ``localize`` function built around a stand-in model made of exact integer
  TF ops (``make_localize_fn``);
- end to end (a tiny CNN and a tiny ViT from the registry at 64 px with seeded weights, and
  the exported stand-in of tests/test_export.py): the model's forward outputs match the
  recorded ones within a tight tolerance (float results of a forward pass may differ by
  CPU), the post-processing of the recorded outputs is exact, and where this machine's
  forward outputs are bit-identical to the recorded ones the whole path's outputs must be too.

The golden file is written only by ``python tests/test_map_pin.py --regen`` (never by the test).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).resolve().parent / "fixtures" / "map_pin.npz"
TILE, OVERLAP, SCORE_T, PIXEL_T = 64, 8, 0.5, 127
FORWARD_RTOL, FORWARD_ATOL = 1e-5, 1e-6


def digest(a) -> str:
    """sha256 of an array's dtype, shape and bytes."""
    a = np.ascontiguousarray(a)
    return hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()


# ----------------------------------------------------------------------------- fixed inputs
def protocol_inputs():
    """A batch of native maps with the cases the protocol distinguishes: gated and not,
    constant maps, padding (valid == 0), maps already at tile size."""
    rng = np.random.default_rng(20261207)
    out = {}
    for h in (2, 7, 16, TILE):
        n = 8
        heat = (rng.normal(size=(n, h, h)) * 3 + 1).astype(np.float32)
        heat[3] = 2.5  # constant map
        scores = rng.uniform(size=n).astype(np.float32)
        scores[:2], scores[3] = 0.9, 0.9
        scores[2] = SCORE_T  # at the threshold: gated off
        valid = np.ones((n, TILE, TILE), bool)
        valid[1, :, 40:] = False
        valid[4, 50:] = False
        valid[5, 20:, :] = False
        masks = rng.uniform(size=(n, TILE, TILE)) < 0.1
        out[h] = scores, heat, masks, valid
    return out


def board():
    """A 50x150 image (shorter than a tile: padded rows) with a zero block (constant tiles)."""
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (50, 150, 3), dtype=np.uint8)
    img[:, 100:] = 0
    return img


def tf_standin(tf):
    """Tile model in exact TF ops: heatmap = R * G / 7 on an 8x8 subsample, score = max(B) / 255."""
    def serve(tiles):
        t = tf.cast(tiles, tf.float32)
        heat = t[:, ::8, ::8, 0] * t[:, ::8, ::8, 1] / 7.0
        score = tf.reduce_max(t[..., 2], axis=[1, 2])[:, None] / 255.0
        return {"score": score, "heatmap": heat}
    return serve


# ----------------------------------------------------------------------------- the paths
def postprocessing_outputs() -> dict[str, np.ndarray]:
    """Every path's outputs on the fixed inputs (no trained model involved)."""
    from kerasxai.data.tiling import TileGrid, tile_image
    from kerasxai.localize import assemble, tile_maps
    from kerasxai.metrics.protocol import prepare_maps
    from kerasxai.report import _normalized

    out = {}
    for h, (scores, heat, masks, valid) in protocol_inputs().items():
        for gate, thr in (("gated", SCORE_T), ("ungated", None)):
            p = prepare_maps(scores, heat, masks, valid, score_threshold=thr)
            for k in ("maps", "ungated", "raw", "gate", "constant", "masks", "valid"):
                out[f"protocol/{h}/{gate}/{k}"] = getattr(p, k)
        out[f"localize_tile_maps/{h}"] = tile_maps(scores, heat, TILE, SCORE_T, valid)
        out[f"report_overlay/{h}"] = np.stack([_normalized(heat[i], TILE, valid[i]) for i in range(len(heat))])

    img = board()
    grid = TileGrid(TILE, OVERLAP)
    tiles, valid, positions = tile_image(img, grid)
    scores, heat = model_like_outputs(tiles)
    out.update(localization(assemble(scores, heat, positions, img.shape[:2], grid, score_threshold=SCORE_T,
                                     pixel_threshold=PIXEL_T, valid=valid), "assemble"))
    out.update(serving_localize(img))
    return out


def model_like_outputs(tiles):
    """The NumPy twin of :func:`tf_standin` (exact, so it equals it bit for bit)."""
    t = tiles.astype(np.float32)
    heat = t[:, ::8, ::8, 0] * t[:, ::8, ::8, 1] / np.float32(7.0)
    return t[..., 2].max(axis=(1, 2)) / np.float32(255.0), heat


def localization(loc, prefix: str) -> dict[str, np.ndarray]:
    regions = json.dumps([r.to_dict() for r in loc.regions]).encode()
    return {f"{prefix}/heatmap": loc.heatmap, f"{prefix}/mask": loc.mask,
            f"{prefix}/regions": np.frombuffer(regions, np.uint8)}


def serving_localize(img, serve_fn=None, prefix: str = "serving_localize") -> dict[str, np.ndarray]:
    import tensorflow as tf

    from kerasxai.serving import make_localize_fn

    serve_fn = serve_fn or tf.function(tf_standin(tf), autograph=False)
    fn = make_localize_fn(tf, serve_fn, tile_size=TILE, overlap=OVERLAP, score_threshold=SCORE_T,
                          pixel_threshold=PIXEL_T, batch_size=2)
    res = fn(tf.constant(img))
    return {f"{prefix}/{k}": res[k].numpy() for k in ("heatmap", "mask", "scores", "positions")}


def end_to_end_image():
    rng = np.random.default_rng(11)
    img = rng.integers(60, 140, (90, 120, 3), dtype=np.uint8)
    img[20:34, 30:44] = 255
    return img


def registry_localizer(name: str):
    import keras

    from kerasxai.localize import Localizer
    from kerasxai.models import build_model

    keras.utils.set_random_seed(3)
    model = build_model(name, input_shape=(TILE, TILE, 3))
    # a threshold below every score: each tile's map counts, so the maps are exercised
    return Localizer(model, tile_size=TILE, overlap=OVERLAP, score_threshold=0.0, pixel_threshold=PIXEL_T,
                     batch_size=4, host_parallel="off")


E2E_MODELS = ("mobilenetv3_large_d", "vit_tiny_patch16_224")


def end_to_end_outputs(name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(forward outputs, localization outputs) of a seeded registry model on this machine."""
    loc = registry_localizer(name)
    img = end_to_end_image()
    from kerasxai.data.tiling import tile_image

    tiles, _, _ = tile_image(img, loc.grid)
    scores, heat = loc.predict_tiles(tiles)
    return {f"e2e/{name}/scores": scores, f"e2e/{name}/heatmaps": heat}, localization(loc.localize(img), f"e2e/{name}")


def assemble_recorded(golden, name: str) -> dict[str, np.ndarray]:
    """The recorded forward outputs of model `name` through today's post-processing."""
    from kerasxai.localize import assemble

    from kerasxai.data.tiling import TileGrid, tile_image

    grid = TileGrid(TILE, OVERLAP)
    img = end_to_end_image()
    _, valid, positions = tile_image(img, grid)
    res = assemble(golden[f"e2e/{name}/scores"], golden[f"e2e/{name}/heatmaps"], positions, img.shape[:2], grid,
                   score_threshold=0.0, pixel_threshold=PIXEL_T, valid=valid)
    return localization(res, f"recorded/{name}")


def savedmodel_outputs(loaded) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(tile signature outputs, localize signature outputs) of the exported stand-in."""
    import tensorflow as tf

    from kerasxai.data.tiling import TileGrid, tile_image

    img = end_to_end_image()
    tiles, _, _ = tile_image(img, TileGrid(TILE, OVERLAP))
    serve = loaded.signatures["serving_default"](tiles=tf.constant(tiles))
    loc = loaded.signatures["localize"](image=tf.constant(img))
    return ({"savedmodel/score": serve["score"].numpy(), "savedmodel/heatmap": serve["heatmap"].numpy()},
            {f"savedmodel/localize/{k}": loc[k].numpy() for k in ("heatmap", "mask", "scores", "positions")})


def savedmodel_recorded(golden) -> dict[str, np.ndarray]:
    """The recorded tile-signature outputs through the localize function's post-processing."""
    import tensorflow as tf

    heat = tf.constant(golden["savedmodel/heatmap"])
    score = tf.constant(golden["savedmodel/score"])

    def recorded(tiles):  # the tiles of end_to_end_image in order, two at a time (batch_size=2)
        i = tf.cast(tiles[0, 0, 0, 0], tf.int32)  # tile index written into the first pixel
        k = tf.shape(tiles)[0]
        return {"score": score[i:i + k], "heatmap": heat[i:i + k]}

    img = end_to_end_image()
    # mark each tile's first pixel with its index (positions are row-major, stride 56)
    from kerasxai.data.tiling import TileGrid

    grid = TileGrid(TILE, OVERLAP)
    ys, xs = grid.starts(img.shape[0]), grid.starts(img.shape[1])
    img = img.copy()
    for n, (y, x) in enumerate((y, x) for y in ys for x in xs):
        img[y, x, 0] = n
    return serving_localize(img, tf.function(recorded, autograph=False), "recorded/savedmodel")


def exported_standin(tmp: Path):
    import tensorflow as tf

    from kerasxai.serving import export_model
    from test_localize import standin_model

    path = export_model(standin_model(TILE), tmp / "standin" / "1", tile_size=TILE, overlap=OVERLAP,
                        score_threshold=SCORE_T)
    return path, tf.saved_model.load(str(path))


# ----------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def golden():
    if not GOLDEN.is_file():
        pytest.fail(f"{GOLDEN} is missing: run python tests/test_map_pin.py --regen on a known-good commit")
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


def assert_pinned(golden, outputs: dict[str, np.ndarray]):
    changed = [k for k, v in outputs.items() if str(golden[f"sha/{k}"]) != digest(v)]
    assert not changed, f"outputs differ from {GOLDEN.name}: {changed}"


def test_postprocessing_is_bit_identical(golden):
    outputs = postprocessing_outputs()
    assert {f"sha/{k}" for k in outputs} <= set(golden)
    assert_pinned(golden, outputs)


@pytest.mark.slow
@pytest.mark.parametrize("name", E2E_MODELS)
def test_registry_models_end_to_end(golden, name):
    forward, result = end_to_end_outputs(name)
    for k, v in forward.items():
        np.testing.assert_allclose(v, golden[k], rtol=FORWARD_RTOL, atol=FORWARD_ATOL, err_msg=k)
    assert_pinned(golden, assemble_recorded(golden, name))
    if all(np.array_equal(v, golden[k]) for k, v in forward.items()):
        assert_pinned(golden, result)


@pytest.mark.slow
def test_savedmodel_localize_end_to_end(golden, tmp_path):
    _, loaded = exported_standin(tmp_path)
    forward, result = savedmodel_outputs(loaded)
    for k, v in forward.items():
        np.testing.assert_allclose(v, golden[k], rtol=FORWARD_RTOL, atol=FORWARD_ATOL, err_msg=k)
    assert_pinned(golden, savedmodel_recorded(golden))
    if all(np.array_equal(v, golden[k]) for k, v in forward.items()):
        assert_pinned(golden, result)


# ----------------------------------------------------------------------------- regeneration
def regenerate() -> None:
    """Record every output into GOLDEN: forward outputs as arrays, everything else as sha256."""
    stored, hashed = {}, dict(postprocessing_outputs())
    for name in E2E_MODELS:
        forward, result = end_to_end_outputs(name)
        stored.update(forward)
        hashed.update(result)
        hashed.update(assemble_recorded(stored, name))
    with tempfile.TemporaryDirectory() as tmp:
        _, loaded = exported_standin(Path(tmp))
        forward, result = savedmodel_outputs(loaded)
        stored.update(forward)
        hashed.update(result)
        hashed.update(savedmodel_recorded(stored))
    stored.update({f"sha/{k}": np.array(digest(v)) for k, v in hashed.items()})
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(GOLDEN, **stored)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes, {len(hashed)} pinned outputs)")


if __name__ == "__main__":
    if sys.argv[1:] != ["--regen"]:
        sys.exit("usage: python tests/test_map_pin.py --regen  (rewrites the golden file from this checkout)")
    os.environ.setdefault("KERAS_BACKEND", "jax")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    here = Path(__file__).resolve().parent
    sys.path[:0] = [str(here.parent), str(here)]  # the checkout's kerasxai and the test helpers
    regenerate()
