"""Gradient-weighted attention rollout for transformers (a post-hoc baseline).

After Chefer, Gur & Wolf ("Generic Attention-model Explainability", ICCV 2021): each
block's attention probabilities A_l (B, heads, T, T) are weighted by the gradient of the
logit with respect to them, the positive part is kept and the heads are averaged,
``Abar_l = mean_h ReLU(dlogit/dA_l * A_l)``; the blocks are then combined by the same
rollout as the single-pass maps (identity added, rows normalized, product, CLS row over
the patch tokens) via :func:`kerasxai.models.rollout.rollout`, without discarding.

The gradients come from a Keras sub-model ``[image, A_1..A_L] -> logit`` cut from
``explain_model(model)``'s graph at the attention tensors, so the logit is differentiated
through the attention values actually used downstream.
"""

from __future__ import annotations

import math

import keras
import numpy as np

from kerasxai.explain.gradients import gradient_fn

__all__ = ["GradRolloutExplainer", "gradient_weighted_attention", "infer_prefix_tokens"]


def gradient_weighted_attention(attention: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """(B, heads, T, T) attention and its gradient -> (B, T, T) head mean of ReLU(grad * A)."""
    return np.maximum(np.asarray(grad) * np.asarray(attention), 0.0).mean(axis=1)


def infer_prefix_tokens(tokens: int) -> int:
    """CLS (1) or CLS + distillation (2) prefix for T tokens on a square patch grid."""
    for prefix in (1, 2):
        side = math.isqrt(tokens - prefix)
        if side * side == tokens - prefix:
            return prefix
    raise ValueError(f"{tokens} tokens is not 1 or 2 prefix tokens plus a square patch grid")


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
        self.sub = keras.Model([*explainer.inputs, *attentions], out["logit"], name="attentions_to_logit")
        self._grad = gradient_fn(self.sub)
        tokens = int(attentions[0].shape[-1])
        self.num_prefix_tokens = num_prefix_tokens or infer_prefix_tokens(tokens)

    def __call__(self, images) -> dict[str, np.ndarray]:
        from kerasxai.models.rollout import rollout

        images = np.asarray(images, np.float32)
        attentions = [np.asarray(a) for a in self.explainer.predict_on_batch(images)["attentions"]]
        _, grads = self._grad([images, *attentions])
        grads = grads[1:]
        if all(not np.any(g) for g in grads):
            raise ValueError(
                "the logit does not depend on the exposed attention tensors (all gradients are 0): "
                "explain_model must expose the attention probabilities the blocks actually use"
            )
        weighted = [gradient_weighted_attention(a, g)[:, None] for a, g in zip(attentions, grads)]
        heat = rollout(weighted, fusion="mean", discard_ratio=0.0, num_prefix_tokens=self.num_prefix_tokens)
        return {"Gradient rollout": np.asarray(keras.ops.convert_to_numpy(heat))}
