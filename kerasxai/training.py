"""Training library: datasets + model + optimizer + callbacks, fit, resume (thesis table 3.1).

`train(cfg)` runs one training into a fresh run folder (see :mod:`kerasxai.runs`);
`resume(run_dir)` continues an interrupted run from its last completed epoch. Ctrl-C stops
training at the next batch end: the epoch in progress is dropped, the completed ones are kept
(:class:`TrainingInterrupted`).
The model keeps its {"score", "heatmap"} outputs during training; only the score gets a
loss (binary cross-entropy) and metrics (accuracy, AUC, precision, recall), so the saved
checkpoints are the full locator, ready for evaluate / predict / export.
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
import shutil
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import keras
import numpy as np

from kerasxai import precision, runs
from kerasxai.config import Config, ConfigError
from kerasxai.models import MODEL_NAMES, is_transformer  # noqa: F401  (is_transformer: used by tuning too)
from kerasxai.models.registry import imagenet_problem
from kerasxai.models.weights import WeightsError, weights_format
from kerasxai.runtime import MODES

MONITORS = {"val_loss": "min", "val_accuracy": "max"}
# train.* keys a resume may not change: they change the optimizer's variables, the batches, the
# model's dtype policy or the folder
RESUME_FIXED = ("train.batch_size", "train.optimizer", "train.schedule", "train.precision", "train.runs_dir")
SCHEDULES = ("cosine", "plateau")
WARMUP_START = 0.01  # the cosine schedule warms up from this share of the peak learning rate
COSINE_FLOOR = 0.01  # ... and decays to this share of it at the last step


# ---------------------------------------------------------------- config checks


def optimizer_name(cfg: Config) -> str:
    """``train.optimizer`` with ``auto`` resolved: Adam for CNNs, AdamW for transformers."""
    if cfg.train.optimizer != "auto":
        return cfg.train.optimizer
    return "adamw" if is_transformer(cfg.model.name) else "adam"


def check_config(cfg: Config) -> None:
    """Training checks OmegaConf's types cannot express; runs before any data or model work."""
    def need(ok, key, what):
        if not ok:
            raise ConfigError(f"key '{key}': {what}")

    t = cfg.train
    need(cfg.model.name in MODEL_NAMES, "model.name",
         f"unknown model '{cfg.model.name}'; choose one of {', '.join(MODEL_NAMES)}")
    need(t.monitor in MONITORS, "train.monitor", f"must be val_loss or val_accuracy, got '{t.monitor}'")
    need(t.data_parallel in MODES, "train.data_parallel",
         f"must be auto, on or off, got '{t.data_parallel}'")
    need(t.steps_per_epoch is None or t.steps_per_epoch >= 1, "train.steps_per_epoch", "must be >= 1 or null")
    need(t.max_val_tiles is None or t.max_val_tiles >= 1, "train.max_val_tiles", "must be >= 1 or null")
    need(t.max_test_tiles is None or t.max_test_tiles >= 0, "train.max_test_tiles", "must be >= 0 or null")
    need(0 < t.reduce_lr.factor < 1, "train.reduce_lr.factor", f"must be in (0, 1), got {t.reduce_lr.factor}")
    need(t.reduce_lr.patience >= 0, "train.reduce_lr.patience", "must be >= 0")
    need(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    need(0 <= cfg.model.dropout < 1, "model.dropout", "must be in [0, 1)")
    need(t.bn_momentum is None or 0 < t.bn_momentum < 1, "train.bn_momentum", "must be in (0, 1) or null")
    need(t.schedule in SCHEDULES, "train.schedule", f"must be {' or '.join(SCHEDULES)}, got '{t.schedule}'")
    need(t.warmup_epochs >= 0, "train.warmup_epochs", f"must be >= 0, got {t.warmup_epochs}")
    a = t.augment
    if a is not None:
        need(0 <= a.translate < cfg.data.tile.size // 2, "train.augment.translate",
             f"must be in [0, tile size / 2), got {a.translate}")
        need(0 <= a.brightness < 1, "train.augment.brightness", f"must be in [0, 1), got {a.brightness}")
        need(0 <= a.contrast < 1, "train.augment.contrast", f"must be in [0, 1), got {a.contrast}")
    if t.teacher_run:
        need(Path(t.teacher_run, runs.CONFIG).is_file() and Path(t.teacher_run, runs.BEST).is_file(),
             "train.teacher_run", f"'{t.teacher_run}' is not a finished run folder (needs config.yaml and best.keras)")
    w = cfg.model.weights
    if w not in (None, "", "imagenet"):
        try:  # exists, and is a kind of file this model reads
            weights_format(w, cfg.model.name, is_transformer(cfg.model.name))
        except WeightsError as exc:
            need(False, "model.weights", str(exc))
    if w == "imagenet" and cfg.model.name in MODEL_NAMES:
        problem = imagenet_problem(cfg.model.name)
        need(problem is None, "model.weights", problem)


def _leaves(d: dict, prefix: str = "") -> dict:
    """``{"a.b.c": value}`` for a nested dict (a None or empty section is one leaf)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _resume_may_change(key: str) -> bool:
    fixed = any(key == f or key.startswith(f + ".") for f in RESUME_FIXED)
    return key.startswith("eval.") or (key.startswith("train.") and not fixed)


def check_resume_overrides(stored: Config, cfg: Config, run_dir) -> None:
    """Refuse a resume whose overrides change the model, the data or the batch size (the saved
    weights and optimizer state would not fit them); train.* keys such as train.epochs and eval.*
    may change."""
    old, new = _leaves(dataclasses.asdict(stored)), _leaves(dataclasses.asdict(cfg))
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key) and not _resume_may_change(key):
            raise ConfigError(
                f"key '{key}': --resume cannot change it ({old.get(key)!r} in {Path(run_dir) / runs.CONFIG}); "
                f"a resume may change eval.* and train.* but {', '.join(RESUME_FIXED)} (e.g. train.epochs): "
                "start a new run with --config for the rest")


# ---------------------------------------------------------------- model and optimizer


def learning_rate_schedule(cfg: Config, peak: float, steps_per_epoch: int):
    """``train.schedule``: the peak as a float (plateau: ReduceLROnPlateau lowers it), or linear
    warm-up over ``train.warmup_epochs`` (at most all but the last step) then cosine decay to
    the end of ``train.epochs``."""
    t = cfg.train
    if t.schedule == "plateau":
        return peak
    total = max(1, int(t.epochs * steps_per_epoch))
    warmup = min(int(round(t.warmup_epochs * steps_per_epoch)), total - 1)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak * WARMUP_START if warmup else peak, decay_steps=total - warmup,
        alpha=COSINE_FLOOR, warmup_target=peak if warmup else None, warmup_steps=warmup)


def current_learning_rate(optimizer) -> float:
    """The learning rate the next step uses (a schedule evaluated at the step count)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def build_optimizer(cfg: Config, learning_rate: Optional[float] = None, steps_per_epoch: int = 1):
    peak = float(learning_rate if learning_rate is not None else cfg.train.learning_rate)
    lr = learning_rate_schedule(cfg, peak, steps_per_epoch)
    name = optimizer_name(cfg)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=cfg.train.weight_decay)
    return keras.optimizers.SGD(learning_rate=lr, momentum=0.9)


