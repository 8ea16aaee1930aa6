"""Grad-CAM and Grad-CAM++ on the feature map the CAM head uses (post-hoc baselines).

Both differentiate the pre-sigmoid logit with respect to the CNN features F (B, h, w, C)
that ``explain_model`` exposes (the input of the ``cam_head`` layer), so they are scored
on exactly the layer and resolution of the single-pass CAM.

- Grad-CAM (Selvaraju et al., ICCV 2017): ``ReLU(sum_c mean_ij(g_ijc) F_ijc)``.
- Grad-CAM++ (Chattopadhay et al., WACV 2018), exponential-score closed form:
  ``a_ijc = g^2 / (2 g^2 + sum_ab F_abc g^3)`` (0 where the denominator is 0),
  ``w_c = sum_ij a_ijc ReLU(g_ijc)``, map ``ReLU(sum_c w_c F_ijc)``.

With a GAP + Dense head the gradient is the constant ``W_c / (h w)``, so Grad-CAM is
``ReLU(CAM) / (h w)``: its difference to CAM is the ReLU (tested).
"""

from __future__ import annotations

import keras
import numpy as np

from kerasxai.explain.gradients import gradient_fn

__all__ = ["gradcam", "gradcam_plus_plus", "GradCAMExplainer"]


def gradcam(features: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Grad-CAM maps (B, h, w) from features and d logit / d features, both (B, h, w, C)."""
    weights = grads.mean(axis=(1, 2), keepdims=True)
    return np.maximum((weights * features).sum(axis=-1), 0.0)


def gradcam_plus_plus(features: np.ndarray, grads: np.ndarray) -> np.ndarray:
    """Grad-CAM++ maps (B, h, w) from features and d logit / d features, both (B, h, w, C)."""
    features = np.asarray(features, np.float64)
    grads = np.asarray(grads, np.float64)
    g2, g3 = grads**2, grads**3
    denom = 2 * g2 + features.sum(axis=(1, 2), keepdims=True) * g3
    alpha = np.divide(g2, denom, out=np.zeros_like(g2), where=denom != 0)
    weights = (alpha * np.maximum(grads, 0.0)).sum(axis=(1, 2), keepdims=True)
    return np.maximum((weights * features).sum(axis=-1), 0.0)


class GradCAMExplainer:
    """Grad-CAM and Grad-CAM++ maps for a CAM model, batch by batch.

    Args:
        explainer: ``kerasxai.models.explain_model(model)``, a model with outputs
            ``{"logit": (B, 1), "features": (B, h, w, C)}``.

    Example:
        >>> gc = GradCAMExplainer(explain_model(model))
        >>> maps = gc(images)  # {"Grad-CAM": (B, h, w), "Grad-CAM++": (B, h, w)}
    """

    def __init__(self, explainer: keras.Model):
        out = explainer.output
        if not isinstance(out, dict) or "features" not in out or "logit" not in out:
            raise ValueError("Grad-CAM needs explain_model(model) with outputs 'logit' and 'features' (a CNN)")
        self.explainer = explainer
        self.head = keras.Model(out["features"], out["logit"], name="features_to_logit")
        self._grad = gradient_fn(self.head)

    def __call__(self, images) -> dict[str, np.ndarray]:
        features = np.asarray(self.explainer.predict_on_batch(np.asarray(images, np.float32))["features"])
        return self.from_features(features)

    def from_features(self, features) -> dict[str, np.ndarray]:
        """Both maps from features already computed (saves a forward pass)."""
        features = np.asarray(features, np.float32)
        _, (grads,) = self._grad([features])
        return {"Grad-CAM": gradcam(features, grads), "Grad-CAM++": gradcam_plus_plus(features, grads)}
