"""Full-image localization: tiling -> batched inference -> stitching -> mask and boxes.

Most tests use ``standin_model``: a tiny functional model whose score and CAM heatmap are
meaningful *by construction* (no training): a fixed 1x1 conv marks bright pixels
(gray > 0.75) as defect evidence, 4x4 average pooling gives the feature map F, and the CAM
head (GAP -> Dense with kernel W, heatmap = F*W) follows the model contract (docs/architecture.md) exactly
(mean(heatmap) + b == logit). With W = 200 and b = -2 a tile is defective when more than 1 % of
it is bright, so a synthetic image with bright squares on a darker noisy background has a
known answer. This keeps the tests to seconds; a few training steps would not give a model
whose boxes are reliable enough to assert on.
"""

from __future__ import annotations

import numpy as np
import pytest

import keras

from kerasxai.data.tiling import TileGrid
from kerasxai.localize import (
    Localizer,
    LocalizeError,
    assemble,
    extract_regions,
    stitch_scores,
    load_image,
    overlay,
    render_outputs,
    tile_maps,
)

TILE = 64


def standin_model(tile: int = TILE, weight: float = 200.0, bias: float = -2.0) -> keras.Model:
    """CAM-by-construction tile model (see the module docstring); raw 0..255 pixels in."""
    inp = keras.Input((tile, tile, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 255)(inp)
    bright = keras.layers.Conv2D(1, 1, activation="relu", name="bright")(x)
    feats = keras.layers.AveragePooling2D(4, name="features")(bright)
    heat = keras.layers.Conv2D(1, 1, use_bias=False, name="cam")(feats)
    heat = keras.layers.Reshape((tile // 4, tile // 4), name="heatmap")(heat)
    pooled = keras.layers.GlobalAveragePooling2D()(feats)
    score = keras.layers.Dense(1, activation="sigmoid", name="score")(pooled)
    model = keras.Model(inp, {"score": score, "heatmap": heat}, name="standin")
    model.get_layer("bright").set_weights([np.full((1, 1, 3, 1), 4.0 / 3, np.float32), np.array([-3.0], np.float32)])
    model.get_layer("cam").set_weights([np.full((1, 1, 1, 1), weight, np.float32)])
    model.get_layer("score").set_weights([np.full((1, 1), weight, np.float32), np.array([bias], np.float32)])
    return model


def synthetic_board(h: int, w: int, boxes, seed: int = 0, gray: bool = False) -> np.ndarray:
    """Dark noisy background (~100) with bright (255) rectangles at ``boxes`` [x1, y1, x2, y2)."""
    rng = np.random.default_rng(seed)
    img = np.clip(rng.normal(100, 12, (h, w)), 0, 180).astype(np.uint8)
    for x1, y1, x2, y2 in boxes:
        img[y1:y2, x1:x2] = 255
    return img if gray else np.repeat(img[:, :, None], 3, axis=2)


def iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


@pytest.fixture(scope="module")
def model():
    return standin_model()


def test_standin_model_follows_cam_contract(model):
    x = synthetic_board(TILE, TILE, [(10, 10, 22, 22)])[None].astype(np.float32)
    out = model.predict_on_batch(x)
    logit = np.log(out["score"] / (1 - out["score"]))
    np.testing.assert_allclose(out["heatmap"].mean(axis=(1, 2)) - 2.0, logit[:, 0], atol=1e-3)


def test_boxes_overlap_known_defects(model):
    """Defects on a 150x230 image (not a multiple of the stride): every true box is found
    (IoU > 0.5 with a predicted box), every predicted box is near a true one."""
    truth = [(20, 30, 34, 44), (150, 90, 166, 104), (95, 5, 107, 17)]
    img = synthetic_board(150, 230, truth)
    loc = Localizer(model, tile_size=TILE, overlap=8, batch_size=4)
    res = loc.localize(img)
    assert res.heatmap.shape == res.mask.shape == (150, 230)
    assert res.verdict == "defective" and res.max_score > 0.9
    boxes = [r.box for r in res.regions]
    for t in truth:
        assert max(iou(t, b) for b in boxes) > 0.5, (t, boxes)
    for b in boxes:
        assert max(iou(t, b) for t in truth) > 0.3, (b, truth)
    assert all(0 < r.score <= 1 and r.area > 0 for r in res.regions)


def test_good_image_has_no_regions(model):
    img = synthetic_board(100, 140, [])
    res = Localizer(model, tile_size=TILE, overlap=8, batch_size=3).localize(img)
    assert res.verdict == "good" and res.regions == [] and not res.mask.any()
    assert not res.heatmap.any()  # tiles at or below the threshold contribute no evidence


@pytest.mark.parametrize("hw", [(40, 50), (64, 64), (65, 129), (201, 77)])
def test_any_image_size_and_grayscale(model, hw):
    """Smaller than a tile, exactly a tile, and not multiples of the stride; gray input."""
    h, w = hw
    x1, y1 = w // 3, h // 3
    truth = (x1, y1, x1 + 12, y1 + 12)
    img = synthetic_board(h, w, [truth], gray=True)
    res = Localizer(model, tile_size=TILE, overlap=6, batch_size=5).localize(img)
    assert res.heatmap.shape == (h, w) and res.mask.shape == (h, w)
    assert res.verdict == "defective"
    assert max(iou(truth, r.box) for r in res.regions) > 0.5


def test_constant_tile_maps_stitch_to_constant_image():
    """Identical per-tile maps give the identical value everywhere: no seams at overlaps,
    none at the flush last row/column (which overlaps more than the others)."""
    grid = TileGrid(32, 5)
    hw = (97, 130)
    positions = grid.positions(*hw)
    n = len(positions)
    scores = np.full(n, 0.8, np.float32)
    np.testing.assert_array_equal(stitch_scores(scores, positions, hw, grid), np.float32(0.8))
    const = tile_maps(np.ones(n), np.zeros((n, 8, 8)), 32, 0.5)  # constant map: no evidence
    assert not assemble(scores, np.ones((n, 8, 8), np.float32), positions, hw, grid).heatmap.any()
    assert not const.any()
    # a per-tile ramp (min-max normalized to 0..1) is continuous across tiles only if blended
    ramp = np.tile(np.linspace(0, 1, 32, dtype=np.float32), (n, 32, 1))
    maps = tile_maps(scores, ramp, 32, 0.5)
    np.testing.assert_allclose(maps, ramp, atol=1e-6)


def test_tile_maps_equal_the_evaluation_protocol():
    """Prediction and evaluation normalize and gate tile maps the same way (padding excluded)."""
    from kerasxai.metrics.protocol import prepare_maps

    rng = np.random.default_rng(3)
    scores = np.array([0.9, 0.2, 0.7, 0.51, 0.5])
    heat = rng.normal(size=(5, 7, 7)).astype(np.float32)
    valid = np.ones((5, 32, 32), bool)
    valid[2, 20:] = False
    valid[3, :, 9:] = False
    ref = prepare_maps(scores, heat, np.zeros((5, 32, 32), np.uint8), valid, score_threshold=0.5).maps
    np.testing.assert_allclose(tile_maps(scores, heat, 32, 0.5, valid), ref, atol=1e-5)


def test_tile_maps_are_the_protocols_bit_for_bit():
    """predict's per-tile maps are the evaluation's own (computed only for gated-in tiles)."""
    from kerasxai.metrics.protocol import prepare_maps

    rng = np.random.default_rng(9)
    scores = rng.random(7)
    heat = rng.normal(size=(7, 4, 4)).astype(np.float32)
    valid = np.ones((7, 32, 32), bool)
    valid[3, 20:] = False
    ref = prepare_maps(scores, heat, np.zeros((7, 32, 32)), valid, score_threshold=0.5).maps
    assert np.array_equal(tile_maps(scores, heat, 32, 0.5, valid), ref)
    assert np.array_equal(tile_maps(scores, heat, 32, 2.0, valid), np.zeros_like(ref))


def test_gated_tiles_count_in_blend_but_add_no_evidence():
    grid = TileGrid(32, 8)
    hw = (32, 56)  # two tiles, overlapping columns 24..31
    positions = grid.positions(*hw)
    scores = np.array([0.9, 0.1], np.float32)
    heat = np.stack([np.tile(np.linspace(0, 1, 4, dtype=np.float32), (4, 1))] * 2)
    res = assemble(scores, heat, positions, hw, grid)
    assert not res.heatmap[:, 32:].any()  # only the gated tile covers these columns
    expected = tile_maps(scores, heat, 32, 0.5)[0][:, 24:32] / 2  # averaged with the zero map
    np.testing.assert_allclose(res.heatmap[:, 24:32], expected, atol=1e-6)


def test_stream_matches_single_images(model):
    """Tiles of several images share batches; each result equals the one-image result."""
    imgs = [synthetic_board(70 + 30 * i, 90, [(10 + i, 20, 25 + i, 35)], seed=i) for i in range(4)]
    loc = Localizer(model, tile_size=TILE, overlap=4, batch_size=5)
    single = [loc.localize(im) for im in imgs]
    streamed = list(loc.localize_stream((i, im) for i, im in enumerate(imgs)))
    assert [k for k, _ in streamed] == [0, 1, 2, 3]
    for a, (_, b) in zip(single, streamed):
        np.testing.assert_allclose(a.heatmap, b.heatmap, atol=1e-6)
        np.testing.assert_allclose(a.tile_scores, b.tile_scores, atol=1e-6)
    assert loc.timings["model"] > 0 and loc.timings["stitch"] > 0


def test_extract_regions_boxes_and_scores():
    mask = np.zeros((20, 30), np.uint8)
    mask[2:5, 3:9] = 1
    mask[10:18, 20:22] = 1
    heat = mask * 0.6
    heat[12, 21] = 0.9
    regions = extract_regions(heat, mask)
    assert [r.box for r in regions] == [(20, 10, 22, 18), (3, 2, 9, 5)]
    assert regions[0].score == pytest.approx(0.9) and regions[0].peak == (21, 12)
    assert [r.area for r in regions] == [16, 18]


def test_load_image_variants(tmp_path):
    import cv2

    gray = (np.arange(30 * 40) % 256).astype(np.uint8).reshape(30, 40)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    bgr = np.zeros((5, 6, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV order
    cv2.imwrite(str(tmp_path / "c.png"), bgr)
    cv2.imwrite(str(tmp_path / "w.png"), (gray.astype(np.uint16) * 256))
    g = load_image(tmp_path / "g.png")
    assert g.shape == (30, 40, 3) and (g[..., 0] == gray).all()
    assert tuple(load_image(tmp_path / "c.png")[0, 0]) == (0, 0, 255)  # RGB
    assert (load_image(tmp_path / "w.png")[..., 1] == gray).all()
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(LocalizeError, match="bad.png"):
        load_image(tmp_path / "bad.png")


def test_render_outputs(model):
    import json

    import cv2

    img = synthetic_board(90, 120, [(30, 30, 45, 45)])
    res = Localizer(model, tile_size=TILE, overlap=4).localize(img)
    files = render_outputs(img, res, "board", source="board.png")
    assert set(files) == {"board_overlay.png", "board_mask.png", "board.json"}
    mask = cv2.imdecode(np.frombuffer(files["board_mask.png"], np.uint8), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (90, 120) and set(np.unique(mask)) == {0, 255}
    doc = json.loads(files["board.json"])
    assert doc["verdict"] == "defective" and doc["regions"][0]["box"] == list(res.regions[0].box)
    ov = overlay(img, res)
    assert ov.shape == img.shape and (ov[0, 0] == img[0, 0]).all()  # background untouched