def build_model(cfg: Config):
    """The full {score, heatmap} model of ``cfg.model`` for tiles of ``cfg.data.tile.size``."""
    from kerasxai.models import build_from_config

    setup_data_parallel(cfg, cfg.train.batch_size)  # variables must be created under the distribution
    s = cfg.data.tile.size
    with precision.policy(cfg.train.precision):  # train.precision; the global policy is restored after
        return build_from_config(cfg.model, (s, s, 3), training_outputs=is_distilled(cfg.model.name))


def set_bn_momentum(model, momentum: Optional[float]) -> int:
    """Set the momentum of every BatchNormalization layer (nested models included).

    Keras' MobileNetV3 uses 0.999: from random init its inference statistics need thousands of
    steps to settle, so a short run evaluates with near-initial statistics (constant scores).
    ``train.bn_momentum: 0.9`` makes short budgets meaningful. Returns the number of layers set.
    """
    if momentum is None:
        return 0
    n = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)
            n += 1
    return n


def inference_view(model):
    """The {"score", "heatmap"} model sharing `model`'s layers (what best.keras holds).

    For the distilled DeiT, training uses extra head-logit outputs; checkpoints meant for
    evaluation / predict keep the contract's two outputs only.
    """
    keys = output_keys(model)
    if set(keys) <= {"score", "heatmap"}:
        return model
    out = model.output
    return keras.Model(model.input, {k: out[k] for k in ("score", "heatmap") if k in out}, name=model.name)


