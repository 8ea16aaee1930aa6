"""The random-init training recipe: augmentation, the warm-up + cosine schedule, held-out groups."""

import numpy as np
import pytest
import tensorflow as tf

from kerasxai import training
from kerasxai.config import AugmentConfig, ConfigError, load_config
from kerasxai.data.pipeline import augment_image
from kerasxai.data.sources import DataError, read_samples
from kerasxai.data.splits import split_samples

SYN = ["data.reader=synthetic", "data.options.count=40", "model.name=mobilenetv3_large_d"]


def _tile(size=32):
    rng = np.random.default_rng(0)
    return tf.constant(rng.uniform(0, 255, (size, size, 3)).astype("float32"))


def test_augment_is_deterministic_in_the_seed_and_stays_in_range():
    x = _tile()
    aug = AugmentConfig(rot90=True, translate=4, brightness=0.2, contrast=0.2)
    a = augment_image(x, tf.constant([3, 9], tf.int64), aug).numpy()
    b = augment_image(x, tf.constant([3, 9], tf.int64), aug).numpy()
    c = augment_image(x, tf.constant([4, 9], tf.int64), aug).numpy()
    assert a.shape == x.shape and np.array_equal(a, b) and not np.array_equal(a, c)
    assert a.min() >= 0 and a.max() <= 255


def test_rot90_alone_gives_rotations_of_the_tile():
    x = _tile().numpy()
    aug = AugmentConfig(rot90=True, translate=0, brightness=0.0, contrast=0.0)
    rotations = [np.rot90(x, k) for k in range(4)]
    seen = set()
    for i in range(24):
        out = augment_image(tf.constant(x), tf.constant([i, 1], tf.int64), aug).numpy()
        k = [j for j, r in enumerate(rotations) if np.array_equal(out, r)]
        assert len(k) == 1
        seen.add(k[0])
    assert seen == {0, 1, 2, 3}


def test_translate_alone_shifts_by_at_most_its_pixels():
    x = np.zeros((32, 32, 3), np.float32)
    x[16, 16] = 255.0
    aug = AugmentConfig(rot90=False, translate=3, brightness=0.0, contrast=0.0)
    for i in range(12):
        out = augment_image(tf.constant(x), tf.constant([i, 2], tf.int64), aug).numpy()
        ys, xs = np.nonzero(out[..., 0])
        assert len(ys) == 1 and abs(ys[0] - 16) <= 3 and abs(xs[0] - 16) <= 3


def test_cosine_schedule_warms_up_then_decays_to_the_floor():
    cfg = load_config(None, SYN + ["train.epochs=10", "train.warmup_epochs=2", "train.learning_rate=0.01"])
    sched = training.learning_rate_schedule(cfg, 0.01, steps_per_epoch=10)
    lr = lambda step: float(sched(step))  # noqa: E731
    assert lr(0) == pytest.approx(0.01 * training.WARMUP_START)
    assert lr(10) == pytest.approx(0.01 * (training.WARMUP_START + 1) / 2, rel=1e-3)
    assert lr(20) == pytest.approx(0.01)
    assert lr(60) == pytest.approx(0.01 * (training.COSINE_FLOOR + (1 - training.COSINE_FLOOR) * 0.5), rel=1e-3)
    assert lr(100) == pytest.approx(0.01 * training.COSINE_FLOOR, rel=1e-3)
    values = [lr(s) for s in range(20, 101, 5)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_plateau_schedule_keeps_a_float_learning_rate():
    cfg = load_config(None, SYN + ["train.schedule=plateau"])
    assert training.learning_rate_schedule(cfg, 0.003, 50) == 0.003


@pytest.mark.parametrize("override, key", [
    ("train.schedule=linear", "train.schedule"),
    ("train.warmup_epochs=-1", "train.warmup_epochs"),
    ("train.augment.translate=400", "train.augment.translate"),
    ("train.augment.brightness=1.5", "train.augment.brightness"),
])
def test_recipe_keys_are_checked(override, key):
    # choice keys are refused by load_config already, value ranges by the training's checks
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        training.check_config(load_config(None, SYN + [override]))


def test_holdout_groups_leave_train_and_val_but_not_the_test_cut():
    cfg = load_config(None, SYN)
    samples = read_samples(cfg.data)
    before = split_samples(samples, cfg.data.split)
    held = [before["train"][0].group, before["val"][0].group, before["test"][0].group]
    cfg.data.split.holdout = held
    after = split_samples(samples, cfg.data.split)
    assert [s.id for s in after["test"]] == [s.id for s in before["test"]]
    for split in ("train", "val"):
        assert not {s.group for s in after[split]} & set(held)
        assert [s.id for s in after[split]] == [s.id for s in before[split] if s.group not in held]


def test_unknown_holdout_group_names_the_key():
    cfg = load_config(None, SYN + ["data.split.holdout=[nope]"])
    with pytest.raises(DataError, match=r"data\.split\.holdout.*'nope'"):
        split_samples(read_samples(cfg.data), cfg.data.split)
