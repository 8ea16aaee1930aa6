"""Typed configuration: dataclasses + YAML files + ``key=value`` overrides.

OmegaConf's structured configs do the type checking: an unknown key, a value of the
wrong type or a missing required value raises :class:`ConfigError` naming the key. A choice
key is a ``str`` field declared with :func:`choice`: :func:`validate` parses it into its enum
(:mod:`kerasxai.choices`), whose members compare equal to, and are stored as, plain strings.
One schema serves every CLI (prepare, train, tune, evaluate, predict, export).
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from kerasxai.choices import (
    Choice, Fusion, Metric, Optimizer, Pooling, Precision, Schedule, Split, Switch, check_discard_ratio,
)


MAX_TENSORBOARD_IMAGES = 64  # tiles rendered per epoch stay a small share of an epoch


class ConfigError(ValueError):
    """A configuration problem; the message names the key or file and what to do."""


def choice(default: Choice):
    """A field holding one member of ``type(default)`` (parsed from a string by `validate`)."""
    return field(default=default, metadata={"choice": type(default)})


def choices(*defaults: Choice):
    """A list field whose items are members of the type of `defaults` (parsed by `validate`)."""
    return field(default_factory=lambda: list(defaults), metadata={"choice": type(defaults[0])})


@dataclass
class TileConfig:
    size: int = 224  # square tile side in pixels (also the model input side)
    overlap: int = 2  # pixels shared by neighbouring tiles
    defect_fraction: float = 0.01  # a tile is defective when defect area > this share of it
    defect_pixels: Optional[int] = None  # ... or > this many pixels (overrides the fraction)


@dataclass
class SplitConfig:
    train: float = 0.7
    val: float = 0.1
    test: float = 0.2
    seed: int = 42
    # groups (DeepPCB: pair ids) kept out of train and val, e.g. the boards a demo shows;
    # the split itself is computed with them, so the test part stays the same
    holdout: list[str] = field(default_factory=list)


@dataclass
class DataConfig:
    reader: str = MISSING  # voc_xml | coco | labelme | deeppcb | mask_dir | synthetic
    root: str = ""  # dataset folder (unused by `synthetic`)
    options: dict[str, Any] = field(default_factory=dict)  # reader-specific keyword arguments
    max_images: Optional[int] = None  # use only the first N source samples (quick runs)
    cache_dir: str = "data_cache"  # where `prepare` writes tiled datasets
    mask_threshold: int = 127  # mask images: pixel > threshold is defect (0/1 masks: use 0)
    tile: TileConfig = field(default_factory=TileConfig)
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class ModelConfig:
    name: str = MISSING  # a name of kerasxai.models.MODEL_NAMES
    weights: Optional[str] = None  # null | imagenet | path/to/file.weights.h5
    fusion: str = choice(Fusion.max)  # transformers: head fusion mean | max | min
    discard_ratio: float = 0.9  # transformers: share of smallest attention entries dropped
    fast_depthwise: str = choice(Switch.auto)  # CNNs: auto (on for JAX on CPU) | on | off
    fast_pointwise: str = choice(Switch.auto)  # CNNs' 1x1 convolutions as matrix products: as above
    # inference batches split over the CPU cores: auto (JAX on CPU) | on | off; read by
    # predict / evaluate / localize (kerasxai.models.host_parallel), not part of the model
    host_parallel: str = choice(Switch.auto)
    dropout: float = 0.0  # dropout before the score head
    # CNNs: how the CAM becomes the score: avg (CAM paper) | lse (log-sum-exp, a smooth max)
    pooling: str = choice(Pooling.avg)


@dataclass
class ReduceLRConfig:
    factor: float = 0.1
    patience: int = 3
    min_lr: float = 1e-7


@dataclass
class AugmentConfig:
    """Label-preserving augmentation of training tiles (kerasxai.data.pipeline.augment_image)."""

    rot90: bool = True  # a random multiple of 90 degrees
    translate: int = 8  # shift by up to this many pixels (reflected borders); 0: off
    brightness: float = 0.1  # add up to +-this share of full scale; 0: off
    contrast: float = 0.1  # scale around the tile mean by 1 +- this; 0: off


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    optimizer: str = choice(Optimizer.auto)  # auto (Adam for CNNs, AdamW for transformers) | adam | adamw | sgd
    weight_decay: float = 0.05  # AdamW only
    flips: bool = True  # random horizontal and vertical flips
    augment: Optional[AugmentConfig] = field(default_factory=AugmentConfig)  # null: flips only
    # cosine (linear warm-up, cosine decay over train.epochs) | plateau (train.reduce_lr)
    schedule: str = choice(Schedule.cosine)
    warmup_epochs: float = 1.0  # cosine: epochs of linear warm-up from 1% of train.learning_rate
    reduce_lr: ReduceLRConfig = field(default_factory=ReduceLRConfig)  # plateau schedule only
    steps_per_epoch: Optional[int] = None  # cap on batches per epoch (short budgets)
    max_val_tiles: Optional[int] = None  # cap on validation tiles (short budgets)
    max_test_tiles: Optional[int] = None  # cap on test tiles in summary.json (0: skip the test split)
    monitor: str = choice(Metric.val_loss)  # best.keras is the epoch with the best val_loss (min) | val_accuracy (max)
    # keras.distribution.DataParallel over local devices: auto (JAX, >1 device) | on | off
    data_parallel: str = choice(Switch.auto)
    # split each train batch over the CPU cores, parts run concurrently: auto (JAX on CPU) | on | off
    host_parallel: str = choice(Switch.auto)
    precision: str = choice(Precision.float32)  # dtype policy of the model: float32 | mixed_bfloat16 (see README)
    bn_momentum: Optional[float] = 0.9  # BatchNormalization momentum (null: the model's own, 0.999 for MobileNetV3)
    balance: bool = True  # oversample defective tiles to 50% in training batches
    teacher_run: Optional[str] = None  # DeiT-distilled: run folder (or shipped model name) of the teacher
    tensorboard_images: int = 8  # validation tiles drawn with their maps in TensorBoard every epoch; 0: off
    runs_dir: str = "runs"
    seed: int = 42


@dataclass
class TuneConfig:
    trials: int = 10
    lr_min: Optional[float] = None  # null: 1e-4 for CNNs, 1e-5 for transformers
    lr_max: Optional[float] = None  # null: 1e-2 for CNNs, 1e-4 for transformers
    batch_sizes: list[int] = field(default_factory=lambda: [32, 64])
    epochs: Optional[int] = None  # null: train.epochs
    objective: str = choice(Metric.val_accuracy)
    dir: str = "tuning"


@dataclass
class EvalConfig:
    split: str = choice(Split.test)
    score_threshold: float = 0.5  # a tile's map counts only when its score is above this
    pixel_threshold: int = 127  # on the 0..255 min-max normalized map
    batch_size: int = 32
    max_tiles: Optional[int] = None
    fusions: list[str] = choices(*Fusion)
    discard_ratios: list[float] = field(
        default_factory=lambda: [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    )
    baselines: bool = True  # also score Grad-CAM / Grad-CAM++ / gradient rollout / trivial maps
    overlay_tiles: int = 6  # tiles shown in the overlay figure


@dataclass
class Config:
    name: str = "run"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _wrap(exc: OmegaConfBaseException, where: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or getattr(exc, "key", None)
    msg = (getattr(exc, "msg", None) or str(exc)).splitlines()[0]
    named = f"key '{key}'" if key else "a key"
    return ConfigError(f"{where}: {named}: {msg}. See the keys of kerasxai.config.Config (README, 'Config keys').")


def _load_mapping(path: Path) -> DictConfig:
    """The YAML file at `path`, which must hold a mapping of keys: a list or scalar would fail
    deep inside the merge (OmegaConf even reads a lone word as a key)."""
    import yaml

    def invalid(exc: Exception) -> ConfigError:
        return ConfigError(f"config file '{path}' is not valid YAML: {' '.join(str(exc).split())}")

    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise invalid(exc) from exc
    if doc is not None and not isinstance(doc, dict):
        kind = "list" if isinstance(doc, list) else f"scalar ({type(doc).__name__})"
        raise ConfigError(f"config file '{path}': the top level is a {kind}, not a mapping of keys: "
                          "write it as 'data: ...', 'model: ...' (see configs/).")
    try:
        return OmegaConf.load(path)
    except Exception as exc:  # what OmegaConf's stricter loader rejects (duplicate keys, ...)
        raise invalid(exc) from exc


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config, apply ``key=value`` overrides, validate types and required keys."""
    schema = OmegaConf.structured(Config)
    layers = [schema]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file '{path}' not found: pass an existing YAML file (see configs/).")
        layers.append(_load_mapping(path))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. data.tile.size=160).")
    try:
        merged = OmegaConf.merge(*layers)
    except OmegaConfBaseException as exc:
        raise _wrap(exc, str(path or "config")) from exc
    try:
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError(
                f"{path or 'config'}: required key '{missing[0]}' has no value: set it in the YAML file "
                f"or pass {missing[0]}=... on the command line."
            )
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _wrap(exc, "command-line override" if overrides else str(path or "config")) from exc
    validate(cfg)
    return cfg


