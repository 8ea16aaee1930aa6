"""Fast depthwise convolution for the JAX backend on CPU.

XLA's grouped (depthwise) convolution on CPU is an order of magnitude slower than
TensorFlow's, which makes MobileNetV3 / EfficientNetV2 under JAX several times slower than
under the TF backend. The same convolution written as "pad once, then sum kh*kw shifted
slices times the per-channel kernel" is a chain of elementwise ops that XLA fuses into one
loop (with the bias, the following BatchNorm and the activation): the same numbers up to
float rounding, at the speed BENCHMARKS.md ("Inference: models and backends") records.

`FastDepthwiseConv2D` is a `keras.layers.DepthwiseConv2D` (same config, same `kernel`
(kh, kw, C, 1) and `bias` variables, so weights copy over) whose `call` uses that form.
`apply(model, mode)` rebuilds a functional model (e.g. a `keras.applications` backbone)
with every supported `DepthwiseConv2D` swapped for it, weights unchanged; `mode="off"`
swaps back (`replacement(mode)` is the same rule for `layer_swap.swap_layers`).
`mode="auto"` (the default of `cfg.model.fast_depthwise`) is on for the JAX backend when
JAX's default device is the CPU, off otherwise (GPU/TPU, TF backend).
"""

from __future__ import annotations

import keras
from keras import ops

from kerasxai.models import layer_swap
from kerasxai.runtime import switch_on


@keras.saving.register_keras_serializable(package="kerasxai")
class FastDepthwiseConv2D(keras.layers.DepthwiseConv2D):
    """DepthwiseConv2D computed as a sum of shifted, per-channel scaled input slices.

    Same arguments, weights and outputs as `keras.layers.DepthwiseConv2D`; supported:
    `channels_last`, `depth_multiplier=1`, `dilation_rate=1`, equal strides of 1 or 2,
    padding "same" or "valid". Use `supports(layer)` to check a layer before swapping;
    unsupported configurations raise `ValueError` at construction.

    Args:
        **kwargs: the arguments of `keras.layers.DepthwiseConv2D`.

    Example:
    >>> layer = FastDepthwiseConv2D(3, strides=2, padding="same")
    >>> layer(keras.ops.ones((1, 8, 8, 4))).shape
    (1, 4, 4, 4)

    Reference: the "shift-and-add" form of depthwise convolution used by direct CPU
    kernels (e.g. XNNPACK's dwconv micro-kernels), written with fusable tensor ops.
    """

    def __init__(self, kernel_size, **kwargs):
        super().__init__(kernel_size, **kwargs)
        problem = _unsupported(self)
        if problem:
            raise ValueError(f"FastDepthwiseConv2D does not support {problem}; keep keras.layers.DepthwiseConv2D.")

    def call(self, inputs):
        kh, kw = self.kernel_size
        s = self.strides[0]
        h, w = inputs.shape[1], inputs.shape[2]
        if self.padding == "same":
            oh, ow = -(-h // s), -(-w // s)
            ph = max((oh - 1) * s + kh - h, 0)
            pw = max((ow - 1) * s + kw - w, 0)
            pads = ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0))
            if ph or pw:
                inputs = ops.pad(inputs, pads)
        else:
            oh, ow = (h - kh) // s + 1, (w - kw) // s + 1
        kernel = ops.cast(self.kernel[:, :, :, 0], inputs.dtype)  # (kh, kw, C)
        out = None
        for i in range(kh):
            for j in range(kw):
                tap = inputs[:, i : i + (oh - 1) * s + 1 : s, j : j + (ow - 1) * s + 1 : s, :]
                term = tap * kernel[i, j]
                out = term if out is None else out + term
        if self.use_bias:
            out = out + ops.cast(self.bias, out.dtype)
        if self.activation is not None:
            out = self.activation(out)
        return out


def _unsupported(layer) -> str:
    """Why `layer`'s configuration cannot use the fast form ('' when it can)."""
    if layer.data_format != "channels_last":
        return f"data_format={layer.data_format!r}"
    if layer.depth_multiplier != 1:
        return f"depth_multiplier={layer.depth_multiplier}"
    if tuple(layer.dilation_rate) != (1, 1):
        return f"dilation_rate={tuple(layer.dilation_rate)}"
    if len(set(layer.strides)) != 1 or layer.strides[0] not in (1, 2):
        return f"strides={tuple(layer.strides)}"
    if layer.padding not in ("same", "valid"):
        return f"padding={layer.padding!r}"
    return ""


def supports(layer) -> bool:
    """True when `layer` is a DepthwiseConv2D the fast form computes exactly."""
    return isinstance(layer, keras.layers.DepthwiseConv2D) and not _unsupported(layer)


def resolve(mode: str = "auto") -> bool:
    """Whether `mode` ("auto" | "on" | "off") means the fast layer is used here."""
    return switch_on(mode, "model.fast_depthwise")


def replacement(mode: str = "auto"):
    """The `layer_swap.swap_layers` rule for `mode`: supported `DepthwiseConv2D` layers become
    `FastDepthwiseConv2D` (mode on, or auto here on), fast ones become standard (off)."""
    return layer_swap.replacement(resolve(mode), keras.layers.DepthwiseConv2D, FastDepthwiseConv2D, supports)


def apply(model, mode: str = "auto"):
    """`model` rebuilt with fast depthwise layers (mode on/auto-on) or standard ones (off).

    Weights and outputs are unchanged; nested functional/sequential models are rebuilt too.
    Returns `model` itself when there is nothing to swap. Subclassed (non-functional) models
    are returned unchanged.
    """
    return layer_swap.swap_layers(model, replacement(mode))
