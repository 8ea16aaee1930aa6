"""Prepared datasets (round trip, cache key, interruption, empty splits) and tf.data pipelines."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kerasxai.config import load_config
from kerasxai.data import pipeline
from kerasxai.data.pipeline import (
    TileSplit, count_tiles, eval_batches, load_split, open_split, prepare_dataset, random_flip, read_manifest,
    training_dataset,
)
from kerasxai.data.sources import DataError, read_samples
from kerasxai.data.splits import split_samples
from kerasxai.data.tiling import TileGrid, tile_image, tile_label

SYN = ["data.reader=synthetic", "data.options.count=12", "data.options.height=70", "data.options.width=90",
       "data.options.seed=5", "data.tile.size=32", "data.tile.overlap=4", "model.name=mobilenetv3_large"]


def _cfg(tmp_path, *extra):
    return load_config(None, SYN + [f"data.cache_dir={tmp_path / 'cache'}", *extra])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prep")
    cfg = _cfg(tmp)
    return cfg, prepare_dataset(cfg, progress=False)


def test_manifest_counts_and_round_trip(prepared):
    cfg, out = prepared
    m = read_manifest(out)
    samples = read_samples(cfg.data)
    parts = split_samples(samples, cfg.data.split)
    grid = TileGrid(32, 4)
    expect = {}
    for split, ss in parts.items():
        labels = []
        for s in ss:
            image, mask = s.load()
            _, valid, _ = tile_image(image, grid)
            mt, _, _ = tile_image(mask, grid)
            labels += [tile_label(a, b, cfg.data.tile) for a, b in zip(mt, valid)]
        expect[split] = {"defect": sum(labels), "good": len(labels) - sum(labels)}
        assert count_tiles(out, split) == len(labels)
    assert m["counts"] == expect
    assert expect["train"]["defect"] > 0 and expect["train"]["good"] > 0
    assert len(m["tiles"]) == sum(count_tiles(out, k) for k in ("train", "val", "test"))
    # every tile of one source image: decoded tiles equal the tiles of the source
    s = parts["test"][0]
    image, mask = s.load()
    tiles, valid, pos = tile_image(image, grid)
    mtiles, _, _ = tile_image(mask, grid)
    got = [e for e in load_split(out, "test").as_numpy_iterator() if e["source"].decode() == s.id]
    assert [(int(e["y"]), int(e["x"])) for e in got] == pos
    for e, t, mt, v in zip(got, tiles, mtiles, valid):
        np.testing.assert_array_equal(e["image"], t)
        np.testing.assert_array_equal(e["mask"], mt)
        np.testing.assert_array_equal(e["valid"], v.astype(np.uint8))
        assert e["label"] == tile_label(mt, v, cfg.data.tile)
    # padding exists here (70 is not a multiple of the stride) but the image is larger than a
    # tile, so every tile is fully valid; the manifest records sources for stitching
    assert m["sources"][s.id]["height"] == 70 and m["sources"][s.id]["width"] == 90


def test_eval_batches_follow_manifest_order(prepared):
    _, out = prepared
    m = read_manifest(out)
    rows = [(t["source"], t["y"], t["x"], t["label"]) for t in m["tiles"] if t["split"] == "val"]
    got = []
    for b in eval_batches(load_split(out, "val"), 5).as_numpy_iterator():
        assert b["image"].shape[1:] == (32, 32, 3) and b["image"].dtype == np.uint8
        assert b["mask"].shape[1:] == (32, 32) and b["valid"].shape[1:] == (32, 32)
        got += [(s.decode(), int(y), int(x), int(l)) for s, y, x, l in zip(b["source"], b["y"], b["x"], b["label"])]
    assert got == rows


def test_open_split_facts_and_dataset(prepared):
    _, out = prepared
    m = read_manifest(out)
    split = open_split(out, "val")
    assert split.files == tuple(str(out / f) for f in m["shards"]["val"])
    assert split.tile_size == 32 and split.counts == m["counts"]["val"]
    got = [(e["source"], int(e["y"]), int(e["x"])) for e in split.dataset().as_numpy_iterator()]
    want = [(e["source"], int(e["y"]), int(e["x"])) for e in load_split(out, "val").as_numpy_iterator()]
    assert got == want and len(got) == count_tiles(out, "val")
    with pytest.raises(DataError, match="split 'dev' unknown"):
        open_split(out, "dev")


def test_training_dataset_epoch_and_types(prepared):
    _, out = prepared
    split = open_split(out, "train")
    ds = split.dataset()
    n = count_tiles(out, "train")
    seen = 0
    for x, y in training_dataset(split, 8, seed=1):
        assert x.dtype == tf.float32 and x.shape[1:] == (32, 32, 3) and y.shape[1:] == (1,)
        assert float(tf.reduce_max(x)) <= 255 and float(tf.reduce_min(x)) >= 0
        seen += x.shape[0]
    assert seen == n  # one pass, not repeated
    # without flips and shuffle: exactly the tiles in order
    xs = np.concatenate([x.numpy() for x, _ in training_dataset(split, 7, flips=False, shuffle=False)])
    ref = np.stack([e["image"] for e in ds.as_numpy_iterator()]).astype(np.float32)
    np.testing.assert_array_equal(xs, ref)
    # a dataset of decoded tiles (e.g. with teacher labels) goes through the same batching
    ys = np.concatenate([y.numpy() for _, y in training_dataset(ds, 7, flips=False, shuffle=False)])
    np.testing.assert_array_equal(ys[:, 0], [e["label"] for e in ds.as_numpy_iterator()])


def test_training_images_are_flips_of_tiles(prepared):
    _, out = prepared
    split = open_split(out, "train")
    ref = {}
    for e in split.dataset().as_numpy_iterator():
        for k, v in enumerate((e["image"], e["image"][:, ::-1], e["image"][::-1], e["image"][::-1, ::-1])):
            ref.setdefault(v.tobytes(), set()).add(k)
    kinds = set()
    for x, _ in training_dataset(split, 16, seed=3):
        for t in x.numpy().astype(np.uint8):
            assert t.tobytes() in ref  # every training image is a tile, flipped or not
            kinds |= ref[t.tobytes()]
    assert kinds == {0, 1, 2, 3}


def test_flips_keep_image_and_mask_aligned():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    mask = (image[..., 0] > 128).astype(np.uint8)
    valid = np.zeros((16, 16), np.uint8)
    valid[:10, :13] = 1
    combos = set()
    for i in range(40):
        out = random_flip({"image": image, "mask": mask, "valid": valid, "label": 1.0}, tf.constant([i, 7], tf.int64))
        img, m, v = out["image"].numpy(), out["mask"].numpy(), out["valid"].numpy()
        np.testing.assert_array_equal(m, (img[..., 0] > 128).astype(np.uint8))
        h = bool(v[0, 0] == 0 and v[0, -1] == 1) or bool(v[-1, 0] == 0 and v[-1, -1] == 1)
        vert = bool(v[0, 0] == 0 and v[-1, 0] == 1) or bool(v[0, -1] == 0 and v[-1, -1] == 1)
        expect = image[::-1 if vert else 1, ::-1 if h else 1]
        np.testing.assert_array_equal(img, expect)
        combos.add((h, vert))
    assert combos == {(False, False), (False, True), (True, False), (True, True)}


def test_balance_oversamples_defects(prepared):
    _, out = prepared
    split = open_split(out, "train")
    labels = np.concatenate([y.numpy()[:, 0] for _, y in training_dataset(split, 8, balance=True, seed=2)])
    good = read_manifest(out)["counts"]["train"]["good"]
    assert abs(labels.mean() - 0.5) < 0.2
    assert (labels == 0).sum() <= good  # each good tile at most once per epoch


def test_balance_needs_both_labels(prepared):
    _, out = prepared
    split = open_split(out, "train")
    no_defects = TileSplit(split.files, split.tile_size, {"defect": 0, "good": split.counts["good"]})
    with pytest.raises(DataError, match="train.balance needs good and defective tiles"):
        training_dataset(no_defects, 8, balance=True)


def test_reused_and_keyed(tmp_path):
    cfg = _cfg(tmp_path)
    a = prepare_dataset(cfg, progress=False)
    stamp = (a / "manifest.json").stat().st_mtime_ns
    assert prepare_dataset(cfg, progress=False) == a
    assert (a / "manifest.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    b = prepare_dataset(_cfg(tmp_path, "data.tile.size=48"), progress=False)
    c = prepare_dataset(_cfg(tmp_path, "data.split.seed=1"), progress=False)
    assert len({a, b, c}) == 3 and read_manifest(b)["tile_size"] == 48


def test_key_follows_files(tmp_path):
    import cv2

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), np.full((40, 40), 50 * i, np.uint8))
    cfg = load_config(None, ["data.reader=mask_dir", f"data.root={tmp_path}", "data.tile.size=32",
                             "model.name=x", f"data.cache_dir={tmp_path / 'cache'}"])
    a = prepare_dataset(cfg, progress=False)
    m = np.zeros((40, 40), np.uint8)
    m[:20] = 255
    cv2.imwrite(str(tmp_path / "img0_mask.png"), m)  # a mask appears: different data
    b = prepare_dataset(cfg, progress=False)
    assert a != b and read_manifest(b)["counts"] != read_manifest(a)["counts"]


def test_key_follows_annotation_edits(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((20, 20, 3), np.uint8))
    ann = tmp_path / "a.json"
    ann.write_text(json.dumps({"imagePath": "a.png", "shapes": []}))
    cfg = load_config(None, ["data.reader=labelme", f"data.root={tmp_path}", "model.name=x"])
    key = lambda: pipeline.dataset_key(cfg.data, read_samples(cfg.data))  # noqa: E731
    before = key()
    assert key() == before  # same files: same key
    ann.write_text(json.dumps({"imagePath": "a.png", "shapes": [
        {"label": "x", "points": [[1, 1], [5, 5]], "shape_type": "rectangle"}]}))
    assert key() != before  # the annotation changed, the image did not


def test_interrupted_prepare_leaves_nothing_trusted(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    real, calls = pipeline._tile_sample, []

    def boom(sample, grid, tile_cfg):
        calls.append(sample.id)
        if len(calls) == 5:
            raise KeyboardInterrupt  # e.g. Ctrl-C in the middle
        return real(sample, grid, tile_cfg)

    monkeypatch.setattr(pipeline, "_tile_sample", boom)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(cfg, progress=False)
    cache = tmp_path / "cache"
    assert [p.name for p in cache.iterdir() if not p.name.startswith(".lock-")] == []  # no half-written or temp folder
    # a process killed hard leaves a temp folder: it is never used and cleaned next time
    key = pipeline.dataset_key(cfg.data, read_samples(cfg.data))
    stale = cache / f".tmp-synthetic-{key}-999999999-x"
    stale.mkdir()
    (stale / "train-00000.tfrecord").write_bytes(b"partial")
    monkeypatch.setattr(pipeline, "_tile_sample", real)
    out = prepare_dataset(cfg, progress=False)
    assert (out / "manifest.json").is_file() and not stale.exists()
    assert sorted(p.name for p in cache.iterdir() if not p.name.startswith(".lock-")) == [out.name]
    with pytest.raises(DataError, match="no manifest.json"):
        load_split(stale.parent / "missing", "train")


def test_concurrent_prepares_build_once(tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    cfg = _cfg(tmp_path)
    real, builds = pipeline._build, []

    def counting(*a, **k):
        builds.append(1)
        return real(*a, **k)

    monkeypatch.setattr(pipeline, "_build", counting)
    with ThreadPoolExecutor(2) as pool:
        outs = list(pool.map(lambda _: prepare_dataset(cfg, progress=False), range(2)))
    assert outs[0] == outs[1] and len(builds) == 1


def test_empty_split_is_an_error_when_used(tmp_path):
    cfg = _cfg(tmp_path, "data.options.count=1")
    out = prepare_dataset(cfg, progress=False)
    assert count_tiles(out, "train") > 0 and count_tiles(out, "val") == 0
    load_split(out, "train")
    with pytest.raises(DataError, match="split 'val' .* is empty"):
        load_split(out, "val")
    with pytest.raises(DataError, match="split 'dev' unknown"):
        load_split(out, "dev")


def test_bundled_sample_grayscale_to_rgb(tmp_path):
    cfg = load_config(None, ["data.reader=deeppcb", "data.root=sample:deeppcb", "model.name=x",
                             f"data.cache_dir={tmp_path}"])
    out = prepare_dataset(cfg, progress=False)
    m = read_manifest(out)
    assert sum(m["images"].values()) == 16 and sum(count_tiles(out, k) for k in ("train", "val", "test")) == 144
    assert m["counts"]["test"]["defect"] > 0
    e = next(load_split(out, "train").as_numpy_iterator())
    assert e["image"].shape == (224, 224, 3)
    np.testing.assert_array_equal(e["image"][..., 0], e["image"][..., 2])
    # tested image and template share a split
    splits = {}
    for sid, info in m["sources"].items():
        splits.setdefault(info["group"], set()).add(info["split"])
    assert all(len(v) == 1 for v in splits.values())
    shard_bytes = sum(p.stat().st_size for p in Path(out).glob("*.tfrecord"))
    assert shard_bytes < 144 * 20_000  # PNG tiles stay small


def test_masks_round_trip_when_tile_area_is_not_a_multiple_of_8(tmp_path):
    cfg = _cfg(tmp_path, "data.tile.size=30", "data.tile.overlap=3", "data.options.count=4")
    out = prepare_dataset(cfg, progress=False)
    samples = {s.id: s for s in read_samples(cfg.data)}
    grid = TileGrid(30, 3)
    for split in ("train", "val", "test"):
        if count_tiles(out, split) == 0:
            continue
        for e in load_split(out, split).as_numpy_iterator():
            mask = samples[e["source"].decode()].load_mask()
            y, x = int(e["y"]), int(e["x"])
            np.testing.assert_array_equal(e["mask"], mask[y:y + 30, x:x + 30])