def score_metrics():
    return [
        keras.metrics.BinaryAccuracy(name="accuracy"),
        keras.metrics.AUC(name="auc"),
        keras.metrics.Precision(name="precision"),
        keras.metrics.Recall(name="recall"),
    ]


def compile_model(model, cfg: Config, learning_rate: Optional[float] = None, distill: bool = False,
                  steps_per_epoch: int = 1):
    """Binary cross-entropy and metrics on "score" only; the heatmap output gets no loss.

    Keras asks a target for every output of a dict model, so the datasets carry a dummy
    target for the other outputs (see :func:`targets`); no loss or metric reads it.
    With `distill`, the DeiT distillation head ("dist_score") also gets a BCE loss.
    """
    if distill:  # DeiT: mean of CE(class head, label) and CE(distillation head, teacher label)
        bce = keras.losses.BinaryCrossentropy(from_logits=True)
        loss = {CLS_OUTPUT: bce, DIST_OUTPUT: keras.losses.BinaryCrossentropy(from_logits=True)}
        weights = {CLS_OUTPUT: 0.5, DIST_OUTPUT: 0.5}
    else:
        loss, weights = {"score": keras.losses.BinaryCrossentropy()}, None
    model.compile(
        optimizer=build_optimizer(cfg, learning_rate, steps_per_epoch),
        loss=loss,
        loss_weights=weights,
        metrics={"score": score_metrics()},
    )
    return model


def output_keys(model) -> list[str]:
    """The keys of a dict-output model (``model.output_names`` holds layer names instead)."""
    out = getattr(model, "output", None)
    if isinstance(out, dict):
        return list(out.keys())
    return ["score"]


def metric_key(name: str, model) -> str:
    """History key of a score metric: Keras prefixes them with the output name for dict models."""
    if name.endswith("loss"):
        return name
    prefix = "val_" if name.startswith("val_") else ""
    base = name[len(prefix):]
    return f"{prefix}score_{base}" if len(output_keys(model)) > 1 else name


# ---------------------------------------------------------------- distillation (DeiT)

CLS_OUTPUT = "cls_logit"  # DeiT-distilled class-token head logit (models: training_outputs=True)
DIST_OUTPUT = "distill_logit"  # DeiT-distilled distillation-token head logit


def is_distilled(name: str) -> bool:
    return "distilled" in name


def has_dist_head(model) -> bool:
    return DIST_OUTPUT in output_keys(model)


# ---------------------------------------------------------------- datasets


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
    from kerasxai.data.pipeline import count_tiles

    counts = {s: count_tiles(prepared_dir, s) for s in ("train", "val", "test")}
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

    from kerasxai.data.pipeline import load_split, training_dataset

    bs = int(batch_size or cfg.train.batch_size)
    t = cfg.train
    counts = check_splits(prepared_dir)
    with_targets = lambda ds: ds.map(  # noqa: E731
        lambda x, y: (x, targets(y, output_names)), num_parallel_calls=tf.data.AUTOTUNE)

    train_src = load_split(prepared_dir, "train")
    if teacher_model is not None:
        train_src = _with_teacher_labels(train_src, teacher_model, bs)
        train = training_dataset(train_src, bs, flips=t.flips, shuffle=True, seed=t.seed, balance=t.balance,
                                 augment=t.augment)
        # labels were packed as label + 2 * teacher_label (see _with_teacher_labels)
        train = train.map(lambda x, y: (x, targets(tf.math.floormod(y, 2.0), output_names,
                                                   teacher=tf.math.floordiv(y, 2.0))))
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
    """Replace each tile's label by ``label + 2 * teacher_label`` (teacher's hard prediction).

    The teacher runs once over the (unflipped) training tiles; packing both labels into the
    one float the pipeline carries keeps `training_dataset` (flips, shuffle, batching) as is.
    """
    import tensorflow as tf

    images = ds.map(lambda e: e["image"]).batch(batch_size)
    preds = []
    for batch in images.as_numpy_iterator():
        out = teacher_model.predict_on_batch(batch.astype("float32"))
        preds.append(np.asarray(out["score"] if isinstance(out, dict) else out).reshape(-1))
    hard = (np.concatenate(preds) > 0.5).astype("float32") if preds else np.zeros(0, "float32")
    teacher = tf.data.Dataset.from_tensor_slices(hard)
    return tf.data.Dataset.zip((ds, teacher)).map(lambda e, t: dict(e, label=e["label"] + 2.0 * t))


