"""Rebuild a functional model with some of its layers replaced by equivalent classes.

The CPU forms of the CNN layers (`fast_depthwise`, `fast_pointwise`) keep a layer's config and
weights and change only how `call` computes it; this is the one place that swaps them in or
out of a built model, nested functional and sequential models included.
"""

from __future__ import annotations

from typing import Callable, Optional

import keras

# layer -> the class to rebuild it as, or None to keep it
Replacement = Callable[[keras.layers.Layer], Optional[type]]


def replacement(fast_on: bool, standard: type, fast: type, supports) -> Replacement:
    """The rule between a Keras layer class and its fast form: with `fast_on`, the layers that
    `supports` accepts become `fast`; otherwise `fast` layers become `standard` again."""
    if fast_on:
        return lambda layer: fast if supports(layer) and not isinstance(layer, fast) else None
    return lambda layer: standard if isinstance(layer, fast) else None


def swap_layers(model, *replacements: Replacement):
    """`model` rebuilt with every layer that a replacement names a class for rebuilt as that
    class (the first replacement that names one wins), weights copied, so outputs are unchanged.

    Returns `model` itself when no layer is replaced. Uses `keras.models.clone_model`
    (recursive), so subclassed (non-functional) models are returned unchanged.
    """

    def target(layer):
        for replacement in replacements:
            cls = replacement(layer)
            if cls is not None:
                return cls
        return None

    if not _any_layer(model, lambda layer: target(layer) is not None):
        return model

    def clone_function(layer):
        return (target(layer) or layer.__class__).from_config(layer.get_config())

    new = keras.models.clone_model(model, clone_function=clone_function, recursive=True)
    _copy_weights(model, new)
    return new


def _any_layer(model, predicate) -> bool:
    for layer in getattr(model, "layers", []):
        if predicate(layer) or (isinstance(layer, keras.Model) and _any_layer(layer, predicate)):
            return True
    return False


def _copy_weights(src, dst):
    """Copy weights layer by layer, matching layers by position (clone keeps the order)."""
    if len(src.layers) != len(dst.layers):
        raise RuntimeError(f"swap_layers: rebuilt model has {len(dst.layers)} layers, expected {len(src.layers)}.")
    for a, b in zip(src.layers, dst.layers):
        if isinstance(a, keras.Model):
            _copy_weights(a, b)
        elif a.weights:
            b.set_weights(a.get_weights())
