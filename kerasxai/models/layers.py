"""Custom layers of the explainable models: CAM head, attention rollout and ViT pieces.

All are registered (package "kerasxai"), store their init args and implement get_config, so
every model round-trips through `.keras` with `safe_mode=True` and no custom_objects once
`kerasxai.models` is imported. Only `keras.ops` inside.
"""

from __future__ import annotations

import math

import keras
from keras import ops

from kerasxai.choices import Fusion, Pooling, check_discard_ratio
from kerasxai.models.rollout import patch_grid, rollout
from kerasxai.runtime import jax_on_cpu

register = keras.saving.register_keras_serializable(package="kerasxai")


@register
class CAMHead(keras.layers.Layer):
    """Binary score head with Class Activation Mapping.

    The heatmap is M = F . W (features F (B, h, w, C), kernel W; no ReLU, no bias) and the
    pre-sigmoid logit pools it, so the score is always a function of the map:

    - pooling "avg": logit = mean over (h, w) of M + b, i.e. global average pooling of F
      before Dense(1) (the CAM of the paper).
    - pooling "lse": logit = log(mean over (h, w) of exp(M)) + b, a smooth maximum of the map
      (log-sum-exp pooling). A defect a few cells wide must raise the logit by itself rather
      than through the average of the tile, so the map peaks where the defect is.

    Args:
        heatmap: also return the heatmap (False: score-only, same weights).
        dropout: dropout rate on the pooled features ("avg") or the feature map ("lse")
            (training only).
        pooling: "avg" or "lse" (kerasxai.choices.Pooling).

    Returns a dict: "score" (B, 1) sigmoid, "logit" (B, 1), and "heatmap" (B, h, w).

    Example:
        out = CAMHead(name="cam_head")(features); out["score"], out["heatmap"]
    References: Zhou et al., "Learning Deep Features for Discriminative Localization", 2016;
    Pinheiro and Collobert, "From Image-level to Pixel-level Labeling with Convolutional
    Networks", 2015 (log-sum-exp pooling).
    """

    def __init__(self, heatmap=True, dropout=0.0, pooling="avg", **kwargs):
        super().__init__(**kwargs)
        self.heatmap = bool(heatmap)
        self.dropout = float(dropout)
        self.pooling = Pooling.parse(pooling, "model.pooling").value
        self.drop = keras.layers.Dropout(self.dropout) if self.dropout > 0 else None

    def build(self, input_shape):
        channels = input_shape[-1]
        self.kernel = self.add_weight(name="kernel", shape=(channels, 1), initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(1,), initializer="zeros")
        if self.drop is not None:
            self.drop.build((input_shape[0], channels))

    def call(self, features, training=None):
        features = ops.cast(features, self.compute_dtype)
        if self.pooling == "avg":
            pooled = ops.mean(features, axis=(1, 2))
            if self.drop is not None:
                pooled = self.drop(pooled, training=training)
            logit = ops.matmul(pooled, self.kernel) + self.bias
            cam = self._map(features) if self.heatmap else None
        else:  # "lse": log of the mean of exp over the cells of the map
            cam = self._map(self.drop(features, training=training) if self.drop is not None else features)
            b, h, w = ops.shape(cam)
            logit = ops.logsumexp(ops.reshape(cam, (b, h * w)), axis=-1, keepdims=True)
            logit = logit - ops.log(ops.cast(h * w, cam.dtype)) + self.bias
        out = {"score": ops.sigmoid(logit), "logit": logit}
        if self.heatmap:
            out["heatmap"] = cam
        return out

    def _map(self, features):
        # a weighted channel sum rather than a (B*h*w, C) x (C, 1) dot: XLA fuses it with
        # the producer of the features and the pooling (one pass over them, like score-only)
        return ops.sum(features * ops.reshape(self.kernel, (1, 1, 1, -1)), axis=-1)

    def compute_output_spec(self, features):
        b, h, w, _ = features.shape
        out = {
            "score": keras.KerasTensor((b, 1), dtype=self.compute_dtype),
            "logit": keras.KerasTensor((b, 1), dtype=self.compute_dtype),
        }
        if self.heatmap:
            out["heatmap"] = keras.KerasTensor((b, h, w), dtype=self.compute_dtype)
        return out

    def get_config(self):
        return {**super().get_config(), "heatmap": self.heatmap, "dropout": self.dropout, "pooling": self.pooling}