# ---------------------------------------------------------------- Ctrl-C


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped training; `run_dir` keeps the epochs completed before it (if any)."""

    def __init__(self, run_dir=None):
        super().__init__(str(run_dir or ""))
        self.run_dir = Path(run_dir) if run_dir else None

    def hint(self) -> str:
        """The one line a CLI prints: how to continue, or that nothing was kept."""
        import shlex

        if self.run_dir is None or not (self.run_dir / runs.CONFIG).is_file():
            return "interrupted before the first epoch completed: nothing was kept"
        return ("interrupted: the completed epochs are kept; continue with "
                f"python -m kerasxai.train --resume {shlex.quote(str(self.run_dir))}")


class SigintStop:
    """SIGINT (Ctrl-C, ``kill -INT``) as a request to stop training at the next batch end.

    Used as a context manager (nested uses share one handler, the outermost restores the
    previous one). While :func:`fit` trains, the first SIGINT only sets `requested` (read by
    :class:`GracefulStop`), even when SIGINT was ignored (a background job of a shell script);
    a second one raises KeyboardInterrupt. Otherwise SIGINT goes to the previous handler.
    Keras may swallow a KeyboardInterrupt raised deep in a training step, hence the flag.
    """

    MESSAGE = b"\nCtrl-C: stopping at the end of this batch (press Ctrl-C again to abort at once)\n"

    def __init__(self):
        self.requested = False
        self.training = False
        self._depth = 0
        self._previous = None

    def _handle(self, signum, frame):
        if not self.training:
            return self._pass_on(signum, frame)
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        os.write(2, self.MESSAGE)  # async-signal-safe, unlike print

    def _pass_on(self, signum, frame):
        """Outside training: what the previous handler does (ignore, call it, KeyboardInterrupt)."""
        if self._previous == signal.SIG_IGN:
            return None
        if callable(self._previous):
            return self._previous(signum, frame)
        raise KeyboardInterrupt

    def __enter__(self):
        if self._depth == 0:
            self.requested = False
            if threading.current_thread() is threading.main_thread():
                self._previous = signal.signal(signal.SIGINT, self._handle)
                self._installed = True
            else:
                self._installed = False
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0 and self._installed:
            previous = self._previous if self._previous is not None else signal.SIG_DFL
            signal.signal(signal.SIGINT, previous)
            self._previous, self._installed = None, False
        return False

    @contextmanager
    def fitting(self):
        """The block in which SIGINT is a stop request (model.fit)."""
        with self:
            was, self.training = self.training, True
            try:
                yield self
            finally:
                self.training = was


SIGINT_STOP = SigintStop()


class GracefulStop(keras.callbacks.Callback):
    """Ends fit once ``stop.requested``: training stops at the batch end, validation at once,
    and the epoch in progress is dropped (on_epoch_begin / on_epoch_end raise
    TrainingInterrupted before later callbacks checkpoint or log it), so it must come first."""

    def __init__(self, stop: SigintStop, run_dir):
        super().__init__()
        self.stop = stop
        self.run_dir = run_dir

    def on_train_batch_end(self, batch, logs=None):
        if self.stop.requested:
            self.model.stop_training = True

    def on_test_batch_end(self, batch, logs=None):
        if self.stop.requested:
            self.model.stop_evaluating = True

    def _drop_epoch(self):
        if self.stop.requested:
            raise TrainingInterrupted(self.run_dir)

    def on_epoch_begin(self, epoch, logs=None):
        self._drop_epoch()

    def on_epoch_end(self, epoch, logs=None):
        self._drop_epoch()


# ---------------------------------------------------------------- callbacks


class EpochClock(keras.callbacks.Callback):
    """Adds ``epoch_seconds`` (wall) and ``epoch_cpu_seconds`` (this process, all threads) to
    the epoch logs, so history.csv records them; on a shared machine the two differ a lot."""

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.perf_counter()
        self._c0 = time.process_time()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = round(time.perf_counter() - self._t0, 3)
            logs["epoch_cpu_seconds"] = round(time.process_time() - self._c0, 3)


class LearningRateLog(keras.callbacks.Callback):
    """Adds ``learning_rate`` (the schedule's value after the epoch) to the epoch logs, as
    ReduceLROnPlateau does for the plateau schedule, so history.csv shows the curve."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_learning_rate(self.model.optimizer)


class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose wait / best / cooldown survive a resume (kept in state.json)."""

    def __init__(self, *args, initial_state: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial_state = initial_state or {}

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for key in ("wait", "best", "cooldown_counter"):
            if self.initial_state.get(key) is not None:
                setattr(self, key, self.initial_state[key])

    def state(self) -> dict:
        best = None if self.best is None else float(self.best)
        return {"wait": int(self.wait), "best": best, "cooldown_counter": int(self.cooldown_counter)}


class RunCheckpoint(keras.callbacks.Callback):
    """After every epoch: ``last.keras`` (with optimizer state), ``best.keras`` when the
    monitored value improved, then ``state.json`` — each written atomically, in that order,
    so an interruption at any point leaves a readable checkpoint and a consistent state.
    Between epochs ``train_seconds`` in ``state.json`` is brought up to date every
    `heartbeat_s`, so the time before a kill counts in the resumed run's ``wall_time_s``."""

    HEARTBEAT_S = 30.0

    def __init__(self, run_dir, monitor_key: str, mode: str, state: dict, reduce_lr=None, started=None,
                 heartbeat_s: float = HEARTBEAT_S):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.monitor_key = monitor_key
        self.mode = mode
        self.state = dict(state)
        self.reduce_lr = reduce_lr
        self.base_seconds = float(state.get("train_seconds", 0.0))
        self.started = time.perf_counter() if started is None else started
        self.heartbeat_s = heartbeat_s
        self._beat = time.perf_counter()

    def _write_state(self):
        """``state.json`` with ``train_seconds`` brought up to date."""
        self.state["train_seconds"] = self.base_seconds + (time.perf_counter() - self.started)
        runs.write_state(self.run_dir, self.state)
        self._beat = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self._beat >= self.heartbeat_s:
            self._write_state()

    def _better(self, value, best) -> bool:
        if best is None or not np.isfinite(best):
            return bool(np.isfinite(value))
        return value < best if self.mode == "min" else value > best

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor_key)
        runs.save_model_atomic(self.model, self.run_dir / runs.LAST)
        best = lambda: precision.float32_copy(inference_view(self.model))  # noqa: E731  (scores in float32)
        if value is not None and self._better(float(value), self.state.get("best")):
            runs.save_model_atomic(best(), self.run_dir / runs.BEST)
            self.state.update(best=float(value), best_epoch=epoch)
        elif not (self.run_dir / runs.BEST).is_file():  # a NaN first epoch: still leave a model
            runs.save_model_atomic(best(), self.run_dir / runs.BEST)
            self.state.setdefault("best_epoch", epoch)
        self.state["next_epoch"] = epoch + 1
        for key in ("epoch_seconds", "epoch_cpu_seconds"):
            self.state[key] = list(self.state.get(key, [])) + [logs.get(key)]
        if self.reduce_lr is not None:
            self.state["reduce_lr"] = self.reduce_lr.state()
        self._write_state()  # every epoch too, so a killed run still tells how long it trained


