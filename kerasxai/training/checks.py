"""Training checks OmegaConf's types cannot express, and what a resume may change."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from kerasxai import runs
from kerasxai.config import Config, ConfigError
from kerasxai.models import MODEL_NAMES, is_transformer
from kerasxai.models.registry import imagenet_problem
from kerasxai.models.weights import WeightsError, weights_format
# train.* keys a resume may not change: they change the optimizer's variables, the batches, the
# model's dtype policy or the folder
RESUME_FIXED = ("train.batch_size", "train.optimizer", "train.schedule", "train.precision", "train.runs_dir")


def check_config(cfg: Config) -> None:
    """Training checks OmegaConf's types cannot express; runs before any data or model work."""
    def need(ok, key, what):
        if not ok:
            raise ConfigError(f"key '{key}': {what}")

    t = cfg.train
    need(cfg.model.name in MODEL_NAMES, "model.name",
         f"unknown model '{cfg.model.name}'; choose one of {', '.join(MODEL_NAMES)}")
    need(t.steps_per_epoch is None or t.steps_per_epoch >= 1, "train.steps_per_epoch", "must be >= 1 or null")
    need(t.max_val_tiles is None or t.max_val_tiles >= 1, "train.max_val_tiles", "must be >= 1 or null")
    need(t.max_test_tiles is None or t.max_test_tiles >= 0, "train.max_test_tiles", "must be >= 0 or null")
    need(0 < t.reduce_lr.factor < 1, "train.reduce_lr.factor", f"must be in (0, 1), got {t.reduce_lr.factor}")
    need(t.reduce_lr.patience >= 0, "train.reduce_lr.patience", "must be >= 0")
    need(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    need(0 <= cfg.model.dropout < 1, "model.dropout", "must be in [0, 1)")
    need(t.bn_momentum is None or 0 < t.bn_momentum < 1, "train.bn_momentum", "must be in (0, 1) or null")
    need(t.warmup_epochs >= 0, "train.warmup_epochs", f"must be >= 0, got {t.warmup_epochs}")
    a = t.augment
    if a is not None:
        need(0 <= a.translate < cfg.data.tile.size // 2, "train.augment.translate",
             f"must be in [0, tile size / 2), got {a.translate}")
        need(0 <= a.brightness < 1, "train.augment.brightness", f"must be in [0, 1), got {a.brightness}")
        need(0 <= a.contrast < 1, "train.augment.contrast", f"must be in [0, 1), got {a.contrast}")
    if t.teacher_run:
        try:
            teacher = runs.resolve_run(t.teacher_run)
        except runs.RunError as exc:
            raise ConfigError(f"key 'train.teacher_run': {exc}") from None
        need((teacher / runs.CONFIG).is_file() and (teacher / runs.BEST).is_file(),
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
