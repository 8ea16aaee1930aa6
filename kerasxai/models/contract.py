"""The models' output contract: {"score", "heatmap"}, plus training-only head outputs.

A model built with ``training_outputs=True`` adds outputs the loss needs (for the distilled
DeiT the two head logits); checkpoints meant for evaluate / predict / export keep the
contract's two outputs only (:func:`inference_view`).
"""

from __future__ import annotations

import keras

CONTRACT = ("score", "heatmap")
CLS_OUTPUT = "cls_logit"  # DeiT-distilled class-token head logit (models: training_outputs=True)
DIST_OUTPUT = "distill_logit"  # DeiT-distilled distillation-token head logit


def output_keys(model) -> list[str]:
    """The keys of a dict-output model (``model.output_names`` holds layer names instead)."""
    out = getattr(model, "output", None)
    if isinstance(out, dict):
        return list(out.keys())
    return ["score"]


def inference_view(model):
    """The {"score", "heatmap"} model sharing `model`'s layers (what best.keras holds).

    For the distilled DeiT, training uses extra head-logit outputs; checkpoints meant for
    evaluation / predict keep the contract's two outputs only.
    """
    keys = output_keys(model)
    if set(keys) <= set(CONTRACT):
        return model
    out = model.output
    return keras.Model(model.input, {k: out[k] for k in CONTRACT if k in out}, name=model.name)


def metric_key(name: str, model) -> str:
    """History key of a score metric: Keras prefixes them with the output name for dict models."""
    if name.endswith("loss"):
        return name
    prefix = "val_" if name.startswith("val_") else ""
    base = name[len(prefix):]
    return f"{prefix}score_{base}" if len(output_keys(model)) > 1 else name


def is_distilled(name: str) -> bool:
    """Whether the model name is a DeiT with a distillation token (and head)."""
    return "distilled" in name


def has_dist_head(model) -> bool:
    """Whether `model` outputs the distillation head's logit (built with training outputs)."""
    return DIST_OUTPUT in output_keys(model)