@contextmanager
def _as_config_error():
    """A shared check's ValueError (kerasxai.choices) as a ConfigError."""
    try:
        yield
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _choice_fields(node, prefix: str = ""):
    """(key, enum, owner, field name) of every :func:`choice` field of the dataclass `node`
    and of the dataclasses nested in it."""
    for f in dataclasses.fields(node):
        key, value = prefix + f.name, getattr(node, f.name)
        if "choice" in f.metadata:
            yield key, f.metadata["choice"], node, f.name
        elif dataclasses.is_dataclass(value):
            yield from _choice_fields(value, key + ".")


def choice_keys() -> dict[str, type[Choice]]:
    """``{"model.fusion": Fusion, ...}``: every choice key of the schema."""
    return {key: kind for key, kind, _, _ in _choice_fields(Config())}


def parse_choices(cfg: Config) -> None:
    """Parse every choice key of `cfg` into its enum, in place; a value outside the choices
    raises ConfigError naming the key and the allowed values."""
    for key, kind, owner, name in _choice_fields(cfg):
        value = getattr(owner, name)
        with _as_config_error():
            value = [kind.parse(v, key) for v in value] if isinstance(value, list) else kind.parse(value, key)
        setattr(owner, name, value)


def validate(cfg: Config) -> None:
    """Choices (:func:`parse_choices`) and the checks OmegaConf's types cannot express (ranges)."""
    parse_choices(cfg)

    def need(ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ConfigError(f"key '{key}': {what}")

    def at_least(value, low: int, key: str, optional: bool = False) -> None:
        if value is None and optional:
            return
        need(value >= low, key, f"must be >= {low}{' or null' if optional else ''}, got {value}")

    d = cfg.data
    at_least(d.max_images, 1, "data.max_images", optional=True)
    need(0 <= d.mask_threshold <= 255, "data.mask_threshold",
         f"must be in [0, 255] (mask pixels > it are defect; 0/1 masks: 0), got {d.mask_threshold}")
    t = d.tile
    need(t.size >= 16, "data.tile.size", f"must be >= 16, got {t.size}")
    need(0 <= t.overlap < t.size, "data.tile.overlap", f"must be in [0, tile size), got {t.overlap}")
    need(0 <= t.defect_fraction < 1, "data.tile.defect_fraction", f"must be in [0, 1), got {t.defect_fraction}")
    at_least(t.defect_pixels, 0, "data.tile.defect_pixels", optional=True)
    s = cfg.data.split
    for k in ("train", "val", "test"):
        need(0 <= getattr(s, k) <= 1, f"data.split.{k}", "must be in [0, 1]")
    need(abs(s.train + s.val + s.test - 1) < 1e-6, "data.split", "train + val + test must sum to 1")
    with _as_config_error():
        check_discard_ratio(cfg.model.discard_ratio, "model.discard_ratio")
        for r in cfg.eval.discard_ratios:
            check_discard_ratio(r, "eval.discard_ratios")
    need(cfg.train.epochs >= 1, "train.epochs", "must be >= 1")
    need(cfg.train.batch_size >= 1, "train.batch_size", "must be >= 1")
    need(cfg.train.learning_rate > 0, "train.learning_rate", "must be > 0")
    need(0 <= cfg.train.tensorboard_images <= MAX_TENSORBOARD_IMAGES, "train.tensorboard_images",
         f"must be in [0, {MAX_TENSORBOARD_IMAGES}] (0 switches the images off), got {cfg.train.tensorboard_images}")
    at_least(cfg.tune.trials, 1, "tune.trials")
    e = cfg.eval
    need(0 <= e.score_threshold <= 1, "eval.score_threshold", f"must be in [0, 1], got {e.score_threshold}")
    need(0 <= e.pixel_threshold <= 255, "eval.pixel_threshold", f"must be in [0, 255], got {e.pixel_threshold}")
    at_least(e.batch_size, 1, "eval.batch_size")
    at_least(e.max_tiles, 1, "eval.max_tiles", optional=True)
    at_least(e.overlay_tiles, 0, "eval.overlay_tiles")


def with_data(cfg: Config, data_file: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """`cfg` scored on other data: the ``data:`` section of `data_file` (replacing the run's)
    and/or ``data.*`` overrides, the whole dataset as the test split (unless the overrides set
    ``data.split.*``), no held-out groups. For evaluating a trained model on new folders."""
    bad = [o for o in overrides if not o.startswith("data.")]
    if bad:
        raise ConfigError(f"override '{bad[0]}' is not a data.* key")
    merged = OmegaConf.structured(cfg)
    try:
        if data_file is not None:
            path = Path(data_file)
            if not path.is_file():
                raise ConfigError(f"data config '{path}' not found: pass a YAML file with a data: section")
            loaded = OmegaConf.load(path)
            if not isinstance(loaded, DictConfig) or "data" not in loaded:
                raise ConfigError(f"data config '{path}' has no top-level 'data:' section (see configs/)")
            merged.data = OmegaConf.merge(OmegaConf.structured(DataConfig), loaded.data)
        if not any(o.startswith("data.split.") for o in overrides):
            merged.data.split = OmegaConf.structured(SplitConfig(train=0.0, val=0.0, test=1.0))
        if overrides:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
        out = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _wrap(exc, str(data_file or "data override")) from exc
    validate(out)
    return out


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML (what a run directory stores)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def add_config_args(parser) -> None:
    """The ``--config FILE`` and trailing ``key=value`` arguments every CLI shares."""
    parser.add_argument("--config", required=True, help="YAML config file (see configs/)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=2")
