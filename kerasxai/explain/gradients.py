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

__all__ = ["gradient_fn", "value_and_grad"]


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


def value_and_grad(fn: Callable) -> Callable:
    """Differentiate a Python function of tensors, dispatched on the backend.

    ``fn(diff, const) -> (out, aux)`` takes two lists of tensors and returns a per-sample
    output ``out`` (B, 1) and any auxiliary tensors. The result ``call(diff, const)``
    returns ``(out, aux, grads)`` as NumPy, ``grads`` being d sum(out) / d diff. Under JAX
    the function is jitted once (shapes fixed per batch size).
    """
    backend = keras.backend.backend()
    to_np = keras.ops.convert_to_numpy
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def total(diff, const):
            out, aux = fn(diff, const)
            return jnp.sum(out), (out, aux)

        step = jax.jit(jax.value_and_grad(total, argnums=0, has_aux=True))

        def call(diff, const):
            (_, (out, aux)), grads = step([jnp.asarray(d) for d in diff], [jnp.asarray(c) for c in const])
            return np.asarray(out), keras.tree.map_structure(np.asarray, aux), [np.asarray(g) for g in grads]

        return call
    if backend == "tensorflow":
        import tensorflow as tf

        def call(diff, const):
            diff = [tf.convert_to_tensor(d) for d in diff]
            const = [tf.convert_to_tensor(c) for c in const]
            with tf.GradientTape() as tape:
                tape.watch(diff)
                out, aux = fn(diff, const)
                total = tf.reduce_sum(out)
            grads = tape.gradient(total, diff)
            grads = [tf.zeros_like(d) if g is None else g for d, g in zip(diff, grads)]
            return to_np(out), keras.tree.map_structure(to_np, aux), [to_np(g) for g in grads]

        return call
    if backend == "torch":
        import torch

        def call(diff, const):
            diff = [keras.ops.convert_to_tensor(d).detach().requires_grad_(True) for d in diff]
            const = [keras.ops.convert_to_tensor(c) for c in const]
            out, aux = fn(diff, const)
            grads = torch.autograd.grad(out.sum(), diff, allow_unused=True)
            grads = [torch.zeros_like(d) if g is None else g for d, g in zip(diff, grads)]
            detach = lambda t: t.detach().cpu().numpy()  # noqa: E731
            return detach(out), keras.tree.map_structure(detach, aux), [detach(g) for g in grads]

        return call
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
