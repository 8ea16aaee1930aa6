"""The attention rollout alone: wall and CPU milliseconds of one batch through the jitted
`kerasxai.models.rollout.rollout` (JAX backend), the part of a transformer's map that costs.

    python tools/bench_rollout.py                         # random-init ViT-Tiny on random tiles
    python tools/bench_rollout.py --run <run folder> \\
        --images '../shared/datasets/deeppcb/PCBData/*/*/*_test.jpg'    # a trained model, real tiles

The model's per-block attention probabilities for one batch are recorded once (through
`explain_model`); then, for each fusion, the rollout at the discard ratio and at 0 are timed
in interleaved rounds (order alternating, medians). Their difference is what the discard step
(the per-image k-th smallest) costs. Prints a Markdown table; `--json` also writes the figures
(temp file + rename).
"""

from __future__ import annotations

import argparse
import glob
import sys

import _checkout  # noqa: F401
import numpy as np

from kerasxai.tables import markdown_table


def tiles(batch, size, pattern=None, seed=0):
    """(batch, size, size, 3) float32 0..255: the centre crops of images matching `pattern`
    (cycled), or uniform noise."""
    if not pattern:
        return np.random.default_rng(seed).uniform(0, 255, (batch, size, size, 3)).astype("float32")
    import cv2

    paths = sorted(glob.glob(pattern))
    if not paths:
        raise SystemExit(f"--images '{pattern}' matches no file")
    out = []
    for path in (paths * batch)[:batch]:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None or min(image.shape[:2]) < size:
            raise SystemExit(f"'{path}' is not an image of at least {size}x{size} pixels")
        h, w = image.shape[:2]
        y, x = (h - size) // 2, (w - size) // 2
        out.append(cv2.cvtColor(image[y : y + size, x : x + size], cv2.COLOR_BGR2RGB))
    return np.stack(out).astype("float32")


def model_and_rollout_layer(args):
    from kerasxai.models import build_model
    from kerasxai.models.layers import AttentionRollout

    if args.run:
        from kerasxai.runs import RunError, load_run

        try:
            _, model = load_run(args.run)
        except RunError as exc:
            raise SystemExit(str(exc)) from None
    else:
        model = build_model(args.model, input_shape=(args.size, args.size, 3))
    layers = [layer for layer in model.layers if isinstance(layer, AttentionRollout)]
    if not layers:
        raise SystemExit(f"model '{model.name}' has no attention rollout: pass a ViT / DeiT")
    return model, layers[0]


def timed_rounds(fns: dict, args, rounds):
    """Median wall and process-CPU milliseconds per call of each jitted function: a compile call
    and a warm call each, then `bench_worker.interleaved` rounds (order alternating)."""
    import jax
    from bench_worker import interleaved

    calls = {k: (lambda fn=fn: jax.block_until_ready(fn(*args))) for k, fn in fns.items()}
    for call in calls.values():  # compile, then one call for any lazy work
        call()
        call()
    cells = interleaved(calls, rounds, 0.0, 1)
    return {k: {"wall_ms": 1e3 * float(np.median(c["seconds_per_batch"])),
                "cpu_ms": 1e3 * float(np.median(c["cpu_seconds_per_batch"]))} for k, c in cells.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_tiny_patch16_224", help="registry name (random init) unless --run")
    p.add_argument("--run", help="a training run folder: its best.keras")
    p.add_argument("--images", help="glob of images whose centre crops are the batch (default: noise)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--fusions", default="max,mean", help="comma-separated: mean,max,min")
    p.add_argument("--discard-ratio", type=float, default=0.9)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args(argv)

    import jax
    import keras

    from kerasxai.models import explain_model
    from kerasxai.models.rollout import rollout
    from kerasxai.runtime import atomic_write_json

    if keras.backend.backend() != "jax":
        raise SystemExit("bench_rollout times jax.jit: run with KERAS_BACKEND=jax")
    model, layer = model_and_rollout_layer(args)
    x = tiles(args.batch, model.input_shape[1], args.images)
    attentions = [jax.device_put(a) for a in explain_model(model).predict_on_batch(x)["attentions"]]
    prefix, grid = layer.num_prefix_tokens, layer.grid_size
    rows, record = [], {"model": model.name, "batch": args.batch, "discard_ratio": args.discard_ratio,
                        "images": args.images, "run": args.run, "rounds": args.rounds, "fusions": {}}
    for fusion in args.fusions.split(","):
        fns = {
            ratio: jax.jit(lambda *a, r=ratio, f=fusion: rollout(list(a), f, r, prefix, grid))
            for ratio in (args.discard_ratio, 0.0)
        }
        res = timed_rounds(fns, attentions, args.rounds)
        full, bare = res[args.discard_ratio], res[0.0]
        record["fusions"][fusion] = {"rollout": full, "rollout_discard_0": bare}
        rows.append([fusion] + [f"{v:.1f}" for v in (full["wall_ms"], full["cpu_ms"], bare["wall_ms"], bare["cpu_ms"],
                                                      full["wall_ms"] - bare["wall_ms"])])
    print(f"{model.name}, batch {args.batch}, {len(attentions)} blocks, discard ratio {args.discard_ratio}, "
          f"{'images ' + args.images if args.images else 'random tiles'}; medians of {args.rounds} rounds (ms):\n")
    print(markdown_table(["fusion", "rollout wall", "CPU", "discard 0: wall", "CPU", "discard step (wall)"], rows))
    if args.json:
        atomic_write_json(args.json, record)


if __name__ == "__main__":
    from kerasxai.cli import run

    sys.exit(run(main))
