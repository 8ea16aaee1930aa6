"""Tile grid coverage, padding, tile labels at the threshold, stitch(tile(x)) == x."""

import numpy as np
import pytest

from kerasxai.config import TileConfig
from kerasxai.data.tiling import TileGrid, stitch, tile_image, tile_label


@pytest.mark.parametrize(
    "h, w, size, overlap",
    [
        (640, 640, 224, 2),  # DeepPCB: does not divide -> last tile flush
        (446, 668, 224, 2),  # divides exactly: 2 x 3 tiles with stride 222
        (100, 300, 64, 0),
        (50, 70, 64, 8),  # smaller than a tile in both sides
        (40, 200, 64, 4),  # smaller in one side
        (64, 64, 64, 2),  # exactly one tile
    ],
)
def test_grid_covers_every_pixel_once_or_more(h, w, size, overlap):
    grid = TileGrid(size, overlap)
    cover = np.zeros(grid.padded_shape(h, w), int)
    for y, x in grid.positions(h, w):
        cover[y:y + size, x:x + size] += 1
    assert cover.shape == (max(h, size), max(w, size))
    assert (cover[:h, :w] >= 1).all()
    ys = sorted({y for y, _ in grid.positions(h, w)})
    xs = sorted({x for _, x in grid.positions(h, w)})
    # last row/column flush with the border (or 0 when the side is shorter than a tile)
    assert ys[-1] == max(h - size, 0) and xs[-1] == max(w - size, 0)
    # neighbours share at least `overlap` pixels and step by at most size - overlap
    assert all(0 < b - a <= size - overlap for a, b in zip(ys, ys[1:]))


def test_deeppcb_grid_is_3x3():
    assert TileGrid(224, 2).starts(640) == [0, 222, 416]
    assert len(TileGrid(224, 2).positions(640, 640)) == 9
    assert TileGrid(224, 2).starts(668) == [0, 222, 444]  # divides: no extra tile


def test_padding_is_invalid_and_not_counted():
    grid = TileGrid(64, 2)
    img = np.full((40, 50, 3), 7, np.uint8)
    mask = np.zeros((40, 50), np.uint8)
    tiles, valid, pos = tile_image(img, grid)
    assert tiles.shape == (1, 64, 64, 3) and pos == [(0, 0)]
    assert valid[0, :40, :50].all() and not valid[0, 40:].any() and not valid[0, :, 50:].any()
    assert (tiles[0][valid[0]] == 7).all()
    # threshold is relative to the valid area: 40*50 = 2000 px, 1% = 20 px
    cfg = TileConfig(size=64, defect_fraction=0.01)
    mask[:4, :5] = 1  # 20 px: not more than 1% of the valid area
    mt, _, _ = tile_image(mask, grid)
    assert tile_label(mt[0], valid[0], cfg) == 0
    mask[4, 0] = 1  # 21 px
    mt, _, _ = tile_image(mask, grid)
    assert tile_label(mt[0], valid[0], cfg) == 1
    # defect pixels in the padding never count (even if a caller put some there)
    fake = mt[0].copy()
    fake[:] = 0
    fake[50:, 55:] = 1
    assert tile_label(fake, valid[0], cfg) == 0


def test_label_threshold_boundary_fraction_and_pixels():
    valid = np.ones((100, 100), bool)
    mask = np.zeros((100, 100), np.uint8)
    frac = TileConfig(size=100, defect_fraction=0.01)  # 100 px
    mask.flat[:100] = 1
    assert tile_label(mask, valid, frac) == 0  # exactly at the threshold -> good
    mask.flat[100] = 1
    assert tile_label(mask, valid, frac) == 1  # one pixel more -> defect
    pix = TileConfig(size=100, defect_fraction=0.5, defect_pixels=30)  # pixels override
    mask[:] = 0
    mask.flat[:30] = 1
    assert tile_label(mask, valid, pix) == 0
    mask.flat[30] = 1
    assert tile_label(mask, valid, pix) == 1


def test_thesis_224_threshold_is_501_pixels():
    valid = np.ones((224, 224), bool)
    mask = np.zeros((224, 224), np.uint8)
    cfg = TileConfig()
    mask.flat[:501] = 1
    assert tile_label(mask, valid, cfg) == 0
    mask.flat[501] = 1
    assert tile_label(mask, valid, cfg) == 1


@pytest.mark.parametrize("h, w, size, overlap", [(640, 640, 224, 2), (130, 97, 32, 5), (20, 90, 32, 3), (96, 96, 32, 0)])
def test_stitch_inverts_tiling_exactly(h, w, size, overlap):
    rng = np.random.default_rng(h * w)
    grid = TileGrid(size, overlap)
    for x in (rng.random((h, w), np.float32), rng.integers(0, 256, (h, w, 3)).astype(np.uint8)):
        tiles, _, pos = tile_image(x, grid)
        back = stitch(tiles, pos, (h, w), grid)
        assert back.shape == x.shape and back.dtype == np.float32
        np.testing.assert_array_equal(back, x.astype(np.float32))
        # weighted averaging of identical values is exact too
        win = np.outer(np.hanning(size + 2)[1:-1], np.hanning(size + 2)[1:-1])
        np.testing.assert_allclose(stitch(tiles, pos, (h, w), grid, weights=win), x, rtol=1e-6, atol=1e-6)


def test_stitch_low_resolution_maps():
    grid = TileGrid(224, 2)
    pos = grid.positions(640, 640)
    const = np.full((len(pos), 7, 7), 3.5, np.float32)
    np.testing.assert_array_equal(stitch(const, pos, (640, 640), grid), np.full((640, 640), 3.5, np.float32))
    # per-tile constants: pixels covered by one tile only take that tile's value,
    # overlaps take the mean of the tiles covering them
    vals = np.arange(len(pos), dtype=np.float32)
    out = stitch(vals[:, None, None] * np.ones((1, 14, 14), np.float32), pos, (640, 640), grid)
    assert out[0, 0] == 0 and out[639, 639] == 8 and out[300, 300] == 4
    assert out[100, 222] == pytest.approx(0.5)  # columns 222..223 shared by tiles 0 and 1
    # an image smaller than the tile: the map is cropped to the image
    small = stitch(np.ones((1, 7, 7), np.float32), [(0, 0)], (50, 30), grid)
    assert small.shape == (50, 30) and (small == 1).all()


def test_stitch_rejects_mismatched_inputs():
    with pytest.raises(ValueError):
        stitch(np.zeros((2, 7, 7)), [(0, 0)], (64, 64), TileGrid(64, 0))
