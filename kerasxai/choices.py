"""The values config keys allow, where the models check them too: one enum per choice key
(a member is its string, see :class:`kerasxai.runtime.choices.Choice`) and the discard-ratio
range. Pure Python, so :mod:`kerasxai.config` and :mod:`kerasxai.models` both import it.
"""

from __future__ import annotations

from kerasxai.runtime.choices import Choice, Switch

__all__ = ["Choice", "Fusion", "Metric", "Optimizer", "Pooling", "Precision", "Schedule", "Split", "Switch",
           "check_discard_ratio"]


class Fusion(Choice):
    """How attention rollout fuses the heads of a block (model.fusion, eval.fusions)."""

    mean = "mean"
    max = "max"
    min = "min"


class Pooling(Choice):
    """How the CAM head turns the map into the score (model.pooling)."""

    avg = "avg"
    lse = "lse"


class Optimizer(Choice):
    """train.optimizer; auto: Adam for CNNs, AdamW for transformers."""

    auto = "auto"
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"


class Schedule(Choice):
    """train.schedule: cosine (warm-up, cosine decay) or plateau (ReduceLROnPlateau)."""

    cosine = "cosine"
    plateau = "plateau"


class Metric(Choice):
    """A validation metric: the one that picks the best epoch (train.monitor) or that a
    hyper-parameter search optimizes (tune.objective)."""

    val_loss = "val_loss"
    val_accuracy = "val_accuracy"

    @property
    def direction(self) -> str:
        """"min" or "max": which way is better (Keras callbacks' mode, KerasTuner's direction)."""
        return "min" if self is Metric.val_loss else "max"


class Precision(Choice):
    """The Keras dtype policy models are trained under (train.precision)."""

    float32 = "float32"
    mixed_bfloat16 = "mixed_bfloat16"


class Split(Choice):
    """A dataset split (eval.split)."""

    train = "train"
    val = "val"
    test = "test"


def check_discard_ratio(value, key: str = "model.discard_ratio") -> float:
    """`value` as a float in [0, 1): the share of smallest attention entries rollout drops."""
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        ratio = float("nan")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"key '{key}': must be in [0, 1), got {value}")
    return ratio
