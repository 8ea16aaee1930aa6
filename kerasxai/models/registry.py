"""Model registry: one `build_model(name, ...)` for every model name, and model utilities.

- `build_model` / `build_from_config`: the model contract (docs/architecture.md).
- `set_rollout`: change head fusion / discard ratio of a built or loaded transformer.
- `explain_model`: the tensors post-hoc baselines differentiate (logit + features/attentions).
"""

from __future__ import annotations

import keras

from kerasxai.config import ModelConfig
from kerasxai.models.cnn import CNN_SPECS, build_cnn
from kerasxai.models.layers import AttentionRollout, CAMHead
from kerasxai.models.vit import VIT_SPECS, build_vit
from kerasxai.models import weights as weights_mod
from kerasxai.models.timm_weights import load_timm_weights
from kerasxai.models.weights import WeightsError, load_weights_file, weights_format

MODEL_NAMES = tuple(CNN_SPECS) + tuple(VIT_SPECS)
_DEFAULTS = ModelConfig()  # the head options' defaults are the config's (model.*)


def is_transformer(name: str) -> bool:
    """True for the ViT/DeiT names (attention rollout), False for the CAM CNNs."""
    _check_name(name)
    return name in VIT_SPECS


def _check_name(name):
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model name '{name}': use one of {', '.join(MODEL_NAMES)} (key model.name).")


def build_model(
    name,
    *,
    input_shape=(224, 224, 3),
    weights=None,
    heatmap=True,
    training_outputs=False,
    fusion=_DEFAULTS.fusion,
    discard_ratio=_DEFAULTS.discard_ratio,
    dropout=_DEFAULTS.dropout,
    fast_depthwise=_DEFAULTS.fast_depthwise,
    fast_pointwise=_DEFAULTS.fast_pointwise,
    pooling=_DEFAULTS.pooling,
) -> keras.Model:
    """Build model `name`: raw 0..255 RGB in, {"score" (B,1), "heatmap" (B,h,w)} out.

    Args:
        name: one of MODEL_NAMES.
        input_shape: (H, W, 3); transformers need sides that are multiples of 16.
        weights: None (random), "imagenet" (CNNs; Keras' cached download, see
            kerasxai.models.weights), or a path: a `.weights.h5` saved from the same model,
            a timm checkpoint (`.safetensors`, or the ViT's augreg `.npz`; transformers, any
            tile size: see kerasxai.models.timm_weights) or keras.applications' ImageNet
            `.h5` (CNNs). `weights_format` tells them apart by name.
        heatmap: False builds the score-only variant (same weights layout; transformers skip
            the attention probabilities' outputs, see `layers.SelfAttention`).
        training_outputs: also output "logit" (B,1), and for the distilled DeiT "cls_logit"
            and "distill_logit" (B,1) (train on labels / teacher hard labels).
        fusion, discard_ratio: transformers' rollout ("mean"|"max"|"min"; [0, 1)).
        fast_depthwise, fast_pointwise, pooling: CNNs' depthwise and 1x1 convolution layers
            ("auto"|"on"|"off": their CPU forms) and CAM pooling ("avg"|"lse", see CAMHead).
        dropout: before the score head, both kinds.
            The defaults are those of the ``model.*`` config keys (`kerasxai.config.ModelConfig`);
            options that do not apply to the model are ignored (one config serves all).

    Example:
        model = build_model("efficientnetv2_s_d", input_shape=(224, 224, 3))
        out = model.predict(tiles)  # out["score"] (B,1), out["heatmap"] (B,14,14)
    """
    _check_name(name)
    if weights is not None and not isinstance(weights, str) and not hasattr(weights, "__fspath__"):
        raise WeightsError(f"weights for '{name}' must be None, 'imagenet' or a .weights.h5 path, got {weights!r}")
    fmt = weights_format(weights, name, is_transformer(name)) if weights not in (None, "imagenet") else None
    if is_transformer(name):
        if weights == "imagenet":
            raise WeightsError(imagenet_problem(name))
        model = build_vit(
            name,
            input_shape=input_shape,
            heatmap=heatmap,
            fusion=fusion,
            discard_ratio=discard_ratio,
            dropout=dropout,
            training_outputs=training_outputs,
        )
    else:
        model = build_cnn(
            name,
            input_shape=input_shape,
            weights=weights if weights == "imagenet" or fmt == "applications" else None,
            heatmap=heatmap,
            dropout=dropout,
            pooling=pooling,
            fast_depthwise=fast_depthwise,
            fast_pointwise=fast_pointwise,
            training_outputs=training_outputs,
        )
    if fmt == "keras":
        load_weights_file(model, weights, name)
    elif fmt == "timm":
        print(load_timm_weights(model, weights, name))
    return model