def _trim_history(path: Path, next_epoch: int) -> None:
    """Keep only rows of completed epochs (< next_epoch) so a resume never repeats one."""
    if not path.is_file():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    keep = [r for r in body if r and r[0].isdigit() and int(r[0]) < next_epoch]
    if len(keep) != len(body):
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(keep)
        runs.atomic_write_text(path, buf.getvalue())


# ---------------------------------------------------------------- distribution


def setup_data_parallel(cfg: Config, batch_size: int) -> int:
    """Spread each batch over all local devices (keras.distribution.DataParallel, JAX).

    ``train.data_parallel``: ``auto`` (on when the backend is JAX and there is more than one
    device), ``on`` or ``off``. Returns the number of devices used.
    """
    mode = cfg.train.data_parallel
    if mode == "off" or keras.backend.backend() != "jax":
        if mode == "on" and keras.backend.backend() != "jax":
            raise ConfigError("key 'train.data_parallel': 'on' needs KERAS_BACKEND=jax")
        return 1
    devices = keras.distribution.list_devices()
    if len(devices) < 2:
        if mode == "on":
            print("train.data_parallel=on but only one device is visible: training on one device")
        return 1
    if batch_size % len(devices):
        raise ConfigError(f"key 'train.batch_size': {batch_size} is not divisible by the {len(devices)} "
                          "devices of data parallel training (or set train.data_parallel=off)")
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return len(devices)


