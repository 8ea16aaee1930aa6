"""Data-parallel training over the local devices (JAX)."""

from __future__ import annotations

import keras

from kerasxai.config import Config, ConfigError


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
