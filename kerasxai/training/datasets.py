"""The training datasets: train / val / test pipelines with Keras targets for a model's outputs."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from kerasxai.config import Config, ConfigError
from kerasxai.models.contract import CLS_OUTPUT, DIST_OUTPUT


@dataclass
class Data:
    prepared_dir: Path
    train: object  # tf.data.Dataset of (image, targets), repeated
    val: object
    test: object
    steps_per_epoch: int
    counts: dict


def targets(label, output_names, teacher=None):
    """Target dict for a model with these outputs: the label on "score" (and the teacher's
    hard label, or the label, on the distillation head), zeros on the rest (no loss reads them)."""
    import tensorflow as tf

    out = {}
    for name in output_names:
        if name in ("score", CLS_OUTPUT):
            out[name] = label
        elif name == DIST_OUTPUT:
            out[name] = label if teacher is None else teacher
        else:
            out[name] = tf.zeros_like(label[:, 0])
    return out


def _capped(ds, n: int, cap: Optional[int]):
    """At most `cap` tiles spread evenly over the split (every k-th tile), no buffering."""
    if cap is None or n <= cap:
        return ds, n
    k = math.ceil(n / cap)
    return ds.shard(k, 0), math.ceil(n / k)


def check_splits(prepared_dir) -> dict:
    """Tiles per split; a ConfigError when train or val has none (training needs both)."""
    from kerasxai.data.pipeline import tile_counts

    counts = tile_counts(prepared_dir)
    for split in ("train", "val"):
        if counts[split] == 0:
            raise ConfigError(f"the '{split}' split of '{prepared_dir}' has no tiles: use more images "
                              "(data.max_images) or other data.split ratios")
    return counts


def epoch_steps(cfg: Config, prepared_dir, batch_size: int, train_tiles: Optional[int] = None) -> int:
    """Batches an epoch: one pass over the training tiles, capped by ``train.steps_per_epoch``
    (`train_tiles`: the count when the caller has it, else read from the manifest)."""
    from kerasxai.data.pipeline import count_tiles

    n = count_tiles(prepared_dir, "train") if train_tiles is None else train_tiles
    full = max(1, math.ceil(n / batch_size))
    return min(full, cfg.train.steps_per_epoch) if cfg.train.steps_per_epoch else full


def make_datasets(cfg: Config, prepared_dir, output_names, batch_size: Optional[int] = None, teacher_model=None) -> Data:
    """Train / val / test ``tf.data`` pipelines with Keras targets for `output_names`."""
    import tensorflow as tf

    from kerasxai.data.pipeline import load_split, open_split, training_dataset

    bs = int(batch_size or cfg.train.batch_size)
    t = cfg.train
    counts = check_splits(prepared_dir)
    with_targets = lambda ds: ds.map(  # noqa: E731
        lambda x, y: (x, targets(y, output_names)), num_parallel_calls=tf.data.AUTOTUNE)

    train_src = open_split(prepared_dir, "train")
    if teacher_model is not None:
        train_src = _with_teacher_labels(train_src.dataset(), teacher_model, bs)
        train = training_dataset(train_src, bs, flips=t.flips, shuffle=True, seed=t.seed, balance=t.balance,
                                 augment=t.augment)
        train = train.map(lambda x, y: (x, targets(y[:, :1], output_names, teacher=y[:, 1:])))
    else:
        train = with_targets(training_dataset(train_src, bs, flips=t.flips, shuffle=True, seed=t.seed,
                                              balance=t.balance, augment=t.augment))
    steps = epoch_steps(cfg, prepared_dir, bs, train_tiles=counts["train"])
    train = train.repeat().prefetch(tf.data.AUTOTUNE)

    val_src, n_val = _capped(load_split(prepared_dir, "val"), counts["val"], t.max_val_tiles)
    # a known length lets Keras size the validation loop (no "ran out of data" on epoch 1)
    val = with_targets(training_dataset(val_src, bs, flips=False, shuffle=False)).apply(
        tf.data.experimental.assert_cardinality(math.ceil(n_val / bs)))
    if n_val * cfg.data.tile.size ** 2 * 3 * 4 <= 256 * 2**20:  # small enough: decode once
        val = val.cache()
    test, n_test = None, 0
    if counts["test"] > 0 and t.max_test_tiles != 0:
        test_src, n_test = _capped(load_split(prepared_dir, "test"), counts["test"], t.max_test_tiles)
        test = with_targets(training_dataset(test_src, bs, flips=False, shuffle=False)).apply(
            tf.data.experimental.assert_cardinality(math.ceil(n_test / bs)))
    counts = dict(counts, val_used=n_val, test_used=n_test)
    return Data(Path(prepared_dir), train, val, test, steps, counts)


def _with_teacher_labels(ds, teacher_model, batch_size: int):
    """Each tile with a ``teacher`` field: the teacher's hard prediction (0 or 1) beside its label.

    The teacher runs once over the (unflipped) training tiles. The label stays the tile's own,
    so balancing draws defective tiles by it, whatever the teacher says of them.
    """
    import tensorflow as tf

    images = ds.map(lambda e: e["image"]).batch(batch_size)
    preds = []
    for batch in images.as_numpy_iterator():
        out = teacher_model.predict_on_batch(batch.astype("float32"))
        preds.append(np.asarray(out["score"] if isinstance(out, dict) else out).reshape(-1))
    hard = (np.concatenate(preds) > 0.5).astype("float32") if preds else np.zeros(0, "float32")
    teacher = tf.data.Dataset.from_tensor_slices(hard)
    from kerasxai.data.pipeline import TEACHER

    return tf.data.Dataset.zip((ds, teacher)).map(lambda e, t: {**e, TEACHER: t})