# ---------------------------------------------------------------- fit


def _load_teacher(cfg: Config, model):
    if not has_dist_head(model):
        if cfg.train.teacher_run:
            print(f"train.teacher_run is set but {cfg.model.name} has no distillation head: ignored")
        return None
    if not cfg.train.teacher_run:
        print(f"{cfg.model.name}: no train.teacher_run given, so the distillation head is trained "
              "on the labels (both heads see the same targets)")
        return None
    tcfg, teacher = runs.load_run(cfg.train.teacher_run, "best")
    if tcfg.data.tile.size != cfg.data.tile.size:
        raise ConfigError(f"key 'train.teacher_run': the teacher was trained on {tcfg.data.tile.size} px tiles, "
                          f"this run uses {cfg.data.tile.size} px (data.tile.size): use a teacher of the same tile size")
    print(f"{cfg.model.name}: hard-label distillation from the teacher run '{cfg.train.teacher_run}'")
    return teacher


def _heatmap_images(cfg: Config, run_dir: Path, prepared) -> list:
    """The TensorBoard heatmap callback (``train.tensorboard_images`` tiles; none when 0)."""
    if not cfg.train.tensorboard_images:
        return []
    from kerasxai.tensorboard_images import LOG_SUBDIR, HeatmapImages

    return [HeatmapImages(run_dir / runs.TENSORBOARD / LOG_SUBDIR, prepared, cfg.train.tensorboard_images,
                          cfg.eval.pixel_threshold)]


