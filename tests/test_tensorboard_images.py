"""Heatmaps in TensorBoard while training: tile choice, rendering, the config key, and a
two-epoch run whose event files hold an image summary per epoch (JAX and TensorFlow)."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kerasxai import runs, training
from kerasxai.config import ConfigError, load_config
from kerasxai.tensorboard_images import CAPTION, LOG_SUBDIR, render_tile, select_tiles
from test_train import REPO, synthetic_overrides


def read_events(log_dir) -> dict:
    """{tag: {step: [decoded values]}}: images as uint8 arrays, scalars as floats."""
    out = {}
    for path in sorted(Path(log_dir).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                t = tf.make_ndarray(v.tensor)
                if v.metadata.plugin_data.plugin_name == "images":
                    vals = [tf.io.decode_png(b).numpy() for b in t[2:]]  # [width, height, png, ...]
                else:
                    vals = [float(t)]
                out.setdefault(v.tag, {}).setdefault(event.step, []).extend(vals)
    return out


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from kerasxai.data.pipeline import prepare_dataset

    tmp = tmp_path_factory.mktemp("tb")
    cfg = load_config(None, synthetic_overrides(tmp, **{"data.options.count": 40, "data.split.val": 0.3,
                                                        "data.split.train": 0.5, "data.split.test": 0.2}))
    return prepare_dataset(cfg, progress=False)


def test_tiles_are_fixed_and_mix_defective_and_good(prepared):
    from kerasxai.data.pipeline import load_split

    every = list(load_split(prepared, "val").as_numpy_iterator())
    labels = np.array([e["label"] for e in every])
    assert 0 < labels.sum() < len(labels) and len(labels) > 8  # the fixture has both kinds, more than 8
    a, b = select_tiles(prepared, 8), select_tiles(prepared, 8)
    np.testing.assert_array_equal(a["index"], b["index"])
    assert len(a["image"]) == 8 and len(set(a["index"])) == 8
    n_def = int(a["label"].sum())
    assert n_def == min(4, int(labels.sum())) + max(0, 4 - int((labels == 0).sum()))
    for k, i in enumerate(a["index"]):  # the decoded tiles are those of the split at those positions
        np.testing.assert_array_equal(a["image"][k], every[i]["image"])
        np.testing.assert_array_equal(a["mask"][k], every[i]["mask"])
        assert a["label"][k] == every[i]["label"]
    assert len(select_tiles(prepared, 1000)["image"]) == len(labels)  # at most the whole split


def test_render_tile_draws_map_truth_and_caption():
    s = 64
    image = np.full((s, s, 3), 90, np.uint8)
    mask = np.zeros((s, s), np.uint8)
    mask[40:56, 8:24] = 1
    heat = np.zeros((4, 4), np.float32)
    heat[0, 3] = 1.0  # the map peaks top right, away from the truth
    valid = np.ones((s, s), np.uint8)
    pic = render_tile(image, mask, valid, 0.1, heat, 1.0)
    assert pic.shape == (s + CAPTION, s, 3) and pic.dtype == np.uint8
    tile, band = pic[:s], pic[s:]
    assert (tile[40, 8:24] == 255).all()  # truth outline in white
    assert tile[4, 56, 0] > tile[4, 56, 2]  # hot (red) where the map peaks, though the score is low
    assert np.array_equal(tile[4, 4], image[4, 4])  # untouched where the map is 0
    assert band.max() > 0  # caption text
    assert not np.array_equal(render_tile(image, mask, valid, 0.9, heat, 0.0)[s:], band)


@pytest.mark.parametrize("value", ["-1", "65", "abc"])
def test_bad_tensorboard_images_value_names_the_key(value):
    with pytest.raises(ConfigError, match="train.tensorboard_images"):
        load_config(None, ["data.reader=synthetic", "model.name=mobilenetv3_large", f"train.tensorboard_images={value}"])


def _run_overrides(tmp_path, **extra):
    return synthetic_overrides(tmp_path, **{"data.options.count": 24, "data.split.val": 0.3, "data.split.train": 0.5,
                                            "data.split.test": 0.2, "train.epochs": 2, "train.steps_per_epoch": 1,
                                            "data.tile.size": 64, "data.options.height": 128,
                                            "data.options.width": 128, **extra})


def check_run(run_dir, n: int) -> None:
    events = read_events(Path(run_dir) / runs.TENSORBOARD / LOG_SUBDIR)
    assert sorted(events["heatmaps"]) == [0, 1]
    for step in (0, 1):
        pics = events["heatmaps"][step]
        assert len(pics) == n and all(p.shape == (64 + CAPTION, 64, 3) for p in pics)
    scores = {tag: v for tag, v in events.items() if tag.startswith("tile_score/")}
    assert len(scores) == n and all(sorted(v) == [0, 1] for v in scores.values())
    assert any(t.endswith("_defect") for t in scores) and any(t.endswith("_good") for t in scores)
    assert all(0 <= x[0] <= 1 for v in scores.values() for x in v.values())


@pytest.mark.slow
def test_two_epoch_run_logs_heatmaps_every_epoch(tmp_path):
    cfg = load_config(None, _run_overrides(tmp_path, **{"train.tensorboard_images": 6}))
    run_dir, _ = training.train(cfg, verbose=0)
    check_run(run_dir, 6)
    off = load_config(None, _run_overrides(tmp_path, name="off", **{"train.tensorboard_images": 0}))
    run_off, _ = training.train(off, verbose=0)
    assert not (run_off / runs.TENSORBOARD / LOG_SUBDIR).exists()


@pytest.mark.tf_backend
@pytest.mark.slow
def test_heatmaps_logged_under_tensorflow(tmp_path):
    code = f"""
import keras, sys
from pathlib import Path
sys.path.insert(0, {str(REPO / 'tests')!r})
assert keras.backend.backend() == "tensorflow"
from kerasxai import training
from kerasxai.config import load_config
from test_tensorboard_images import _run_overrides, check_run
run_dir, _ = training.train(load_config(None, _run_overrides(Path({str(tmp_path)!r}))), verbose=0)
check_run(run_dir, 8)
print("OK")
"""
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr[-3000:]
