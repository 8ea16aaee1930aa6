"""Optimizer, learning-rate schedule and compilation of the model to train."""

from __future__ import annotations

from typing import Optional

import keras

from kerasxai.config import Config
from kerasxai.models import is_transformer
from kerasxai.models.contract import CLS_OUTPUT, DIST_OUTPUT

from . import host_parallel

WARMUP_START = 0.01  # the cosine schedule warms up from this share of the peak learning rate
COSINE_FLOOR = 0.01  # ... and decays to this share of it at the last step


def optimizer_name(cfg: Config) -> str:
    """``train.optimizer`` with ``auto`` resolved: Adam for CNNs, AdamW for transformers."""
    if cfg.train.optimizer != "auto":
        return cfg.train.optimizer
    return "adamw" if is_transformer(cfg.model.name) else "adam"


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
    target for the other outputs (see :func:`kerasxai.training.datasets.targets`); no loss or
    metric reads it. With `distill` (DeiT), the loss is on the two head logits instead (CLS_OUTPUT,
    DIST_OUTPUT); the metrics stay on "score".
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
    host_parallel.install(model, host_parallel.resolve_parts(cfg))
    return model
