"""Each train step's batch split over the CPU cores (JAX on CPU, ``train.host_parallel``).

XLA's CPU runtime runs most elementwise fusions of a step on one thread, so one train step keeps
about one core busy (:mod:`kerasxai.models.host_parallel` says the same of inference). Two
executions of one compiled function dispatched from two Python threads do run side by side.
The step here computes the loss gradient of each part of the batch in its own thread (one
jitted function), then one small jitted function averages the parts' gradients weighted by
their share of the batch (the gradient of the batch's mean loss), applies the optimizer and
adds up the metric updates.

What differs from one execution: BatchNormalization normalizes each part with that part's
statistics (as data-parallel training on several devices does) and its moving statistics take
the parts' weighted mean. Random layers (dropout, stochastic depth) draw from their seed
generator's state moved by a different offset in each part, so no two parts draw the same
numbers; the state then advances as one execution advances it. ``auto`` keeps the transformers
on one execution: XLA runs their steps on smaller batches at a lower rate per tile, which
costs more than the second core gives.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from kerasxai.config import Config, ConfigError
from kerasxai.models import is_transformer
from kerasxai.runtime import Switch, cores, switch_on

KEY = "train.host_parallel"


# Part i adds i times this odd constant (2^32 / golden ratio) to the seed element of every seed
# generator's state (seed, counter): the parts draw from distinct streams while the counter
# advances as in one execution.
SEED_STRIDE = 0x9E3779B9


def _seed_slots(model) -> list[int]:
    """Positions of `model`'s random-number states (seed generators' integer variables) among its
    non-trainable variables."""
    return [i for i, v in enumerate(model.non_trainable_variables) if not str(v.dtype).startswith(("float", "bfloat"))]


def resolve_parts(cfg: Config) -> int:
    """How many parts each train batch is split into for `cfg` (1: no split)."""
    mode = Switch.parse(cfg.train.host_parallel, KEY)
    if not switch_on(mode, KEY) or cores() < 2:
        return 1
    if keras.distribution.distribution() is not None:
        return 1  # train.data_parallel already spreads the batch over devices
    if mode is Switch.auto and is_transformer(cfg.model.name):
        return 1  # their steps slow down on smaller batches (BENCHMARKS.md, "Training speed")
    return cores()


def install(model, parts: int) -> None:
    """Make `model` (compiled, JAX backend) train with each batch split into `parts` parts:
    ``fit`` and ``train_on_batch`` use :class:`HostParallelTrainStep` from now on."""
    if parts < 2:
        return
    if keras.backend.backend() != "jax":
        raise ConfigError(f"key '{KEY}': splitting train steps needs KERAS_BACKEND=jax (set it to auto or off)")
    step = HostParallelTrainStep(model, parts)

    def make_train_function(force=False):
        if model.train_function is None or force:
            model.train_function = model._make_function(step)

    model.make_train_function = make_train_function
    model.train_function = None


class HostParallelTrainStep:
    """``(state, data) -> (logs, state)``, the contract of Keras' JAX ``train_step``, with the
    forward and backward pass of each part of the batch run concurrently.

    Keras metrics accumulate sums and counts, so the parts' metric updates add up to the
    update of the whole batch; the loss tracker sees each part's mean loss weighted by its size.
    """

    def __init__(self, model, parts: int):
        import jax

        self.model = model
        self.parts = parts
        self._seeds = _seed_slots(model)
        self._pool = ThreadPoolExecutor(parts, thread_name_prefix="kerasxai-train")
        self._part = jax.jit(self._part_step)
        self._combine = jax.jit(self._combine_step, donate_argnums=(0,))

    def _part_step(self, state, index, x, y, sample_weight):
        """Loss gradient, new non-trainable values and metric values of part `index`."""
        import jax
        import jax.numpy as jnp

        model = self.model
        tv, ntv, ov, mv = state
        offset = index * jnp.uint32(SEED_STRIDE)  # wraps modulo 2^32
        ntv = list(ntv)
        for i in self._seeds:
            ntv[i] = ntv[i].at[0].add(offset.astype(ntv[i].dtype))
        grad_fn = jax.value_and_grad(model.compute_loss_and_updates, has_aux=True)
        (_, aux), grads = grad_fn(tv, ntv, mv, x, y, sample_weight, training=True, optimizer_variables=ov)
        unscaled_loss, y_pred, ntv, mv = aux
        _, mv = model._update_metrics_variables(mv, unscaled_loss, x, y, y_pred, sample_weight)
        return grads, ntv, mv

    def _combine_step(self, state, outs, weights):
        """The batch's update from the parts': weighted gradients and statistics, summed metrics."""
        import jax

        model = self.model
        tv, ntv, ov, mv = state

        def weighted(*values):
            return sum(w * v for w, v in zip(weights, values))

        grads = jax.tree.map(weighted, *[o[0] for o in outs])
        # statistics: the parts' weighted mean; random-number states: part 0's (offset 0)
        ntv = [vs[0] if i in self._seeds else weighted(*vs).astype(vs[0].dtype)
               for i, vs in enumerate(zip(*[o[1] for o in outs]))]
        mv = [start + sum(part - start for part in vs) for start, *vs in zip(mv, *[o[2] for o in outs])]
        tv, ov = model.optimizer.stateless_apply(ov, grads, tv)
        with keras.StatelessScope(state_mapping=list(zip(model.metrics_variables, mv))):
            logs = model.get_metrics_result()
        return logs, (tv, ntv, ov, mv)

    def __call__(self, state, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        n = len(keras.tree.flatten(x)[0])
        parts = min(self.parts, n)
        bounds = np.linspace(0, n, parts + 1).round().astype(int)
        pieces = [keras.tree.map_structure(lambda a: None if a is None else a[lo:hi], (x, y, sample_weight))
                  for lo, hi in zip(bounds[:-1], bounds[1:])]

        def run(index):
            import jax

            return jax.block_until_ready(self._part(state, np.uint32(index), *pieces[index]))

        outs = list(self._pool.map(run, range(parts))) if parts > 1 else [run(0)]
        weights = [float(hi - lo) / n for lo, hi in zip(bounds[:-1], bounds[1:])]
        return self._combine(state, outs, weights)
