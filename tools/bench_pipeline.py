"""Tiles per second delivered by the input pipeline after preparation.

    python tools/bench_pipeline.py --config configs/deeppcb_mobilenet.yaml [--batch 32] [--epochs 2]

Prepares (or reuses) the dataset, then times full passes over the train split with
``training_dataset`` (shuffle + flips, float32 batches) and over the test split with
``eval_batches`` (all fields, masks included). The first pass warms the page cache and
tf.data's autotuner and is reported separately. Prints one JSON line per measurement: wall-clock tiles/s and tiles per
CPU-second of the process (all tf.data threads; on a shared machine wall-clock figures depend on
the load, CPU time much less: ``cores x tiles_per_cpu_s`` bounds what dedicated cores deliver).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import _checkout  # noqa: F401


def _time_pass(ds) -> tuple[int, float, float]:
    """(tiles, wall seconds, CPU seconds of this process: all tf.data threads)."""
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    for batch in ds:
        first = batch[0] if isinstance(batch, tuple) else batch["image"]
        n += int(first.shape[0])
    return n, time.perf_counter() - t0, time.process_time() - c0


def main(argv=None) -> int:
    from kerasxai import runtime
    from kerasxai.config import add_config_args, load_config
    from kerasxai.data.pipeline import eval_batches, load_split, open_split, prepare_dataset, training_dataset

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_args(p)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2, help="timed passes after the warm-up pass")
    args = p.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    out = prepare_dataset(cfg, progress=True)
    cores = runtime.cores()
    runs = {
        "training_dataset(flips, shuffle)": lambda: training_dataset(open_split(out, "train"), args.batch, seed=0),
        "training_dataset(flips, shuffle, balance)": lambda: training_dataset(open_split(out, "train"), args.batch, balance=True),
        "eval_batches(test)": lambda: eval_batches(load_split(out, "test"), args.batch),
    }
    for name, make in runs.items():
        ds = make()
        n0, t0, _ = _time_pass(ds)  # warm-up
        n, t, c = 0, 0.0, 0.0
        for _ in range(args.epochs):
            a, b, d = _time_pass(ds)
            n, t, c = n + a, t + b, c + d
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        print(json.dumps({"pipeline": name, "batch": args.batch, "cores": cores, "load_avg_1min": load,
                          "warmup_tiles_per_s": round(n0 / t0), "tiles": n, "seconds": round(t, 2),
                          "tiles_per_s": round(n / t), "tiles_per_cpu_s": round(n / c)}), flush=True)
    return 0


if __name__ == "__main__":
    from kerasxai.cli import run

    sys.exit(run(main))