def fit(cfg: Config, run_dir, *, model=None, resume: bool = False, batch_size: Optional[int] = None,
        learning_rate: Optional[float] = None, callbacks=(), verbose=1, progress: bool = True,
        prepared=None) -> dict:
    """Train `cfg` into the (existing) `run_dir`; returns the summary dict (also summary.json).

    With `resume`, weights and optimizer state come from ``last.keras`` and training starts at
    the epoch after the last completed one. `model` may be a compiled model to train (the
    tuner passes the one it built); `batch_size` / `learning_rate` override ``cfg.train``;
    `prepared` is the prepared dataset folder when the caller already made it. Ctrl-C raises
    :class:`TrainingInterrupted` after the last completed epoch was saved.
    """
    from kerasxai.data.pipeline import prepare_dataset

    run_dir = Path(run_dir)
    check_config(cfg)
    t = cfg.train
    bs = int(batch_size or t.batch_size)
    if learning_rate is not None:
        t.learning_rate = float(learning_rate)
    keras.utils.set_random_seed(t.seed)
    n_devices = setup_data_parallel(cfg, bs)

    prepared = prepared or prepare_dataset(cfg, progress=progress)
    state = runs.read_state(run_dir) if resume else None
    state = state or {"next_epoch": 0, "best": None, "train_seconds": 0.0}
    initial_epoch = int(state["next_epoch"])
    if model is None:
        model = build_model(cfg)
    teacher = _load_teacher(cfg, model)
    if set_bn_momentum(model, t.bn_momentum):
        print(f"BatchNormalization momentum set to {t.bn_momentum} (train.bn_momentum)")
    steps = epoch_steps(cfg, prepared, bs)
    if getattr(model, "optimizer", None) is None or not model.compiled:
        compile_model(model, cfg, learning_rate, distill=has_dist_head(model), steps_per_epoch=steps)
    if resume and initial_epoch > 0:
        model.optimizer.build(model.trainable_variables)
        model.load_weights(run_dir / runs.LAST)  # weights and optimizer state (step count included)
        print(f"resuming '{run_dir}' at epoch {initial_epoch + 1}/{t.epochs} "
              f"(learning rate {current_learning_rate(model.optimizer):.3g})")

    data = make_datasets(cfg, prepared, output_keys(model), bs, teacher_model=teacher)
    monitor = metric_key(t.monitor, model)
    mode = MONITORS[t.monitor]
    reduce_lr = None
    if t.schedule == "plateau":
        reduce_lr = ResumableReduceLROnPlateau(
            monitor="val_loss", factor=t.reduce_lr.factor, patience=t.reduce_lr.patience,
            min_lr=t.reduce_lr.min_lr, verbose=1, initial_state=state.get("reduce_lr"))
    history_path = run_dir / runs.HISTORY
    _trim_history(history_path, initial_epoch)
    t0 = time.perf_counter()
    checkpoint = RunCheckpoint(run_dir, monitor, mode, state, reduce_lr, started=t0)
    cbs = [
        GracefulStop(SIGINT_STOP, run_dir),  # first: an interrupted epoch reaches no other callback
        EpochClock(),
        *([reduce_lr] if reduce_lr is not None else [LearningRateLog()]),
        keras.callbacks.CSVLogger(str(history_path), append=initial_epoch > 0),
        keras.callbacks.TensorBoard(str(run_dir / runs.TENSORBOARD), write_graph=False),
        checkpoint,
        *_heatmap_images(cfg, run_dir, prepared),
        *callbacks,
    ]
    try:
        with SIGINT_STOP.fitting() as stop:
            if initial_epoch < t.epochs:
                model.fit(data.train, validation_data=data.val, epochs=t.epochs, initial_epoch=initial_epoch,
                          steps_per_epoch=data.steps_per_epoch, callbacks=cbs, verbose=verbose, shuffle=False)
            if stop.requested:  # Ctrl-C after the last epoch's checks: stop before evaluating
                raise TrainingInterrupted(run_dir)
    finally:
        st = runs.read_state(run_dir) or checkpoint.state
        st["train_seconds"] = float(state.get("train_seconds", 0.0)) + (time.perf_counter() - t0)
        runs.write_state(run_dir, st)
    return finish(cfg, run_dir, model, data, st, batch_size=bs, n_devices=n_devices)


def finish(cfg: Config, run_dir, model, data: Data, state: dict, batch_size: int, n_devices: int = 1) -> dict:
    """Evaluate the best checkpoint on val and test, write summary.json, return it."""
    run_dir = Path(run_dir)
    inference_view(model).load_weights(run_dir / runs.BEST)  # same structure as saved; shares weights
    val = model.evaluate(data.val, return_dict=True, verbose=0)
    test = model.evaluate(data.test, return_dict=True, verbose=0) if data.test is not None else {}
    get = lambda d, k: (float(d[metric_key(k, model)]) if metric_key(k, model) in d else None)  # noqa: E731
    def per_epoch(key):  # mean over epochs; the first one (compilation) left out when there are more
        v = [x for x in state.get(key, []) if x is not None]
        v = v[1:] if len(v) > 1 else v
        return (sum(v) / len(v)) if v else None

    summary = {
        "name": cfg.name,
        "model": cfg.model.name,
        "monitor": cfg.train.monitor,
        "best_epoch": state.get("best_epoch"),
        "epochs": int(state.get("next_epoch", 0)),
        "val_loss": get(val, "loss"),
        "val_accuracy": get(val, "accuracy"),
        "val_auc": get(val, "auc"),
        "test_loss": get(test, "loss"),
        "test_accuracy": get(test, "accuracy"),
        "test_auc": get(test, "auc"),
        "test_precision": get(test, "precision"),
        "test_recall": get(test, "recall"),
        "learning_rate": cfg.train.learning_rate,
        "batch_size": batch_size,
        "optimizer": optimizer_name(cfg),
        "steps_per_epoch": data.steps_per_epoch,
        "tiles": data.counts,
        "seconds_per_epoch": per_epoch("epoch_seconds"),
        "cpu_seconds_per_epoch": per_epoch("epoch_cpu_seconds"),
        "first_epoch_seconds": (state.get("epoch_seconds") or [None])[0],
        "wall_time_s": float(state.get("train_seconds", 0.0)),
        "backend": keras.backend.backend(),
        "devices": n_devices,
        "versions": runs.versions(),
        "prepared_dir": str(data.prepared_dir),
        "run_dir": str(run_dir),
    }
    runs.atomic_write_json(run_dir / runs.SUMMARY, summary)
    return summary


