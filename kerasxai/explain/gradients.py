"""Input gradients of a scalar-per-sample Keras model, dispatched on the Keras backend.

The one backend-specific module of :mod:`kerasxai.explain`: everything else (Grad-CAM,
Grad-CAM++, gradient rollout) is backend-agnostic NumPy on top of :func:`gradient_fn`.

- JAX: ``jax.value_and_grad`` of ``model.stateless_call``, jitted once per model (the
  variables are jit arguments, not baked-in constants);
- TensorFlow: ``tf.GradientTape`` inside a ``tf.function``;
- torch: ``torch.autograd.grad``.

The model is run with ``training=False``; the gradient is that of the *sum* of the output
over the batch, which equals the per-sample gradients because samples do not interact in
inference mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
import numpy as np

__all__ = ["gradient_fn"]

GradFn = Callable[[Sequence[np.ndarray]], tuple[np.ndarray, list[np.ndarray]]]


def gradient_fn(model: keras.Model) -> GradFn:
    """``f(inputs) -> (output, [d sum(output) / d input for each input])`` as NumPy.

    Args:
        model: a Keras model whose (single) output is one value per sample, e.g. a logit
            (B, 1); ``inputs`` is the list of its inputs in ``model.inputs`` order.

    Example:
        >>> head = keras.Model(features_tensor, logit_tensor)
        >>> logit, (d_features,) = gradient_fn(head)([features])
    """
    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_gradient_fn(model)
    if backend == "tensorflow":
        return _tf_gradient_fn(model)
    if backend == "torch":
        return _torch_gradient_fn(model)
    raise ValueError(f"gradients are not implemented for the Keras backend '{backend}' (use jax, tensorflow or torch)")


def _structure(model, xs):
    """A single-input model takes the tensor itself, a multi-input one the list."""
    xs = list(xs)
    if len(xs) != len(model.inputs):
        raise ValueError(f"model '{model.name}' takes {len(model.inputs)} inputs, got {len(xs)}")
    return xs[0] if len(xs) == 1 else xs


def _jax_gradient_fn(model: keras.Model) -> GradFn:
    import jax
    import jax.numpy as jnp

    def total(xs, trainable, non_trainable):
        out, _ = model.stateless_call(trainable, non_trainable, _structure(model, xs), training=False)
        return jnp.sum(out), out

    grad = jax.jit(jax.value_and_grad(total, argnums=0, has_aux=True))

    def call(inputs):
        xs = [jnp.asarray(x, "float32") for x in inputs]
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        (_, out), grads = grad(xs, trainable, non_trainable)
        return np.asarray(out), [np.asarray(g) for g in grads]

    return call


def _tf_gradient_fn(model: keras.Model) -> GradFn:
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(xs):
        with tf.GradientTape() as tape:
            tape.watch(xs)
            out = model(_structure(model, xs), training=False)
            total = tf.reduce_sum(out)
        return out, tape.gradient(total, xs)

    def call(inputs):
        xs = [tf.convert_to_tensor(np.asarray(x, np.float32)) for x in inputs]
        out, grads = step(xs)
        return out.numpy(), [g.numpy() for g in grads]

    return call


def _torch_gradient_fn(model: keras.Model) -> GradFn:
    import torch

    def call(inputs):
        xs = [keras.ops.convert_to_tensor(np.asarray(x, np.float32)).detach().requires_grad_(True) for x in inputs]
        out = model(_structure(model, xs), training=False)
        grads = torch.autograd.grad(out.sum(), xs, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for x, g in zip(xs, grads)]
        return out.detach().cpu().numpy(), [g.detach().cpu().numpy() for g in grads]

    return call
