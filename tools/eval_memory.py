"""Peak memory of streaming evaluation: RSS after 1,000 vs 10,000 tiles (flat = O(1) metrics).

    python tools/eval_memory.py                      # metrics only: 224 px tiles, 14x14 maps
    python tools/eval_memory.py --model vit_tiny_patch16_224 --size 64 --tiles 10000
                                                     # the whole evaluate_model loop (random init,
                                                     # fusion x discard sweep, baselines)

Synthetic tiles are generated batch by batch (nothing is kept), so any growth would come
from the accumulators or the evaluation loop. Prints one JSON line per checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import _checkout  # noqa: F401
import numpy as np
import psutil



def batches(n_tiles: int, batch: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    made = 0
    while made < n_tiles:
        b = min(batch, n_tiles - made)
        masks = np.zeros((b, size, size), np.uint8)
        for j in range(b):
            if rng.random() < 0.5:
                y, x = rng.integers(0, size // 2, 2)
                masks[j, y : y + size // 4, x : x + size // 5] = 1
        valid = np.ones((b, size, size), np.uint8)
        yield {
            "image": rng.integers(0, 255, (b, size, size, 3), dtype=np.uint8),
            "mask": masks,
            "valid": valid,
            "label": masks.reshape(b, -1).max(1).astype(np.float32),
            "source": np.array([f"s{made + j}".encode() for j in range(b)]),
            "y": np.zeros(b, np.int32),
            "x": np.zeros(b, np.int32),
        }
        made += b


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiles", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=224, help="tile side")
    p.add_argument("--map", type=int, default=14, help="heatmap side (metrics-only mode)")
    p.add_argument("--model", default=None, help="run evaluate_model with this kerasxai model (random init)")
    p.add_argument("--checkpoints", default="1000,10000")
    args = p.parse_args(argv)
    checkpoints = sorted(int(c) for c in args.checkpoints.split(","))
    proc = psutil.Process()
    peak = [proc.memory_info().rss]
    seen = [0]
    report = []
    t0 = time.perf_counter()

    def observe(stream):
        for b in stream:
            yield b
            seen[0] += len(b["label"])
            peak[0] = max(peak[0], proc.memory_info().rss)
            while checkpoints and seen[0] >= checkpoints[0]:
                row = {"tiles": seen[0], "peak_rss_mib": round(peak[0] / 2**20, 1),
                       "rss_mib": round(proc.memory_info().rss / 2**20, 1), "seconds": round(time.perf_counter() - t0, 1)}
                report.append(row)
                print(json.dumps(row), flush=True)
                checkpoints.pop(0)

    stream = observe(batches(args.tiles, args.batch, args.size))
    if args.model is None:
        from kerasxai.metrics import LocalizationMetrics

        rng = np.random.default_rng(1)
        acc = LocalizationMetrics()
        for b in stream:
            n = len(b["label"])
            heat = rng.random((n, args.map, args.map)).astype(np.float32)
            acc.update(rng.random(n), heat, b["mask"], b["valid"], b["label"])
        result = acc.result()
    else:
        import keras

        from kerasxai.config import EvalConfig
        from kerasxai.evaluation import evaluate_model
        from kerasxai.models import build_model

        keras.utils.set_random_seed(0)
        model = build_model(args.model, input_shape=(args.size, args.size, 3))
        ev = evaluate_model(model, stream, eval_cfg=EvalConfig(), model_name=args.model,
                            overlay_keys=[("s1", 0, 0), ("s5000", 0, 0)], progress=False)
        result = ev.metrics
    if len(report) >= 2:
        growth = report[-1]["peak_rss_mib"] - report[0]["peak_rss_mib"]
        print(json.dumps({"mode": args.model or "metrics", "tile": args.size, "growth_mib": round(growth, 1),
                          "tiles_evaluated": result["tiles"]}))


if __name__ == "__main__":
    from kerasxai.cli import run

    sys.exit(run(main))
