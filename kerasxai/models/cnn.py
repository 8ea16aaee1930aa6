"""CAM CNNs: keras.applications backbones (full or "_d") with a CAMHead.

Backbones keep their built-in preprocessing (`include_preprocessing=True`), so the model takes
raw 0..255 pixels. "_d" variants drop the last stride-2 stage: the features come from the
last block at stride 16, so the heatmap is 14x14 at 224 instead of 7x7 (thesis, Fig. 2.4).
"""

from __future__ import annotations

import keras

from kerasxai.models import fast_depthwise as depthwise_forms
from kerasxai.models import fast_pointwise as pointwise_forms
from kerasxai.models.layer_swap import swap_layers
from kerasxai.models.layers import CAMHead
from kerasxai.models.weights import build_applications_backbone, build_imagenet_backbone

# name -> (keras.applications constructor name, feature layer of the "_d" variant or None)
#
# "_d" cut points (the output of the last block before the last stride-2 block):
# - MobileNetV3Large: "expanded_conv_11_add" (14x14x112 at 224). The next block,
#   expanded_conv_12, is the stride-2 stage (7x7x160, blocks 12-14), followed by the final
#   1x1 conv "conv_1" (960 channels). We drop conv_1 too: its ImageNet kernel maps the 160
#   channels of the removed stage and cannot take the 112 channels at stride 16; a fresh 1x1
#   conv would only add untrained parameters in front of a linear CAM head.
# - EfficientNetV2S: "block5i_add" (14x14x160). Stage 6 (block6a, stride 2, 256 channels,
#   15 blocks) and the 1x1 "top_conv" (1280) are dropped for the same reason.
CNN_SPECS = {
    "mobilenetv3_large": ("MobileNetV3Large", None),
    "mobilenetv3_large_d": ("MobileNetV3Large", "expanded_conv_11_add"),
    "efficientnetv2_s": ("EfficientNetV2S", None),
    "efficientnetv2_s_d": ("EfficientNetV2S", "block5i_add"),
}


def build_backbone(name: str, input_shape, weights=None) -> keras.Model:
    """The keras.applications feature extractor for `name`, cut for "_d" variants.

    `weights`: None, "imagenet" or the path of keras.applications' ImageNet `.h5` file."""
    arch, cut = CNN_SPECS[name]
    constructor = getattr(keras.applications, arch)
    kwargs = dict(include_top=False, input_shape=tuple(input_shape), include_preprocessing=True)
    if weights == "imagenet":
        full = build_imagenet_backbone(constructor, arch, name, **kwargs)
    elif weights is not None:
        full = build_applications_backbone(constructor, arch, weights, name, **kwargs)
    else:
        full = constructor(weights=None, **kwargs)
    if cut is None:
        return keras.Model(full.input, full.output, name="backbone")
    return keras.Model(full.input, full.get_layer(cut).output, name="backbone")


def convolution_forms(model, fast_depthwise, fast_pointwise):
    """`model` with its depthwise and 1x1 convolutions in the forms the two switches ("auto" |
    "on" | "off") choose on this backend: the CPU forms for JAX on the CPU under "auto", the
    standard Keras layers elsewhere. Weights and outputs are unchanged; `model` itself when no
    layer changes (`kerasxai.models.fast_depthwise`, `fast_pointwise`)."""
    return swap_layers(model, depthwise_forms.replacement(fast_depthwise), pointwise_forms.replacement(fast_pointwise))


def build_cnn(
    name,
    input_shape=(224, 224, 3),
    weights=None,
    heatmap=True,
    dropout=0.0,
    *,
    pooling,
    fast_depthwise,
    fast_pointwise,
    training_outputs=False,
):
    """A CAM model: raw pixels -> {"score" (B,1), "heatmap" (B,h,w)} (score only if not heatmap).

    `pooling` is how the head turns the map into the score ("avg" | "lse", see CAMHead);
    `fast_depthwise` and `fast_pointwise` ("auto" | "on" | "off") swap in the CPU forms of the
    depthwise and 1x1 convolutions (kerasxai.models.fast_depthwise, fast_pointwise).
    Their defaults are the config's, applied by the registry's `build_model`.
    `training_outputs` adds "logit" (B,1), the pre-sigmoid score (for from_logits losses).
    `weights` here is None, "imagenet" or keras.applications' `.h5`; a .weights.h5 path is
    loaded by the registry.
    """
    backbone = build_backbone(name, input_shape, weights)
    backbone = convolution_forms(backbone, fast_depthwise, fast_pointwise)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    features = backbone(inputs)
    # float32 under any dtype policy: the score (loss, metrics) and the map keep full precision
    head = CAMHead(heatmap=heatmap, dropout=dropout, pooling=pooling, dtype="float32", name="cam_head")(features)
    outputs = {"score": head["score"]}
    if heatmap:
        outputs["heatmap"] = head["heatmap"]
    if training_outputs:
        outputs["logit"] = head["logit"]
    return keras.Model(inputs, outputs, name=name)
