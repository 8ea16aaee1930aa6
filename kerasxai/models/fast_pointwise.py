"""Pointwise (1x1) convolution as a matrix product, for the JAX backend on CPU.

XLA on CPU computes the kernel gradient of a 1x1 convolution as a convolution over the whole
batch with transposed operands, many times slower than the same arithmetic as one matrix
product; autodiff of a plain product of 4-D tensors is no better, because XLA then transposes
the upstream gradient inside the fusion that computes it. `FastPointwiseConv2D` computes the
layer as ``x @ kernel`` over the pixels and, under JAX, gives it its own gradient:
``dx = dy @ kernel^T`` and ``dkernel = x^T @ dy`` on the (pixels, channels) matrices.
BENCHMARKS.md ("Training speed") has the figures.

`FastPointwiseConv2D` is a `keras.layers.Conv2D` (same config, same `kernel` (1, 1, C, F) and
`bias` variables, so weights copy over). `apply(model, mode)` swaps it in or out of a built
model the way `fast_depthwise.apply` does; `mode="auto"` (the default of
`cfg.model.fast_pointwise`) is on for the JAX backend on the CPU, off otherwise.
"""

from __future__ import annotations

import functools

import keras
from keras import ops

from kerasxai.models import layer_swap
from kerasxai.runtime import switch_on


@keras.saving.register_keras_serializable(package="kerasxai")
class FastPointwiseConv2D(keras.layers.Conv2D):
    """A 1x1, stride-1 Conv2D computed as a matrix product over the pixels.

    Same arguments, weights and outputs as `keras.layers.Conv2D`; supported: `channels_last`,
    `kernel_size=1`, `strides=1`, `groups=1`. Use `supports(layer)` to check a layer before
    swapping; unsupported configurations raise `ValueError` at construction. On any backend
    the product is `keras.ops.matmul`; under JAX its gradient is the custom one of the module.

    Example:
    >>> layer = FastPointwiseConv2D(8, 1)
    >>> layer(keras.ops.ones((2, 5, 5, 4))).shape
    (2, 5, 5, 8)
    """

    def __init__(self, filters, kernel_size=1, **kwargs):
        super().__init__(filters, kernel_size, **kwargs)
        problem = _unsupported(self)
        if problem:
            raise ValueError(f"FastPointwiseConv2D does not support {problem}; keep keras.layers.Conv2D.")

    def call(self, inputs):
        kernel = ops.cast(self.kernel[0, 0], inputs.dtype)  # (C, F)
        if keras.backend.backend() == "jax":
            out = _jax_pointwise()(inputs, kernel)
        else:
            out = ops.matmul(inputs, kernel)
        if self.use_bias:
            out = out + ops.cast(self.bias, out.dtype)
        if self.activation is not None:
            out = self.activation(out)
        return out


@functools.cache
def _jax_pointwise():
    """``x @ kernel`` over the last axis of `x`, with the gradient as two 2-D matrix products."""
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def pointwise(x, kernel):
        return jnp.matmul(x, kernel)

    def forward(x, kernel):
        return jnp.matmul(x, kernel), (x, kernel)

    def backward(saved, dy):
        x, kernel = saved
        dkernel = jnp.matmul(x.reshape(-1, x.shape[-1]).T, dy.reshape(-1, dy.shape[-1]))
        return jnp.matmul(dy, kernel.T), dkernel

    pointwise.defvjp(forward, backward)
    return pointwise


def _unsupported(layer) -> str:
    """Why `layer`'s configuration cannot use the matrix product ('' when it can)."""
    if layer.data_format != "channels_last":
        return f"data_format={layer.data_format!r}"
    if tuple(layer.kernel_size) != (1, 1):
        return f"kernel_size={tuple(layer.kernel_size)}"
    if tuple(layer.strides) != (1, 1):
        return f"strides={tuple(layer.strides)}"
    if layer.groups != 1:
        return f"groups={layer.groups}"
    return ""


def supports(layer) -> bool:
    """True when `layer` is a Conv2D the matrix product computes exactly."""
    return isinstance(layer, keras.layers.Conv2D) and not _unsupported(layer)


def resolve(mode: str = "auto") -> bool:
    """Whether `mode` ("auto" | "on" | "off") means the fast layer is used here."""
    return switch_on(mode, "model.fast_pointwise")


def replacement(mode: str = "auto"):
    """The `layer_swap.swap_layers` rule for `mode`: supported `Conv2D` layers become
    `FastPointwiseConv2D` (mode on, or auto here on), fast ones become standard (off)."""
    return layer_swap.replacement(resolve(mode), keras.layers.Conv2D, FastPointwiseConv2D, supports)


def apply(model, mode: str = "auto"):
    """`model` rebuilt with fast pointwise layers (mode on/auto-on) or standard ones (off),
    weights and outputs unchanged; `model` itself when there is nothing to swap."""
    return layer_swap.swap_layers(model, replacement(mode))