def imagenet_problem(name: str) -> str | None:
    """Why ``weights="imagenet"`` cannot work for model `name`, known before building it (the
    transformers have none; a CNN's are not cached while offline); None when it may work."""
    _check_name(name)
    if is_transformer(name):
        return (f"'{name}': Keras ships no ImageNet weights for the transformers; pass weights=None, "
                "a timm checkpoint (model.safetensors) or a .weights.h5 file saved from build_model "
                "of the same name and input size.")
    return weights_mod.imagenet_problem(CNN_SPECS[name][0], name)


def build_from_config(model_cfg, input_shape, **kwargs) -> keras.Model:
    """`build_model` from a `kerasxai.config.ModelConfig` (extra kwargs, e.g. heatmap=False)."""
    return build_model(
        model_cfg.name,
        input_shape=tuple(input_shape),
        weights=model_cfg.weights,
        fusion=model_cfg.fusion,
        discard_ratio=model_cfg.discard_ratio,
        dropout=model_cfg.dropout,
        fast_depthwise=model_cfg.fast_depthwise,
        fast_pointwise=model_cfg.fast_pointwise,
        pooling=model_cfg.pooling,
        **kwargs,
    )


def _layers_of(model, cls):
    found = []
    for layer in model.layers:
        if isinstance(layer, cls):
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found.extend(_layers_of(layer, cls))
    return found


def drop_compiled_functions(model) -> None:
    """Forget traced/jitted train, test and predict functions so they are rebuilt."""
    for attr in ("train_function", "test_function", "predict_function"):
        if hasattr(model, attr):
            setattr(model, attr, None)


def set_rollout(model, fusion=None, discard_ratio=None) -> keras.Model:
    """Change head fusion and/or discard ratio of a built or loaded transformer, in place.

    The change is part of the model config, so it survives `model.save(...)` / `load_model`.
    Compiled predict functions are dropped (the next `predict` retraces). Returns `model`.

    Example:
        set_rollout(model, fusion="min", discard_ratio=0.5); model.predict(x)["heatmap"]
    """
    layers = _layers_of(model, AttentionRollout)
    if not layers:
        raise ValueError(f"model '{model.name}' has no attention rollout layer (a CNN or a heatmap=False model).")
    for layer in layers:
        old = (layer.fusion, layer.discard_ratio)
        if fusion is not None:
            layer.fusion = fusion
        if discard_ratio is not None:
            layer.discard_ratio = discard_ratio
        try:
            layer._check()
        except ValueError:
            layer.fusion, layer.discard_ratio = old
            raise
    drop_compiled_functions(model)
    return model


def _outputs_of(layer):
    """A layer's first-call outputs in their nested structure (dicts stay dicts)."""
    node = layer._inbound_nodes[0]
    spec = layer.compute_output_spec(*node.arguments.args, **node.arguments.kwargs)
    return keras.tree.pack_sequence_as(spec, node.outputs)


def explain_model(model) -> keras.Model:
    """A model sharing `model`'s layers with the tensors post-hoc explainers need.

    CNNs: {"logit": (B,1), "features": (B,h,w,C)} (the CAM head's input).
    Transformers: {"logit": (B,1), "attentions": [(B,heads,T,T)] * depth} (the rollout
    layer's inputs; the distilled DeiT's logit is the mean of its two heads, the one
    "score" is the sigmoid of).
    """
    cams = [layer for layer in model.layers if isinstance(layer, CAMHead)]
    if cams:
        cam = cams[0]
        return keras.Model(model.inputs, {"logit": _outputs_of(cam)["logit"], "features": cam.input})
    rollouts = [layer for layer in model.layers if isinstance(layer, AttentionRollout)]
    if rollouts:
        attentions = rollouts[0].input
        attentions = list(attentions) if isinstance(attentions, (list, tuple)) else [attentions]
        logit = model.get_layer("score").input
        return keras.Model(model.inputs, {"logit": logit, "attentions": attentions})
    raise ValueError(
        f"model '{model.name}' has neither a 'cam_head' nor a 'rollout' layer: explain_model needs a "
        "heatmap model from build_model(..., heatmap=True)."
    )