@register
class AttentionRollout(keras.layers.Layer):
    """In-graph attention rollout: list of (B, heads, T, T) probabilities -> (B, h, w).

    Args:
        fusion: head fusion, "mean" | "max" | "min".
        discard_ratio: share in [0, 1) of the smallest fused entries zeroed per image.
        num_prefix_tokens: 1 (CLS) or 2 (CLS + distillation token).
        grid_size: (h, w) patch grid; None means square.

    `fusion` and `discard_ratio` are plain attributes: change them with
    `kerasxai.models.set_rollout(model, ...)` (which also drops compiled functions).

    Example:
        heat = AttentionRollout("max", 0.9, name="rollout")(attention_list)
    Reference: Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020.
    """

    def __init__(self, fusion="mean", discard_ratio=0.0, num_prefix_tokens=1, grid_size=None, **kwargs):
        super().__init__(**kwargs)
        self.fusion = fusion
        self.discard_ratio = discard_ratio
        self.num_prefix_tokens = int(num_prefix_tokens)
        self.grid_size = tuple(int(g) for g in grid_size) if grid_size is not None else None
        self._check()

    def _check(self):
        self.fusion = Fusion.parse(self.fusion, "model.fusion").value
        self.discard_ratio = check_discard_ratio(self.discard_ratio)

    def call(self, attentions):
        return rollout(attentions, self.fusion, self.discard_ratio, self.num_prefix_tokens, self.grid_size)

    def compute_output_spec(self, attentions):
        grid = patch_grid(attentions[0].shape[-1], self.num_prefix_tokens, self.grid_size)
        return keras.KerasTensor((attentions[0].shape[0], *grid), dtype="float32")

    def get_config(self):
        return {
            **super().get_config(),
            "fusion": self.fusion,
            "discard_ratio": self.discard_ratio,
            "num_prefix_tokens": self.num_prefix_tokens,
            "grid_size": list(self.grid_size) if self.grid_size is not None else None,
        }


@register
class PrefixTokens(keras.layers.Layer):
    """Prepends learned tokens (CLS, and the distillation token for DeiT) to a sequence.

    Args:
        num_tokens: 1 (CLS) or 2 (CLS, distillation).

    (B, N, D) -> (B, num_tokens + N, D).
    Reference: Dosovitskiy et al. 2021 (ViT); Touvron et al. 2021 (DeiT).
    """

    def __init__(self, num_tokens=1, **kwargs):
        super().__init__(**kwargs)
        self.num_tokens = int(num_tokens)

    def build(self, input_shape):
        self.tokens = self.add_weight(
            name="tokens",
            shape=(1, self.num_tokens, input_shape[-1]),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )

    def call(self, x):
        tokens = ops.cast(self.tokens, x.dtype)
        tokens = ops.broadcast_to(tokens, (ops.shape(x)[0], self.num_tokens, ops.shape(x)[-1]))
        return ops.concatenate([tokens, x], axis=1)

    def compute_output_shape(self, input_shape):
        n = None if input_shape[1] is None else input_shape[1] + self.num_tokens
        return (input_shape[0], n, input_shape[2])

    def get_config(self):
        return {**super().get_config(), "num_tokens": self.num_tokens}


@register
class PositionEmbedding(keras.layers.Layer):
    """Adds a learned position embedding sized to the token sequence it is built on.

    (B, T, D) -> (B, T, D). The sequence length (prefix tokens + patch grid) is fixed at
    build time, so a model built for 64x64 inputs has 4*4 + prefix positions.
    """

    def build(self, input_shape):
        self.embedding = self.add_weight(
            name="embedding",
            shape=(1, input_shape[1], input_shape[2]),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02),
        )

    def call(self, x):
        return x + ops.cast(self.embedding, x.dtype)

    def compute_output_shape(self, input_shape):
        return input_shape


@register
class SelfAttention(keras.layers.Layer):
    """Multi-head self-attention (timm ViT layout: one qkv projection, then proj).

    Args:
        num_heads: attention heads.
        return_attention: return (output, probabilities) where probabilities are the
            post-softmax, pre-dropout attention (B, heads, T, T). False returns the output
            only (same weights), from the fused `keras.ops.dot_product_attention` except
            for JAX on the CPU, where the explicit softmax(QK^T)V is faster (its grouped-query
            dot layout; BENCHMARKS.md, "Inference: models and backends").

    Example:
        y, probs = SelfAttention(3, name="block_0_attn")(x)
    Reference: Vaswani et al. 2017; timm `Attention`.
    """

    def __init__(self, num_heads=3, return_attention=True, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.return_attention = bool(return_attention)

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim % self.num_heads:
            raise ValueError(f"width {dim} is not divisible by {self.num_heads} heads")
        init = keras.initializers.TruncatedNormal(stddev=0.02)
        self.qkv_kernel = self.add_weight(name="qkv_kernel", shape=(dim, 3 * dim), initializer=init)
        self.qkv_bias = self.add_weight(name="qkv_bias", shape=(3 * dim,), initializer="zeros")
        self.proj_kernel = self.add_weight(name="proj_kernel", shape=(dim, dim), initializer=init)
        self.proj_bias = self.add_weight(name="proj_bias", shape=(dim,), initializer="zeros")

    def call(self, x):
        if not self.return_attention and not jax_on_cpu():
            q, k, v, scale = self._qkv(x)
            return self._project(ops.dot_product_attention(q, k, v, scale=scale))
        out, probs = self.attend(x)
        return (out, probs) if self.return_attention else out

    def attend(self, x, offset=None):
        """``(output, probabilities)`` by the explicit softmax(QK^T)V, the computation ``call``
        returns attention from. ``offset`` (B, heads, T, T), when given, is added to the
        probabilities before they weight the values (and is part of the returned ones): a zero
        offset is what gradient rollout differentiates the logit by."""
        q, k, v, scale = self._qkv(x)
        # The scale goes on q (T x head_dim), as in timm, not on the T x T logits: XLA's CPU
        # fusion of QK^T and the softmax took it there as a materialized T x T operand.
        q = ops.transpose(q * scale, (0, 2, 1, 3))
        k = ops.transpose(k, (0, 2, 3, 1))
        v = ops.transpose(v, (0, 2, 1, 3))
        probs = ops.softmax(ops.matmul(q, k), axis=-1)  # (B, heads, T, T)
        if offset is not None:
            probs = probs + offset
        out = ops.matmul(probs, v)  # (B, heads, T, head_dim)
        return self._project(ops.transpose(out, (0, 2, 1, 3))), probs

    def _qkv(self, x):
        """q, k, v (B, T, heads, head_dim) and the logit scale 1/sqrt(head_dim)."""
        t, dim = x.shape[1], x.shape[2]
        head_dim = dim // self.num_heads
        qkv = ops.matmul(x, self.qkv_kernel) + self.qkv_bias
        qkv = ops.reshape(qkv, (-1, t, 3, self.num_heads, head_dim))
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], 1.0 / math.sqrt(head_dim)

    def _project(self, out):
        """(B, T, heads, head_dim) -> (B, T, width) through the output projection."""
        out = ops.reshape(out, (-1, out.shape[1], out.shape[2] * out.shape[3]))
        return ops.matmul(out, self.proj_kernel) + self.proj_bias

    def compute_output_spec(self, x):
        out = keras.KerasTensor(x.shape, dtype=self.compute_dtype)
        if not self.return_attention:
            return out
        b, t = x.shape[0], x.shape[1]
        return out, keras.KerasTensor((b, self.num_heads, t, t), dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "return_attention": self.return_attention}


@register
class SelectToken(keras.layers.Layer):
    """Takes one token of a sequence: (B, T, D) -> (B, D) (the CLS or distillation token).

    Args:
        index: token position (0 = CLS, 1 = distillation token in DeiT-distilled).
    """

    def __init__(self, index=0, **kwargs):
        super().__init__(**kwargs)
        self.index = int(index)

    def call(self, x):
        return x[:, self.index, :]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[2])

    def get_config(self):
        return {**super().get_config(), "index": self.index}
