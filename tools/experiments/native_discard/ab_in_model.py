"""Experiment: would a native kernel for the rollout's head fusion and discard make the
transformer map cheap enough? (Issue 7's 0.90 target; not part of kerasxai, whose layers use
`keras.ops` only.)

    python tools/experiments/native_discard/ab_in_model.py            # ViT-Tiny, batch 32, 21 rounds
    python tools/experiments/native_discard/ab_in_model.py --rounds 31 --threads 1

Compiles `fuse_discard.cc` (g++, OpenMP, XLA FFI headers shipped with jaxlib) into a temporary
folder and registers it as an XLA FFI target. Three models with the same random-init weights
then run the same batch, interleaved round by round (order alternating): score-only, the
score+heatmap model as shipped (the `keras.ops` rollout), and the same model with the native
kernel doing steps 2-3 of the rollout (fusion, discard) for every block. Prints whether the two
heatmaps are bit-identical and, for each map model, the median and quartiles of the per-round
throughput ratios to score-only (wall and process CPU time). JAX backend on the CPU only.
"""

from __future__ import annotations

import argparse
import ctypes
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ["KERAS_BACKEND"] = "jax"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("OMP_WAIT_POLICY", "passive")  # idle OpenMP threads must not spin against XLA's
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))  # run from a checkout without install
sys.path.insert(0, str(HERE.parents[1]))  # tools/: bench_worker's interleaved rounds

import numpy as np  # noqa: E402
from bench_worker import interleaved  # noqa: E402

FUSION_CODES = {"mean": 0, "max": 1, "min": 2}
TARGET = "kerasxai_experiment_fuse_discard"


def build_and_register(build_dir: Path):
    """Compile fuse_discard.cc to a shared library and register its handler for the CPU."""
    import jax

    if shutil.which("g++") is None:
        raise SystemExit("this experiment needs g++ (with OpenMP) on the PATH")
    lib = build_dir / "libfuse_discard.so"
    cmd = ["g++", "-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17",
           f"-I{jax.ffi.include_dir()}", str(HERE / "fuse_discard.cc"), "-o", str(lib)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"compiling fuse_discard.cc failed:\n{done.stderr[-3000:]}")
    handle = ctypes.cdll.LoadLibrary(str(lib))  # stays loaded (ctypes never unloads) after the folder goes
    jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handle.FuseDiscard), platform="cpu")


def native_rollout(threads: int):
    """A drop-in for kerasxai.models.rollout.rollout with steps 2-3 in the native kernel."""
    import jax
    import jax.numpy as jnp

    from kerasxai.models.rollout import cls_row_heatmap, patch_grid

    def rollout(attentions, fusion="mean", discard_ratio=0.0, num_prefix_tokens=1, grid_size=None):
        attentions = list(attentions)
        b, _, t, _ = attentions[0].shape
        k = int(math.floor(t * t * float(discard_ratio)))
        call = jax.ffi.ffi_call(TARGET, jax.ShapeDtypeStruct((b, t, t), jnp.float32))
        fused = [call(a.astype(jnp.float32), mode=np.int32(FUSION_CODES[fusion]), k=np.int64(k),
                      threads=np.int32(threads)) for a in attentions]
        return cls_row_heatmap(fused, num_prefix_tokens, patch_grid(t, num_prefix_tokens, grid_size))

    return rollout


def ratio_cell(base_seconds, seconds):
    """'median (q1-q3)' of the per-round throughput ratios seconds(base) / seconds."""
    ratios = [b / m for b, m in zip(base_seconds, seconds)]
    q1, q3 = np.percentile(ratios, [25, 75])
    return f"{np.median(ratios):.3f} ({q1:.2f}-{q3:.2f})"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_tiny_patch16_224")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--threads", type=int, default=2, help="OpenMP threads of the kernel")
    args = p.parse_args(argv)

    import jax

    import kerasxai.models.layers as layers
    from kerasxai.models import build_model

    if jax.default_backend() != "cpu":
        raise SystemExit("the kernel is registered for the CPU only")
    with tempfile.TemporaryDirectory() as build_dir:
        build_and_register(Path(build_dir))
        shape = (args.size, args.size, 3)
        shipped = build_model(args.model, input_shape=shape)
        score = build_model(args.model, input_shape=shape, heatmap=False)
        score.set_weights(shipped.get_weights())
        native = build_model(args.model, input_shape=shape)
        native.set_weights(shipped.get_weights())
        x = np.random.default_rng(0).uniform(0, 255, (args.batch, *shape)).astype("float32")
        keras_ops_rollout, kernel_rollout = layers.rollout, native_rollout(args.threads)

        def run(model, rollout):  # the layer looks its rollout function up at trace time
            def call():
                layers.rollout = rollout
                try:
                    return model.predict_on_batch(x)
                finally:
                    layers.rollout = keras_ops_rollout
            return call

        fns = {"score-only": run(score, keras_ops_rollout), "keras.ops rollout": run(shipped, keras_ops_rollout),
               "native kernel": run(native, kernel_rollout)}
        a, b = fns["keras.ops rollout"]()["heatmap"], fns["native kernel"]()["heatmap"]
        print(f"{args.model}, batch {args.batch}: heatmaps bit-identical: {np.array_equal(a, b)} "
              f"(max difference {np.abs(np.asarray(a) - np.asarray(b)).max():.2e})")
        for fn in fns.values():
            fn()
        cells = interleaved(fns, args.rounds, 0.0, args.batch)  # order alternating, one call a round
    print(f"\n{args.rounds} interleaved rounds; throughput ratio to score-only, median (quartiles):\n")
    print("| map model | wall | CPU | median wall ms a batch |")
    print("|---|---|---|---|")
    score = cells["score-only"]
    for k in list(fns)[1:]:
        wall, cpu = (ratio_cell(score[key], cells[k][key]) for key in ("seconds_per_batch", "cpu_seconds_per_batch"))
        print(f"| {k} | {wall} | {cpu} | {1e3 * np.median(cells[k]['seconds_per_batch']):.0f} |")
    print(f"\nscore-only: {1e3 * np.median(score['seconds_per_batch']):.0f} ms a batch (wall, median)")

if __name__ == "__main__":
    main()
