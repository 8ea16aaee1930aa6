"""ViT-tiny / DeiT-tiny(-distilled) in the functional API with in-graph attention rollout.

timm layout (patch 16, width 192, depth 12, 3 heads, MLP 768, pre-norm, LayerNorm eps 1e-6,
exact GELU, qkv bias), so timm weights map one to one. The input normalization is a layer
inside the model (raw 0..255 pixels in), with timm's per-model mean/std. Any input side that
is a multiple of 16 works: the position embedding is sized to the patch grid (64 -> 4x4).
"""

from __future__ import annotations

import keras

from kerasxai.models.contract import CLS_OUTPUT, DIST_OUTPUT
from kerasxai.models.layers import AttentionRollout, PositionEmbedding, PrefixTokens, SelectToken, SelfAttention

PATCH, WIDTH, DEPTH, HEADS, MLP, EPS = 16, 192, 12, 3, 768, 1e-6
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

# name -> (prefix tokens, mean, std). timm's default configs: the augreg ViT-tiny weights use
# mean = std = 0.5; DeiT uses the ImageNet mean/std.
VIT_SPECS = {
    "vit_tiny_patch16_224": (1, HALF, HALF),
    "deit_tiny_patch16_224": (1, IMAGENET_MEAN, IMAGENET_STD),
    "deit_tiny_distilled_patch16_224": (2, IMAGENET_MEAN, IMAGENET_STD),
}


def _dense(units, name, activation=None):
    return keras.layers.Dense(
        units, activation=activation, name=name, kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02)
    )


def build_vit(
    name,
    input_shape=(224, 224, 3),
    heatmap=True,
    *,
    fusion,
    discard_ratio,
    dropout=0.0,
    training_outputs=False,
    width=WIDTH,
    depth=DEPTH,
    heads=HEADS,
    mlp=MLP,
):
    """A transformer: raw pixels -> {"score" (B,1), "heatmap" (B,h,w) attention rollout}.

    heatmap=False: score only, no attention probabilities kept (same weights; see SelfAttention).
    fusion, discard_ratio: the rollout's (AttentionRollout); their defaults are the config's,
    applied by the registry's `build_model`.
    training_outputs=True adds "logit" (B,1) (the pre-sigmoid score) and, for the distilled
    DeiT, "cls_logit" and "distill_logit" (B,1): the two heads to train on labels and on the
    teacher's hard labels. "score" is always sigmoid(logit), with logit the mean of the two
    heads for the distilled model (DeiT inference).
    width, depth, heads, mlp: the tiny models' sizes by default; smaller ones build the same
    layout at a fraction of the weights (the timm reference checks use them).
    """
    prefix, mean, std = VIT_SPECS[name]
    h, w, c = (int(s) for s in input_shape)
    if h % PATCH or w % PATCH or c != 3:
        raise ValueError(
            f"'{name}' needs an RGB input whose sides are multiples of {PATCH}, got {tuple(input_shape)} "
            "(set data.tile.size to a multiple of 16, e.g. 224 or 64)."
        )
    grid = (h // PATCH, w // PATCH)
    inputs = keras.Input(shape=(h, w, c), name="image")
    x = keras.layers.Normalization(
        mean=[m * 255.0 for m in mean], variance=[(s * 255.0) ** 2 for s in std], name="normalize"
    )(inputs)
    x = keras.layers.Conv2D(width, PATCH, strides=PATCH, name="patch_embed")(x)
    x = keras.layers.Reshape((grid[0] * grid[1], width), name="patch_tokens")(x)
    x = PrefixTokens(prefix, name="prefix_tokens")(x)
    x = PositionEmbedding(name="pos_embed")(x)
    attentions = []
    for i in range(depth):
        y = keras.layers.LayerNormalization(epsilon=EPS, name=f"block_{i}_norm1")(x)
        y = SelfAttention(heads, return_attention=heatmap, name=f"block_{i}_attn")(y)
        if heatmap:
            y, probs = y
            attentions.append(probs)
        x = keras.layers.Add(name=f"block_{i}_add1")([x, y])
        y = keras.layers.LayerNormalization(epsilon=EPS, name=f"block_{i}_norm2")(x)
        y = _dense(mlp, f"block_{i}_fc1", activation="gelu")(y)
        y = _dense(width, f"block_{i}_fc2")(y)
        x = keras.layers.Add(name=f"block_{i}_add2")([x, y])
    x = keras.layers.LayerNormalization(epsilon=EPS, name="norm")(x)
    cls = SelectToken(0, name="cls_token")(x)
    if dropout > 0:
        cls = keras.layers.Dropout(dropout, name="head_dropout")(cls)
    logit = cls_logit = _dense(1, "head")(cls)
    if prefix == 2:
        dist = SelectToken(1, name="dist_token")(x)
        if dropout > 0:
            dist = keras.layers.Dropout(dropout, name="head_dist_dropout")(dist)
        distill_logit = _dense(1, "head_dist")(dist)
        logit = keras.layers.Average(name="logit")([cls_logit, distill_logit])
    # float32 under any dtype policy: the score (loss, metrics) and the map keep full precision
    outputs = {"score": keras.layers.Activation("sigmoid", dtype="float32", name="score")(logit)}
    if heatmap:
        outputs["heatmap"] = AttentionRollout(fusion, discard_ratio, prefix, grid, dtype="float32",
                                              name="rollout")(attentions)
    if training_outputs:
        outputs["logit"] = logit
        if prefix == 2:
            outputs[CLS_OUTPUT] = cls_logit
            outputs[DIST_OUTPUT] = distill_logit
    return keras.Model(inputs, outputs, name=name)
