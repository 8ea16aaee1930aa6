"""Single-pass explainable models: {"score", "heatmap"} from one forward pass.

Importing this package registers the custom layers, so saved `.keras` models load with
`keras.saving.load_model(path)` (safe_mode on, no custom_objects).
"""

from kerasxai.models.layers import (  # noqa: F401  (registers the layers)
    AttentionRollout,
    CAMHead,
    PositionEmbedding,
    PrefixTokens,
    SelectToken,
    SelfAttention,
)
from kerasxai.models.registry import (
    MODEL_NAMES,
    build_from_config,
    build_model,
    drop_compiled_functions,
    explain_model,
    is_transformer,
    set_rollout,
)
from kerasxai.models.rollout import rollout
from kerasxai.models.weights import WeightsError

__all__ = [
    "MODEL_NAMES",
    "AttentionRollout",
    "CAMHead",
    "WeightsError",
    "build_from_config",
    "build_model",
    "explain_model",
    "is_transformer",
    "rollout",
    "set_rollout",
]
