"""Training precision (``train.precision``): the Keras dtype policy models are built under.

``float32`` (default) or ``mixed_bfloat16`` (bfloat16 compute, float32 variables). The score
heads compute in float32 under any policy (kerasxai.models), so the loss and the metrics see a
float32 score. Inference checkpoints are stored as float32 copies (:func:`float32_copy`), so a
saved model scores in float32 whatever it was trained with.
"""

from __future__ import annotations

from contextlib import contextmanager

import keras

from kerasxai.choices import Precision


@contextmanager
def policy(name: str):
    """Build models under the dtype policy `name`; the previous global policy is restored after."""
    name = Precision.parse(name, "train.precision").value
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def _float32_policies(obj):
    """A serialized model with every mixed dtype policy replaced by float32."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "DTypePolicy" and str(obj.get("config", {}).get("name", "")).startswith("mixed_"):
            return dict(obj, config=dict(obj["config"], name="float32"))
        return {k: _float32_policies(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_float32_policies(v) for v in obj]
    return obj


def is_mixed(model) -> bool:
    """Whether any layer of `model` (nested models included) computes in a mixed policy."""
    return any(layer.dtype_policy.name.startswith("mixed_")
               for layer in model._flatten_layers(include_self=True, recursive=True))


def float32_copy(model):
    """`model` itself when it is all float32, else a float32 copy with the same weights
    (mixed policies keep float32 variables, so the weights carry over unchanged)."""
    if not is_mixed(model):
        return model
    config = _float32_policies(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy
