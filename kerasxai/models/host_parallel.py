"""Inference split over the CPU cores for the JAX backend.

XLA's CPU runtime runs every fusion (elementwise chains: the fast depthwise sums, BatchNorm,
hard-swish, softmax, the rollout's counting passes) on one thread; only convolutions and dots
use its thread pool. TensorFlow's runtime spreads all of it over the cores, and that was most of
the JAX/TF gap on CPU (0.70x on 2 cores, XLA flags did not help). Two executions of one compiled
function dispatched from two Python threads do run at the same time, though (JAX releases the
GIL while XLA runs). :class:`HostParallelPredictor` therefore splits each inference batch into
one part per core, runs the jitted stateless forward pass on the parts concurrently and
concatenates the outputs: the same numbers as ``model.predict_on_batch`` (every output is per
sample; a test checks equality), at up to ``cores`` times the throughput of the elementwise part.

``resolve(mode)`` decides the number of parts: ``auto`` (the default of ``cfg.model.host_parallel``)
is one part per core for the JAX backend on CPU, 1 (plain ``predict_on_batch``) otherwise (GPU,
TF backend, whose runtime is already multi-threaded).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from kerasxai.runtime import MODES, cores, switch_on

__all__ = ["HostParallelPredictor", "MODES", "resolve"]


def resolve(mode: str = "auto") -> int:
    """Parts a batch is split into for ``mode`` ("auto" | "on" | "off"): 1 means no split."""
    if not switch_on(mode, "model.host_parallel") or keras.backend.backend() != "jax":
        return 1
    return max(1, cores())


class HostParallelPredictor:
    """``predict_on_batch`` for a Keras model, each batch split over ``parts`` concurrent runs.

    Args:
        model: a built Keras model (JAX backend when ``parts > 1``).
        parts: how many parts (threads); None: ``resolve("auto")``. A batch smaller than
            ``parts`` runs whole.

    Returns from :meth:`predict_on_batch` the model's output structure with NumPy arrays.

    Example:
        >>> fast = HostParallelPredictor(model)            # 2 parts on a 2-core CPU under JAX
        >>> out = fast.predict_on_batch(tiles)             # {"score": (B, 1), "heatmap": (B, h, w)}
    """

    def __init__(self, model: keras.Model, parts: int | None = None):
        self.model = model
        self.parts = resolve("auto") if parts is None else max(1, int(parts))
        self._fn = None
        self._pool = None
        if self.parts > 1:
            if keras.backend.backend() != "jax":
                raise ValueError("HostParallelPredictor with parts > 1 needs the JAX backend (model.host_parallel=off)")
            import jax

            self._fn = jax.jit(lambda tv, ntv, x: model.stateless_call(tv, ntv, x, training=False)[0])
            self._pool = ThreadPoolExecutor(self.parts, thread_name_prefix="kerasxai-predict")

    def predict_on_batch(self, x):
        x = np.asarray(x)
        if self.parts <= 1 or len(x) < self.parts:
            return keras.tree.map_structure(lambda a: np.asarray(keras.ops.convert_to_numpy(a)),
                                            self.model.predict_on_batch(x))
        import jax

        # Current variable values on every call: Keras may replace them (training, set_weights).
        tv = [v.value for v in self.model.trainable_variables]
        ntv = [v.value for v in self.model.non_trainable_variables]
        parts = np.array_split(x, self.parts)
        outs = list(self._pool.map(lambda part: jax.device_get(self._fn(tv, ntv, part)), parts))
        return keras.tree.map_structure(lambda *a: np.concatenate(a), *outs)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)
            self._pool = None
            self.parts = 1