def prepare_checked(cfg: Config, progress: bool = True) -> Path:
    """The prepared dataset of `cfg`, with train and val tiles (ConfigError otherwise)."""
    from kerasxai.data.pipeline import prepare_dataset

    prepared = prepare_dataset(cfg, progress=progress)
    check_splits(prepared)
    return prepared


@contextmanager
def _interrupts_name(run_dir: Path):
    """A KeyboardInterrupt leaving the block becomes TrainingInterrupted(run_dir), so the CLI
    can say how to continue."""
    try:
        yield
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt as exc:
        raise TrainingInterrupted(run_dir) from exc


def _completed_epochs(run_dir: Path) -> int:
    try:
        return int((runs.read_state(run_dir) or {}).get("next_epoch", 0))
    except runs.RunError:
        return 0


@contextmanager
def _removed_if_unstarted(run_dir: Path, created: bool):
    """A failure before the first epoch completed removes a run folder this call created, so
    failed starts leave no empty run folders behind."""
    try:
        yield
    except BaseException:
        if created and not _completed_epochs(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
            print(f"removed the run folder {run_dir}: no epoch completed")
        raise


def _report_removed(paths) -> None:
    if paths:
        print(f"removed {len(paths)} temporary file(s) left by interrupted runs: "
              + ", ".join(str(p) for p in paths))


def train(cfg: Config, *, model=None, batch_size: Optional[int] = None, learning_rate: Optional[float] = None,
          callbacks=(), verbose=1, run_dir=None, progress: bool = True) -> tuple[Path, dict]:
    """One training run into a new run folder: ``(run_dir, summary)``.

    Config, data (both splits non-empty) and weights file are checked before the folder is
    made; the folder is locked while training (:func:`kerasxai.runs.lock_run`).
    """
    check_config(cfg)
    if batch_size is not None:
        cfg.train.batch_size = int(batch_size)
    if learning_rate is not None:
        cfg.train.learning_rate = float(learning_rate)
    prepared = prepare_checked(cfg, progress=progress)
    created = run_dir is None or not Path(run_dir).exists()
    run_dir = Path(run_dir) if run_dir is not None else runs.new_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    with runs.lock_run(run_dir), _interrupts_name(run_dir), _removed_if_unstarted(run_dir, created):
        runs.write_config(run_dir, cfg)
        runs.write_state(run_dir, {"next_epoch": 0, "best": None, "train_seconds": 0.0})
        print(f"run folder: {run_dir}")
        _report_removed(runs.sweep_runs_dir(run_dir.parent, keep=run_dir))
        summary = fit(cfg, run_dir, model=model, callbacks=callbacks, verbose=verbose, progress=progress,
                      prepared=prepared)
    return run_dir, summary


def resume(run_dir, overrides=(), *, callbacks=(), verbose=1, progress: bool = True) -> tuple[Path, dict]:
    """Continue an interrupted run in place (``--resume``): completed epochs are not repeated.

    Overrides that change the model, the data or the batch size are refused before anything is
    written (:func:`check_resume_overrides`); the folder is locked while training.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise runs.RunError(f"'{run_dir}' is not a run folder: pass a folder written by python -m kerasxai.train")
    stored = runs.run_config(run_dir)
    cfg = runs.run_config(run_dir, overrides)
    check_resume_overrides(stored, cfg, run_dir)
    check_config(cfg)
    with runs.lock_run(run_dir), _interrupts_name(run_dir):
        state = runs.read_state(run_dir)
        _report_removed(runs.remove_temp_files(run_dir))  # ours alone: the folder is locked
        if state and state.get("next_epoch", 0) > 0 and not (run_dir / runs.LAST).is_file():
            raise runs.RunError(f"'{run_dir / runs.LAST}' is missing: this run cannot be resumed")
        if overrides:
            runs.write_config(run_dir, cfg)
        print(f"run folder: {run_dir}")
        summary = fit(cfg, run_dir, resume=True, callbacks=callbacks, verbose=verbose, progress=progress)
    return run_dir, summary
