"""Gradient-weighted attention rollout for transformers (a post-hoc baseline).

After Chefer, Gur & Wolf ("Generic Attention-model Explainability", ICCV 2021): each
block's attention probabilities A_l (B, heads, T, T) are weighted by the gradient of the
logit with respect to them, the positive part is kept and the heads are averaged,
``Abar_l = mean_h ReLU(dlogit/dA_l * A_l)``; the blocks are then combined by the same
rollout as the single-pass maps (identity added, rows normalized, product, CLS row over
the patch tokens) via :func:`kerasxai.models.rollout.rollout`, without discarding.

How d logit / d A_l is obtained (the total derivative, through every later block):

- when the attention probabilities are separate graph tensors consumed downstream, a Keras
  sub-model ``[image, A_1..A_L] -> logit`` cut from ``explain_model(model)``'s graph;
- for kerasxai's ``SelfAttention`` layers (which return ``(output, probabilities)`` from
  one node, so the graph cannot be cut there), the explain graph is re-run with each such
  layer's call replaced by its own ``SelfAttention.attend`` with a zero offset on the
  probabilities, and the gradient is taken with respect to the offsets. A test checks that
  this re-run reproduces the model's logit and attentions and that the gradient matches
  finite differences.
"""

from __future__ import annotations

import keras
import numpy as np

from kerasxai.explain.gradients import gradient_fn, value_and_grad
from kerasxai.models.layers import SelfAttention
from kerasxai.models.rollout import infer_prefix_tokens, rollout

__all__ = ["GradRolloutExplainer", "gradient_weighted_attention"]


def gradient_weighted_attention(attention: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """(B, heads, T, T) attention and its gradient -> (B, T, T) head mean of ReLU(grad * A)."""
    return np.maximum(np.asarray(grad) * np.asarray(attention), 0.0).mean(axis=1)


def _probe_layers(attentions) -> list | None:
    """The SelfAttention layers producing each attention tensor, or None if any is not one."""
    found = []
    for a in attentions:
        op = getattr(a, "_keras_history", (None,))[0]
        if not isinstance(op, SelfAttention) or not op.built:
            return None
        found.append(op)
    return found


class GradRolloutExplainer:
    """Gradient-weighted rollout maps (B, h, w) for a transformer, batch by batch.

    Args:
        explainer: ``explain_model(model)``, outputs ``{"logit": (B, 1), "attentions": [...]}``.
        num_prefix_tokens: 1 (CLS) or 2 (CLS + distillation); None infers it from T.

    Example:
        >>> gr = GradRolloutExplainer(explain_model(vit))
        >>> maps = gr(images)  # {"Gradient rollout": (B, 14, 14)}
    """

    def __init__(self, explainer: keras.Model, num_prefix_tokens: int | None = None):
        out = explainer.output
        if not isinstance(out, dict) or "attentions" not in out or "logit" not in out:
            raise ValueError("gradient rollout needs explain_model(model) with outputs 'logit' and 'attentions' (a transformer)")
        attentions = list(out["attentions"])
        self.explainer = explainer
        self.probes = _probe_layers(attentions)
        if self.probes is None:
            self.sub = keras.Model([*explainer.inputs, *attentions], out["logit"], name="attentions_to_logit")
            self._grad = gradient_fn(self.sub)
        else:
            self._probe_grad = value_and_grad(self._probed_forward)
        tokens = int(attentions[0].shape[-1])
        self.num_prefix_tokens = num_prefix_tokens or infer_prefix_tokens(tokens)

    def _probed_forward(self, offsets, const):
        index = {id(layer): i for i, layer in enumerate(self.probes)}

        def operation_fn(op):
            if id(op) in index:
                return lambda x, **_: op.attend(x, offsets[index[id(op)]])
            return op

        out = self.explainer._run_through_graph(const, operation_fn=operation_fn)
        return out["logit"], out["attentions"]

    def attention_gradients(self, images) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """(logit (B,1), attentions [(B,heads,T,T)], d logit / d attentions) for a batch."""
        images = np.asarray(images, np.float32)
        if self.probes is None:
            attentions = [np.asarray(a) for a in self.explainer.predict_on_batch(images)["attentions"]]
            logit, grads = self._grad([images, *attentions])
            return logit, attentions, grads[1:]
        shapes = [(images.shape[0], *a.shape[1:]) for a in self.explainer.output["attentions"]]
        offsets = [np.zeros(s, np.float32) for s in shapes]
        logit, attentions, grads = self._probe_grad(offsets, [images])
        return logit, list(attentions), grads

    def __call__(self, images) -> dict[str, np.ndarray]:
        _, attentions, grads = self.attention_gradients(images)
        if all(not np.any(g) for g in grads):
            raise ValueError(
                "the logit does not depend on the exposed attention tensors (all gradients are 0): "
                "explain_model must expose the attention probabilities the blocks actually use"
            )
        weighted = [gradient_weighted_attention(a, g)[:, None] for a, g in zip(attentions, grads)]
        heat = rollout(weighted, fusion="mean", discard_ratio=0.0, num_prefix_tokens=self.num_prefix_tokens)
        return {"Gradient rollout": np.asarray(keras.ops.convert_to_numpy(heat))}
