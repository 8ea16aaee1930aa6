"""Post-hoc explanation baselines scored with the same metrics as the single-pass maps.

Grad-CAM / Grad-CAM++ (CNNs, on the CAM feature map), gradient-weighted rollout
(transformers) and trivial maps (uniform, centre Gaussian). All return (B, h, w) maps.
Backend-specific gradient code lives in :mod:`kerasxai.explain.gradients` only.
"""

from kerasxai.explain.gradcam import GradCAMExplainer, gradcam, gradcam_plus_plus
from kerasxai.explain.grad_rollout import GradRolloutExplainer, gradient_weighted_attention
from kerasxai.explain.gradients import gradient_fn
from kerasxai.explain.trivial import centre_gaussian_maps, trivial_maps, uniform_maps

__all__ = [
    "GradCAMExplainer",
    "GradRolloutExplainer",
    "centre_gaussian_maps",
    "gradcam",
    "gradcam_plus_plus",
    "gradient_fn",
    "gradient_weighted_attention",
    "trivial_maps",
    "uniform_maps",
]
