"""The model to train: built under the data-parallel distribution and ``train.precision``."""

from __future__ import annotations

from typing import Optional

import keras

from kerasxai import precision
from kerasxai.config import Config
from kerasxai.models.contract import is_distilled

from .parallel import setup_data_parallel


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
